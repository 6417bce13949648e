import { monitorEventLoopDelay, type ELDHistogram } from 'node:perf_hooks'

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
