import type { FastifyBaseLogger } from 'fastify'
import { Api, GrammyError, HttpError, InputFile } from 'grammy'
import { autoRetry } from '@grammyjs/auto-retry'
import type { ChatMigrations } from '../store/chat-migrations.js'
import type { Metrics } from '../metrics.js'
import { formatOffLoop } from './format-off-loop.js'
import type { FormattedPart } from './format.js'
import type { ReactionEmoji } from './reactions.js'

/** Where a reply goes: the chat, the message it answers, and the forum topic if any. */
export interface ReplyTarget {
  readonly chatId: number
  readonly messageId: number
  readonly threadId?: number | undefined
}

export interface TelegramOptions {
  readonly token: string
  readonly apiRoot: string
  readonly metrics: Metrics
  readonly log: FastifyBaseLogger
  readonly migrations: ChatMigrations
  /** LINK_PREVIEWS=on; off (the default) keeps Telegram from fetching the first link of a reply. */
  readonly linkPreviews?: boolean
}

// A reply waits out rate limits and Telegram's 5xx, but not forever.
const REPLY_RETRY = { maxRetryAttempts: 5, maxDelaySeconds: 60, rethrowHttpErrors: true }
// auto-retry retries network errors without a bound; replies bound them here instead.
const NETWORK_ATTEMPTS = 5
const NETWORK_BACKOFF_MS = [500, 1000, 2000, 4000]
const REQUEST_TIMEOUT_S = 30
// The receipt reaction, typing and progress are only useful now: no retries, and a short timeout.
const NOW_OR_NEVER_TIMEOUT_S = 5

/**
 * The service's side of the Bot API, through grammY. Replies retry within bounds; reactions, typing
 * and progress never retry, because a late 👀 or a stale status is worth less than the work it
 * would hold up.
 */
export class TelegramClient {
  /** For replies and everything that must arrive: bounded retries. */
  readonly api: Api
  // A separate client for what is only worth sending now, so that its failures are never retried.
  #nowApi: Api
  #log: FastifyBaseLogger
  /** Groups upgraded to supergroups: replies follow them to their new id. */
  readonly migrations: ChatMigrations
  // Sent with every reply and brain message: a preview is Telegram's server fetching a URL the
  // brain chose, unasked, which a steered brain can use to send data out.
  #previews: { link_preview_options?: { is_disabled: true } }

