import { DEFAULTS } from '../config.js'
import type { ReactionEmoji } from '../telegram/reactions.js'

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

/** What the service must make of a step's message. */
export type Expectation =
  /** 👀, a brain run, a reply whose first line begins `reply`, then `reaction` in place of 👀. */
  | { readonly answer: 'brain'; readonly reply: string; readonly reaction: ReactionEmoji }
  /** A command: answered by the service at once, however busy the chat; no 👀, no brain run. */
  | { readonly answer: 'service'; readonly reply: string }
  /** 👀 and a brain run that the step `cancelledBy` (a /cancel) stops: no reply, and 👀 stays. */
  | { readonly answer: 'none'; readonly cancelledBy: string }

/** One thing a user does in the scripted conversation, and what the service must make of it. */
export interface DemoStep {
  /** Names the step for other steps' claims. */
  readonly id: string
  /**
   * When the user sends it, counted in brain delays (ECHO_DELAY_S) after the first message, or,
   * with `sinceBrainOf`, after that step's brain started.
   */
  readonly at: number
  /** A step whose brain this one must find running, however long brains take to start on a busy machine. */
  readonly sinceBrainOf?: string
  readonly chat: DemoChatKey
  readonly text: string
  /** What the step demonstrates, in a few words, printed as it is sent. */
  readonly shows: string
  readonly expects: Expectation
  readonly runs?: RunClaim
  /** Its brain's progress must show as one status message, edited in place, deleted before the reply. */
  readonly progress?: true
}

/** The echo brain's answer to `text` (see scripts/brains/echo), and the reaction that follows it. */
const echo = (text: string): Expectation => ({ answer: 'brain', reply: `echo: ${text}`, reaction: DEFAULTS.reactionDone })

// Times are in brain delays, so the story stays true for any --delay: the #slow run (3 delays) is
// still busy when Household writes and when Ada writes again, and /status and /cancel come while
// the #long run (10 delays) is busy.
export const DEMO_STEPS: readonly DemoStep[] = [
  {
    id: 'slow',
    at: 0,
    chat: 'ada',
    text: 'Plan my week, no rush #slow',
    shows: 'slow: 3× as long, shows progress',
    expects: echo('Plan my week, no rush #slow'),
    progress: true,
  },
  {
    id: 'parallel',
    at: 0.5,
    chat: 'household',
    text: 'Who is buying milk?',
    shows: 'other chat: runs alongside',
    expects: echo('Who is buying milk?'),
    runs: { alongside: 'slow' },
  },
  {
    id: 'queued',
    at: 1,
    chat: 'ada',
    text: 'Also remind me to call Mum',
    shows: 'same chat: waits its turn',
    expects: echo('Also remind me to call Mum'),
    runs: { after: 'slow' },
  },
  {
    id: 'failing',
    at: 1.75,
    chat: 'household',
    text: 'Fix the boiler #fail',
    shows: 'brain fails: exit 3',
    // A group: the notice leaves out the brain's stderr, which everyone would read.
    expects: { answer: 'brain', reply: '⚠️ brain exited 3', reaction: DEFAULTS.reactionFailed },
  },
  {
    id: 'long',
    at: 3,
    chat: 'household',
    text: 'Tidy the photo archive #long',
    shows: 'long: 10× as long',
    expects: { answer: 'none', cancelledBy: 'cancel' },
  },
  {
    id: 'status',
    at: 0.5,
    sinceBrainOf: 'long',
    chat: 'household',
    text: '/status',
    shows: 'answered at once, brain busy',
    expects: { answer: 'service', reply: '🧠 Working on your message for ' },
  },
  {
    id: 'cancel',
    at: 1,
    sinceBrainOf: 'long',
    chat: 'household',
    text: '/cancel',
    shows: 'stops the #long brain',
    expects: { answer: 'service', reply: '⏹ Stopped the brain working on your message after ' },
  },
]

/** When a step is sent if every brain starts at once, in brain delays after the first message. */
export function nominalAt(step: DemoStep): number {
  const since = step.sinceBrainOf === undefined ? undefined : DEMO_STEPS.find((other) => other.id === step.sinceBrainOf)
  return step.at + (since === undefined ? 0 : nominalAt(since))
}
