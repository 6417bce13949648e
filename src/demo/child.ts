import { performance } from 'node:perf_hooks'
import type { Readable } from 'node:stream'

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
export const wallClockMs = (): number => performance.timeOrigin + performance.now()

/** One line of a child's JSON log, pino's shape: `time` is Date.now() ms in the child. */
export interface LogLine {
  readonly level: number
  readonly time: number
  readonly msg: string
  readonly [field: string]: unknown
}

/** pino's number for the warn level; error and fatal are above it. */
export const LOG_LEVEL_WARN = 40

export interface LogReaderOptions {
  /** Keep every line in `lines`; a long run that only counts them turns this off. */
  readonly keep: boolean
  /** Called with every line as it is read. */
  readonly onLine?: ((line: LogLine) => void) | undefined
}

interface LogWaiter {
  readonly match: (line: LogLine) => boolean
  readonly resolve: (line: LogLine) => void
  readonly reject: (error: Error) => void
}

/**
 * A child process's stdout read as JSON lines (the service's log, a bench script's result): the
 * one parser the service runner and the benchmarks' other children share.
 */
export class LogReader {
  readonly lines: LogLine[] = []
  readonly #options: LogReaderOptions
  readonly #waiters = new Set<LogWaiter>()
  #ended: string | undefined

  constructor(stream: Readable, options: LogReaderOptions) {
    this.#options = options
    let partial = ''
    stream.setEncoding('utf8').on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) this.#parse(line)
    })
  }

  /** The first line (already kept or still to come) that matches; rejects after `timeoutMs`, or once `end` says no more will come. */
  waitFor(match: (line: LogLine) => boolean, timeoutMs: number): Promise<LogLine> {
    const seen = this.lines.find(match)
    if (seen) return Promise.resolve(seen)
    if (this.#ended !== undefined) return Promise.reject(new Error(this.#ended))
    return new Promise((resolve, reject) => {
      const settle = (): void => {
        this.#waiters.delete(waiter)
        clearTimeout(timer)
      }
      const waiter: LogWaiter = {
        match,
        resolve: (line) => {
          settle()
          resolve(line)
        },
        reject: (error) => {
          settle()
          reject(error)
        },
      }
      const timer = setTimeout(() => waiter.reject(new Error(`none within ${timeoutMs} ms`)), timeoutMs)
      this.#waiters.add(waiter)
    })
  }

  /** No more lines will come (the process is gone): every wait still pending rejects with `why`. */
  end(why: string): void {
    this.#ended = why
    for (const waiter of this.#waiters) waiter.reject(new Error(why))
  }

  #parse(text: string): void {
    if (!text.trim()) return
    let line: LogLine
    try {
      line = JSON.parse(text) as LogLine
    } catch {
      // Anything but a JSON line is unexpected output: it counts as a warning.
      line = { level: LOG_LEVEL_WARN, time: Date.now(), msg: text }
    }
    if (this.#options.keep) this.lines.push(line)
    this.#options.onLine?.(line)
    for (const waiter of this.#waiters) if (waiter.match(line)) waiter.resolve(line)
  }
}

/** Polls `url` until it answers below 500; throws if `running()` turns false or `timeoutMs` pass. */
export async function waitUntilAnswers(url: string, running: () => boolean, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    if (!running()) throw new Error(`it exited before ${url} answered`)
    try {
      const response = await fetch(url)
      await response.arrayBuffer()
      if (response.status < 500) return
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error(`${url} did not answer within ${timeoutMs / 1000} s`)
}
