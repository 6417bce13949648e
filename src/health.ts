import { monitorEventLoopDelay, type ELDHistogram } from 'node:perf_hooks'
import type { Receipt } from './intake/intake.js'

const WINDOW_MS = 10_000
const RESOLUTION_MS = 10

/**
 * The event loop's delay over roughly the last 10 s: two histograms take turns, and the p99 of the
 * current and the previous window is reported, so a stall shows for at least one full window.
 */
export class EventLoopDelay {
  #current: ELDHistogram
  #previous: ELDHistogram
  #timer: NodeJS.Timeout

  constructor() {
    this.#current = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
    this.#previous = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
    this.#current.enable()
    this.#timer = setInterval(() => this.#rotate(), WINDOW_MS)
    this.#timer.unref()
  }

  /** The p99 delay in milliseconds, beyond the sampling resolution itself. */
  p99Ms(): number {
    const p99 = Math.max(percentile99(this.#current), percentile99(this.#previous))
    return Math.max(0, Math.round((p99 / 1e6 - RESOLUTION_MS) * 100) / 100)
  }

  close(): void {
    clearInterval(this.#timer)
    this.#current.disable()
    this.#previous.disable()
  }

  #rotate(): void {
    const finished = this.#current
    this.#previous.reset()
    this.#current = this.#previous
    this.#current.enable()
    finished.disable()
    this.#previous = finished
  }
}

function percentile99(histogram: ELDHistogram): number {
  return histogram.count === 0 ? 0 : histogram.percentile(99)
}

/**
 * What the routes serve: the single-host Coordinator, or a host of the Postgres mode
 * (cluster/node.ts).
 */
export interface ServiceCore {
  readonly startedAt: number
  /** True once shutdown began: the webhook answers 503 so Telegram re-sends later. */
  readonly draining: boolean
  /** Takes an authentic webhook body. */
  receive(body: unknown): Receipt | Promise<Receipt>
  /** The store's checks for /readyz (a write must succeed). */
  readiness(): Record<string, boolean> | Promise<Record<string, boolean>>
  /** The service's part of /healthz; `degraded` when the store cannot be written. */
  health(now: number): HealthParts | Promise<HealthParts>
}

export interface HealthParts {
  readonly degraded: boolean
  readonly fields: Record<string, unknown>
  readonly lastUpdateAt: number | undefined
}

/** Seconds since `since`, to a tenth, for /healthz. */
export function ageSeconds(since: number | null | undefined, now: number): number | null {
  return since === null || since === undefined ? null : Math.round((now - since) / 100) / 10
}

