import type { Message, Update } from 'grammy/types'

/** What an authentic webhook body turned out to be. */
export type Intake =
  | { readonly kind: 'invalid'; readonly problem: string }
  | { readonly kind: 'ignored'; readonly updateId: number; readonly reason: string }
  | { readonly kind: 'message'; readonly updateId: number; readonly message: IncomingMessage }
  | { readonly kind: 'unsupported'; readonly updateId: number; readonly message: IncomingMessage; readonly what: string }

/** A chat message the service takes in, reduced to what scheduling and replying need. */
export interface IncomingMessage {
  readonly chatId: number
  readonly messageId: number
  readonly threadId: number | undefined
  readonly text: string
  readonly raw: Message
}

/** Kinds of message content other than text that part of the service can't hand to a brain yet. */
const MEDIA_KINDS = [
  'photo',
  'voice',
  'audio',
  'video',
  'video_note',
  'document',
  'animation',
  'sticker',
  'location',
  'venue',
  'contact',
  'poll',
  'dice',
] as const

/**
 * Checks a webhook body's shape and decides what it is. Only the top-level contract (a JSON object
 * with an integer update_id) is a client error; an authentic update of an unexpected shape is
 * ignored, because a 4xx would make Telegram hold the chat and re-send it for a day.
 */
export function classifyUpdate(body: unknown, isAllowedChat: (chatId: number) => boolean): Intake {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { kind: 'invalid', problem: 'the body must be a JSON object (a Telegram Update)' }
  }
  const updateId = (body as { update_id?: unknown }).update_id
  if (typeof updateId !== 'number' || !Number.isSafeInteger(updateId) || updateId < 0) {
    return { kind: 'invalid', problem: 'update_id must be a non-negative integer' }
  }
  const update = body as Update
  const message = update.message
  if (message === undefined) return { kind: 'ignored', updateId, reason: `not a message (${updateKind(update)})` }
  if (!isWellFormed(message)) return { kind: 'ignored', updateId, reason: 'malformed message' }
  if (!isAllowedChat(message.chat.id)) return { kind: 'ignored', updateId, reason: 'chat not allowed' }

  const incoming: IncomingMessage = {
    chatId: message.chat.id,
    messageId: message.message_id,
    threadId: message.is_topic_message === true ? message.message_thread_id : undefined,
    text: message.text ?? message.caption ?? '',
    raw: message,
  }
  if (typeof message.text === 'string' || typeof message.caption === 'string') {
    return { kind: 'message', updateId, message: incoming }
  }
  const media = MEDIA_KINDS.find((kind) => kind in message)
  return { kind: 'unsupported', updateId, message: incoming, what: media ?? 'this kind of message' }
}

function updateKind(update: Update): string {
  return Object.keys(update).find((key) => key !== 'update_id') ?? 'empty'
}

function isWellFormed(message: unknown): message is Message {
  if (typeof message !== 'object' || message === null) return false
  const { chat, message_id: messageId, text, caption, message_thread_id: threadId } = message as Record<string, unknown>
  return (
    typeof chat === 'object' &&
    chat !== null &&
    Number.isSafeInteger((chat as { id?: unknown }).id) &&
    Number.isSafeInteger(messageId) &&
    (messageId as number) > 0 &&
    (text === undefined || typeof text === 'string') &&
    (caption === undefined || typeof caption === 'string') &&
    (threadId === undefined || Number.isSafeInteger(threadId))
  )
}
