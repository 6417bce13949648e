import type { Message, Update } from 'grammy/types'
import type { EditsMode } from '../config.js'
import { FILE_KINDS } from '../brain/protocol.js'
import { SERVICE_MESSAGE_FIELDS, UNSUPPORTED_KINDS, withoutNulls } from '../telegram/message-kinds.js'
import type { Refusal } from './access.js'

/** What an authentic webhook body turned out to be. */
export type Classification =
  | { readonly kind: 'invalid'; readonly problem: string }
  | { readonly kind: 'ignored'; readonly updateId: number; readonly reason: string }
  | { readonly kind: 'refused'; readonly updateId: number; readonly message: Message; readonly reason: Refusal }
  | { readonly kind: 'migrated'; readonly updateId: number; readonly from: number; readonly to: number }
  | { readonly kind: 'message'; readonly updateId: number; readonly message: IncomingMessage }
  | { readonly kind: 'command'; readonly updateId: number; readonly message: IncomingMessage; readonly command: Command }
  | { readonly kind: 'unsupported'; readonly updateId: number; readonly message: IncomingMessage; readonly what: string }

/** A chat message the service takes in, reduced to what scheduling and replying need. */
export interface IncomingMessage {
  readonly chatId: number
  readonly messageId: number
  readonly threadId: number | undefined
  readonly text: string
  /** An edited message (EDITS=queue), handed to the brain as a new message. */
  readonly edited: boolean
  readonly raw: Message
  /** The update as stored and handed to the brain: null fields dropped. */
  readonly update: Update
}

/** The commands the service answers itself, at once, even while the chat's brain is busy. */
export const SERVICE_COMMANDS = ['status', 'cancel', 'new', 'help'] as const
export type ServiceCommand = (typeof SERVICE_COMMANDS)[number]

export interface Command {
  readonly name: ServiceCommand
  /** What followed the command, trimmed ("all" in "/cancel all"). */
  readonly args: string
}

export interface ClassifyOptions {
  /** Why this message may not reach the brain (see access.ts); undefined when it may. */
  readonly refusalOf: (message: Message) => Refusal | undefined
  /** Whether a chat is allowed, for following its migration to a supergroup. */
  readonly isAllowedChat: (chatId: number) => boolean
  readonly edits: EditsMode
  /** The bot's username once known: "/status@OtherBot" is then left to the other bot. */
  readonly botUsername?: string | undefined
}

/**
 * Telegram's own updates nest about a dozen levels deep. Anything far deeper is not from Telegram,
 * and serialising it (for the inbox, for the brain) would overflow the stack.
 */
export const MAX_UPDATE_DEPTH = 64

// Some serialisers write absent service flags as false and absent ids as 0: those say nothing.
const FALSY_ABSENT: ReadonlySet<unknown> = new Set([false, 0])

/**
 * Checks a webhook body's shape and decides what it is. Only the top-level contract (a JSON object
 * with an integer update_id) is a client error; an authentic update of an unexpected shape is
 * ignored, because a 4xx would make Telegram hold the chat and re-send it for a day.
 */
