import type { Chat, Document, Message, MessageEntity, PhotoSize, Update, User, Voice } from 'grammy/types'
import type { ChatDirectory } from './chats.js'
import type { FileStore } from './files.js'
import { unixNow } from './methods.js'
import type { NewUpdate } from './updates.js'

/** Who writes, where: the parts every incoming message shares. */
export interface IncomingMessageOptions {
  readonly chatId: number
  /** The sender; defaults to the private chat's user, or a fixed test user in groups. */
  readonly from?: Partial<User>
  /** Defaults from the chat id (positive → private, -100… → supergroup, other negative → group). */
  readonly chatType?: Chat['type']
  /** A forum topic; the chat becomes a forum supergroup's topic message. */
  readonly threadId?: number
  /** Makes the message a reply to a message known in the chat. */
  readonly replyToMessageId?: number
}

export interface TextMessageOptions extends IncomingMessageOptions {
  readonly text: string
}

/** A media message: its caption, and the file's bytes (a few placeholder bytes by default). */
export interface MediaMessageOptions extends IncomingMessageOptions {
  readonly caption?: string
  readonly bytes?: Buffer
  /** The size getFile reports, when it should differ from bytes.length (e.g. a 25 MB file). */
  readonly fileSize?: number
  /** Choose the file id (and unique id) instead of a generated one. */
  readonly fileId?: string
}

export interface PhotoMessageOptions extends MediaMessageOptions {
  readonly width?: number
  readonly height?: number
}

export interface VoiceMessageOptions extends MediaMessageOptions {
  readonly durationS?: number
}

export interface DocumentMessageOptions extends MediaMessageOptions {
  readonly fileName?: string
  readonly mimeType?: string
}

// The sender in groups when a test names none: a stable, ordinary user.
const GROUP_SENDER: User = { id: 700_000_001, is_bot: false, first_name: 'Tester', username: 'tester', language_code: 'en' }
const DEFAULT_PHOTO_SIZE = { width: 1280, height: 960 } as const
const DEFAULT_VOICE_DURATION_S = 3
const BOT_COMMAND_PATTERN = /(?<=^|\s)\/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?(?=$|\s)/gu

type MediaFields = Pick<Message, 'photo' | 'voice' | 'document'>

/** Builds the updates a user's actions produce, with ids and files as Telegram would assign them. */
export class UpdateBuilder {
  readonly #chats: ChatDirectory
  readonly #files: FileStore
  readonly #push: (update: NewUpdate) => Update
  #fileCount = 0

  constructor(chats: ChatDirectory, files: FileStore, push: (update: NewUpdate) => Update) {
    this.#chats = chats
    this.#files = files
    this.#push = push
  }

  text(options: TextMessageOptions): Update {
    const entities = botCommands(options.text)
    return this.#pushMessage(options, { text: options.text, ...(entities.length === 0 ? {} : { entities }) })
  }

  photo(options: PhotoMessageOptions): Update {
    const file = this.#addFile('photo', options, 'jpg')
    const size: PhotoSize = {
      ...file,
      width: options.width ?? DEFAULT_PHOTO_SIZE.width,
      height: options.height ?? DEFAULT_PHOTO_SIZE.height,
    }
    return this.#pushMedia(options, { photo: [size] })
  }

  voice(options: VoiceMessageOptions): Update {
    const file = this.#addFile('voice', options, 'oga')
    const voice: Voice = { ...file, duration: options.durationS ?? DEFAULT_VOICE_DURATION_S, mime_type: 'audio/ogg' }
    return this.#pushMedia(options, { voice })
  }

  document(options: DocumentMessageOptions): Update {
    const fileName = options.fileName ?? 'document.txt'
    const extension = fileName.includes('.') ? (fileName.split('.').pop() ?? 'bin') : 'bin'
    const file = this.#addFile('document', options, extension)
    const document: Document = { ...file, file_name: fileName, mime_type: options.mimeType ?? 'application/octet-stream' }
    return this.#pushMedia(options, { document })
  }

  #pushMedia(options: MediaMessageOptions, media: MediaFields): Update {
    const caption = options.caption === undefined ? {} : { caption: options.caption }
    return this.#pushMessage(options, { ...media, ...caption })
  }

  #pushMessage(options: IncomingMessageOptions, content: Partial<Message>): Update {
    const threadId = options.threadId
    const known = this.#chats.ensure({
      id: options.chatId,
      ...(options.chatType === undefined ? {} : { type: options.chatType }),
      ...(threadId === undefined ? {} : { isForum: true }),
    })
    const chat = known.chat
    const replyTo = options.replyToMessageId === undefined ? undefined : known.messages.get(options.replyToMessageId)
    if (options.replyToMessageId !== undefined && replyTo === undefined) {
      throw new TypeError(`replyToMessageId ${options.replyToMessageId} is not a message known in chat ${chat.id}`)
    }
    const message: Message = {
      message_id: this.#chats.nextMessageId(known),
      ...(chat.type === 'channel' ? {} : { from: senderFor(chat, options.from) }),
      chat,
      date: unixNow(),
      ...(threadId === undefined ? {} : { message_thread_id: threadId, is_topic_message: true }),
      ...(replyTo === undefined ? {} : { reply_to_message: { ...replyTo, reply_to_message: undefined } }),
      ...content,
    }
    const update = chat.type === 'channel' ? { channel_post: message } : { message }
    return this.#push(update as NewUpdate)
  }

  #addFile(kind: string, options: MediaMessageOptions, extension: string): { file_id: string; file_unique_id: string; file_size: number } {
    this.#fileCount += 1
    const fileId = options.fileId ?? `emu-${kind}-${this.#fileCount}`
    const bytes = options.bytes ?? Buffer.from(`emulated ${kind} #${this.#fileCount}\n`)
    const info = this.#files.add({
      file_id: fileId,
      file_unique_id: `u-${fileId}`,
      bytes,
      file_path: `${kind}s/file_${this.#fileCount}.${extension}`,
      ...(options.fileSize === undefined ? {} : { file_size: options.fileSize }),
    })
    return { file_id: info.file_id, file_unique_id: info.file_unique_id, file_size: info.file_size ?? bytes.length }
  }
}

function senderFor(chat: Chat, from: Partial<User> | undefined): User {
  const base: User =
    chat.type === 'private'
      ? { id: chat.id, is_bot: false, first_name: chat.first_name, ...(chat.username === undefined ? {} : { username: chat.username }) }
      : GROUP_SENDER
  return { ...base, ...from }
}

// Telegram marks commands in incoming text; grammY's bot.command() relies on these entities.
function botCommands(text: string): MessageEntity[] {
  return [...text.matchAll(BOT_COMMAND_PATTERN)].map((match) => ({
    type: 'bot_command',
    offset: match.index,
    length: match[0].length,
  }))
}
