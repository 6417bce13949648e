/** Small helpers for the unit layer (test/unit/), free of the service process and the emulator. */

export const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export interface Deferred<T> {
  readonly promise: Promise<T>
  resolve(value: T): void
  reject(reason: unknown): void
}

/** A promise settled from outside: a step the test releases when it chooses. */
export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void
  let reject!: (reason: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

/** Lets every promise callback already queued run (p-queue hands work on over a few microtasks and a tick). */
export const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))
