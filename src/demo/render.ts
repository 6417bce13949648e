import { DEMO_CHATS, type DemoStep } from './script.js'
import { percentile } from '../percentile.js'
import { formatSeconds, repliesInOrder, type TimelineRow, type Verdict } from './timeline.js'

// Fits the output in a 100-column terminal.
const CHAT_WIDTH = 19
const TEXT_WIDTH = 28
const LIVE_REPLY_WIDTH = 64
const TIMELINE_REPLY_WIDTH = 88
const MISSING = '—'

interface Column {
  readonly title: string
  readonly width: number
  readonly align: 'left' | 'right'
  readonly value: (row: TimelineRow) => string
}

const optionalSeconds = (seconds: number | undefined): string => (seconds === undefined ? MISSING : formatSeconds(seconds))

const TIMELINE_COLUMNS: readonly Column[] = [
  { title: '#', width: 3, align: 'right', value: (row) => String(row.number) },
  { title: 'chat', width: CHAT_WIDTH, align: 'left', value: (row) => DEMO_CHATS[row.step.chat].title },
  { title: 'message', width: TEXT_WIDTH, align: 'left', value: (row) => shorten(row.step.text, TEXT_WIDTH) },
  { title: 'sent', width: 5, align: 'right', value: (row) => formatSeconds(row.sentS) },
  { title: '👀 ms', width: 6, align: 'right', value: (row) => (row.ackMs === undefined ? MISSING : String(Math.round(row.ackMs))) },
  {
    title: 'brain ran',
    width: 13,
    align: 'right',
    value: (row) =>
      row.step.expects.answer === 'service' && row.brainStartS === undefined
        ? 'service'
        : `${optionalSeconds(row.brainStartS).padStart(4)} → ${optionalSeconds(row.brainEndS).padStart(4)}`,
  },
  { title: 'replied', width: 7, align: 'right', value: (row) => optionalSeconds(row.replyS) },
  // The reaction the message was left with: the outcome's, or the receipt's when there is none.
  { title: 'end', width: 3, align: 'right', value: (row) => row.reactions.at(-1)?.emoji ?? MISSING },
]

/** A line of the live conversation: the user's message as it is sent. */
export function sentLine(seconds: number, step: DemoStep): string {
  return `${clock(seconds)}  ${DEMO_CHATS[step.chat].title.padEnd(CHAT_WIDTH)}  → ${shorten(step.text, TEXT_WIDTH).padEnd(TEXT_WIDTH)}  ${step.shows}`
}

/** A line of the live conversation: the bot's reply (or a command's answer) as Telegram receives it. */
export function replyLine(seconds: number, step: DemoStep, reply: string): string {
  return `${clock(seconds)}  ${DEMO_CHATS[step.chat].title.padEnd(CHAT_WIDTH)}  ← ${shorten(oneLine(reply), LIVE_REPLY_WIDTH)}`
}

/** A line of the live conversation: the bot's status message, as sent or edited in place. */
export function statusLine(seconds: number, step: DemoStep, text: string, edited: boolean): string {
  const shown = `${shorten(oneLine(text), LIVE_REPLY_WIDTH)}${edited ? '  (edited)' : ''}`
  return `${clock(seconds)}  ${DEMO_CHATS[step.chat].title.padEnd(CHAT_WIDTH)}  … ${shown}`
}

/** The per-message table: when each was sent, acknowledged, worked on and answered. */
export function renderTimeline(rows: readonly TimelineRow[]): string[] {
  const cells = (value: (column: Column) => string): string =>
    TIMELINE_COLUMNS.map((column) => (column.align === 'left' ? value(column).padEnd(column.width) : value(column).padStart(column.width)))
      .join('  ')
      .trimEnd()
  const lines = [cells((column) => column.title)]
  for (const row of rows) {
    lines.push(cells((column) => column.value(row)))
    lines.push(`     ↳ ${row.reply === undefined ? noReply(row, rows) : shorten(oneLine(row.reply), TIMELINE_REPLY_WIDTH)}`)
  }
  return lines
}

export function renderVerdicts(verdicts: readonly Verdict[]): string[] {
  return verdicts.map((verdict) => `  ${verdict.ok ? '✓' : '✗'} ${verdict.text}`)
}

/** One line: how many messages, how fast 👀 was, and whether every reply came, in order. */
export function renderSummary(rows: readonly TimelineRow[]): string {
  const forBrain = rows.filter((row) => row.step.expects.answer !== 'service')
  const acks = forBrain.flatMap((row) => (row.ackMs === undefined ? [] : [row.ackMs]))
  const ms = (value: number | undefined): string => (value === undefined ? MISSING : `${Math.round(value)} ms`)
  const answered = rows.filter((row) => row.step.expects.answer !== 'none')
  const missing = answered.filter((row) => row.reply === undefined).length
  const delivery =
    missing > 0
      ? `${missing} of ${answered.length} replies missing`
      : repliesInOrder(rows)
        ? 'every reply delivered in order'
        : 'every reply delivered, but not in order'
  const acked = acks.length < forBrain.length ? ` (${forBrain.length - acks.length} without 👀)` : ''
  const commands = rows.length - forBrain.length
  const cancelled = rows.filter((row) => row.brainOutcome === 'cancelled').length
  return (
    `${rows.length} messages (${commands} commands), 👀 p50 ${ms(percentile(acks, 50))} / max ${ms(percentile(acks, 100))}${acked}, ` +
    `${delivery}${cancelled > 0 ? `, ${cancelled} cancelled` : ''}`
  )
}

function clock(seconds: number): string {
  return `${formatSeconds(seconds).padStart(6)} s`
}

// A multi-line answer (/status) reads on one line of the log.
function oneLine(text: string): string {
  return text.trim().split('\n').filter((line) => line.trim() !== '').join(' · ')
}

function noReply(row: TimelineRow, rows: readonly TimelineRow[]): string {
  const { expects } = row.step
  if (expects.answer !== 'none') return '(no reply)'
  const cancel = rows.find((candidate) => candidate.step.id === expects.cancelledBy)
  return `(no reply: cancelled by ${cancel === undefined ? expects.cancelledBy : `#${cancel.number} ${cancel.step.text}`})`
}

function shorten(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, width - 1)}…`
}
