import pg from 'pg'
import { ChatStateSync } from './chat-state.js'
import {
  crashLoopNotice,
  InboxWriteError,
  type ListFilter,
  type NewMessage,
  type Outcome,
  type ReplyState,
  type StoredMessage,
  type TurnStore,
  type MessageRow,
  messageOfRow,
} from '../inbox.js'

/**
 * The messages of every host, in Postgres: the same rows as the SQLite inbox, plus the host that
 * runs a message (`worker`). Times are epoch milliseconds, as in SQLite; the hosts' heartbeats use
 * the server's clock.
 */
const SCHEMA = `
CREATE SCHEMA IF NOT EXISTS coordinator;
CREATE TABLE IF NOT EXISTS coordinator.messages (
  seq             bigserial PRIMARY KEY,
  update_id       bigint  NOT NULL UNIQUE,
  chat_id         bigint  NOT NULL,
  message_id      bigint  NOT NULL,
  thread_id       bigint,
  update_json     text    NOT NULL,
  state           text    NOT NULL,
  received_at     bigint  NOT NULL,
  started_at      bigint,
  finished_at     bigint,
  attempts        integer NOT NULL DEFAULT 0,
  interruptions   integer NOT NULL DEFAULT 0,
  exit_code       integer,
  exit_signal     text,
  stderr_tail     text,
  reply           text,
  reply_state     text    NOT NULL DEFAULT 'none',
  worker          text
);
CREATE INDEX IF NOT EXISTS messages_open ON coordinator.messages (chat_id, update_id)
  WHERE state IN ('queued', 'running') OR reply_state = 'pending';
CREATE INDEX IF NOT EXISTS messages_finished_at ON coordinator.messages (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_queued_received ON coordinator.messages (received_at) WHERE state = 'queued';
CREATE TABLE IF NOT EXISTS coordinator.workers (
  id           text PRIMARY KEY,
  host         text NOT NULL,
  pool_id      text,
  slots        integer NOT NULL,
  started_at   timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now(),
  stopped      boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS coordinator.probe (id integer PRIMARY KEY, at timestamptz NOT NULL);
`

// Serialises schema changes between hosts starting at once.
const MIGRATION_LOCK = 7_346_512_001
// Only one host prunes at a time.
export const PRUNE_LOCK = 7_346_512_002

/** bigint columns (update ids, chat ids, times in ms) come back as numbers, not strings. */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === pg.types.builtins.INT8 ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
}

/** A connection pool with this store's type parsing; `max` connections. */
export function createPool(connectionString: string, max: number, applicationName: string): pg.Pool {
  return new pg.Pool({ connectionString, max, types, application_name: applicationName, connectionTimeoutMillis: 5000 })
}

type Row = MessageRow & { worker: string | null }

/** A chat as /status sees it across every host. */
export interface ClusterChat {
  readonly running: { readonly seq: number; readonly startedAt: number } | undefined
  readonly replying: boolean
  readonly head: { readonly seq: number; readonly receivedAt: number } | undefined
  readonly queued: number
  readonly runningEverywhere: number
  readonly queuedEverywhere: number
  readonly slotsEverywhere: number
}

/** What /healthz and /metrics report about the shared queue. */
export interface ClusterStats {
  readonly queued: number
  readonly oldestQueuedAt: number | null
  readonly running: number
  readonly liveWorkers: number
  readonly liveSlots: number
  readonly deadWorkers: number
  readonly sizeBytes: number
}

/** How the store wakes a chat's worker up: SQL run in the same statement that stores a message. */
export interface WakeUp {
  /**
   * A SQL expression that enqueues a wake-up job for the chat whose id is the bigint expression
   * `chatId`, due at once or after the seconds of the expression `delaySeconds`.
   */
  readonly sql: (chatId: string, delaySeconds?: string) => string
}

/**
 * The Postgres store shared by every host: intake writes a message and its chat's wake-up job in
 * one statement (one transaction), workers read and update the chat's messages. Every method is
 * one round trip.
 */
export class PostgresStore implements TurnStore {
  readonly pool: pg.Pool
  readonly #wakeUp: WakeUp
  readonly #worker: string
  #writable = true
  #lastWriteError: string | null = null

  /** `worker`: this host's name in the rows it runs. */
  constructor(pool: pg.Pool, wakeUp: WakeUp, worker: string) {
    this.pool = pool
    this.#wakeUp = wakeUp
    this.#worker = worker
  }

