import { DEMO_CHATS, type DemoStep } from './script.js'
import { firstLine, formatSeconds, percentile, repliesInOrder, type TimelineRow, type Verdict } from './timeline.js'

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
    value: (row) => `${optionalSeconds(row.brainStartS).padStart(4)} → ${optionalSeconds(row.brainEndS).padStart(4)}`,
  },
  { title: 'replied', width: 7, align: 'right', value: (row) => optionalSeconds(row.replyS) },
]

/** A line of the live conversation: the user's message as it is sent. */
export function sentLine(seconds: number, step: DemoStep): string {
  return `${clock(seconds)}  ${DEMO_CHATS[step.chat].title.padEnd(CHAT_WIDTH)}  → ${shorten(step.text, TEXT_WIDTH).padEnd(TEXT_WIDTH)}  ${step.shows}`
}

/** A line of the live conversation: the bot's reply as Telegram receives it. */
export function replyLine(seconds: number, step: DemoStep, reply: string): string {
  return `${clock(seconds)}  ${DEMO_CHATS[step.chat].title.padEnd(CHAT_WIDTH)}  ← ${shorten(firstLine(reply), LIVE_REPLY_WIDTH)}`
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
    lines.push(`     ↳ ${row.reply === undefined ? '(no reply)' : shorten(firstLine(row.reply), TIMELINE_REPLY_WIDTH)}`)
  }
  return lines
}

export function renderVerdicts(verdicts: readonly Verdict[]): string[] {
  return verdicts.map((verdict) => `  ${verdict.ok ? '✓' : '✗'} ${verdict.text}`)
}

/** One line: how many messages, how fast 👀 was, and whether every reply came, in order. */
export function renderSummary(rows: readonly TimelineRow[]): string {
  const acks = rows.flatMap((row) => (row.ackMs === undefined ? [] : [row.ackMs]))
  const ms = (value: number | undefined): string => (value === undefined ? MISSING : `${Math.round(value)} ms`)
  const replies = rows.filter((row) => row.reply !== undefined).length
  const delivery =
    replies < rows.length
      ? `${rows.length - replies} of ${rows.length} replies missing`
      : repliesInOrder(rows)
        ? 'every reply delivered in order'
        : 'every reply delivered, but not in order'
  const acked = acks.length < rows.length ? ` (${rows.length - acks.length} without 👀)` : ''
  return `${rows.length} messages, 👀 p50 ${ms(percentile(acks, 50))} / max ${ms(percentile(acks, 100))}${acked}, ${delivery}`
}

function clock(seconds: number): string {
  return `${formatSeconds(seconds).padStart(6)} s`
}

function shorten(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, width - 1)}…`
}
