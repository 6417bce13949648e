import type { Inbox, NewMessage, ToStore } from './inbox.js'

interface Waiting {
  readonly toStore: ToStore
  readonly resolve: (seq: number | 'duplicate') => void
  readonly reject: (error: unknown) => void
}

/**
 * Stores the messages handed in during one turn of the event loop (the webhook requests read
 * together) in one transaction of the inbox: one commit, and the pages they share written once,
 * instead of one of each per message. Each caller learns its own result only once the transaction
 * holding its row has committed; if it cannot commit, every caller of that turn gets its error and
 * none of their messages is stored. Messages are stored in the order they were handed in.
 */
export class GroupCommit {
  #inbox: Pick<Inbox, 'acceptAll'>
  #waiting: Waiting[] = []

  constructor(inbox: Pick<Inbox, 'acceptAll'>) {
    this.#inbox = inbox
  }

  /** As `Inbox.accept` (or `acceptAnswered`, with a reply), once this turn's transaction committed. */
  accept(message: NewMessage, reply?: string): Promise<number | 'duplicate'> {
    return new Promise((resolve, reject) => {
      // setImmediate runs after the event loop's poll phase: every request read in it has been handed in.
      if (this.#waiting.length === 0) setImmediate(() => this.#commit())
      this.#waiting.push({ toStore: reply === undefined ? { message } : { message, reply }, resolve, reject })
    })
  }

  #commit(): void {
    const waiting = this.#waiting
    this.#waiting = []
    let results: (number | 'duplicate')[]
    try {
      results = this.#inbox.acceptAll(waiting.map((entry) => entry.toStore))
    } catch (error) {
      for (const entry of waiting) entry.reject(error)
      return
    }
    // Settled in arrival order, so the callers go on (enqueue, acknowledge) in seq order too.
    waiting.forEach((entry, i) => entry.resolve(results[i] as number | 'duplicate'))
  }
}
