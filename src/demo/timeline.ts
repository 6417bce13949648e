import type { DeliveryAttempt, RecordedCall } from '../emulator/index.js'
import { DEMO_CHATS, type DemoStep, type RunClaim } from './script.js'
import type { ServiceLogLine } from './service.js'

/** A scripted message as it was sent through the emulator. */
export interface SentMessage {
  readonly step: DemoStep
  readonly updateId: number
  readonly messageId: number
  /** Date.now() ms when the user sent it. */
  readonly sentAt: number
}

/** What happened to one message, in seconds since the first message (latency in ms). */
export interface TimelineRow {
  readonly number: number
  readonly step: DemoStep
  readonly sentS: number
  /** Telegram posting the update to the webhook → the 👀 reaction reaching Telegram. */
  readonly ackMs: number | undefined
  readonly ackS: number | undefined
  readonly brainStartS: number | undefined
  readonly brainEndS: number | undefined
  readonly replyS: number | undefined
  readonly reply: string | undefined
}

/** What the demo records while it runs: the emulator's side and the service's log. */
export interface Observations {
  /** Date.now() ms of the first message: time 0 of the timeline. */
  readonly origin: number
  readonly sent: readonly SentMessage[]
  readonly calls: readonly RecordedCall[]
  readonly deliveries: readonly DeliveryAttempt[]
  readonly logs: readonly ServiceLogLine[]
}

/** One thing the demo claims, and whether it held. */
export interface Verdict {
  readonly ok: boolean
  readonly text: string
}

export function buildTimeline({ origin, sent, calls, deliveries, logs }: Observations): TimelineRow[] {
  const seconds = (ms: number | undefined): number | undefined => (ms === undefined ? undefined : (ms - origin) / 1000)
  return sent.map((message, index) => {
    const chatId = DEMO_CHATS[message.step.chat].id
    const received = deliveries.find((attempt) => attempt.update_id === message.updateId && attempt.error === undefined)
    const ack = calls.find((call) => isCallAbout(call, 'setMessageReaction', chatId, message.messageId))
    const reply = calls.find((call) => isCallAbout(call, 'sendMessage', chatId, message.messageId))
    const brainLines = logs.filter((line) => line['update_id'] === message.updateId)
    return {
      number: index + 1,
      step: message.step,
      sentS: (message.sentAt - origin) / 1000,
      ackMs: received && ack ? ack.at - received.sentAt : undefined,
      ackS: seconds(ack?.wallClockMs),
      brainStartS: seconds(brainLines.find((line) => line.msg === 'child started')?.time),
      brainEndS: seconds(brainLines.findLast((line) => line.msg === 'child reaped')?.time),
      replyS: seconds(reply?.wallClockMs),
      reply: reply === undefined ? undefined : String(reply.params['text']),
    }
  })
}

/** The demo's claims about the timeline: each step's 👀, brain run and reply, their order, and its `runs` claim. */
export function judgeTimeline(rows: readonly TimelineRow[]): Verdict[] {
  const problems: Verdict[] = []
  for (const row of rows) {
    const label = `#${row.number}`
    if (row.ackMs === undefined) problems.push({ ok: false, text: `${label} got no 👀 reaction` })
    if (row.brainStartS === undefined || row.brainEndS === undefined) {
      problems.push({ ok: false, text: `${label}: the service logged no complete brain run (child started / child reaped)` })
    }
    if (row.reply === undefined) problems.push({ ok: false, text: `${label} got no reply` })
    else if (!row.reply.startsWith(row.step.reply)) {
      problems.push({ ok: false, text: `${label}'s reply was "${firstLine(row.reply)}"; expected it to begin "${row.step.reply}"` })
    }
  }
  if (rows.every((row) => row.reply !== undefined) && !repliesInOrder(rows)) {
    problems.push({ ok: false, text: 'replies arrived out of order in a chat' })
  }
  const basics = problems.length > 0 ? problems : [{ ok: true, text: 'every message got 👀, a brain run and the reply the script expects, in order' }]
  return [...basics, ...rows.flatMap((row) => (row.step.runs ? judgeRun(row, row.step.runs, rows) : []))]
}

function judgeRun(row: TimelineRow, claim: RunClaim, rows: readonly TimelineRow[]): Verdict[] {
  const alongside = 'alongside' in claim
  const otherId = alongside ? claim.alongside : claim.after
  const other = rows.find((candidate) => candidate.step.id === otherId)
  const subject = `#${row.number} (${DEMO_CHATS[row.step.chat].name})`
  if (!other) return [{ ok: false, text: `${subject} refers to a step "${otherId}" the script does not have` }]
  const start = row.brainStartS
  const otherEnd = other.brainEndS
  if (start === undefined || otherEnd === undefined) {
    return [{ ok: false, text: `${subject}: no brain times to compare with #${other.number}'s` }]
  }
  const times = `its brain started at ${formatSeconds(start)} s, #${other.number}'s ended at ${formatSeconds(otherEnd)} s`
  if (alongside) return [{ ok: start < otherEnd, text: `${subject} ran alongside #${other.number}: ${times}` }]
  const waited = { ok: start >= otherEnd, text: `${subject} waited for #${other.number}: ${times}` }
  // The receipt must not wait for the turn: that is the point of acknowledging at once.
  const ack =
    row.ackS === undefined
      ? { ok: false, text: `${subject} got no 👀 while it waited` }
      : {
          ok: row.ackS < start,
          text: `${subject} got its 👀 while it waited, at ${formatSeconds(row.ackS)} s, not when its turn came`,
        }
  return [waited, ack]
}

/** True when every chat's replies arrived in the order its messages were sent. */
export function repliesInOrder(rows: readonly TimelineRow[]): boolean {
  for (const chat of new Set(rows.map((row) => row.step.chat))) {
    const replyTimes = rows.filter((row) => row.step.chat === chat).map((row) => row.replyS ?? Number.NaN)
    if (replyTimes.some((time, index) => Number.isNaN(time) || (index > 0 && time < (replyTimes[index - 1] as number)))) return false
  }
  return true
}

/** The nearest-rank percentile of `values` (p in 0–100); undefined for none. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]
}

export function firstLine(text: string): string {
  return text.split('\n', 1)[0] ?? ''
}

export function formatSeconds(seconds: number): string {
  return seconds.toFixed(1)
}

/** A successful `method` call (sendMessage: a reply) about one message of a chat. */
export function isCallAbout(call: RecordedCall, method: 'sendMessage' | 'setMessageReaction', chatId: number, messageId: number): boolean {
  if (call.method !== method || !call.ok || call.params['chat_id'] !== chatId) return false
  return (method === 'sendMessage' ? repliedTo(call) : call.params['message_id']) === messageId
}

function repliedTo(call: RecordedCall): unknown {
  const replyTo = call.params['reply_parameters']
  return typeof replyTo === 'object' && replyTo !== null ? (replyTo as Record<string, unknown>)['message_id'] : undefined
}
