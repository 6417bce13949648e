import { PROGRESS_EDIT_EVERY_MS } from '../telegram/feedback.js'
import type { DeliveryAttempt, RecordedCall } from '../emulator/index.js'
import { DEFAULTS } from '../config.js'
import { DEMO_CHATS, type DemoChatKey, type DemoStep, type RunClaim } from './script.js'
import type { ServiceLogLine } from './service.js'

/** How soon a command must be answered: the service answers it from the webhook, not the queue. */
const COMMAND_ANSWER_LIMIT_S = 1
/** How soon after /cancel the brain must be gone (SIGTERM to its group; the echo brain obeys at once). */
const CANCEL_LIMIT_S = 2
// A typing call sent just before a run ended can reach the emulator a moment after its `child reaped`.
const TYPING_IN_FLIGHT_S = 0.5
// A status must be up longer than the edit interval by this much before a missing edit counts.
const EDIT_MARGIN_MS = 500

/** A scripted message as it was sent through the emulator. */
export interface SentMessage {
  readonly step: DemoStep
  readonly updateId: number
  readonly messageId: number
  /** Date.now() ms when the user sent it. */
  readonly sentAt: number
}

/** A text the chat saw at a moment, in seconds since the first message. */
export interface Shown {
  readonly atS: number
  readonly text: string
}

/** The status message the bot kept in reply to a message while its brain worked. */
export interface StatusMessage extends Shown {
  readonly edits: readonly Shown[]
  readonly deletedS: number | undefined
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
  /** The last attempt's `outcome` in the service's log: exited, cancelled, timed_out, … */
  readonly brainOutcome: string | undefined
  readonly replyS: number | undefined
  readonly reply: string | undefined
  /** The bot's reactions on the message, in order: the receipt first, the outcome's last. */
  readonly reactions: readonly { readonly atS: number; readonly emoji: string }[]
  readonly statuses: readonly StatusMessage[]
  /** When "typing…" was sent to its chat while its brain ran. */
  readonly typingS: readonly number[]
}

