import { Api, GrammyError, HttpError } from 'grammy'
import { autoRetry } from '@grammyjs/auto-retry'
import type { Metrics } from '../metrics.js'
import type { ReactionEmoji } from './reactions.js'
import { splitMessage } from './split.js'

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
}

// A reply waits out rate limits and Telegram's 5xx, but not forever.
const REPLY_RETRY = { maxRetryAttempts: 5, maxDelaySeconds: 60, rethrowHttpErrors: true }
// auto-retry retries network errors without a bound; replies bound them here instead.
const NETWORK_ATTEMPTS = 5
const NETWORK_BACKOFF_MS = [500, 1000, 2000, 4000]
const REQUEST_TIMEOUT_S = 30
// The receipt reaction is only useful now: no retries, and a short timeout.
const ACK_TIMEOUT_S = 5

/**
 * The service's side of the Bot API, through grammY. Replies retry within bounds; the receipt
 * reaction never retries, because a late 👀 is worth less than the work it would hold up.
 */
export class TelegramClient {
  /** For replies and everything that must arrive: bounded retries. */
  readonly api: Api
  // A separate client for the receipt reaction, so that its failures are never retried.
  #ackApi: Api

  constructor({ token, apiRoot, metrics }: TelegramOptions) {
    this.api = new Api(token, { apiRoot, timeoutSeconds: REQUEST_TIMEOUT_S })
    this.#ackApi = new Api(token, { apiRoot, timeoutSeconds: ACK_TIMEOUT_S })
    for (const api of [this.api, this.#ackApi]) {
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
    await this.#ackApi.setMessageReaction(chatId, messageId, [{ type: 'emoji', emoji }])
  }

  /**
   * Sends a reply, split at Telegram's limit on line boundaries, as a reply to the message (sent
   * anyway if that message is gone), into the message's forum topic.
   */
  async sendReply(target: ReplyTarget, text: string): Promise<void> {
    for (const part of splitMessage(text)) {
      await withNetworkRetries(() =>
        this.api.sendMessage(target.chatId, part, {
          reply_parameters: { message_id: target.messageId, allow_sending_without_reply: true },
          ...(target.threadId === undefined ? {} : { message_thread_id: target.threadId }),
        }),
      )
    }
  }
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
