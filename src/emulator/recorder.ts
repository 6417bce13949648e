/** How long waitFor waits when not told. */
export const DEFAULT_WAIT_MS = 5_000
const RECENT_IN_TIMEOUT_MESSAGE = 15

/** Options for waiting on the record of calls or deliveries. */
export interface WaitOptions {
  /** Give up (reject) after this long; defaults to 5 s. */
  readonly timeoutMs?: number
  /** Only look at entries after the first `since` ones (e.g. `emu.calls.length` before acting). */
  readonly since?: number
}

interface Waiter<T> {
  readonly predicate: (entry: T) => boolean
  readonly resolve: (entry: T) => void
}

/**
 * An append-only log (API calls, webhook deliveries) that tests can wait on. Waiting looks at what
 * is already there first, so an entry recorded just before the wait is never missed.
 */
export class Recorder<T> {
  readonly #what: string
  readonly #describe: (entry: T) => string
  #entries: T[] = []
  readonly #waiters = new Set<Waiter<T>>()

  constructor(what: string, describe: (entry: T) => string) {
    this.#what = what
    this.#describe = describe
  }

  get entries(): readonly T[] {
    return this.#entries
  }

  add(entry: T): void {
    this.#entries.push(entry)
    for (const waiter of this.#waiters) {
      if (!waiter.predicate(entry)) continue
      this.#waiters.delete(waiter)
      waiter.resolve(entry)
    }
  }

  /** Forgets the entries; anyone waiting keeps waiting for new ones. */
  clear(): void {
    this.#entries = []
  }

  waitFor(predicate: (entry: T) => boolean, options: WaitOptions = {}): Promise<T> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_MS
    const seen = this.#entries.slice(options.since ?? 0).find(predicate)
    if (seen !== undefined) return Promise.resolve(seen)
    return new Promise((resolve, reject) => {
      const waiter: Waiter<T> = {
        predicate,
        resolve: (entry) => {
          clearTimeout(timer)
          resolve(entry)
        },
      }
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter)
        reject(new Error(this.#timeoutMessage(timeoutMs)))
      }, timeoutMs)
      this.#waiters.add(waiter)
    })
  }

  #timeoutMessage(timeoutMs: number): string {
    const recent = this.#entries.slice(-RECENT_IN_TIMEOUT_MESSAGE)
    const listing = recent.length === 0 ? '  (none)' : recent.map((entry) => `  ${this.#describe(entry)}`).join('\n')
    return (
      `No ${this.#what} matched within ${timeoutMs} ms (${this.#entries.length} recorded); the last ${recent.length}:\n` +
      listing
    )
  }
}