/** The rows, and what they leave out: "typing…" sent while none of its chat's brains ran. */
export interface Timeline {
  readonly rows: readonly TimelineRow[]
  readonly strayTyping: readonly { readonly chat: DemoChatKey; readonly atS: number }[]
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

/**
 * What a successful call did about a message of the script, as its chat sees it. Replies are sent
 * as HTML and status messages as plain text: that is how the two are told apart.
 */
export type BotAction =
  | { readonly kind: 'reply'; readonly text: string }
  | { readonly kind: 'status'; readonly text: string; readonly statusId: number }
  | { readonly kind: 'reaction'; readonly emoji: string }

/** What `call` did about message `messageId` of chat `chatId`, if anything. */
export function actionAbout(call: RecordedCall, chatId: number, messageId: number): BotAction | undefined {
  if (!call.ok || call.params['chat_id'] !== chatId) return undefined
  const text = sentText(call)
  if (call.method === 'sendMessage' && repliedTo(call) === messageId) {
    if (call.params['parse_mode'] === 'HTML') return { kind: 'reply', text }
    const statusId = (call.result as { message_id?: unknown } | undefined)?.message_id
    return typeof statusId === 'number' ? { kind: 'status', text, statusId } : undefined
  }
  if (call.method === 'setMessageReaction' && call.params['message_id'] === messageId) {
    const reactions: unknown = call.params['reaction']
    const [reaction] = (Array.isArray(reactions) ? reactions : []) as readonly { emoji?: unknown }[]
    return { kind: 'reaction', emoji: String(reaction?.emoji ?? '') }
  }
  return undefined
}

/** A successful edit or deletion of one of the bot's messages. */
export function changeOf(
  call: RecordedCall,
  chatId: number,
  botMessageId: number,
): { readonly kind: 'edit'; readonly text: string } | { readonly kind: 'delete' } | undefined {
  if (!call.ok || call.params['chat_id'] !== chatId || call.params['message_id'] !== botMessageId) return undefined
  if (call.method === 'editMessageText') return { kind: 'edit', text: sentText(call) }
  return call.method === 'deleteMessage' ? { kind: 'delete' } : undefined
}

export function buildTimeline({ origin, sent, calls, deliveries, logs }: Observations): Timeline {
  const seconds = (ms: number): number => (ms - origin) / 1000
  const optionalSeconds = (ms: number | undefined): number | undefined => (ms === undefined ? undefined : seconds(ms))
  const typing = calls.filter((call) => call.ok && call.method === 'sendChatAction' && call.params['action'] === 'typing')
  const rows = sent.map((message, index): TimelineRow => {
    const chatId = DEMO_CHATS[message.step.chat].id
    const received = deliveries.find((attempt) => attempt.update_id === message.updateId && attempt.error === undefined)
    const actions = calls.flatMap((call) => {
      const action = actionAbout(call, chatId, message.messageId)
      return action === undefined ? [] : [{ call, action }]
    })
    const reactions = actions.flatMap(({ call, action }) => (action.kind === 'reaction' ? [{ call, emoji: action.emoji }] : []))
    const ack = reactions[0]?.call
    // The last: a restart note or a long reply's earlier parts come before it.
    const reply = actions.findLast(({ action }) => action.kind === 'reply')
    const statuses = actions.flatMap(({ call, action }) => {
      if (action.kind !== 'status') return []
      const changes = calls.flatMap((later) => {
        const change = changeOf(later, chatId, action.statusId)
        return change === undefined ? [] : [{ atS: seconds(later.wallClockMs), change }]
      })
      const edits = changes.flatMap(({ atS, change }) => (change.kind === 'edit' ? [{ atS, text: change.text }] : []))
      const deletedS = changes.find(({ change }) => change.kind === 'delete')?.atS
      return [{ atS: seconds(call.wallClockMs), text: action.text, edits, deletedS }]
    })
    const brainLines = logs.filter((line) => line['update_id'] === message.updateId)
    const started = brainLines.find((line) => line.msg === 'child started')?.time
    const reaped = brainLines.findLast((line) => line.msg === 'child reaped')
    const ranAt = (ms: number): boolean => started !== undefined && reaped !== undefined && ms >= started && ms <= reaped.time
    return {
      number: index + 1,
      step: message.step,
      sentS: seconds(message.sentAt),
      ackMs: received && ack ? ack.at - received.sentAt : undefined,
      ackS: optionalSeconds(ack?.wallClockMs),
      brainStartS: optionalSeconds(started),
      brainEndS: optionalSeconds(reaped?.time),
      brainOutcome: reaped === undefined ? undefined : String(reaped['outcome']),
      replyS: optionalSeconds(reply?.call.wallClockMs),
      reply: reply?.action.kind === 'reply' ? reply.action.text : undefined,
      reactions: reactions.map(({ call, emoji }) => ({ atS: seconds(call.wallClockMs), emoji })),
      statuses,
      typingS: typing.filter((call) => call.params['chat_id'] === chatId && ranAt(call.wallClockMs)).map((call) => seconds(call.wallClockMs)),
    }
  })
  const strayTyping = typing.flatMap((call) => {
    const chat = chatKeyOf(call.params['chat_id'])
    const atS = seconds(call.wallClockMs)
    const inRun = rows.some(
      (row) =>
        row.step.chat === chat &&
        row.brainStartS !== undefined &&
        row.brainEndS !== undefined &&
        atS >= row.brainStartS &&
        atS <= row.brainEndS + TYPING_IN_FLIGHT_S,
    )
    return chat === undefined || inRun ? [] : [{ chat, atS }]
  })
  return { rows, strayTyping }
}

/** The demo's claims: each message's fate as the script expects it, the runs' order, typing, progress, /cancel, reactions. */
export function judgeTimeline({ rows, strayTyping }: Timeline): Verdict[] {
  return [
    judgeBasics(rows),
    ...rows.flatMap((row) => (row.step.runs ? judgeRun(row, row.step.runs, rows) : [])),
    judgeTyping(rows, strayTyping),
    ...rows.flatMap((row) => (row.step.progress ? [judgeProgress(row)] : [])),
    ...judgeCommands(rows),
    ...rows.flatMap((row) => (row.step.expects.answer === 'none' ? [judgeCancel(row, row.step.expects.cancelledBy, rows)] : [])),
    judgeReactions(rows),
  ]
}

function judgeBasics(rows: readonly TimelineRow[]): Verdict {
  const problems: string[] = []
  for (const row of rows) {
    const { expects } = row.step
    if (expects.answer === 'service') continue
    const label = `#${row.number}`
    if (row.ackMs === undefined) problems.push(`${label} got no 👀 reaction`)
    if (row.brainStartS === undefined || row.brainEndS === undefined) {
      problems.push(`${label}: the service logged no complete brain run (child started / child reaped)`)
    }
    if (expects.answer !== 'brain') continue
    if (row.reply === undefined) problems.push(`${label} got no reply`)
    else if (!row.reply.startsWith(expects.reply)) {
      problems.push(`${label}'s reply was "${firstLine(row.reply)}"; expected it to begin "${expects.reply}"`)
    }
  }
  if (problems.length === 0 && !repliesInOrder(rows)) problems.push('replies arrived out of order in a chat')
  if (problems.length > 0) return { ok: false, text: problems.join('; ') }
  return { ok: true, text: 'every message for the brain got 👀 and a brain run, and the reply the script expects, in order' }
}

function judgeRun(row: TimelineRow, claim: RunClaim, rows: readonly TimelineRow[]): Verdict[] {
  const alongside = 'alongside' in claim
  const otherId = alongside ? claim.alongside : claim.after
  const other = rows.find((candidate) => candidate.step.id === otherId)
  const subject = subjectOf(row)
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

function judgeTyping(rows: readonly TimelineRow[], strayTyping: Timeline['strayTyping']): Verdict {
  const runs = rows.filter((row) => row.brainStartS !== undefined && row.brainEndS !== undefined)
  const silent = runs.filter((row) => row.typingS.length === 0).map((row) => `#${row.number}`)
  const calls = runs.reduce((sum, row) => sum + row.typingS.length, 0)
  const problems = [
    ...(silent.length > 0 ? [`no "typing…" while the brain ran for ${silent.join(', ')}`] : []),
    ...strayTyping.map(({ chat, atS }) => `"typing…" in ${DEMO_CHATS[chat].name} at ${formatSeconds(atS)} s, when no brain of its ran`),
  ]
  if (problems.length > 0) return { ok: false, text: problems.join('; ') }
  const counts = `${calls} sendChatAction calls over ${runs.length} runs`
  return { ok: true, text: `every brain run showed "typing…" (${counts}), and none came after a run ended` }
}

function judgeProgress(row: TimelineRow): Verdict {
  const subject = `${subjectOf(row)} showed progress`
  const [status, ...extra] = row.statuses
  if (status === undefined) return { ok: false, text: `${subject}: no status message (a plain-text sendMessage in reply to it)` }
  if (extra.length > 0) return { ok: false, text: `${subject} in ${row.statuses.length} status messages, not one edited in place` }
  // The echo brain's later progress comes while it still runs; the edit interval counts from the status.
  const shownMs = row.brainEndS === undefined ? 0 : (row.brainEndS - status.atS) * 1000
  const editDue = shownMs > PROGRESS_EDIT_EVERY_MS + EDIT_MARGIN_MS
  const editCount = status.edits.length
  const edited =
    editCount > 0
      ? `edited ${editCount}× in place`
      : editDue
        ? 'never edited'
        : `not edited (the brain ended ${formatSeconds(shownMs / 1000)} s later; edits come at most every ${PROGRESS_EDIT_EVERY_MS / 1000} s)`
  const { deletedS } = status
  const deleted =
    deletedS === undefined
      ? 'never deleted'
      : row.replyS === undefined
        ? `deleted at ${formatSeconds(deletedS)} s, but no reply came`
        : `deleted at ${formatSeconds(deletedS)} s, ${deletedS <= row.replyS ? 'before' : 'after'} its reply (${formatSeconds(row.replyS)} s)`
  const ok = (editCount > 0 || !editDue) && deletedS !== undefined && row.replyS !== undefined && deletedS <= row.replyS
  return { ok, text: `${subject} in one status message: sent at ${formatSeconds(status.atS)} s, ${edited}, ${deleted}` }
}

function judgeCommands(rows: readonly TimelineRow[]): Verdict[] {
  const commands = rows.filter((row) => row.step.expects.answer === 'service')
  if (commands.length === 0) return []
  const problems: string[] = []
  for (const row of commands) {
    const { expects } = row.step
    const label = `#${row.number} ${row.step.text}`
    if (row.replyS === undefined || row.reply === undefined) problems.push(`${label} got no answer`)
    else {
      if (expects.answer === 'service' && !row.reply.startsWith(expects.reply)) {
        problems.push(`${label}'s answer was "${firstLine(row.reply)}"; expected it to begin "${expects.reply}"`)
      }
      if (row.replyS - row.sentS > COMMAND_ANSWER_LIMIT_S) problems.push(`${label} was answered after ${formatSeconds(row.replyS - row.sentS)} s`)
    }
    if (row.brainStartS !== undefined) problems.push(`${label} started a brain`)
    if (row.reactions.length > 0) problems.push(`${label} got a reaction (${row.reactions[0]?.emoji})`)
  }
  const names = commands.map((row) => row.step.text).join(' and ')
  if (problems.length > 0) return [{ ok: false, text: problems.join('; ') }]
  const latencies = commands.map((row) => formatMs((row.replyS ?? 0) - row.sentS)).join(', ')
  const text = `${names} were answered by the service within ${COMMAND_ANSWER_LIMIT_S} s (${latencies}), with no 👀 and no brain run`
  return [{ ok: true, text }]
}

function judgeCancel(row: TimelineRow, cancelId: string, rows: readonly TimelineRow[]): Verdict {
  const cancel = rows.find((candidate) => candidate.step.id === cancelId)
  if (!cancel) return { ok: false, text: `#${row.number} is cancelled by a step "${cancelId}" the script does not have` }
  const subject = `#${cancel.number} ${cancel.step.text}`
  const problems: string[] = []
  const answeredS = cancel.replyS === undefined ? undefined : cancel.replyS - cancel.sentS
  if (answeredS === undefined) problems.push('it got no answer')
  else if (answeredS > COMMAND_ANSWER_LIMIT_S) problems.push(`it was answered after ${formatSeconds(answeredS)} s`)
  const stoppedS = row.brainEndS === undefined ? undefined : row.brainEndS - cancel.sentS
  if (stoppedS === undefined) problems.push(`#${row.number}'s brain never ended`)
  else if (stoppedS < 0) problems.push(`#${row.number}'s brain had already ended`)
  else if (stoppedS > CANCEL_LIMIT_S) problems.push(`#${row.number}'s brain ended ${formatSeconds(stoppedS)} s after it`)
  else if (row.brainOutcome !== 'cancelled') problems.push(`#${row.number}'s brain ended "${row.brainOutcome}", not cancelled`)
  if (row.reply !== undefined) problems.push(`#${row.number} got a reply: "${firstLine(row.reply)}"`)
  if (problems.length > 0) return { ok: false, text: `${subject} did not stop #${row.number}'s brain as it should: ${problems.join('; ')}` }
  return {
    ok: true,
    text:
      `${subject} was answered in ${formatMs(answeredS ?? 0)}, and #${row.number}'s brain was stopped and reaped ` +
      `${formatMs(stoppedS ?? 0)} after it was sent; #${row.number} got no reply`,
  }
}

function judgeReactions(rows: readonly TimelineRow[]): Verdict {
  const problems: string[] = []
  const labelsByEmoji = new Map<string, string[]>()
  for (const row of rows) {
    const { expects } = row.step
    const label = `#${row.number}`
    const last = row.reactions.at(-1)
    if (expects.answer === 'brain') {
      if (row.reactions.length < 2 || last === undefined) problems.push(`${label} got no final reaction`)
      else if (last.emoji !== expects.reaction) problems.push(`${label} ended with ${last.emoji}, not ${expects.reaction}`)
      else if (row.replyS !== undefined && last.atS < row.replyS) problems.push(`${label}'s ${last.emoji} came before its reply`)
      else labelsByEmoji.set(last.emoji, [...(labelsByEmoji.get(last.emoji) ?? []), label])
    } else if (expects.answer === 'none') {
      if (row.reactions.length !== 1 || last?.emoji !== DEFAULTS.ackEmoji) {
        const seen = row.reactions.map((reaction) => reaction.emoji).join(' then ') || 'none'
        problems.push(`${label} was to keep its ${DEFAULTS.ackEmoji}; it got ${seen}`)
      }
    }
  }
  if (problems.length > 0) return { ok: false, text: `final reactions: ${problems.join('; ')}` }
  const finals = [...labelsByEmoji].map(([emoji, labels]) => `${emoji} on ${labels.join(' ')}`).join(', ')
  const kept = rows.filter((row) => row.step.expects.answer === 'none').map((row) => `; #${row.number} (cancelled) kept its ${DEFAULTS.ackEmoji}`)
  return { ok: true, text: `the final reactions replaced ${DEFAULTS.ackEmoji} after each reply: ${finals}${kept.join('')}` }
}

/** True when every chat's brain replies arrived in the order its messages were sent. */
export function repliesInOrder(rows: readonly TimelineRow[]): boolean {
  for (const chat of new Set(rows.map((row) => row.step.chat))) {
    const replyTimes = rows.filter((row) => row.step.chat === chat && row.step.expects.answer === 'brain').map((row) => row.replyS ?? Number.NaN)
    if (replyTimes.some((time, index) => Number.isNaN(time) || (index > 0 && time < (replyTimes[index - 1] as number)))) return false
  }
  return true
}

export function firstLine(text: string): string {
  return text.split('\n', 1)[0] ?? ''
}

export function formatSeconds(seconds: number): string {
  return seconds.toFixed(1)
}

function formatMs(seconds: number): string {
  return `${Math.round(seconds * 1000)} ms`
}

function subjectOf(row: TimelineRow): string {
  return `#${row.number} (${DEMO_CHATS[row.step.chat].name})`
}

function chatKeyOf(chatId: unknown): DemoChatKey | undefined {
  return (Object.keys(DEMO_CHATS) as DemoChatKey[]).find((key) => DEMO_CHATS[key].id === chatId)
}

// The text as the chat shows it (the emulator's message, HTML parsed), else as the bot sent it.
function sentText(call: RecordedCall): string {
  const shown = (call.result as { text?: unknown } | undefined)?.text
  return typeof shown === 'string' ? shown : String(call.params['text'])
}

function repliedTo(call: RecordedCall): unknown {
  const replyTo = call.params['reply_parameters']
  return typeof replyTo === 'object' && replyTo !== null ? (replyTo as Record<string, unknown>)['message_id'] : undefined
}
