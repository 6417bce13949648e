// Head-of-line blocking: a slow brain, then 2 s later a second message in another chat or in the
// same chat, against three designs: this service, the old synchronous long-polling loop, and a
// grammY webhook handler that awaits the brain. How long does the second message wait for its 👀
// and for its reply?
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import type { BotApiEmulator, RecordedCall } from '../src/emulator/index.js'
import { startEmulator } from '../src/emulator/index.js'
import {
  BENCH_BUILD,
  BenchChild,
  SECRET,
  TEST_BRAIN,
  TOKEN,
  WEBHOOK_PATH,
  delay,
  freePort,
  pointWebhookAt,
  startService,
  waitUntilUp,
} from './harness.js'
import { table, type Section } from './report.js'
import { fmt } from './stats.js'

const SECOND_AFTER_MS = 2000
// Setups run side by side, their messages staggered so that no two brains start at the same moment.
const STAGGER_MS = 400
const FIRST_CHAT = 1
const OTHER_CHAT = 2
const GRAMMY_DEFAULT_TIMEOUT_MS = 10_000

export interface HeadOfLineOptions {
  readonly brainS: number
}

type Design = 'service' | 'long-poll' | 'grammy-webhook' | 'grammy-webhook-default'
type Scenario = 'other chat' | 'same chat'

const DESIGN_NAMES: Record<Design, string> = {
  service: 'this service',
  'long-poll': 'long-polling loop, brain inline (baselines/long-poll.ts)',
  'grammy-webhook': 'grammY webhook awaiting the brain (baselines/grammy-webhook.ts)',
  'grammy-webhook-default': `the same with grammY's default ${GRAMMY_DEFAULT_TIMEOUT_MS / 1000} s webhook timeout`,
}

// With the default timeout the busy chat's next update is never delivered (its lane retries the first forever).
const SETUPS: readonly { readonly design: Design; readonly scenario: Scenario }[] = [
  { design: 'service', scenario: 'other chat' },
  { design: 'service', scenario: 'same chat' },
  { design: 'long-poll', scenario: 'other chat' },
  { design: 'long-poll', scenario: 'same chat' },
  { design: 'grammy-webhook', scenario: 'other chat' },
  { design: 'grammy-webhook', scenario: 'same chat' },
  { design: 'grammy-webhook-default', scenario: 'other chat' },
]

interface Outcome {
  readonly design: Design
  readonly scenario: Scenario
  /** The second message's 👀 and reply, ms after it was sent. */
  readonly ackMs: number
  readonly replyMs: number
  /** The first (slow) message's reply, ms after it was sent. */
  readonly firstReplyMs: number
  /** Webhook deliveries of the first message that failed by then: each makes Telegram POST it again. */
  readonly firstFailures: number
}

export async function headOfLineBenchmark({ brainS }: HeadOfLineOptions): Promise<Section> {
  process.stdout.write(`hol: a ${brainS} s brain, then a quick message ${SECOND_AFTER_MS / 1000} s later; ${SETUPS.length} setups side by side\n`)
  const outcomes = await Promise.all(SETUPS.map(({ design, scenario }, i) => runSetup(design, scenario, brainS, i * STAGGER_MS)))
  return report(outcomes, brainS)
}

async function runSetup(design: Design, scenario: Scenario, brainS: number, offsetMs: number): Promise<Outcome> {
  const emulator = await startEmulator({ token: TOKEN })
  const stopDesign = await startDesign(design, emulator)
  try {
    await delay(offsetMs)
    const firstSentAt = performance.now()
    const first = emulator.sendText({ chatId: FIRST_CHAT, text: `sleep=${brainS}` })
    await delay(firstSentAt + SECOND_AFTER_MS - performance.now())
    const sentAt = performance.now()
    const second = emulator.sendText({ chatId: scenario === 'same chat' ? FIRST_CHAT : OTHER_CHAT, text: 'quick' })
    const timeoutMs = (brainS + 30) * 1000
    const [ack, reply, firstReply] = await Promise.all([
      emulator.waitFor((call) => isReactionTo(call, second.message?.chat.id, second.message?.message_id), { timeoutMs }),
      emulator.waitFor((call) => isReplyTo(call, second.update_id), { timeoutMs }),
      emulator.waitFor((call) => isReplyTo(call, first.update_id), { timeoutMs }),
    ])
    const firstFailures = emulator.deliveries.filter((attempt) => attempt.update_id === first.update_id && attempt.status !== 200).length
    return { design, scenario, ackMs: ack.at - sentAt, replyMs: reply.at - sentAt, firstReplyMs: firstReply.at - firstSentAt, firstFailures }
  } finally {
    await stopDesign()
    await emulator.close()
  }
}

