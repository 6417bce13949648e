import v8 from 'node:v8'
import type { FastifyBaseLogger } from 'fastify'

export interface HeapReducerOptions {
  /** How often it looks. */
  readonly checkMs?: number
  /** The event loop counts as idle when it was busy less than this share of a whole check. */
  readonly idleUtilization?: number
  /** It must have been idle this long, check after check, before the heap is handed back. */
  readonly idleMs?: number
  /** Heap committed this far above what the last reduction (or the start) left is worth handing back. */
  readonly slackBytes?: number
}

const MB = 2 ** 20
const DEFAULTS: Required<HeapReducerOptions> = { checkMs: 5000, idleUtilization: 0.02, idleMs: 15_000, slackBytes: 64 * MB }

/**
 * Hands V8's heap back to the system once a burst of work is over. A burst (a backlog arriving,
 * or draining) leaves V8 with its young generation at its largest, pooled pages, and an old
 * generation grown by garbage: 250 MB committed for 30 MB of live objects after 100,000 webhooks,
 * and nothing in Node shrinks it while the process idles. A full collection asked for through the
 * in-process inspector (`HeapProfiler.collectGarbage`, V8's collect-all-available-garbage; `gc()`
 * of --expose-gc does not shrink anything) does. Its pause is about 100 ms for 30 MB live, and the
 * next burst pays to grow the heap again, so it runs only once the event loop has idled for 15 s
 * (bursts a few seconds apart keep their heap), and at most once per burst. The timer is unref'd;
 * {@link close} stops it.
 */
export class HeapReducer {
  readonly #options: Required<HeapReducerOptions>
  readonly #log: FastifyBaseLogger
  readonly #timer: NodeJS.Timeout
  #utilization = performance.eventLoopUtilization()
  #floor = v8.getHeapStatistics().total_heap_size
  #reducing = false
  /** How long the loop has been idle: the checks' time, counted from the last busy one. */
  #idleMs = 0

  constructor(log: FastifyBaseLogger, options: HeapReducerOptions = {}) {
    this.#options = { ...DEFAULTS, ...options }
    this.#log = log
    this.#timer = setInterval(() => this.#check(), this.#options.checkMs)
    this.#timer.unref()
  }

  close(): void {
    clearInterval(this.#timer)
  }

  #check(): void {
    if (this.#reducing) return
    const busy = performance.eventLoopUtilization(this.#utilization).utilization
    this.#utilization = performance.eventLoopUtilization()
    const committed = v8.getHeapStatistics().total_heap_size
    // After a burst's garbage is collected the heap may commit less than the floor.
    if (committed < this.#floor) this.#floor = committed
    this.#idleMs = busy < this.#options.idleUtilization ? this.#idleMs + this.#options.checkMs : 0
    if (this.#idleMs < this.#options.idleMs || committed < this.#floor + this.#options.slackBytes) return
    this.#reducing = true
    void this.#reduce(committed).finally(() => {
      this.#reducing = false
      // Its own pause is not the service's work: the next check measures from here.
      this.#utilization = performance.eventLoopUtilization()
      this.#idleMs = 0
    })
  }

  async #reduce(committed: number): Promise<void> {
    const started = performance.now()
    const rssBefore = process.memoryUsage.rss()
    try {
      // Imported when first needed: a Node built without the inspector still runs the service.
      const { Session } = await import('node:inspector/promises')
      const session = new Session()
      session.connect()
      try {
        await session.post('HeapProfiler.collectGarbage')
      } finally {
        session.disconnect()
      }
    } catch (error) {
      // It would fail the same way after every idle spell: said once, and not tried again.
      this.close()
      this.#log.warn({ err: error }, 'handing the heap back failed; not trying again')
      return
    }
    this.#floor = v8.getHeapStatistics().total_heap_size
    this.#log.info(
      {
        heap_mb: Math.round(committed / MB),
        heap_after_mb: Math.round(this.#floor / MB),
        rss_mb: Math.round(rssBefore / MB),
        rss_after_mb: Math.round(process.memoryUsage.rss() / MB),
        ms: Math.round(performance.now() - started),
      },
      'idle after a burst: heap handed back',
    )
  }
}
