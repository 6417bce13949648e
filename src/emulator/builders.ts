import type { Audio, Chat, Document, Message, MessageEntity, PhotoSize, Update, User, Video, VideoNote, Voice } from 'grammy/types'
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

/** A message that carries a file: its bytes (a few placeholder bytes by default) and how it is known. */
export interface FileMessageOptions extends IncomingMessageOptions {
  readonly bytes?: Buffer
  /** The size the message and getFile report, when it should differ from bytes.length (e.g. a 25 MB file). */
  readonly fileSize?: number
  /** Choose the file id (and unique id) instead of a generated one. */
  readonly fileId?: string
}

/** A file message that may carry a caption (every kind but video notes). */
export interface MediaMessageOptions extends FileMessageOptions {
  readonly caption?: string
  /** Makes the message an album item: Telegram sends each item of an album as its own message with this id. */
  readonly mediaGroupId?: string
}

/** A photo; width × height is its largest size, and Telegram's smaller thumbnails come before it. */
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

/** A music file; performer, title and file name appear only when given, as the sender's tags decide. */
export interface AudioMessageOptions extends MediaMessageOptions {
  readonly durationS?: number
  readonly performer?: string
  readonly title?: string
  readonly fileName?: string
  readonly mimeType?: string
}

export interface VideoMessageOptions extends MediaMessageOptions {
  readonly width?: number
  readonly height?: number
  readonly durationS?: number
  readonly fileName?: string
  readonly mimeType?: string
}

/** A round video message; Telegram allows it no caption. */
export interface VideoNoteMessageOptions extends FileMessageOptions {
  /** Its width and height in pixels (the video is square, shown round). */
  readonly length?: number
  readonly durationS?: number
}

/** A group's upgrade to a supergroup. */
export interface GroupMigrationOptions {
  readonly chatId: number
  /** The supergroup's new id; a -100… id is made up when not given. */
  readonly supergroupId?: number
  /** Who upgraded it (the first service message's sender); a fixed test user by default. */
  readonly from?: Partial<User>
  /**
   * false: the upgrade happens but its two service messages never reach the bot (as for a bot
   * that was down longer than Telegram keeps updates). True by default.
   */
  readonly announce?: boolean
}

/** A user's edit of a message they sent earlier. */
export interface MessageEditOptions {
  readonly chatId: number
  readonly messageId: number
  /** The new text; a media message (photo, video, …) gets it as its new caption. */
  readonly text: string
}

// The sender in groups when a test names none: a stable, ordinary user.
const GROUP_SENDER: User = { id: 700_000_001, is_bot: false, first_name: 'Tester', username: 'tester', language_code: 'en' }
// Who Telegram names as the sender of a message posted as the group itself.
const ANONYMOUS_ADMIN: User = { id: 1_087_968_824, is_bot: true, first_name: 'Group', username: 'GroupAnonymousBot' }
// A made-up supergroup id for a migrated group: -100… followed by the group's digits.
const MIGRATED_ID_BASE = -1_000_000_000_000
const DEFAULT_PHOTO_SIZE = { width: 1280, height: 960 } as const
// The longest side of the thumbnails Telegram makes of a photo (its "s", "m" and "x" sizes).
const PHOTO_THUMBNAIL_SIDES = [90, 320, 800] as const
const DEFAULT_VOICE_DURATION_S = 3
const DEFAULT_AUDIO_DURATION_S = 180
const DEFAULT_VIDEO = { width: 1280, height: 720, durationS: 10 } as const
const DEFAULT_VIDEO_NOTE = { length: 384, durationS: 10 } as const
const FILE_EXTENSION_PATTERN = /\.([A-Za-z0-9]{1,16})$/u
const BOT_COMMAND_PATTERN = /(?<=^|\s)\/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?(?=$|\s)/gu

type FileKind = 'photo' | 'voice' | 'document' | 'audio' | 'video' | 'video_note'

// Where Telegram's file server keeps each kind ("music/file_3.mp3"), and the extension when no file name says.
const FILE_LAYOUT: Readonly<Record<FileKind, { readonly folder: string; readonly extension: string }>> = {
  photo: { folder: 'photos', extension: 'jpg' },
  voice: { folder: 'voice', extension: 'oga' },
  document: { folder: 'documents', extension: 'bin' },
  audio: { folder: 'music', extension: 'mp3' },
  video: { folder: 'videos', extension: 'mp4' },
  video_note: { folder: 'video_notes', extension: 'mp4' },
}