async function startDesign(design: Design, emulator: BotApiEmulator): Promise<() => Promise<void>> {
  const env = { TELEGRAM_BOT_TOKEN: TOKEN, TELEGRAM_API_ROOT: emulator.url, TELEGRAM_WEBHOOK_SECRET: SECRET, BRAIN: TEST_BRAIN }
  switch (design) {
    case 'service': {
      const service = await startService({ apiRoot: emulator.url })
      await pointWebhookAt(emulator.url, `${service.url}${WEBHOOK_PATH}`)
      return async () => {
        await service.child.stop()
      }
    }
    case 'grammy-webhook':
    case 'grammy-webhook-default': {
      const port = await freePort()
      const timeout: Record<string, string> = design === 'grammy-webhook-default' ? { WEBHOOK_TIMEOUT_MS: String(GRAMMY_DEFAULT_TIMEOUT_MS) } : {}
      const child = new BenchChild('grammy-webhook baseline', path.join(BENCH_BUILD, 'baselines/grammy-webhook.js'), [], { ...env, ...timeout, PORT: String(port) })
      const url = `http://127.0.0.1:${port}`
      await waitUntilUp(`${url}/livez`, child)
      await pointWebhookAt(emulator.url, `${url}${WEBHOOK_PATH}`)
      return () => child.stop()
    }
    case 'long-poll': {
      const child = new BenchChild('long-poll baseline', path.join(BENCH_BUILD, 'baselines/long-poll.js'), [], env, { readLog: true })
      await child.waitForLog((line) => line.msg === 'ready', 10_000)
      return () => child.kill()
    }
  }
}

function isReactionTo(call: RecordedCall, chatId: number | undefined, messageId: number | undefined): boolean {
  return call.method === 'setMessageReaction' && call.ok && call.params['chat_id'] === chatId && call.params['message_id'] === messageId
}

// The test brain answers "reply <update_id> <text>", whatever the design does with it.
function isReplyTo(call: RecordedCall, updateId: number): boolean {
  return call.method === 'sendMessage' && call.ok && String(call.params['text']).includes(`reply ${updateId} `)
}

function report(outcomes: readonly Outcome[], brainS: number): Section {
  const seconds = (ms: number): string => (ms < 1000 ? `${fmt(ms, 0)} ms` : `${fmt(ms / 1000, 1)} s`)
  const rows = outcomes.map((o) => [
    DESIGN_NAMES[o.design],
    o.scenario,
    seconds(o.ackMs),
    seconds(o.replyMs),
    seconds(o.firstReplyMs),
    o.design === 'long-poll' ? '–' : String(o.firstFailures),
  ])
  return {
    title: 'Head-of-line blocking',
    method: [
      `A message whose brain takes ${brainS} s (\`sleep=${brainS}\`), then ${SECOND_AFTER_MS / 1000} s later a quick one (its brain answers at once),`,
      `in another chat or in the same chat. Each design × scenario gets its own emulator (in the bench's process; it`,
      `delivers by webhook, or answers getUpdates for the long-polling loop) and runs beside the others, ${STAGGER_MS} ms apart.`,
      `Times are from when the user sent the second message to its 👀 and to its reply reaching the Bot API.`,
    ].join('\n'),
    body: [
      table(['design', '2nd message in', '2nd 👀 after', '2nd reply after', '1st reply after', '1st failed POSTs'], rows),
      '',
      `The service acknowledges every message at once and runs other chats in parallel; a chat's own messages are`,
      `answered in order, so the same-chat reply waits for the first brain by design. The long-polling loop reads nothing`,
      `while a brain runs; the grammY webhook is deaf to the busy chat only (Telegram holds back that chat's next update`,
      `until the webhook answers). With grammY's default \`timeoutMilliseconds\` (${GRAMMY_DEFAULT_TIMEOUT_MS / 1000} s, \`onTimeout: "throw"\`) the webhook answers 500`,
      `while the handler runs on, so Telegram POSTs the update again and its brain runs again ("1st failed POSTs", counted until`,
      `its first reply); that chat's next update would wait behind the retries, so it is measured in another chat only.`,
    ].join('\n'),
    targets: [],
  }
}
