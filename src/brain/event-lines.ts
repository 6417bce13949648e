import type { FastifyBaseLogger } from 'fastify'
import { EVENTS_FD } from './protocol.js'

/** An event line (fd 3) longer than this is skipped whole. */
export const EVENT_LINE_LIMIT_BYTES = 64 * 1024
/** After this much fd-3 traffic in one attempt, further events are drained unread. */
export const EVENT_VOLUME_LIMIT_BYTES = 16 * 1024 * 1024
/** A line quoted in a log entry is cut to this many characters. */
export const LOGGED_LINE_CHARS = 200

// Warnings about bad event lines per attempt, so a brain writing garbage cannot flood the log.
const EVENT_WARNINGS_MAX = 10

/**
 * Splits the fd-3 event channel into lines and hands each JSON object to `onEvent`. Bad lines
 * (not JSON, not an object, too long) are skipped with a warning; nothing here can fail the run.
 */
export class EventLines {
  readonly #onEvent: ((event: unknown) => void) | undefined
  readonly #log: FastifyBaseLogger
  #pending: Buffer[] = []
  #pendingBytes = 0
  // Set while the rest of an over-long line streams by; cleared at its newline.
  #skippingLine = false
  #totalBytes = 0
  #warnings = 0

  constructor(onEvent: ((event: unknown) => void) | undefined, log: FastifyBaseLogger) {
    this.#onEvent = onEvent
    this.#log = log
  }

  push(chunk: Buffer): void {
    if (this.#totalBytes > EVENT_VOLUME_LIMIT_BYTES) return
    this.#totalBytes += chunk.length
    if (this.#totalBytes > EVENT_VOLUME_LIMIT_BYTES) {
      this.#pending = []
      this.#pendingBytes = 0
      this.#warn(`more than ${EVENT_VOLUME_LIMIT_BYTES} bytes of progress; ignoring the rest of fd ${EVENTS_FD}`)
      return
    }
    let start = 0
    for (let newline = chunk.indexOf(0x0a); newline !== -1; newline = chunk.indexOf(0x0a, start)) {
      this.#append(chunk.subarray(start, newline))
      this.#endLine()
      start = newline + 1
    }
    this.#append(chunk.subarray(start))
  }

  /** The stream is over: a last line without a newline still counts. */
  end(): void {
    if (this.#pendingBytes > 0) this.#endLine()
  }

  #append(part: Buffer): void {
    if (this.#skippingLine || part.length === 0) return
    if (this.#pendingBytes + part.length > EVENT_LINE_LIMIT_BYTES) {
      this.#pending = []
      this.#pendingBytes = 0
      this.#skippingLine = true
      this.#warn(`progress line longer than ${EVENT_LINE_LIMIT_BYTES} bytes skipped`)
      return
    }
    this.#pending.push(part)
    this.#pendingBytes += part.length
  }

  #endLine(): void {
    if (this.#skippingLine) {
      this.#skippingLine = false
      return
    }
    const line = Buffer.concat(this.#pending, this.#pendingBytes).toString('utf8').trim()
    this.#pending = []
    this.#pendingBytes = 0
    if (line === '') return
    let event: unknown
    try {
      event = JSON.parse(line)
    } catch {
      return this.#warn('progress line is not JSON; skipped', line)
    }
    if (typeof event !== 'object' || event === null || Array.isArray(event)) {
      return this.#warn('progress line is not a JSON object; skipped', line)
    }
    try {
      this.#onEvent?.(event)
    } catch (error) {
      this.#log.warn({ err: error }, 'progress event handler threw; event dropped')
    }
  }

  #warn(message: string, line?: string): void {
    this.#warnings++
    if (this.#warnings > EVENT_WARNINGS_MAX) return
    const suffix = this.#warnings === EVENT_WARNINGS_MAX ? ' (further progress warnings for this attempt suppressed)' : ''
    this.#log.warn(line === undefined ? {} : { line: line.slice(0, LOGGED_LINE_CHARS) }, message + suffix)
  }
}
