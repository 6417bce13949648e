// 👀 latency: from the moment Telegram POSTs an update to the moment the 👀 reaction reaches the Bot
// API, at a steady 100 updates/s while every brain slot is held by a slow brain.
import type { BotApiEmulator } from '../src/emulator/index.js'
import { startEmulator } from '../src/emulator/index.js'
import {
  SLOTS,
  TOKEN,
  WEBHOOK_PATH,
  delay,
  pointWebhookAt,
  probeHealth,
  startService,
  waitForHealth,
} from './harness.js'
import { table, verdict, type Section, type TargetResult } from './report.js'
import { fmt, summarize, withMissing, type Summary } from './stats.js'

export const RATE_PER_S = 100
const CHATS = 1000
const HEALTH_CHECKS_PER_S = 20
const BUSY_CHAT_BASE = 900_000
const WARM_UP_S = 1
const WARM_UP_CHAT_BASE = 500_000
const TARGET_MS = 20

export interface AckOptions {
  readonly durationS: number
}

type AckMode = 'api' | 'webhook-reply'

export interface Run {
  readonly mode: AckMode
  readonly sent: number
  /** Webhook answer times; a delivery that failed counts as missing. */
  readonly answer: Summary
  /** 👀 times; an update whose delivery failed or whose 👀 never arrived counts as missing. */
  readonly ack: Summary
  readonly health: Summary
}

export async function ackBenchmark({ durationS }: AckOptions): Promise<Section> {
  process.stdout.write(`ack: ${RATE_PER_S} updates/s for ${durationS} s, ${SLOTS} slots busy, ACK_MODE=api and webhook-reply\n`)
  const api = await measure('api', durationS)
  const webhookReply = await measure('webhook-reply', durationS)
  return report([api, webhookReply], durationS)
}

async function measure(mode: AckMode, durationS: number): Promise<Run> {
  // In this process: its clock (performance.now()) times both the delivery and the reaction's arrival.
  const emulator = await startEmulator({ token: TOKEN })
  try {
    const service = await startService({ apiRoot: emulator.url, env: { ACK_MODE: mode } })
    try {
      await pointWebhookAt(emulator.url, `${service.url}${WEBHOOK_PATH}`)
      for (let i = 0; i < SLOTS; i++) emulator.sendText({ chatId: BUSY_CHAT_BASE + i, text: 'hang' })
      await waitForHealth(service.url, (report) => report.brains.running === SLOTS, 10_000, `${SLOTS} brains running`)

      // Warm up (JIT, connections, first-time code paths) in other chats; only what follows is measured.
      await sendSteadily(emulator, WARM_UP_S, WARM_UP_CHAT_BASE)
      await delay(500)
      const probe = probeHealth(service.url, HEALTH_CHECKS_PER_S, durationS)
      const sent = await sendSteadily(emulator, durationS, 1)
      const health = await probe.result
      await delay(1000)
      return { mode, ...measured(emulator, sent), health: summarize(health.latencies, health.failures) }
    } finally {
      await service.child.stop()
    }
  } finally {
    await emulator.close()
  }
}

export interface Sent {
  readonly updateId: number
  readonly chatId: number
  readonly messageId: number
}

/** A user message every 1/RATE s, on schedule (a late timer sends what is due at once). */
export async function sendSteadily(emulator: BotApiEmulator, durationS: number, firstChat: number): Promise<Sent[]> {
  const sent: Sent[] = []
  const periodMs = 1000 / RATE_PER_S
  const total = Math.round(durationS * RATE_PER_S)
  const start = performance.now()
  for (let i = 0; i < total; i++) {
    const wait = start + i * periodMs - performance.now()
    if (wait > 1) await delay(wait)
    const chatId = firstChat + (i % CHATS)
    const update = emulator.sendText({ chatId, text: 'silent' })
    if (update.message) sent.push({ updateId: update.update_id, chatId, messageId: update.message.message_id })
  }
  return sent
}

