import { randomBytes } from 'node:crypto'
import type { InlineKeyboardMarkup, Message, Update, UserFromGetMe } from 'grammy/types'
import { MAX_PHOTO_BYTES, imageSize } from './images.js'
import { BOT_API_REACTIONS } from './reactions.js'
import { CHAT_NOT_FOUND, GROUP_MIGRATED, REACTION_INVALID, REPLY_TARGET_NOT_FOUND, THREAD_NOT_FOUND, badRequest } from './api-error.js'
import type { ChatDirectory, KnownChat } from './chats.js'
import { MAX_DOWNLOAD_SIZE, type FileStore } from './files.js'
import { readMessageText } from './message-text.js'
import {
  isRecord,
  optionalBoolean,
  optionalInteger,
  optionalJson,
  optionalString,
  requiredChatId,
  requiredInteger,
  type Params,
} from './params.js'
import { MAX_UPDATES_PER_POLL, type UpdateFeed } from './updates.js'
import { MAX_UPLOAD_SIZE, UploadedFile, uploadIn } from './uploads.js'

/** What a method may touch: the emulated bot and Telegram's state as the bot sees it. */
export interface MethodContext {
  readonly bot: UserFromGetMe
  readonly chats: ChatDirectory
  readonly files: FileStore
  readonly feed: UpdateFeed
}

/** A successful answer: `result`, and the `description` Telegram adds to a few (setWebhook, …). */
export interface MethodAnswer {
  readonly result: unknown
  readonly description?: string
}

/** `signal` aborts when the client hangs up, so a held getUpdates can let go. */
type MethodHandler = (params: Params, context: MethodContext, signal: AbortSignal) => MethodAnswer | Promise<MethodAnswer>

/** A Bot API method the emulator implements, under its canonical (camelCase) name. */
export interface BotApiMethod {
  readonly name: string
  readonly handler: MethodHandler
}

/** setWebhook's max_connections when not given, and the range Telegram keeps it in. */
export const DEFAULT_MAX_CONNECTIONS = 40
const MAX_CONNECTIONS_RANGE = { min: 1, max: 100 } as const
const SECRET_TOKEN_PATTERN = /^[A-Za-z0-9_-]{1,256}$/u
/** Telegram's limit for a media caption, after entity parsing. */
export const MAX_CAPTION_LENGTH = 1024
const NOT_MODIFIED =
  'message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message'

/** The actions sendChatAction accepts. */
export const CHAT_ACTIONS: ReadonlySet<string> = new Set([
  'typing',
  'upload_photo',
  'record_video',
  'upload_video',
  'record_voice',
  'upload_voice',
  'upload_document',
  'choose_sticker',
  'find_location',
  'record_video_note',
  'upload_video_note',
])

