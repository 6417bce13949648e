import type { FastifyBaseLogger } from 'fastify'
import { Api } from 'grammy'
import { ConfigError, type TelegramSettings } from '../config.js'
import { describeTelegramFailure, isBadToken } from './failures.js'

// A start must not hang on a dead network: the first getMe gets this long, then the service starts anyway.
const FIRST_CHECK_TIMEOUT_S = 10
// Retries after a failed getMe: 1 s, 2 s, 4 s, … up to a minute.
const RETRY_BASE_MS = 1000
const RETRY_MAX_MS = 60_000

/**
 * The bot token, checked with getMe when the service starts. A token Telegram refuses stops the
 * start (ConfigError naming TELEGRAM_BOT_TOKEN); a Telegram that cannot be reached does not: the
 * check is retried with backoff, and {@link ready} (which /readyz reports) stays false until it
 * answers. The bot's username, once known, goes to `onIdentified`.
 */
export class BotCheck {
  #api: Api
  #settings: TelegramSettings
  #log: FastifyBaseLogger
  #onIdentified: (username: string) => void
  #ready = false
  #failures = 0
  #timer: NodeJS.Timeout | undefined
  #stopped = false

  constructor(options: { settings: TelegramSettings; log: FastifyBaseLogger; onIdentified: (username: string) => void }) {
    this.#settings = options.settings
    this.#api = new Api(options.settings.botToken, { apiRoot: options.settings.apiRoot, timeoutSeconds: FIRST_CHECK_TIMEOUT_S })
    this.#log = options.log
    this.#onIdentified = options.onIdentified
  }

  /** True once getMe answered: the token works and Telegram is reachable. */
  get ready(): boolean {
    return this.#ready
  }

  /** The check at start: throws ConfigError for a refused token; anything else schedules retries. */
  async first(): Promise<void> {
    try {
      this.#identified((await this.#api.getMe()).username)
    } catch (error) {
      if (isBadToken(error)) throw new ConfigError('TELEGRAM_BOT_TOKEN', `was refused by Telegram: ${this.#describe(error)}`)
      this.#log.warn(
        { error: this.#describe(error) },
        'could not check the bot token with getMe; serving anyway, retrying, and /readyz says not ready until it answers',
      )
      this.#retryLater()
    }
  }

  stop(): void {
    this.#stopped = true
    clearTimeout(this.#timer)
  }

  #identified(username: string): void {
    this.#ready = true
    this.#onIdentified(username)
  }

  #retryLater(): void {
    if (this.#stopped) return
    const wait = Math.min(RETRY_BASE_MS * 2 ** this.#failures++, RETRY_MAX_MS)
    this.#timer = setTimeout(() => {
      this.#api.getMe().then(
        (me) => {
          this.#log.info({ after_attempts: this.#failures + 1, username: me.username }, 'bot token checked with getMe: Telegram answers')
          this.#identified(me.username)
        },
        (error: unknown) => {
          if (isBadToken(error)) {
            // Nothing a retry can fix; the service stays up (it may be mid-work) but never ready.
            this.#log.error({ error: this.#describe(error) }, 'Telegram refused the bot token; set TELEGRAM_BOT_TOKEN and restart')
            return
          }
          this.#log.warn({ error: this.#describe(error), attempt: this.#failures + 1 }, 'bot token check failed again; retrying')
          this.#retryLater()
        },
      )
    }, wait)
    this.#timer.unref()
  }

  #describe(error: unknown): string {
    return describeTelegramFailure(error, this.#settings)
  }
}
