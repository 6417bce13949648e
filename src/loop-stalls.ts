import type { FastifyBaseLogger } from 'fastify'

/** How often the watch expects to run; a later run means the event loop was busy meanwhile. */
const TICK_MS = 10
/** A stall this long is logged at debug: enough to measure what a large reply costs the loop. */
export const STALL_DEBUG_MS = 20
/** A stall this long is logged at warn: webhooks waited this long for an answer. */
export const STALL_WARN_MS = 100

// process.threadCpuUsage (Node ≥ 23.9) counts this thread alone; cpuUsage would add the workers'.
const threadCpuUsage = (process as NodeJS.Process & { threadCpuUsage?: () => NodeJS.CpuUsage }).threadCpuUsage?.bind(process)

function threadCpuMicros(): number {
  const { user, system } = threadCpuUsage?.() ?? process.cpuUsage()
  return user + system
}

/**
 * Logs every time the event loop was blocked for {@link STALL_DEBUG_MS} or more ("event loop
 * stalled", with `stall_ms`), at warn from {@link STALL_WARN_MS}: the service must never go deaf,
 * and this names the moment it did. The timer is unref'd; {@link close} stops it.
 */
export class LoopStallWatch {
  #timer: NodeJS.Timeout
  #expected = performance.now() + TICK_MS
  #cpuMicros = threadCpuMicros()
  #log: FastifyBaseLogger

  constructor(log: FastifyBaseLogger) {
    this.#log = log
    this.#timer = setInterval(() => this.#tick(), TICK_MS)
    this.#timer.unref()
  }

  close(): void {
    clearInterval(this.#timer)
  }

  #tick(): void {
    const now = performance.now()
    const stallMs = Math.round(now - this.#expected)
    const cpuMicros = threadCpuMicros()
    // The CPU this thread used over the tick: about the stall when our own work blocked the loop,
    // far less when the machine kept the thread waiting for a CPU.
    const cpuMs = Math.round((cpuMicros - this.#cpuMicros) / 1000)
    this.#cpuMicros = cpuMicros
    this.#expected = now + TICK_MS
    if (stallMs < STALL_DEBUG_MS) return
    this.#log[stallMs >= STALL_WARN_MS ? 'warn' : 'debug']({ stall_ms: stallMs, cpu_ms: cpuMs }, 'event loop stalled')
  }
}