const HANDLERS: Record<string, MethodHandler> = {
  getMe: (_params, { bot }) => ({ result: bot }),

  setWebhook: (params, { feed }) => {
    const url = optionalString(params, 'url') ?? ''
    if (url === '') return deleteWebhook(feed, false)
    if (!isHttpUrl(url)) throw badRequest('bad webhook: An HTTP(S) URL must be provided for webhook')
    const secretToken = optionalString(params, 'secret_token')
    if (secretToken !== undefined && !SECRET_TOKEN_PATTERN.test(secretToken)) {
      throw badRequest('bad webhook: secret token contains unallowed characters')
    }
    const requested = optionalInteger(params, 'max_connections') ?? DEFAULT_MAX_CONNECTIONS
    const maxConnections = Math.min(Math.max(requested, MAX_CONNECTIONS_RANGE.min), MAX_CONNECTIONS_RANGE.max)
    const before = feed.webhookInfo()
    feed.setWebhook({
      url,
      secretToken,
      maxConnections,
      allowedUpdates: readAllowedUpdates(params),
      dropPendingUpdates: optionalBoolean(params, 'drop_pending_updates') ?? false,
    })
    const description = before.url === url ? 'Webhook is already set' : 'Webhook was set'
    return { result: true, description }
  },

  deleteWebhook: (params, { feed }) => deleteWebhook(feed, optionalBoolean(params, 'drop_pending_updates') ?? false),

  getWebhookInfo: (_params, { feed }) => ({ result: feed.webhookInfo() }),

  getUpdates: async (params, { feed }, signal) => {
    const limit = optionalInteger(params, 'limit') ?? MAX_UPDATES_PER_POLL
    const updates: Update[] = await feed.poll(
      {
        offset: optionalInteger(params, 'offset'),
        limit: Math.min(Math.max(limit, 1), MAX_UPDATES_PER_POLL),
        timeoutS: Math.max(optionalInteger(params, 'timeout') ?? 0, 0),
        allowedUpdates: readAllowedUpdates(params),
      },
      signal,
    )
    return { result: updates }
  },

  sendMessage: (params, { bot, chats }) => {
    const { known, head } = botMessageHead(params, bot, chats)
    const { text, entities } = readMessageText(params)
    const markup = readInlineKeyboard(params)
    const message: Message = {
      ...head(),
      text,
      ...(entities.length === 0 ? {} : { entities }),
      ...(markup === undefined ? {} : { reply_markup: markup }),
    }
    known.messages.set(message.message_id, message)
    return { result: message }
  },

  sendPhoto: (params, context) => {
    const file = readUpload(params, 'photo', context)
    if (file.bytes.length > MAX_PHOTO_BYTES) throw badRequest('PHOTO_INVALID_DIMENSIONS: a photo may be at most 10 MB; send it as a document')
    const image = imageSize(file.bytes)
    if (image === undefined) throw badRequest('IMAGE_PROCESS_FAILED')
    const stored = storeUpload(context, file, 'photos', image.format === 'jpeg' ? 'jpg' : image.format)
    return sentMedia(params, context, { photo: [{ ...stored, width: image.width, height: image.height }] })
  },

  sendDocument: (params, context) => {
    const file = readUpload(params, 'document', context)
    const stored = storeUpload(context, file, 'documents', /\.([A-Za-z0-9]{1,10})$/u.exec(file.fileName)?.[1] ?? 'bin')
    return sentMedia(params, context, { document: { ...stored, file_name: file.fileName, mime_type: file.mimeType } })
  },

  editMessageText: (params, { bot, chats }) => {
    if (params['inline_message_id'] !== undefined) {
      throw badRequest('inline messages are not emulated; edit by chat_id and message_id')
    }
    const known = findChat(params, chats)
    const messageId = requiredInteger(params, 'message_id', 'message identifier is not specified')
    const message = known.messages.get(messageId)
    if (message === undefined) throw badRequest('message to edit not found')
    if (message.from?.id !== bot.id) throw badRequest("message can't be edited")
    if (message.text === undefined) throw badRequest('there is no text in the message to edit')
    const { text, entities } = readMessageText(params)
    const markup = readInlineKeyboard(params)
    const unchanged =
      text === message.text &&
      canonicalJson(entities) === canonicalJson(message.entities ?? []) &&
      canonicalJson(markup) === canonicalJson(message.reply_markup)
    if (unchanged) throw badRequest(NOT_MODIFIED)
    const edited: Message = { ...message, text, edit_date: unixNow() }
    delete edited.entities
    delete edited.reply_markup
    if (entities.length > 0) edited.entities = entities
    if (markup !== undefined) edited.reply_markup = markup
    known.messages.set(messageId, edited)
    return { result: edited }
  },

  deleteMessage: (params, { chats }) => {
    const known = findChat(params, chats)
    const messageId = requiredInteger(params, 'message_id', 'message identifier is not specified')
    if (!known.messages.delete(messageId)) throw badRequest('message to delete not found')
    return { result: true }
  },

  sendChatAction: (params, { chats }) => {
    const known = findChat(params, chats)
    // Read only to refuse a malformed one; the emulator shows no typing indicator to anyone.
    readThreadId(params, known)
    const action = optionalString(params, 'action')
    if (action === undefined || action === '') throw badRequest('action is empty')
    if (!CHAT_ACTIONS.has(action)) throw badRequest('wrong parameter action in request')
    return { result: true }
  },

  setMessageReaction: (params, { chats }) => {
    const known = findChat(params, chats)
    const messageId = requiredInteger(params, 'message_id', 'message to react not found')
    if (!known.messages.has(messageId)) throw badRequest('message to react not found')
    const reactions = optionalJson(params, 'reaction') ?? []
    if (!Array.isArray(reactions)) throw badRequest("can't parse reaction JSON object")
    for (const reaction of reactions) {
      const emoji = isRecord(reaction) && reaction['type'] === 'emoji' ? reaction['emoji'] : undefined
      const allowed =
        typeof emoji === 'string' && BOT_API_REACTIONS.has(emoji) && (known.allowedReactions?.has(emoji) ?? true)
      if (!allowed) throw REACTION_INVALID()
    }
    if (reactions.length > 1) throw badRequest('REACTIONS_TOO_MANY')
    return { result: true }
  },

  getFile: (params, { files }) => {
    const fileId = optionalString(params, 'file_id') ?? ''
    if (fileId === '') throw badRequest('file_id is empty')
    const info = files.info(fileId)
    if (info === undefined) throw badRequest('wrong file_id or the file is temporarily unavailable')
    if (info.file_size > MAX_DOWNLOAD_SIZE) throw badRequest('file is too big')
    return { result: { ...info } }
  },
}