// The message fields that carry a caption: a user's edit of such a message changes its caption.
const CAPTIONED_FIELDS = ['photo', 'voice', 'document', 'audio', 'video', 'animation'] as const

type FileFields = { file_id: string; file_unique_id: string; file_size: number }
type MediaFields = Pick<Message, 'photo' | 'voice' | 'document' | 'audio' | 'video'>

interface FileSpec {
  readonly kind: FileKind
  readonly fileId?: string
  readonly bytes?: Buffer
  readonly fileSize?: number
  readonly fileName?: string
}

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
    return this.#pushMessage(options, textContent(options.text))
  }

  photo(options: PhotoMessageOptions): Update {
    const width = options.width ?? DEFAULT_PHOTO_SIZE.width
    const height = options.height ?? DEFAULT_PHOTO_SIZE.height
    const original: PhotoSize = { ...this.#addFile({ kind: 'photo', ...options }), width, height }
    const longest = Math.max(width, height)
    const thumbnails = PHOTO_THUMBNAIL_SIDES.filter((side) => side < longest).map((side): PhotoSize => {
      const scale = side / longest
      const file = this.#addFile({ kind: 'photo', fileId: `${original.file_id}-${side}` })
      return { ...file, width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) }
    })
    // Smallest first, the original last: services take photo.at(-1) for the best quality.
    return this.#pushMedia(options, { photo: [...thumbnails, original] })
  }

  voice(options: VoiceMessageOptions): Update {
    const file = this.#addFile({ kind: 'voice', ...options })
    const voice: Voice = { ...file, duration: options.durationS ?? DEFAULT_VOICE_DURATION_S, mime_type: 'audio/ogg' }
    return this.#pushMedia(options, { voice })
  }

  document(options: DocumentMessageOptions): Update {
    const fileName = options.fileName ?? 'document.txt'
    const file = this.#addFile({ kind: 'document', ...options, fileName })
    const document: Document = { ...file, file_name: fileName, mime_type: options.mimeType ?? 'application/octet-stream' }
    return this.#pushMedia(options, { document })
  }

  audio(options: AudioMessageOptions): Update {
    const audio: Audio = {
      ...this.#addFile({ kind: 'audio', ...options }),
      duration: options.durationS ?? DEFAULT_AUDIO_DURATION_S,
      ...(options.performer === undefined ? {} : { performer: options.performer }),
      ...(options.title === undefined ? {} : { title: options.title }),
      ...(options.fileName === undefined ? {} : { file_name: options.fileName }),
      mime_type: options.mimeType ?? 'audio/mpeg',
    }
    return this.#pushMedia(options, { audio })
  }

  video(options: VideoMessageOptions): Update {
    const video: Video = {
      ...this.#addFile({ kind: 'video', ...options }),
      width: options.width ?? DEFAULT_VIDEO.width,
      height: options.height ?? DEFAULT_VIDEO.height,
      duration: options.durationS ?? DEFAULT_VIDEO.durationS,
      ...(options.fileName === undefined ? {} : { file_name: options.fileName }),
      mime_type: options.mimeType ?? 'video/mp4',
    }
    return this.#pushMedia(options, { video })
  }

  videoNote(options: VideoNoteMessageOptions): Update {
    const videoNote: VideoNote = {
      ...this.#addFile({ kind: 'video_note', ...options }),
      length: options.length ?? DEFAULT_VIDEO_NOTE.length,
      duration: options.durationS ?? DEFAULT_VIDEO_NOTE.durationS,
    }
    return this.#pushMessage(options, { video_note: videoNote })
  }

  /** The user edits a message of theirs: Telegram sends the whole message again with edit_date. */
  edit(options: MessageEditOptions): Update {
    const message = this.#chats.find(options.chatId)?.messages.get(options.messageId)
    const where = `message ${options.messageId} in chat ${options.chatId}`
    if (message === undefined) {
      throw new TypeError(`editUserMessage: ${where} is not known; edit one a user sent (e.g. sendText(…).message.message_id)`)
    }
    if (message.from?.is_bot) {
      throw new TypeError(`editUserMessage: ${where} was sent by a bot; users edit their own messages (the bot uses editMessageText)`)
    }
    if (options.text === '') throw new TypeError(`editUserMessage: the new text of ${where} is empty; Telegram refuses empty edits`)
    const edited: Message = { ...message, edit_date: unixNow() }
    if (message.text !== undefined) {
      if (message.text === options.text) {
        throw new TypeError(`editUserMessage: ${where} already says "${options.text}"; Telegram sends no update for an unchanged edit`)
      }
      delete edited.entities
      Object.assign(edited, textContent(options.text))
    } else if (CAPTIONED_FIELDS.some((field) => message[field] !== undefined)) {
      if (message.caption === options.text) {
        throw new TypeError(`editUserMessage: ${where} already has the caption "${options.text}"; Telegram sends no update for an unchanged edit`)
      }
      delete edited.caption_entities
      edited.caption = options.text
    } else {
      throw new TypeError(`editUserMessage: ${where} has neither text nor a caption to edit`)
    }
    const update = edited.chat.type === 'channel' ? { edited_channel_post: edited } : { edited_message: edited }
    return this.#push(update as NewUpdate)
  }

  /**
   * A group becomes a supergroup: Telegram writes `migrate_to_chat_id` in the old group and
   * `migrate_from_chat_id` in the new supergroup (sent as the supergroup itself); the old id is
   * refused from then on. Returns both updates, old group first (not pushed when `announce` is false).
   */
  migrate(options: GroupMigrationOptions): [Update, Update] {
    const supergroupId = options.supergroupId ?? MIGRATED_ID_BASE + options.chatId
    const { group, supergroup } = this.#chats.migrate(options.chatId, supergroupId)
    const inGroup: Message = {
      message_id: this.#chats.nextMessageId(group),
      from: senderFor(group.chat, options.from),
      chat: group.chat,
      date: unixNow(),
      migrate_to_chat_id: supergroupId,
    }
    const inSupergroup: Message = {
      message_id: this.#chats.nextMessageId(supergroup),
      from: ANONYMOUS_ADMIN,
      sender_chat: supergroup.chat,
      chat: supergroup.chat,
      date: unixNow(),
      migrate_from_chat_id: options.chatId,
    }
    if (options.announce === false) return [{ update_id: 0, message: inGroup } as Update, { update_id: 0, message: inSupergroup } as Update]
    return [this.#push({ message: inGroup } as NewUpdate), this.#push({ message: inSupergroup } as NewUpdate)]
  }

  #pushMedia(options: MediaMessageOptions, media: MediaFields): Update {
    const caption = options.caption === undefined ? {} : { caption: options.caption }
    const album = options.mediaGroupId === undefined ? {} : { media_group_id: options.mediaGroupId }
    return this.#pushMessage(options, { ...album, ...media, ...caption })
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

  // Registers the file for getFile and the file server; returns the fields every file object shares.
  #addFile(spec: FileSpec): FileFields {
    this.#fileCount += 1
    const layout = FILE_LAYOUT[spec.kind]
    const fileId = spec.fileId ?? `emu-${spec.kind}-${this.#fileCount}`
    const bytes = spec.bytes ?? Buffer.from(`emulated ${spec.kind} #${this.#fileCount}\n`)
    const info = this.#files.add({
      file_id: fileId,
      file_unique_id: `u-${fileId}`,
      bytes,
      file_path: `${layout.folder}/file_${this.#fileCount}.${extensionOf(spec.fileName) ?? layout.extension}`,
      ...(spec.fileSize === undefined ? {} : { file_size: spec.fileSize }),
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

// A text message's content: the text, and the bot commands Telegram marks in it.
function textContent(text: string): Pick<Message, 'text' | 'entities'> {
  const entities = botCommands(text)
  return { text, ...(entities.length === 0 ? {} : { entities }) }
}

// Only a plain extension, so a hostile file name ("../../etc/passwd") never shapes the file path.
function extensionOf(fileName: string | undefined): string | undefined {
  return fileName === undefined ? undefined : FILE_EXTENSION_PATTERN.exec(fileName)?.[1]
}
