import {
  crashLoopNotice,
  type Inbox,
  type InboxStats,
  type ListFilter,
  type NewMessage,
  type Outcome,
  type QueuedMessage,
  type Recovery,
  type ReplyState,
  type StoredMessage,
  type ToStore,
} from './inbox.js'

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

/**
 * An inbox that keeps nothing across restarts (INBOX=memory): for measuring what durability costs,
 * and for throwaway setups. Dedupe and every state transition behave as in the durable one.
 */
export class MemoryInbox implements Inbox {
  #messages = new Map<number, Mutable<StoredMessage>>()
  #seqByUpdate = new Map<number, number>()
  #nextSeq = 1

  accept(message: NewMessage): number | 'duplicate' {
    return this.#insert(message, { state: 'queued', reply: null, replyState: 'none', finishedAt: null })
  }

  acceptAnswered(message: NewMessage, reply: string): number | 'duplicate' {
    return this.#insert(message, { state: 'done', reply, replyState: 'pending', finishedAt: message.receivedAt })
  }

  acceptAll(messages: readonly ToStore[]): (number | 'duplicate')[] {
    return messages.map(({ message, reply }) => (reply === undefined ? this.accept(message) : this.acceptAnswered(message, reply)))
  }

  get(seq: number): StoredMessage | undefined {
    const message = this.#messages.get(seq)
    return message && { ...message }
  }

  markRunning(seq: number, attempt: number, at: number): void {
    const message = this.#require(seq)
    message.state = 'running'
    message.attempts = attempt
    message.startedAt ??= at
  }

  finish(seq: number, outcome: Outcome, at: number): void {
    Object.assign(this.#require(seq), {
      state: outcome.state,
      finishedAt: at,
      exitCode: outcome.exitCode,
      exitSignal: outcome.exitSignal,
      stderrTail: outcome.stderrTail,
      reply: outcome.reply,
      replyState: outcome.reply === '' ? 'none' : 'pending',
    })
  }

  setReplyState(seq: number, state: ReplyState): void {
    this.#require(seq).replyState = state
  }

  queuedInChat(chatId: number): StoredMessage[] {
    const queued: StoredMessage[] = []
    for (const message of this.#messages.values()) {
      if (message.chatId === chatId && message.state === 'queued') queued.push({ ...message })
    }
    return queued
  }

  countQueuedInChat(chatId: number, except = -1): number {
    let count = 0
    for (const message of this.#messages.values()) {
      if (message.chatId === chatId && message.state === 'queued' && message.seq !== except) count++
    }
    return count
  }

  requeue(seqs: readonly number[]): void {
    for (const seq of seqs) {
      const message = this.#require(seq)
      if (message.state === 'running') message.state = 'queued'
    }
  }

  cancelQueued(chatId: number, at: number): number[] {
    const cancelled: number[] = []
    for (const message of this.#messages.values()) {
      if (message.chatId === chatId && message.state === 'queued') {
        message.state = 'cancelled'
        message.finishedAt = at
        cancelled.push(message.seq)
      }
    }
    return cancelled
  }

  // Empty at start, but the same transitions as the durable inbox, so that the two can't drift apart.
  recover(maxInterruptions: number, at: number): Recovery {
    for (const message of this.#messages.values()) {
      if (message.state === 'running') {
        message.state = 'queued'
        message.interruptions++
      }
      if (message.state === 'queued' && message.interruptions >= maxInterruptions) {
        Object.assign(message, {
          state: 'failed',
          finishedAt: at,
          replyState: 'pending',
          reply: crashLoopNotice(message.interruptions),
        })
      }
    }
    const all = [...this.#messages.values()]
    return {
      unfinished: all.filter((message) => message.state === 'queued').map(queuedOf),
      undeliveredReplies: all.filter((message) => message.replyState === 'pending').map(queuedOf),
    }
  }

  retry(seq: number): StoredMessage {
    throw new RangeError(`message ${seq} cannot be retried: the in-memory inbox is gone when the service stops`)
  }

  takeRequeued(): StoredMessage[] {
    return []
  }

  list({ chatId, state, limit = 50 }: ListFilter): StoredMessage[] {
    const matching = [...this.#messages.values()].filter(
      (message) => (chatId === undefined || message.chatId === chatId) && (state === undefined || message.state === state),
    )
    return matching.slice(-limit).map((message) => ({ ...message }))
  }

  prune(olderThan: number, limit: number): number[] {
    const pruned: number[] = []
    for (const message of this.#messages.values()) {
      if (pruned.length >= limit) break
      const finished = message.state !== 'queued' && message.state !== 'running' && message.replyState !== 'pending'
      if (finished && message.finishedAt !== null && message.finishedAt < olderThan) {
        this.#messages.delete(message.seq)
        this.#seqByUpdate.delete(message.updateId)
        pruned.push(message.updateId)
      }
    }
    return pruned
  }

  stats(): InboxStats {
    let oldestQueuedAt: number | null = null
    for (const message of this.#messages.values()) {
      if (message.state === 'queued') {
        oldestQueuedAt = message.receivedAt
        break
      }
    }
    return { kind: 'memory', writable: true, sizeBytes: 0, oldestQueuedAt, lastWriteError: null }
  }

  probeWritable(): boolean {
    return true
  }

  close(): void {
    this.#messages.clear()
    this.#seqByUpdate.clear()
  }

  #insert(
    message: NewMessage,
    initial: Pick<StoredMessage, 'state' | 'reply' | 'replyState' | 'finishedAt'>,
  ): number | 'duplicate' {
    if (this.#seqByUpdate.has(message.updateId)) return 'duplicate'
    const seq = this.#nextSeq++
    this.#messages.set(seq, {
      ...message,
      ...initial,
      threadId: message.threadId ?? null,
      seq,
      attempts: 0,
      interruptions: 0,
      startedAt: null,
      exitCode: null,
      exitSignal: null,
      stderrTail: null,
    })
    this.#seqByUpdate.set(message.updateId, seq)
    return seq
  }

  #require(seq: number): Mutable<StoredMessage> {
    const message = this.#messages.get(seq)
    if (!message) throw new RangeError(`no message with id ${seq} in the inbox`)
    return message
  }
}

function queuedOf({ seq, chatId, updateId, receivedAt, interruptions }: StoredMessage): QueuedMessage {
  return { seq, chatId, updateId, receivedAt, interruptions }
}
