/**
 * The inbox: every accepted message and where it is in its life. The durable implementation
 * (sqlite.ts) is the source of truth across restarts; the in-memory queues only schedule it.
 */

/** Where a message is in its life. `queued → running → done | failed | timed_out | cancelled`. */
export type MessageState = 'queued' | 'running' | 'done' | 'failed' | 'timed_out' | 'cancelled'
export const MESSAGE_STATES: readonly MessageState[] = ['queued', 'running', 'done', 'failed', 'timed_out', 'cancelled']

/**
 * Whether the message's reply reached the chat. `pending` survives a crash, so a computed reply is
 * sent after a restart instead of being recomputed.
 */
export type ReplyState = 'none' | 'pending' | 'sent' | 'failed'

/** What intake hands to the inbox. */
export interface NewMessage {
  readonly updateId: number
  readonly chatId: number
  readonly messageId: number
  /** The forum topic the reply goes to; absent outside topics. */
  readonly threadId?: number | null | undefined
  /** The raw Update as JSON, passed on to the brain. */
  readonly updateJson: string
  readonly receivedAt: number
}

/** A message to store, with its reply when the service answered it itself (`acceptAnswered`). */
export interface ToStore {
  readonly message: NewMessage
  readonly reply?: string | undefined
}

/** A message as the inbox keeps it. */
export interface StoredMessage extends NewMessage {
  /** Arrival sequence: the order of a chat's messages. */
  readonly seq: number
  readonly threadId: number | null
  readonly state: MessageState
  readonly attempts: number
  /** How many times a restart interrupted this message while its brain ran. */
  readonly interruptions: number
  readonly startedAt: number | null
  readonly finishedAt: number | null
  readonly exitCode: number | null
  readonly exitSignal: string | null
  readonly stderrTail: string | null
  readonly reply: string | null
  readonly replyState: ReplyState
}

/** A message as both stores keep it: one column a field, named as in SQL. */
export interface MessageRow {
  seq: number
  update_id: number
  chat_id: number
  message_id: number
  thread_id: number | null
  update_json: string
  state: MessageState
  received_at: number
  started_at: number | null
  finished_at: number | null
  attempts: number
  interruptions: number
  exit_code: number | null
  exit_signal: string | null
  stderr_tail: string | null
  reply: string | null
  reply_state: ReplyState
}

/** A stored row as the code names it. */
export function messageOfRow(row: MessageRow): StoredMessage {
  return {
    seq: row.seq,
    updateId: row.update_id,
    chatId: row.chat_id,
    messageId: row.message_id,
    threadId: row.thread_id,
    updateJson: row.update_json,
    state: row.state,
    receivedAt: row.received_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    attempts: row.attempts,
    interruptions: row.interruptions,
    exitCode: row.exit_code,
    exitSignal: row.exit_signal,
    stderrTail: row.stderr_tail,
    reply: row.reply,
    replyState: row.reply_state,
  }
}

/** What a finished message leaves behind. */
export interface Outcome {
  readonly state: Extract<MessageState, 'done' | 'failed' | 'timed_out' | 'cancelled'>
  readonly exitCode: number | null
  readonly exitSignal: string | null
  readonly stderrTail: string
  /** The text the chat gets (the brain's reply, or a short ⚠️ note); empty means no reply. */
  readonly reply: string
}

export interface InboxStats {
  readonly kind: 'sqlite' | 'memory'
  readonly writable: boolean
  readonly sizeBytes: number
  readonly oldestQueuedAt: number | null
  readonly lastWriteError: string | null
}

export interface ListFilter {
  readonly chatId?: number
  readonly state?: MessageState
  readonly limit?: number
}

/** What a restart finds: work to schedule again, and replies computed but not yet sent. */
/**
 * What scheduling needs of a stored message, and nothing more: a backlog of a million messages is
 * recovered as these, not as whole rows (the update itself is read when the message's turn comes).
 */
export interface QueuedMessage {
  readonly seq: number
  readonly chatId: number
  readonly updateId: number
  readonly receivedAt: number
  /** How often a restart interrupted its brain; above 0 its next run is a redelivery. */
  readonly interruptions: number
}