const METHODS_BY_KEY: ReadonlyMap<string, BotApiMethod> = new Map(
  Object.entries(HANDLERS).map(([name, handler]) => [name.toLowerCase(), { name, handler }]),
)

/** Looks a method up as Telegram does: method names are case-insensitive. */
export function findMethod(name: string): BotApiMethod | undefined {
  return METHODS_BY_KEY.get(name.toLowerCase())
}

// The upload a sendPhoto/sendDocument call carries, or the known file its file_id names (a re-send).
function readUpload(params: Params, name: string, { files }: MethodContext): UploadedFile {
  const value = uploadIn(params, name)
  if (value === undefined) throw badRequest(`there is no ${name} in the request`)
  if (value instanceof UploadedFile) {
    if (value.bytes.length === 0) throw badRequest('file must be non-empty')
    if (value.bytes.length > MAX_UPLOAD_SIZE) throw badRequest('file is too big')
    return value
  }
  const known = files.info(value)
  const bytes = known === undefined ? undefined : files.bytesAt(known.file_path)
  if (bytes === undefined) throw badRequest('wrong remote file identifier specified: can\'t unserialize it. Wrong last symbol?')
  return new UploadedFile(known?.file_path.split('/').at(-1) ?? 'file', 'application/octet-stream', bytes)
}

// Registers an uploaded file for getFile and the file server, as Telegram keeps what bots send.
function storeUpload(
  { files }: MethodContext,
  file: UploadedFile,
  folder: string,
  extension: string,
): { file_id: string; file_unique_id: string; file_size: number } {
  const unique = randomBytes(8).toString('hex')
  const info = files.add({ file_id: `bot-${unique}`, file_unique_id: `ub-${unique}`, bytes: file.bytes, file_path: `${folder}/bot_${unique}.${extension}` })
  return { file_id: info.file_id, file_unique_id: info.file_unique_id, file_size: info.file_size ?? file.bytes.length }
}

/**
 * What every message the bot sends starts with: a new id in its chat, the sender, the date, and the
 * topic and reply target as Telegram checks them (a thread outside a forum, a deleted target refused).
 */
function botMessageHead(params: Params, bot: UserFromGetMe, chats: ChatDirectory) {
  const known = findChat(params, chats)
  const threadId = readThreadId(params, known)
  const replyTo = readReplyTarget(params, known, threadId)
  // Built once the rest of the call is checked: a refused call takes no message id.
  const head = () => ({
    message_id: chats.nextMessageId(known),
    from: bot,
    chat: known.chat,
    date: unixNow(),
    ...(threadId === undefined ? {} : { message_thread_id: threadId, is_topic_message: true }),
    ...(replyTo === undefined ? {} : { reply_to_message: { ...replyTo, reply_to_message: undefined } }),
  })
  return { known, head }
}

