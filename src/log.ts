import { pino, type Logger } from 'pino'
import type { LogLevel } from './config.js'

export interface LoggerOptions {
  /** Human-readable through pino-pretty; by default when stdout is a terminal. */
  readonly pretty?: boolean
  /**
   * Values that must never reach the log (the bot token, the webhook secrets). Every line is
   * searched as written, so no error, URL or object logged anywhere can carry them out.
   */
  readonly secrets?: readonly string[]
}

/** What a secret is replaced with in the log. */
export const REDACTED = '[redacted]'

/**
 * The service's logger: JSON lines (one event per line) for journald and log shippers, or
 * human-readable through pino-pretty when stdout is a terminal.
 */
export function createLogger(level: LogLevel, { pretty = process.stdout.isTTY === true, secrets = [] }: LoggerOptions = {}): Logger {
  const hooks = { streamWrite: redactor(secrets) }
  if (!pretty) return pino({ level, base: { pid: process.pid }, hooks })
  return pino({
    level,
    hooks,
    transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } },
  })
}

/**
 * Replaces each secret in a written line, as it is and as a URL or JSON string may spell it (an
 * HTTP library's error keeps the request URL, and the Bot API's URLs hold the token).
 */
export function redactor(secrets: readonly string[]): (line: string) => string {
  const spellings = [...new Set(secrets.filter(Boolean).flatMap((secret) => [secret, encodeURIComponent(secret), JSON.stringify(secret).slice(1, -1)]))]
    // The longest first, so that a secret containing another is replaced whole.
    .sort((a, b) => b.length - a.length)
  if (spellings.length === 0) return (line) => line
  return (line) => {
    let result = line
    for (const spelling of spellings) if (result.includes(spelling)) result = result.replaceAll(spelling, REDACTED)
    return result
  }
}

// How many intervals a key whose lines were held back is remembered.
const HELD_KEYS_KEPT_FOR = 10

/**
 * Lets a repeated log line through at most once per interval for each key, counting the ones held
 * back; and at most `maxKeys` keys per interval in all, so that a flood of distinct keys (random
 * chat ids) stays bounded too.
 */
export class LogThrottle {
  readonly #intervalMs: number
  readonly #maxKeys: number
  // Key → when it was last let through, and how many were held back since.
  readonly #seen = new Map<string, { at: number; held: number }>()
  #windowStart = 0
  #keysInWindow = 0

  constructor(intervalMs: number, maxKeys: number) {
    this.#intervalMs = intervalMs
    this.#maxKeys = maxKeys
  }

  /** The number of lines held back since the last one let through for this key, or false to hold this one back. */
  admit(key: string, now = Date.now()): number | false {
    if (now - this.#windowStart >= this.#intervalMs) {
      this.#windowStart = now
      this.#keysInWindow = 0
      // A key with lines held back is kept a while, so that its next line can say how many.
      for (const [seenKey, entry] of this.#seen) {
        const keepMs = entry.held > 0 ? this.#intervalMs * HELD_KEYS_KEPT_FOR : this.#intervalMs
        if (now - entry.at >= keepMs) this.#seen.delete(seenKey)
      }
    }
    const entry = this.#seen.get(key)
    if (entry !== undefined && now - entry.at < this.#intervalMs) {
      entry.held++
      return false
    }
    if (this.#keysInWindow >= this.#maxKeys) return false
    this.#keysInWindow++
    const held = entry?.held ?? 0
    this.#seen.set(key, { at: now, held: 0 })
    return held
  }
}
