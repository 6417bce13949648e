import type { Message, Update } from 'grammy/types'
import type { RecordedCall } from '../emulator/index.js'

/** A file shown in the chat page, served by the page server from the emulated Telegram. */
export interface PageFile {
  readonly url: string
  readonly name: string
  readonly size: number
}

/** One message in a chat, as the page shows it. */
export interface PageMessage {
  readonly chatId: number
  readonly messageId: number
  readonly from: { readonly id: number; readonly name: string; readonly isBot: boolean }
  readonly date: number
  readonly replyTo?: number
  /** Plain text (or caption); shown as is unless `html` is set. */
  readonly text?: string
  /** The Telegram HTML the bot sent (parse_mode HTML); the page renders only Telegram's tags. */
  readonly html?: string
  readonly photo?: PageFile
  readonly document?: PageFile
  /** The update that brought a user's message, to tie the service's log lines to it. */
  readonly updateId?: number
}

/**
 * What the page learns, in order, over server-sent events: messages, their edits, deletions and
 * reactions, "typing…", and the service's log lines about each update (its timeline).
 */
export type PageEvent =
  | { readonly type: 'message'; readonly at: number; readonly message: PageMessage }
  | { readonly type: 'edit'; readonly at: number; readonly chatId: number; readonly messageId: number; readonly text: string; readonly html?: string }
  | { readonly type: 'delete'; readonly at: number; readonly chatId: number; readonly messageId: number }
  | { readonly type: 'reaction'; readonly at: number; readonly chatId: number; readonly messageId: number; readonly emoji: string | null }
  | { readonly type: 'typing'; readonly at: number; readonly chatId: number }
  | { readonly type: 'log'; readonly at: number; readonly updateId: number; readonly chatId: number | null; readonly msg: string; readonly level: number; readonly fields: Record<string, unknown> }

/** The URL the page server serves a Telegram file under. */
export const fileUrl = (fileId: string): string => `/api/files/${encodeURIComponent(fileId)}`

/** The page's view of a message a user sent through the emulator. */
export function userMessage(update: Update): PageMessage {
  const message = update.message
  if (message === undefined) throw new TypeError(`update ${update.update_id} carries no message`)
  return { ...pageMessage(message), updateId: update.update_id }
}

/** The page event for a Bot API call the bot made, or undefined for one the page does not show. */
export function callEvent(call: RecordedCall): PageEvent | undefined {
  if (!call.ok) return undefined
  const at = call.wallClockMs
  const params = call.params
  const chatId = Number(params['chat_id'])
  switch (call.method) {
    case 'sendMessage':
    case 'sendPhoto':
    case 'sendDocument': {
      const message = pageMessage(call.result as Message)
      const html = isHtml(params) && call.method === 'sendMessage' ? stringParam(params, 'text') : undefined
      return { type: 'message', at, message: html === undefined ? message : { ...message, html } }
    }
    case 'editMessageText': {
      const edited = call.result as Message
      const html = isHtml(params) ? stringParam(params, 'text') : undefined
      return { type: 'edit', at, chatId, messageId: edited.message_id, text: edited.text ?? '', ...(html === undefined ? {} : { html }) }
    }
    case 'deleteMessage':
      return { type: 'delete', at, chatId, messageId: Number(params['message_id']) }
    case 'setMessageReaction':
      return { type: 'reaction', at, chatId, messageId: Number(params['message_id']), emoji: reactionEmoji(params['reaction']) }
    case 'sendChatAction':
      return params['action'] === 'typing' ? { type: 'typing', at, chatId } : undefined
    default:
      return undefined
  }
}

// Log fields the timeline shows; the rest (pid, hostname, seq…) is noise to a brain author.
const TIMELINE_FIELDS = [
  'attempt',
  'child_pid',
  'argv0',
  'exit_code',
  'signal',
  'duration_ms',
  'outcome',
  'stderr_last',
  'stdout_bytes',
  'chars',
  'kind',
  'file',
  'bytes',
  'path',
  'reason',
  'backoff_ms',
  'event',
  'emoji',
  'error',
] as const

/** The page event for one of the service's log lines about an update, or undefined for others. */
export function logEvent(line: Readonly<Record<string, unknown>>): PageEvent | undefined {
  const updateId = line['update_id']
  if (typeof updateId !== 'number') return undefined
  const fields: Record<string, unknown> = {}
  for (const name of TIMELINE_FIELDS) if (line[name] !== undefined) fields[name] = line[name]
  const err = line['err']
  if (typeof err === 'object' && err !== null && typeof (err as { message?: unknown }).message === 'string') {
    fields['error'] = (err as { message: string }).message
  }
  return {
    type: 'log',
    at: typeof line['time'] === 'number' ? line['time'] : Date.now(),
    updateId,
    chatId: typeof line['chat_id'] === 'number' ? line['chat_id'] : null,
    msg: String(line['msg'] ?? ''),
    level: typeof line['level'] === 'number' ? line['level'] : 30,
    fields,
  }
}

function pageMessage(message: Message): PageMessage {
  const from = message.from
  const name = from === undefined ? (('title' in message.chat ? message.chat.title : undefined) ?? 'channel') : [from.first_name, from.last_name].filter(Boolean).join(' ')
  const photo = message.photo?.at(-1)
  const text = message.text ?? message.caption
  return {
    chatId: message.chat.id,
    messageId: message.message_id,
    from: { id: from?.id ?? message.chat.id, name, isBot: from?.is_bot ?? false },
    date: message.date,
    ...(message.reply_to_message === undefined ? {} : { replyTo: message.reply_to_message.message_id }),
    ...(text === undefined ? {} : { text }),
    ...(photo === undefined ? {} : { photo: { url: fileUrl(photo.file_id), name: 'photo', size: photo.file_size ?? 0 } }),
    ...(message.document === undefined
      ? {}
      : { document: { url: fileUrl(message.document.file_id), name: message.document.file_name ?? 'file', size: message.document.file_size ?? 0 } }),
  }
}

function isHtml(params: Readonly<Record<string, unknown>>): boolean {
  return String(params['parse_mode'] ?? '').toLowerCase() === 'html'
}

function stringParam(params: Readonly<Record<string, unknown>>, name: string): string | undefined {
  const value = params[name]
  return typeof value === 'string' ? value : undefined
}

// grammY sends `reaction` as JSON in a JSON body (an array) or as a string in a form body.
function reactionEmoji(value: unknown): string | null {
  let list: unknown = value
  if (typeof value === 'string') {
    try {
      list = JSON.parse(value) as unknown
    } catch {
      return null
    }
  }
  if (!Array.isArray(list)) return null
  const first: unknown = list[0]
  return typeof first === 'object' && first !== null && typeof (first as { emoji?: unknown }).emoji === 'string' ? (first as { emoji: string }).emoji : null
}