// A media message from the bot: the chat, the reply target and topic, the caption (HTML allowed).
function sentMedia(params: Params, { bot, chats }: MethodContext, media: Pick<Message, 'photo' | 'document'>): MethodAnswer {
  const { known, head } = botMessageHead(params, bot, chats)
  const rawCaption = optionalString(params, 'caption') ?? ''
  const caption =
    rawCaption.trim() === ''
      ? undefined
      : readMessageText({ text: rawCaption, parse_mode: params['parse_mode'], entities: params['caption_entities'] })
  if (caption !== undefined && caption.text.length > MAX_CAPTION_LENGTH) throw badRequest('message caption is too long')
  const message = {
    ...head(),
    ...media,
    ...(caption === undefined ? {} : { caption: caption.text }),
    ...(caption === undefined || caption.entities.length === 0 ? {} : { caption_entities: caption.entities }),
  } as Message
  known.messages.set(message.message_id, message)
  return { result: message }
}

function deleteWebhook(feed: UpdateFeed, dropPendingUpdates: boolean): MethodAnswer {
  const wasSet = feed.deleteWebhook(dropPendingUpdates)
  return { result: true, description: wasSet ? 'Webhook was deleted' : 'Webhook is already deleted' }
}

function findChat(params: Params, chats: ChatDirectory): KnownChat {
  const known = chats.find(requiredChatId(params))
  if (known === undefined) throw CHAT_NOT_FOUND()
  if (known.migratedTo !== undefined) throw GROUP_MIGRATED(known.migratedTo)
  return known
}

// Topics exist only in forum supergroups (the emulated bot has none in private chats).
function readThreadId(params: Params, known: KnownChat): number | undefined {
  const threadId = optionalInteger(params, 'message_thread_id')
  if (threadId !== undefined && !(known.chat.type === 'supergroup' && known.chat.is_forum === true)) throw THREAD_NOT_FOUND()
  return threadId
}

function readAllowedUpdates(params: Params): string[] | undefined {
  const value = optionalJson(params, 'allowed_updates')
  if (value === undefined) return undefined
  if (!Array.isArray(value) || !value.every((kind) => typeof kind === 'string')) {
    throw badRequest("can't parse allowed_updates JSON object")
  }
  return value as string[]
}

/**
 * reply_parameters, or the older reply_to_message_id + allow_sending_without_reply. A missing
 * target may be left out when allowed, except in a forum topic: there Telegram refuses it anyway.
 */
function readReplyTarget(params: Params, known: KnownChat, threadId: number | undefined): Message | undefined {
  const replyParameters = optionalJson(params, 'reply_parameters', 'reply parameters')
  let messageId: number | undefined
  let allowWithoutReply: boolean | undefined
  if (replyParameters !== undefined) {
    if (!isRecord(replyParameters)) throw badRequest("can't parse reply parameters JSON object")
    // message_id is ReplyParameters' one required field.
    if (replyParameters['message_id'] === undefined) throw badRequest("can't parse reply parameters JSON object")
    messageId = optionalInteger(replyParameters, 'message_id')
    allowWithoutReply = optionalBoolean(replyParameters, 'allow_sending_without_reply')
  } else {
    messageId = optionalInteger(params, 'reply_to_message_id')
    allowWithoutReply = optionalBoolean(params, 'allow_sending_without_reply')
  }
  if (messageId === undefined) return undefined
  const target = known.messages.get(messageId)
  if (target === undefined && (!allowWithoutReply || threadId !== undefined)) throw REPLY_TARGET_NOT_FOUND()
  return target
}

// Messages carry only inline keyboards back; other markup (reply keyboards) is not echoed.
function readInlineKeyboard(params: Params): InlineKeyboardMarkup | undefined {
  const markup = optionalJson(params, 'reply_markup', 'reply markup')
  if (markup === undefined) return undefined
  if (!isRecord(markup)) throw badRequest("can't parse reply keyboard markup JSON object")
  return Array.isArray(markup['inline_keyboard']) ? (markup as unknown as InlineKeyboardMarkup) : undefined
}

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value)
    return url.protocol === 'http:' || url.protocol === 'https:'
  } catch {
    return false
  }
}

// JSON with object keys sorted, so {type, offset, length} and {offset, length, type} compare equal.
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, field: unknown) =>
    isRecord(field) ? Object.fromEntries(Object.entries(field).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : field,
  )
}

/** Telegram's clock: whole seconds since the epoch. */
export function unixNow(): number {
  return Math.floor(Date.now() / 1000)
}