export interface Recovery {
  /** Unfinished messages in arrival order; the ones a restart interrupted are back in the queue with interruptions > 0. */
  readonly unfinished: readonly QueuedMessage[]
  readonly undeliveredReplies: readonly QueuedMessage[]
}

/** A message whose brain a restart (or a host's death) interrupted this often is failed, not run again. */
export const MAX_INTERRUPTIONS = 3

/** The reply to a message failed by the crash-loop guard: its brain ran, and was interrupted, `interruptions` times. */
export function crashLoopNotice(interruptions: number): string {
  return `⚠️ The service restarted ${interruptions} times while this message ran; it is not run again.`
}

/** The inbox could not store an update; the webhook must answer 503 so Telegram re-sends it. */
export class InboxWriteError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'InboxWriteError'
  }
}

/** A value, or a promise of it: the SQLite inbox answers at once, the Postgres store later. */
export type Awaitable<T> = T | Promise<T>

/**
 * What a chat's turn and its reply delivery need of the store: the part of the inbox shared by the
 * single-host inbox and the Postgres store (store/postgres/), which answers asynchronously.
 */
export interface TurnStore {
  get(seq: number): Awaitable<StoredMessage | undefined>
  markRunning(seq: number, attempt: number, at: number): Awaitable<void>
  finish(seq: number, outcome: Outcome, at: number): Awaitable<void>
  setReplyState(seq: number, state: ReplyState): Awaitable<void>
  queuedInChat(chatId: number): Awaitable<StoredMessage[]>
  requeue(seqs: readonly number[]): Awaitable<void>
}

export interface Inbox extends TurnStore {
  /**
   * Stores an accepted message before the webhook answers. Returns its arrival sequence, or
   * 'duplicate' if the update_id is already in the inbox. Throws InboxWriteError if it can't write.
   */
  accept(message: NewMessage): number | 'duplicate'
  /** Stores a message that needs no brain, with its reply pending (an unsupported kind of message). */
  acceptAnswered(message: NewMessage, reply: string): number | 'duplicate'
  /**
   * Stores several messages, in order, in one transaction: each result is what `accept` (or, with
   * a reply, `acceptAnswered`) would have returned. All or none: throws InboxWriteError, storing
   * none of them, if it can't write.
   */
  acceptAll(messages: readonly ToStore[]): (number | 'duplicate')[]
  get(seq: number): StoredMessage | undefined
  /** Records the start of an attempt. */
  markRunning(seq: number, attempt: number, at: number): void
  finish(seq: number, outcome: Outcome, at: number): void
  setReplyState(seq: number, state: ReplyState): void
  /** A chat's queued messages, oldest first (what the next run of a busy chat takes together). */
  queuedInChat(chatId: number): StoredMessage[]
  /** How many of the chat's messages are queued, leaving out `except` (the one whose turn it is). */
  countQueuedInChat(chatId: number, except?: number): number
  /** Puts running messages back in the queue without counting an interruption (BUSY_MODE=interrupt). */
  requeue(seqs: readonly number[]): void
  /** Puts a chat's queued messages aside as cancelled; returns their sequence numbers. */
  cancelQueued(chatId: number, at: number): number[]
  /**
   * Called once at start: puts messages a restart interrupted back in the queue, counting the
   * interruption, and fails those interrupted `maxInterruptions` times (their brain ran that many
   * times, and is not run again). Returns what to resume.
   */
  recover(maxInterruptions: number, at: number): Recovery
  /** Re-queues a failed, timed-out or cancelled message (the CLI's `inbox retry`). */
  retry(seq: number): StoredMessage
  /** Messages another process (`coordinator inbox retry`) put back in the queue since the last call. */
  takeRequeued(): StoredMessage[]
  list(filter: ListFilter): StoredMessage[]
  /** Deletes up to `limit` finished messages older than the retention; returns their update ids. */
  prune(olderThan: number, limit: number): number[]
  stats(): InboxStats
  /** Tries a write; updates `stats().writable`. */
  probeWritable(): boolean
  close(): void
}
