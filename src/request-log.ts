import type { FastifyBaseLogger } from 'fastify'

/** How often the rejected requests held back from the log are summed up in one line. */
export const REJECTED_SUMMARY_INTERVAL_MS = 60_000

/**
 * The log of rejected HTTP requests (wrong secret, rate-limited, not JSON, too large…). A flood of
 * them must not drown the message log or make journald drop lines: the first of each reason in an
 * interval is written, with its client, and the rest are counted and summed up in one line at the
 * end of the interval (and at close).
 */
export class RejectedRequestLog {
  readonly #log: FastifyBaseLogger
  // Reason → requests held back in this interval.
  readonly #held = new Map<string, number>()
  readonly #timer: NodeJS.Timeout

  constructor(log: FastifyBaseLogger, intervalMs = REJECTED_SUMMARY_INTERVAL_MS) {
    this.#log = log
    this.#timer = setInterval(() => this.flush(), intervalMs)
    this.#timer.unref()
  }

  /** Notes a rejected request: written when it is the first of its reason in this interval. */
  note(reason: string, fields: Record<string, unknown>, message: string): void {
    const held = this.#held.get(reason)
    if (held === undefined) {
      this.#held.set(reason, 0)
      this.#log.warn({ ...fields, reason }, message)
    } else {
      this.#held.set(reason, held + 1)
    }
  }

  /** Writes the summary of what was held back, if anything, and starts a new interval. */
  flush(): void {
    const counts = Object.fromEntries([...this.#held].filter(([, count]) => count > 0))
    this.#held.clear()
    const total = Object.values(counts).reduce((sum, count) => sum + count, 0)
    if (total > 0) this.#log.warn({ rejected: counts, total }, `${total} more rejected requests not logged one by one`)
  }

  close(): void {
    clearInterval(this.#timer)
    this.flush()
  }
}