export function classifyUpdate(body: unknown, { refusalOf, isAllowedChat, edits, botUsername }: ClassifyOptions): Classification {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { kind: 'invalid', problem: 'the body must be a JSON object (a Telegram Update)' }
  }
  const updateId = (body as { update_id?: unknown }).update_id
  if (typeof updateId !== 'number' || !Number.isSafeInteger(updateId) || updateId < 0) {
    return { kind: 'invalid', problem: 'update_id must be a non-negative integer' }
  }
  if (nestingExceeds(body, MAX_UPDATE_DEPTH)) return { kind: 'ignored', updateId, reason: `nested more than ${MAX_UPDATE_DEPTH} levels deep` }
  const update = withoutNulls(body) as Update
  const edited = update.message === undefined && update.edited_message !== undefined
  if (edited && edits === 'ignore') return { kind: 'ignored', updateId, reason: 'edited message (EDITS=ignore)' }
  const message = edited ? update.edited_message : update.message
  if (message === undefined) return { kind: 'ignored', updateId, reason: `not a message (${updateKind(update)})` }
  if (!isWellFormed(message)) return { kind: 'ignored', updateId, reason: 'malformed message' }
  const migration = migrationOf(message)
  if (migration !== undefined && isAllowedChat(migration.from)) return { kind: 'migrated', updateId, ...migration }
  const service = SERVICE_MESSAGE_FIELDS.find((field) => field in message && !FALSY_ABSENT.has((message as unknown as Record<string, unknown>)[field]))
  // In a chat not allowed, a service message (the bot added to a group) is refused like any
  // other, so that the log shows the chat's id; in an allowed one, nobody needs to hear of it.
  if (service !== undefined && isAllowedChat(message.chat.id)) return { kind: 'ignored', updateId, reason: `service message (${service})` }
  const refusal = refusalOf(message)
  if (refusal !== undefined) return { kind: 'refused', updateId, message, reason: refusal }
  if (service !== undefined) return { kind: 'ignored', updateId, reason: `service message (${service})` }

  const incoming: IncomingMessage = {
    chatId: message.chat.id,
    messageId: message.message_id,
    threadId: message.is_topic_message === true ? message.message_thread_id : undefined,
    text: message.text ?? message.caption ?? '',
    edited,
    raw: message,
    update,
  }
  if (typeof message.text === 'string') {
    const command = edited ? undefined : parseCommand(message.text, botUsername)
    if (command) return { kind: 'command', updateId, message: incoming, command }
    return { kind: 'message', updateId, message: incoming }
  }
  if (typeof message.caption === 'string' || FILE_KINDS.some((kind) => kind in message)) {
    return { kind: 'message', updateId, message: incoming }
  }
  const unsupported = UNSUPPORTED_KINDS.find((kind) => kind in message)
  // Nothing a person sends: a service message of a kind newer than this list, or an empty one.
  if (unsupported === undefined) return { kind: 'ignored', updateId, reason: 'no content the service knows' }
  return { kind: 'unsupported', updateId, message: incoming, what: unsupported }
}

/** A group's upgrade to a supergroup, seen from either side (the old group's note or the new one's). */
function migrationOf(message: Message): { from: number; to: number } | undefined {
  const { migrate_to_chat_id: to, migrate_from_chat_id: from } = message
  const migration =
    to !== undefined ? { from: message.chat.id, to } : from !== undefined ? { from, to: message.chat.id } : undefined
  // Both are groups, so both ids are negative; anything else (a serialiser's 0 for "absent") is no upgrade.
  if (migration === undefined || !isGroupId(migration.from) || !isGroupId(migration.to) || migration.from === migration.to) return undefined
  return migration
}

function isGroupId(id: unknown): id is number {
  return typeof id === 'number' && Number.isSafeInteger(id) && id < 0
}


/** "/cancel all" or "/status@MyBot" as a service command; anything else (other commands too) is for the brain. */
export function parseCommand(text: string, botUsername?: string): Command | undefined {
  const match = /^\/([A-Za-z]+)(?:@([A-Za-z0-9_]+))?(?:\s+([^]*))?$/u.exec(text.trim())
  if (!match) return undefined
  const [, name = '', mention, args = ''] = match
  const command = name.toLowerCase() as ServiceCommand
  if (!SERVICE_COMMANDS.includes(command)) return undefined
  if (mention !== undefined && botUsername !== undefined && mention.toLowerCase() !== botUsername.toLowerCase()) return undefined
  return { name: command, args: args.trim() }
}

/** Whether a parsed JSON value nests deeper than `limit`; iterative, so any depth is safe to check. */
function nestingExceeds(value: unknown, limit: number): boolean {
  const pending: [unknown, number][] = [[value, 1]]
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [node, depth] = next
    if (typeof node !== 'object' || node === null) continue
    if (depth > limit) return true
    for (const child of Object.values(node)) {
      if (typeof child === 'object' && child !== null) pending.push([child, depth + 1])
    }
  }
  return false
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