  constructor({ token, apiRoot, metrics, log, migrations, linkPreviews = false }: TelegramOptions) {
    this.#log = log
    this.migrations = migrations
    this.#previews = linkPreviews ? {} : { link_preview_options: { is_disabled: true } }
    this.api = new Api(token, { apiRoot, timeoutSeconds: REQUEST_TIMEOUT_S })
    this.#nowApi = new Api(token, { apiRoot, timeoutSeconds: NOW_OR_NEVER_TIMEOUT_S })
    for (const api of [this.api, this.#nowApi]) {
      api.config.use(async (prev, method, payload, signal) => {
        try {
          const result = await prev(method, payload, signal)
          if (!result.ok) metrics.telegramErrors.inc({ method, code: String(result.error_code) })
          return result
        } catch (error) {
          metrics.telegramErrors.inc({ method, code: 'network' })
          throw error
        }
      })
    }
    this.api.config.use(autoRetry(REPLY_RETRY))
  }

  /** Sets one reaction on a message, replacing any earlier one of the bot's. */
  async react(chatId: number, messageId: number, emoji: ReactionEmoji): Promise<void> {
    await this.#nowApi.setMessageReaction(chatId, messageId, [{ type: 'emoji', emoji }])
  }

  /** Shows "typing…" in the chat (Telegram clears it after 5 s or at the bot's next message). */
  async typing(target: ReplyTarget): Promise<void> {
    await this.#nowApi.sendChatAction(target.chatId, 'typing', threadOf(target))
  }

  /**
   * Sends a reply written in Markdown as Telegram HTML, split at Telegram's limit, as a reply to
   * the message, into the message's forum topic. A part whose HTML Telegram refuses is sent again
   * as plain text; one whose target message is gone (Telegram refuses that in forum topics) is sent
   * without the reply; one for a group that became a supergroup goes to the supergroup.
   */
  async sendReply(target: ReplyTarget, markdown: string): Promise<void> {
    const parts = await formatOffLoop(markdown, ({ reason, chars, error }) =>
      this.#log.warn({ err: error, reason, chars }, 'reply not formatted (too slow, or the formatting thread failed); sending it as plain text'),
    )
    let where: Destination = this.#destination(target)
    for (const part of parts) {
      for (;;) {
        try {
          await this.#sendPart(where, part)
          break
        } catch (error) {
          const newChatId = migratedTo(error)
          if (newChatId !== undefined && newChatId !== where.chatId) {
            this.#followMigration(where.chatId, newChatId)
            where = { chatId: newChatId, options: {} }
          } else if (isReplyTargetGone(error) && 'reply_parameters' in where.options) {
            this.#log.info({ chat_id: where.chatId, message_id: target.messageId }, 'the message replied to is gone; sending without the reply')
            where = { chatId: where.chatId, options: threadOf(target) }
          } else {
            throw error
          }
        }
      }
    }
  }

  async #sendPart({ chatId, options }: Destination, part: FormattedPart): Promise<void> {
    try {
      await withNetworkRetries(() => this.api.sendMessage(chatId, part.html, { ...options, ...this.#previews, parse_mode: 'HTML' }))
    } catch (error) {
      if (!isEntityError(error)) throw error
      await withNetworkRetries(() => this.api.sendMessage(chatId, part.plain, { ...options, ...this.#previews }))
    }
  }

  /** Where a message to this target goes: its chat (or the supergroup it became), as a reply in its topic. */
  #destination(target: ReplyTarget): Destination {
    const chatId = this.migrations.currentId(target.chatId)
    // The upgrade gave every message a new id: the message replied to is not known by its old one.
    if (chatId !== target.chatId) return { chatId, options: {} }
    return { chatId, options: { ...replyTo(target), ...threadOf(target) } }
  }

  #followMigration(from: number, to: number): void {
    if (!this.migrations.record(from, to)) return
    this.#log.warn({ chat_id: from, new_chat_id: to }, `group ${from} became supergroup ${to}: replies go there now; put ${to} in ALLOWED_CHAT_IDS`)
  }

  /**
   * Sends a file the brain made, as a photo or a document, in reply to the message, with a plain
   * caption (cut to Telegram's 1024 characters).
   */
  async sendFile(target: ReplyTarget, file: OutgoingFile): Promise<void> {
    const caption = file.caption === undefined || file.caption === '' ? {} : { caption: cutCaption(file.caption) }
    const { chatId, options } = this.#destination(target)
    // A fresh InputFile per attempt: its bytes are read once per request.
    const input = (): InputFile => new InputFile(file.bytes, file.fileName)
    if (file.kind === 'photo') await withNetworkRetries(() => this.api.sendPhoto(chatId, input(), { ...options, ...caption }))
    else await withNetworkRetries(() => this.api.sendDocument(chatId, input(), { ...options, ...caption }))
  }

  /** Sends a plain status line in reply to the message; returns its id, for editing. */
  async sendStatus(target: ReplyTarget, text: string): Promise<number> {
    const { chatId, options } = this.#destination(target)
    const sent = await this.#nowApi.sendMessage(chatId, text, { ...options, ...this.#previews })
    return sent.message_id
  }

  async editStatus(chatId: number, messageId: number, text: string): Promise<void> {
    await this.#nowApi.editMessageText(chatId, messageId, text, this.#previews)
  }

  async deleteMessage(chatId: number, messageId: number): Promise<void> {
    await this.#nowApi.deleteMessage(chatId, messageId)
  }
}

/** A chat to send to, and the reply and topic options that go with it. */
interface Destination {
  readonly chatId: number
  readonly options: { reply_parameters?: { message_id: number; allow_sending_without_reply: true }; message_thread_id?: number }
}

/** A file for {@link TelegramClient.sendFile}. */
export interface OutgoingFile {
  readonly kind: 'photo' | 'document'
  readonly bytes: Buffer
  readonly fileName: string
  readonly caption?: string | undefined
}

// Telegram's limit for a media caption.
const CAPTION_CHARS_MAX = 1024

// Telegram counts UTF-16 units; the cut never splits a character.
function cutCaption(caption: string): string {
  if (caption.length <= CAPTION_CHARS_MAX) return caption
  let cut = ''
  for (const char of caption) {
    if (cut.length + char.length > CAPTION_CHARS_MAX - 1) break
    cut += char
  }
  return `${cut}…`
}

function replyTo(target: ReplyTarget): { reply_parameters: { message_id: number; allow_sending_without_reply: true } } {
  return { reply_parameters: { message_id: target.messageId, allow_sending_without_reply: true } }
}

function threadOf(target: ReplyTarget): { message_thread_id?: number } {
  return target.threadId === undefined ? {} : { message_thread_id: target.threadId }
}

/** Telegram refused the message's formatting ("Bad Request: can't parse entities: …"). */
function isEntityError(error: unknown): boolean {
  return error instanceof GrammyError && error.error_code === 400 && /can't parse entities/iu.test(error.description)
}

/** The supergroup a group became, when Telegram refused a call to the group for that reason. */
function migratedTo(error: unknown): number | undefined {
  if (!(error instanceof GrammyError)) return undefined
  const id = error.parameters.migrate_to_chat_id
  return Number.isSafeInteger(id) ? id : undefined
}

/** Telegram refused a reply because the message it answers is gone ("message to be replied not found"). */
function isReplyTargetGone(error: unknown): boolean {
  return error instanceof GrammyError && error.error_code === 400 && /(message to be replied|replied message) not found/iu.test(error.description)
}

/** True for an error that retrying cannot fix (Telegram said no: chat not found, blocked, bad request). */
export function isPermanentTelegramError(error: unknown): boolean {
  return error instanceof GrammyError && error.error_code >= 400 && error.error_code < 500 && error.error_code !== 429
}

async function withNetworkRetries<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call()
    } catch (error) {
      if (!(error instanceof HttpError) || attempt >= NETWORK_ATTEMPTS) throw error
      await delay(NETWORK_BACKOFF_MS[attempt - 1] ?? 4000)
    }
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
