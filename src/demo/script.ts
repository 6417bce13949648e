/** A chat the demo writes in. The emulator derives its type from the id (positive: private, negative: group). */
export interface DemoChat {
  readonly id: number
  readonly name: string
  /** The name with the kind of chat, as the tables show it. */
  readonly title: string
}

export const DEMO_CHATS = {
  ada: { id: 5_550_101, name: 'Ada', title: 'Ada (private chat)' },
  household: { id: -5_550_202, name: 'Household', title: 'Household (group)' },
} as const satisfies Record<string, DemoChat>

export type DemoChatKey = keyof typeof DEMO_CHATS

/** How a step's brain run must relate to an earlier step's, by id. */
export type RunClaim = { readonly alongside: string } | { readonly after: string }

/** One thing a user does in the scripted conversation, and what the service must make of it. */
export interface DemoStep {
  /** Names the step for other steps' claims. */
  readonly id: string
  /** When the user sends it, counted in brain delays (ECHO_DELAY_S) after the first message. */
  readonly at: number
  readonly chat: DemoChatKey
  readonly text: string
  /** What the step demonstrates, in a few words, printed as it is sent. */
  readonly shows: string
  /** How the reply's first line must begin. */
  readonly reply: string
  readonly runs?: RunClaim
}

/** The echo brain's reply to `text` (see scripts/brains/echo). */
const echo = (text: string): string => `echo: ${text}`

// Times are in brain delays, so the story stays true for any --delay: the #slow run (3 delays) is
// still busy when Household writes and when Ada writes again.
export const DEMO_STEPS: readonly DemoStep[] = [
  {
    id: 'slow',
    at: 0,
    chat: 'ada',
    text: 'Plan my week, no rush #slow',
    shows: 'slow: the brain takes 3× as long',
    reply: echo('Plan my week, no rush #slow'),
  },
  {
    id: 'parallel',
    at: 0.5,
    chat: 'household',
    text: 'Who is buying milk?',
    shows: 'other chat: runs alongside',
    reply: echo('Who is buying milk?'),
    runs: { alongside: 'slow' },
  },
  {
    id: 'queued',
    at: 1,
    chat: 'ada',
    text: 'Also remind me to call Mum',
    shows: 'same chat: waits its turn',
    reply: echo('Also remind me to call Mum'),
    runs: { after: 'slow' },
  },
  {
    id: 'failing',
    at: 1.75,
    chat: 'household',
    text: 'Fix the boiler #fail',
    shows: 'brain fails: exit 3',
    reply: '⚠️ brain exited 3: ',
  },
]