export function measured(emulator: BotApiEmulator, sent: readonly Sent[]): Pick<Run, 'sent' | 'answer' | 'ack'> {
  const deliveries = new Map(emulator.deliveries.filter((d) => d.attempt === 1).map((d) => [d.update_id, d]))
  const reactions = new Map<string, number>()
  for (const call of emulator.callsOf('setMessageReaction')) {
    const key = `${String(call.params['chat_id'])}:${String(call.params['message_id'])}`
    if (call.ok && !reactions.has(key)) reactions.set(key, call.at)
  }
  const answers: number[] = []
  const acks: number[] = []
  let unanswered = 0
  let unacknowledged = 0
  for (const message of sent) {
    const delivery = deliveries.get(message.updateId)
    const reactedAt = reactions.get(`${message.chatId}:${message.messageId}`)
    if (delivery === undefined || delivery.status !== 200) {
      unanswered++
      unacknowledged++
      continue
    }
    answers.push(delivery.answeredAt - delivery.sentAt)
    if (reactedAt === undefined) unacknowledged++
    else acks.push(reactedAt - delivery.sentAt)
  }
  return { sent: sent.length, answer: summarize(answers, unanswered), ack: summarize(acks, unacknowledged) }
}

function report(runs: readonly Run[], durationS: number): Section {
  const [api, webhookReply] = runs as [Run, Run]
  const rows = runs.map((run) => [
    `ACK_MODE=${run.mode}`,
    String(run.sent),
    fmt(run.answer.p50),
    fmt(run.answer.p99),
    fmt(run.answer.max),
    fmt(run.ack.p50),
    fmt(run.ack.p99),
    fmt(run.ack.max),
    String(run.ack.missing),
    fmt(run.health.p99),
    String(run.health.missing),
  ])
  const targets: TargetResult[] = [
    // A lost 👀 or answer is a failure of the target, whatever the percentile of the rest says.
    {
      target: `👀 p99 ≤ ${TARGET_MS} ms, ${RATE_PER_S} updates/s, all slots busy (ACK_MODE=api)`,
      measured: withMissing(api.ack, api.ack.p99),
      met: api.ack.p99 <= TARGET_MS && api.ack.missing === 0,
    },
    {
      target: `webhook answer p99 ≤ ${TARGET_MS} ms, ${RATE_PER_S} updates/s, all slots busy`,
      measured: `${withMissing(api.answer, api.answer.p99)} (webhook-reply: ${withMissing(webhookReply.answer, webhookReply.answer.p99)})`,
      met: api.answer.p99 <= TARGET_MS && api.answer.missing === 0,
    },
  ]
  return {
    title: '👀 latency',
    method: [
      `The emulator runs in the bench's process and delivers ${RATE_PER_S} text updates/s for ${durationS} s over ${CHATS} chats to the`,
      `service's webhook, as Telegram does, while \`hang\` messages hold all ${SLOTS} brain slots. Receipt is when the emulator starts`,
      `the POST; the 👀 is when the setMessageReaction request reaches the emulator (ACK_MODE=api), or when the emulator runs the`,
      `method from the webhook's answer (ACK_MODE=webhook-reply). Both ends on one clock (performance.now() in one process), which`,
      `is why the emulator is in-process here: at ${RATE_PER_S}/s its share of the bench's event loop is small. A ${WARM_UP_S} s warm-up`,
      `in other chats comes first, unmeasured.`,
    ].join('\n'),
    body: [
      table(
        ['mode', 'updates', 'answer p50 ms', 'answer p99 ms', 'answer max ms', '👀 p50 ms', '👀 p99 ms', '👀 max ms', '👀 missing', '/healthz p99 ms', '/healthz failed'],
        rows,
      ),
      '',
      `"answer" is the webhook's answer time as the emulator saw it (POST sent → response read). "👀 missing": no 200 or no 👀;`,
      `missing updates and failed /healthz checks rank as infinitely slow in their percentiles ("∞" when a percentile falls on one).`,
      '',
      ...targets.map((t) => `- ${t.target}: **${t.measured}** (${verdict(t.met)})`),
    ].join('\n'),
    targets,
  }
}
