import fs from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { loadStateDir } from '../config.js'
import { engineWakeUp } from '../dispatch/engine.js'
import { MESSAGE_STATES, type ListFilter, type MessageState, type StoredMessage } from '../store/inbox.js'
import { createPool, PostgresStore } from '../store/postgres/store.js'
import { CommandFailed } from './failure.js'
import { INBOX_FILE, SqliteInbox } from '../store/sqlite.js'
import { UsageError } from './usage.js'

const TEXT_PREVIEW_CHARS = 40

/**
 * `coordinator inbox [--chat ID] [--state STATE] [--limit N] [--json]` lists messages;
 * `coordinator inbox retry ID` re-queues a failed, timed-out or cancelled one (a running service
 * picks it up within seconds).
 */
export async function inboxCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: joinNegativeValues(args, ['--chat']),
    allowPositionals: true,
    options: {
      chat: { type: 'string' },
      state: { type: 'string' },
      limit: { type: 'string', default: '50' },
      json: { type: 'boolean', default: false },
    },
  })
  const inbox = await openInbox()
  try {
    if (positionals[0] === 'retry') return await retry(inbox, positionals[1], values.json)
    if (positionals.length > 0) throw new UsageError(`unknown inbox subcommand "${positionals[0]}"; use "inbox" or "inbox retry ID"`)
    const messages = await inbox.list({
      chatId: values.chat === undefined ? undefined : wholeNumber('--chat', values.chat, true),
      state: values.state === undefined ? undefined : messageState(values.state),
      limit: wholeNumber('--limit', values.limit, false),
    })
    process.stdout.write(values.json ? `${JSON.stringify(messages.map(toJson), null, 2)}\n` : formatTable(messages))
    return 0
  } finally {
    await inbox.close()
  }
}

/** What the command reads: the SQLite inbox in STATE_DIR, or the shared store with DATABASE_URL. */
interface InboxView {
  list(filter: ListFilter): StoredMessage[] | Promise<StoredMessage[]>
  retry(seq: number): StoredMessage | Promise<StoredMessage>
  close(): void | Promise<void>
}

async function openInbox(): Promise<InboxView> {
  const databaseUrl = process.env['DATABASE_URL']
  if (databaseUrl !== undefined && databaseUrl !== '') {
    const pool = createPool(databaseUrl, 1, 'coordinator inbox')
    const store = new PostgresStore(pool, engineWakeUp, 'cli')
    try {
      await pool.query('SELECT 1 FROM coordinator.messages LIMIT 1')
    } catch (error) {
      await pool.end()
      throw new CommandFailed(`the Postgres store in DATABASE_URL cannot be read: ${(error as Error).message}`)
    }
    return { list: (filter) => store.list(filter), retry: (seq) => store.retry(seq), close: () => pool.end() }
  }
  const stateDir = loadStateDir()
  if (!fs.existsSync(path.join(stateDir, INBOX_FILE))) {
    throw new UsageError(`no inbox at ${path.join(stateDir, INBOX_FILE)}; set STATE_DIR to the service's state directory (or DATABASE_URL in the Postgres mode)`)
  }
  return new SqliteInbox(stateDir)
}

async function retry(inbox: InboxView, id: string | undefined, json: boolean): Promise<number> {
  if (id === undefined) throw new UsageError('inbox retry needs the message id (the first column of `coordinator inbox`)')
  let message: StoredMessage
  try {
    message = await inbox.retry(wholeNumber('ID', id, false))
  } catch (error) {
    if (error instanceof RangeError) throw new UsageError(error.message)
    throw error
  }
  process.stdout.write(json ? `${JSON.stringify(toJson(message))}\n` : `message ${message.seq} re-queued (chat ${message.chatId})\n`)
  return 0
}

function toJson(message: StoredMessage) {
  return {
    id: message.seq,
    update_id: message.updateId,
    chat_id: message.chatId,
    message_id: message.messageId,
    state: message.state,
    attempts: message.attempts,
    redelivered: message.interruptions > 0,
    received_at: iso(message.receivedAt),
    started_at: iso(message.startedAt),
    finished_at: iso(message.finishedAt),
    exit_code: message.exitCode,
    exit_signal: message.exitSignal,
    stderr_tail: message.stderrTail,
    reply_state: message.replyState,
    text: messageText(message),
  }
}

function formatTable(messages: StoredMessage[]): string {
  if (messages.length === 0) return 'no messages\n'
  const rows = messages.map((message) => [
    String(message.seq),
    String(message.chatId),
    message.state + (message.interruptions > 0 ? '*' : ''),
    String(message.attempts),
    exitOf(message),
    message.replyState,
    new Date(message.receivedAt).toISOString().replace('T', ' ').slice(0, 19),
    preview(messageText(message)),
  ])
  const header = ['ID', 'CHAT', 'STATE', 'TRIES', 'EXIT', 'REPLY', 'RECEIVED (UTC)', 'TEXT']
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] as string).length)))
  const line = (cells: string[]): string => cells.map((cell, column) => cell.padEnd(widths[column] as number)).join('  ').trimEnd()
  const footer = messages.some((message) => message.interruptions > 0) ? '* redelivered after a restart\n' : ''
  return `${[header, ...rows].map(line).join('\n')}\n${footer}`
}

function exitOf(message: StoredMessage): string {
  if (message.exitSignal) return message.exitSignal
  return message.exitCode === null ? '-' : String(message.exitCode)
}

function messageText(message: StoredMessage): string {
  try {
    const update = JSON.parse(message.updateJson) as { message?: { text?: string; caption?: string } }
    return update.message?.text ?? update.message?.caption ?? ''
  } catch {
    return ''
  }
}

function preview(text: string): string {
  const flat = printable(text.replace(/\s+/gu, ' '))
  return flat.length > TEXT_PREVIEW_CHARS ? `${flat.slice(0, TEXT_PREVIEW_CHARS - 1)}…` : flat
}

// C0 and C1 controls, DEL, and the bidirectional overrides and isolates that reorder a line.
// eslint-disable-next-line no-control-regex -- control characters are what it looks for
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu

/**
 * Anyone can write a message's text: an escape sequence in it must print as text, never reach the
 * operator's terminal as a command (clearing the screen, retitling the window, faking lines).
 */
function printable(text: string): string {
  return text.replace(UNPRINTABLE, (char) => `\\u${(char.codePointAt(0) ?? 0).toString(16).padStart(4, '0')}`)
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString()
}

function wholeNumber(name: string, text: string, signed: boolean): number {
  const value = Number(text)
  if (!(signed ? /^-?\d+$/u : /^\d+$/u).test(text) || !Number.isSafeInteger(value)) {
    throw new UsageError(`${name} must be a whole number; got "${text}"`)
  }
  return value
}

function messageState(text: string): MessageState {
  if (!(MESSAGE_STATES as readonly string[]).includes(text)) {
    throw new UsageError(`--state must be one of ${MESSAGE_STATES.join(', ')}; got "${text}"`)
  }
  return text as MessageState
}

/**
 * parseArgs takes "-100777" after "--chat" for an option, so group chats (negative ids) could not be
 * given; "--chat -100777" becomes "--chat=-100777".
 */
function joinNegativeValues(args: readonly string[], options: readonly string[]): string[] {
  const joined: string[] = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string
    const next = args[i + 1]
    if (options.includes(arg) && next !== undefined && /^-\d+$/u.test(next)) {
      joined.push(`${arg}=${next}`)
      i++
    } else {
      joined.push(arg)
    }
  }
  return joined
}