  /** Creates or updates the schema; safe for several hosts starting at once. */
  static async migrate(pool: pg.Pool): Promise<void> {
    const client = await pool.connect()
    try {
      await client.query('BEGIN')
      await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK])
      await client.query(SCHEMA)
      await ChatStateSync.migrate(client)
      await client.query('COMMIT')
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined)
      throw error
    } finally {
      client.release()
    }
  }

  /**
   * Stores an accepted message and wakes its chat up, in one transaction. Returns its sequence, or
   * 'duplicate' when the update id is already stored. Throws InboxWriteError when it cannot.
   */
  async accept(message: NewMessage): Promise<number | 'duplicate'> {
    const { rows } = await this.#write(
      `WITH stored AS (
         INSERT INTO coordinator.messages (update_id, chat_id, message_id, thread_id, update_json, state, received_at)
         VALUES ($1, $2, $3, $4, $5, 'queued', $6) ON CONFLICT (update_id) DO NOTHING RETURNING seq, chat_id)
       SELECT seq, ${this.#wakeUp.sql('chat_id')} AS woken FROM stored`,
      [message.updateId, message.chatId, message.messageId, message.threadId ?? null, message.updateJson, message.receivedAt],
    )
    return rows.length === 0 ? 'duplicate' : (rows[0] as { seq: number }).seq
  }

  /** Stores a message answered by the service (a command, an unsupported kind), its reply pending. */
  async acceptAnswered(message: NewMessage, reply: string): Promise<number | 'duplicate'> {
    const { rows } = await this.#write(
      `INSERT INTO coordinator.messages (update_id, chat_id, message_id, thread_id, update_json, state, received_at, finished_at, reply, reply_state)
       VALUES ($1, $2, $3, $4, $5, 'done', $6, $6, $7, 'pending') ON CONFLICT (update_id) DO NOTHING RETURNING seq`,
      [message.updateId, message.chatId, message.messageId, message.threadId ?? null, message.updateJson, message.receivedAt, reply],
    )
    return rows.length === 0 ? 'duplicate' : (rows[0] as { seq: number }).seq
  }

  async get(seq: number): Promise<StoredMessage | undefined> {
    const { rows } = await this.pool.query<Row>('SELECT * FROM coordinator.messages WHERE seq = $1', [seq])
    return rows[0] && messageOfRow(rows[0])
  }

  async markRunning(seq: number, attempt: number, at: number): Promise<void> {
    await this.#write(
      `UPDATE coordinator.messages SET state = 'running', attempts = $1, started_at = COALESCE(started_at, $2), worker = $3 WHERE seq = $4`,
      [attempt, at, this.#worker, seq],
    )
  }

  async finish(seq: number, outcome: Outcome, at: number): Promise<void> {
    await this.#write(
      `UPDATE coordinator.messages SET state = $1, finished_at = $2, exit_code = $3, exit_signal = $4, stderr_tail = $5,
         reply = $6, reply_state = $7 WHERE seq = $8`,
      [outcome.state, at, outcome.exitCode, outcome.exitSignal, outcome.stderrTail, outcome.reply, outcome.reply === '' ? 'none' : 'pending', seq],
    )
  }

  async setReplyState(seq: number, state: ReplyState): Promise<void> {
    await this.#write('UPDATE coordinator.messages SET reply_state = $1 WHERE seq = $2', [state, seq])
  }

  /** A chat's queued messages in Telegram's order (update_id), whichever intake stored them. */
  async queuedInChat(chatId: number): Promise<StoredMessage[]> {
    const { rows } = await this.pool.query<Row>(
      `SELECT * FROM coordinator.messages WHERE chat_id = $1 AND state = 'queued' ORDER BY update_id`,
      [chatId],
    )
    return rows.map(messageOfRow)
  }

  /** Whether the chat has a message queued or a reply unsent (after a turn: wake the chat up again). */
  async hasOpen(chatId: number): Promise<boolean> {
    const { rows } = await this.pool.query<{ open: boolean }>(
      `SELECT EXISTS (SELECT 1 FROM coordinator.messages WHERE chat_id = $1 AND (state = 'queued' OR reply_state = 'pending')) AS open`,
      [chatId],
    )
    return (rows[0] as { open: boolean }).open
  }

  async requeue(seqs: readonly number[]): Promise<void> {
    await this.#write(`UPDATE coordinator.messages SET state = 'queued' WHERE seq = ANY($1::bigint[]) AND state = 'running'`, [seqs])
  }

  /** /cancel all: the chat's queued messages put aside as cancelled. */
  async cancelQueued(chatId: number, at: number): Promise<number[]> {
    const { rows } = await this.#write(
      `UPDATE coordinator.messages SET state = 'cancelled', finished_at = $1 WHERE chat_id = $2 AND state = 'queued' RETURNING seq`,
      [at, chatId],
    )
    return rows.map((row) => (row as { seq: number }).seq)
  }

  /** Wakes a chat up again (its turn was stopped, or failed), at once or after `delayMs`. */
  async wakeUp(chatId: number, delayMs: number): Promise<void> {
    await this.#write(`SELECT ${this.#wakeUp.sql('$1::bigint', '$2::float8')}`, [chatId, delayMs / 1000])
  }

  /** /cancel of a message still waiting: cancelled unless a host started it meanwhile. */
  async cancelIfQueued(seq: number, at: number): Promise<void> {
    await this.#write(`UPDATE coordinator.messages SET state = 'cancelled', finished_at = $1 WHERE seq = $2 AND state = 'queued'`, [at, seq])
  }

  /**
   * A chat's turn begins (its queue is locked to this host): a message of the chat still marked
   * running was interrupted by a host that died or lost the database. It goes back in the queue,
   * counting the interruption, or is failed with a notice once interrupted `maxInterruptions` times.
   * Returns the chat's next message to handle, in update_id order: a queued one, or a reply never sent.
   */
  async takeHead(chatId: number, maxInterruptions: number, at: number): Promise<{ message: StoredMessage; reclaimed: number } | undefined> {
    // The crash-loop notice, with the count filled in by the statement.
    const [before, after] = crashLoopNotice(-1).split('-1') as [string, string]
    const { rowCount } = await this.#write(
      `UPDATE coordinator.messages
       SET interruptions = interruptions + 1,
           state = CASE WHEN interruptions + 1 >= $2 THEN 'failed' ELSE 'queued' END,
           finished_at = CASE WHEN interruptions + 1 >= $2 THEN $3 ELSE finished_at END,
           reply_state = CASE WHEN interruptions + 1 >= $2 THEN 'pending' ELSE reply_state END,
           reply = CASE WHEN interruptions + 1 >= $2 THEN $4 || (interruptions + 1) || $5 ELSE reply END
       WHERE chat_id = $1 AND state = 'running'`,
      [chatId, maxInterruptions, at, before, after],
    )
    const reclaimed = rowCount ?? 0
    const head = await this.pool.query<Row>(
      `SELECT * FROM coordinator.messages WHERE chat_id = $1 AND (state = 'queued' OR reply_state = 'pending')
       ORDER BY update_id LIMIT 1`,
      [chatId],
    )
    const row = head.rows[0]
    return row === undefined ? undefined : { message: messageOfRow(row), reclaimed }
  }

  /** The chat and the service as /status and /cancel see them, from every host. */
  async chat(chatId: number): Promise<ClusterChat> {
    const { rows } = await this.pool.query(
      `SELECT
         (SELECT json_build_object('seq', seq, 'startedAt', started_at) FROM coordinator.messages
           WHERE chat_id = $1 AND state = 'running' ORDER BY update_id LIMIT 1) AS running,
         EXISTS (SELECT 1 FROM coordinator.messages WHERE chat_id = $1 AND reply_state = 'pending' AND state <> 'queued') AS replying,
         (SELECT json_build_object('seq', seq, 'receivedAt', received_at) FROM coordinator.messages
           WHERE chat_id = $1 AND state = 'queued' ORDER BY update_id LIMIT 1) AS head,
         (SELECT count(*) FROM coordinator.messages WHERE chat_id = $1 AND state = 'queued')::int AS queued,
         (SELECT count(*) FROM coordinator.messages WHERE state = 'running')::int AS running_everywhere,
         (SELECT count(*) FROM coordinator.messages WHERE state = 'queued')::int AS queued_everywhere,
         (SELECT COALESCE(sum(slots), 0) FROM coordinator.workers
           WHERE NOT stopped AND heartbeat_at > now() - make_interval(secs => $2))::int AS slots_everywhere`,
      [chatId, DEAD_AFTER_MS / 1000],
    )
    const row = rows[0] as {
      running: ClusterChat['running'] | null
      replying: boolean
      head: ClusterChat['head'] | null
      queued: number
      running_everywhere: number
      queued_everywhere: number
      slots_everywhere: number
    }
    return {
      running: row.running ?? undefined,
      replying: row.replying,
      head: row.head ?? undefined,
      queued: row.queued,
      runningEverywhere: row.running_everywhere,
      queuedEverywhere: row.queued_everywhere,
      slotsEverywhere: row.slots_everywhere,
    }
  }

  /** The newest `limit` messages matching the filter, oldest first (`coordinator inbox`). */
  async list({ chatId, state, limit = 50 }: ListFilter): Promise<StoredMessage[]> {
    const { rows } = await this.pool.query<Row>(
      `SELECT * FROM (SELECT * FROM coordinator.messages
         WHERE ($1::bigint IS NULL OR chat_id = $1) AND ($2::text IS NULL OR state = $2)
         ORDER BY seq DESC LIMIT $3) newest ORDER BY seq`,
      [chatId ?? null, state ?? null, limit],
    )
    return rows.map(messageOfRow)
  }

  /**
   * Re-queues a failed, timed-out or cancelled message and wakes its chat up, in one statement
   * (`coordinator inbox retry`). Throws RangeError for a message that is not there or not finished.
   */
  async retry(seq: number): Promise<StoredMessage> {
    const { rows } = await this.#write(
      `WITH retried AS (
         UPDATE coordinator.messages SET state = 'queued', attempts = 0, interruptions = 0, started_at = NULL,
           finished_at = NULL, exit_code = NULL, exit_signal = NULL, stderr_tail = NULL, reply = NULL, reply_state = 'none', worker = NULL
         WHERE seq = $1 AND state IN ('failed', 'timed_out', 'cancelled') RETURNING *)
       SELECT retried.*, ${this.#wakeUp.sql('retried.chat_id')} AS woken FROM retried`,
      [seq],
    )
    const row = rows[0] as Row | undefined
    if (row !== undefined) return messageOfRow(row)
    const message = await this.get(seq)
    if (message === undefined) throw new RangeError(`no message with id ${seq} in the inbox`)
    throw new RangeError(`message ${seq} is ${message.state}; only failed, timed_out or cancelled messages can be retried`)
  }

  /** Deletes up to `limit` finished messages older than `olderThan`; returns their update ids. */
  async prune(olderThan: number, limit: number): Promise<number[]> {
    const { rows } = await this.#write(
      `DELETE FROM coordinator.messages WHERE seq IN (
         SELECT seq FROM coordinator.messages
         WHERE finished_at < $1 AND state NOT IN ('queued', 'running') AND reply_state <> 'pending' LIMIT $2)
       RETURNING update_id`,
      [olderThan, limit],
    )
    return rows.map((row) => (row as { update_id: number }).update_id)
  }

  /** A write that proves the database takes them; updates `stats().writable`. */
  async probeWritable(): Promise<boolean> {
    try {
      await this.#write('INSERT INTO coordinator.probe (id, at) VALUES (1, now()) ON CONFLICT (id) DO UPDATE SET at = now()', [])
    } catch {
      // Recorded by #write.
    }
    return this.#writable
  }

  /** The last write's error, while writes fail. */
  get lastWriteError(): string | null {
    return this.#lastWriteError
  }

  /** The shared queue and the hosts serving it. */
  async clusterStats(): Promise<ClusterStats> {
    const { rows } = await this.pool.query(
      `SELECT
         (SELECT count(*) FROM coordinator.messages WHERE state = 'queued')::int AS queued,
         (SELECT min(received_at) FROM coordinator.messages WHERE state = 'queued') AS oldest_queued_at,
         (SELECT count(*) FROM coordinator.messages WHERE state = 'running')::int AS running,
         (SELECT count(*) FROM coordinator.workers WHERE NOT stopped AND heartbeat_at > now() - make_interval(secs => $1))::int AS live,
         (SELECT COALESCE(sum(slots), 0) FROM coordinator.workers WHERE NOT stopped AND heartbeat_at > now() - make_interval(secs => $1))::int AS slots,
         (SELECT count(*) FROM coordinator.workers WHERE NOT stopped AND heartbeat_at <= now() - make_interval(secs => $1))::int AS dead,
         pg_total_relation_size('coordinator.messages')::bigint AS size_bytes`,
      [DEAD_AFTER_MS / 1000],
    )
    const row = rows[0] as { queued: number; oldest_queued_at: number | null; running: number; live: number; slots: number; dead: number; size_bytes: number }
    return {
      queued: row.queued,
      oldestQueuedAt: row.oldest_queued_at,
      running: row.running,
      liveWorkers: row.live,
      liveSlots: row.slots,
      deadWorkers: row.dead,
      sizeBytes: row.size_bytes,
    }
  }

  get writable(): boolean {
    return this.#writable
  }

  async #write(sql: string, values: unknown[]): Promise<pg.QueryResult> {
    try {
      const result = await this.pool.query(sql, values)
      this.#writable = true
      this.#lastWriteError = null
      return result
    } catch (error) {
      this.#writable = false
      this.#lastWriteError = (error as Error).message
      throw new InboxWriteError(`the database could not be written: ${(error as Error).message}`, { cause: error })
    }
  }
}

/** A host whose heartbeat is older than this is dead: its chats are taken back. */
export const DEAD_AFTER_MS = 20_000
