import fs from 'node:fs'
import path from 'node:path'
import Database from 'better-sqlite3'
import {
  crashLoopNotice,
  InboxWriteError,
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
  type MessageRow,
  messageOfRow,
} from './inbox.js'

/** The inbox file inside STATE_DIR. */
export const INBOX_FILE = 'inbox.sqlite'

// A locked or full database must fail fast: the webhook's answer waits on this write.
const BUSY_TIMEOUT_MS = 50

/**
 * The connection's page cache, in KiB: SQLite's own default. better-sqlite3 raises it to 16 MB, which
 * a backlog fills and the process then keeps: glibc's malloc gives back no memory from the middle of
 * its heap, so even freeing the pages (PRAGMA shrink_memory) leaves RSS where it was. A message
 * touches the table's tail and one leaf per index; a page not cached is read from the kernel's.
 */
export const PAGE_CACHE_KIB = 2000

const SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  seq             INTEGER PRIMARY KEY AUTOINCREMENT,
  update_id       INTEGER NOT NULL UNIQUE,
  chat_id         INTEGER NOT NULL,
  message_id      INTEGER NOT NULL,
  thread_id       INTEGER,
  update_json     TEXT    NOT NULL,
  state           TEXT    NOT NULL,
  received_at     INTEGER NOT NULL,
  started_at      INTEGER,
  finished_at     INTEGER,
  attempts        INTEGER NOT NULL DEFAULT 0,
  interruptions   INTEGER NOT NULL DEFAULT 0,
  exit_code       INTEGER,
  exit_signal     TEXT,
  stderr_tail     TEXT,
  reply           TEXT,
  reply_state     TEXT    NOT NULL DEFAULT 'none',
  requeued        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_unfinished ON messages (state, seq) WHERE state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS messages_reply_pending ON messages (seq) WHERE reply_state = 'pending';
CREATE INDEX IF NOT EXISTS messages_finished_at ON messages (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_chat ON messages (chat_id, seq);
-- Maintenance looks for re-queued messages every 2 s: without this, a scan of the whole table.
CREATE INDEX IF NOT EXISTS messages_requeued ON messages (seq) WHERE requeued = 1;
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at INTEGER NOT NULL);
`

// An inbox written before thread_id existed gets the column, filled from the stored updates (the
// message, or the edit, as intake took it), so replies still pending after the upgrade find their topic.
const ADD_THREAD_ID = `
ALTER TABLE messages ADD COLUMN thread_id INTEGER;
UPDATE messages SET thread_id = json_extract(update_json, '$.' || kind || '.message_thread_id')
  FROM (SELECT seq AS of, IIF(json_type(update_json, '$.message') IS NULL, 'edited_message', 'message') AS kind FROM messages)
  WHERE seq = of AND json_extract(update_json, '$.' || kind || '.is_topic_message') = 1;
`

// A recovered message as scheduling needs it (QueuedMessage), named as the code names it.
const QUEUED_COLUMNS = 'seq, chat_id AS chatId, update_id AS updateId, received_at AS receivedAt, interruptions'

/**
 * The durable inbox: SQLite in WAL mode through better-sqlite3. Writes are synchronous and take
 * microseconds, so intake stores an update before answering the webhook without an async hop.
 * synchronous=NORMAL survives any crash of the process (SIGKILL, OOM); only a power cut can lose the
 * last transactions.
 */
export class SqliteInbox implements Inbox {
  readonly file: string
  #db: Database.Database
  #writable = true
  #lastWriteError: string | null = null
  #insert: Database.Statement
  #insertAnswered: Database.Statement
  #get: Database.Statement
  #storeAll: (messages: readonly ToStore[]) => (number | 'duplicate')[]
  #statements = new Map<string, Database.Statement>()

  /** `onStatement` sees every statement run, with its values (for the tests of query plans). */
  constructor(stateDir: string, { onStatement }: { onStatement?: (sql: string) => void } = {}) {
    fs.mkdirSync(stateDir, { recursive: true })
    this.file = path.join(stateDir, INBOX_FILE)
    this.#db = new Database(this.file, { timeout: BUSY_TIMEOUT_MS, ...(onStatement ? { verbose: (sql: unknown) => onStatement(String(sql)) } : {}) })
    this.#db.pragma('journal_mode = WAL')
    this.#db.pragma('synchronous = NORMAL')
    this.#db.exec(SCHEMA)
    this.#migrate()
    this.#insert = this.#db.prepare(
      `INSERT OR IGNORE INTO messages (update_id, chat_id, message_id, thread_id, update_json, state, received_at)
       VALUES (?, ?, ?, ?, ?, 'queued', ?)`,
    )
    this.#insertAnswered = this.#db.prepare(
      `INSERT OR IGNORE INTO messages (update_id, chat_id, message_id, thread_id, update_json, state, received_at, finished_at, reply, reply_state)
       VALUES (?, ?, ?, ?, ?, 'done', ?, ?, ?, 'pending')`,
    )
    this.#get = this.#db.prepare('SELECT * FROM messages WHERE seq = ?')
    this.#storeAll = this.#db.transaction((messages: readonly ToStore[]) => messages.map((toStore) => this.#store(toStore)))
  }

  accept(message: NewMessage): number | 'duplicate' {
    return this.#write(() => this.#store({ message }))
  }

  acceptAnswered(message: NewMessage, reply: string): number | 'duplicate' {
    return this.#write(() => this.#store({ message, reply }))
  }

  acceptAll(messages: readonly ToStore[]): (number | 'duplicate')[] {
    // One statement is a transaction of its own: BEGIN and COMMIT around it would only add work.
    return this.#write(() => (messages.length === 1 ? [this.#store(messages[0] as ToStore)] : this.#storeAll(messages)))
  }

  get(seq: number): StoredMessage | undefined {
    const row = this.#get.get(seq) as MessageRow | undefined
    return row && messageOfRow(row)
  }

  markRunning(seq: number, attempt: number, at: number): void {
    this.#write(() =>
      this.#stmt(`UPDATE messages SET state = 'running', attempts = ?, started_at = COALESCE(started_at, ?) WHERE seq = ?`)
        .run(attempt, at, seq),
    )
  }

  finish(seq: number, outcome: Outcome, at: number): void {
    this.#write(() =>
      this.#stmt(
          `UPDATE messages SET state = ?, finished_at = ?, exit_code = ?, exit_signal = ?, stderr_tail = ?,
             reply = ?, reply_state = ? WHERE seq = ?`,
        )
        .run(
          outcome.state,
          at,
          outcome.exitCode,
          outcome.exitSignal,
          outcome.stderrTail,
          outcome.reply,
          outcome.reply === '' ? 'none' : 'pending',
          seq,
        ),
    )
  }

  setReplyState(seq: number, state: ReplyState): void {
    this.#write(() => this.#stmt('UPDATE messages SET reply_state = ? WHERE seq = ?').run(state, seq))
  }

  countQueuedInChat(chatId: number, except = -1): number {
    return this.#stmt(`SELECT count(*) FROM messages WHERE chat_id = ? AND state = 'queued' AND seq != ?`).pluck().get(chatId, except) as number
  }

  queuedInChat(chatId: number): StoredMessage[] {
    const rows = this.#stmt(`SELECT * FROM messages WHERE chat_id = ? AND state = 'queued' ORDER BY seq`).all(chatId) as MessageRow[]
    return rows.map(messageOfRow)
  }

  requeue(seqs: readonly number[]): void {
    const statement = this.#stmt(`UPDATE messages SET state = 'queued' WHERE seq = ? AND state = 'running'`)
    this.#write(() => this.#db.transaction(() => seqs.forEach((seq) => statement.run(seq)))())
  }

  cancelQueued(chatId: number, at: number): number[] {
    return this.#write(() =>
      this.#stmt(
          `UPDATE messages SET state = 'cancelled', finished_at = ?, requeued = 0
           WHERE chat_id = ? AND state = 'queued' RETURNING seq`,
        )
        .pluck()
        .all(at, chatId) as number[],
    )
  }

  recover(maxInterruptions: number, at: number): Recovery {
    const run = this.#db.transaction(() => {
      // Back in the queue, counted: interruptions > 0 makes the next run a redelivery.
      this.#stmt(`UPDATE messages SET interruptions = interruptions + 1, state = 'queued' WHERE state = 'running'`).run()
      const looping = this.#stmt(`SELECT seq, interruptions FROM messages WHERE state = 'queued' AND interruptions >= ?`)
        .all(maxInterruptions) as Pick<MessageRow, 'seq' | 'interruptions'>[]
      const fail = this.#stmt(`UPDATE messages SET state = 'failed', finished_at = ?, reply_state = 'pending', reply = ? WHERE seq = ?`)
      for (const { seq, interruptions } of looping) fail.run(at, crashLoopNotice(interruptions), seq)
      this.#stmt('UPDATE messages SET requeued = 0 WHERE requeued = 1').run()
      const unfinished = this.#stmt(`SELECT ${QUEUED_COLUMNS} FROM messages WHERE state IN ('queued', 'running') ORDER BY seq`).all()
      const undelivered = this.#stmt(`SELECT ${QUEUED_COLUMNS} FROM messages WHERE reply_state = 'pending' ORDER BY seq`).all()
      return { unfinished: unfinished as QueuedMessage[], undeliveredReplies: undelivered as QueuedMessage[] }
    })
    const recovery = this.#write(() => run())
    // Recovery reads every unfinished message once, faster with better-sqlite3's larger cache (a
    // million: 1.6 s instead of 1.8); what runs after it touches a few pages a message.
    this.#db.pragma(`cache_size = -${PAGE_CACHE_KIB}`)
    return recovery
  }

  retry(seq: number): StoredMessage {
    const message = this.get(seq)
    if (!message) throw new RangeError(`no message with id ${seq} in the inbox`)
    if (message.state !== 'failed' && message.state !== 'timed_out' && message.state !== 'cancelled') {
      throw new RangeError(`message ${seq} is ${message.state}; only failed, timed_out or cancelled messages can be retried`)
    }
    this.#write(() =>
      this.#stmt(
          `UPDATE messages SET state = 'queued', requeued = 1, attempts = 0, interruptions = 0, started_at = NULL,
             finished_at = NULL, exit_code = NULL, exit_signal = NULL, stderr_tail = NULL, reply = NULL,
             reply_state = 'none' WHERE seq = ?`,
        )
        .run(seq),
    )
    return this.get(seq) as StoredMessage
  }

  takeRequeued(): StoredMessage[] {
    const rows = this.#write(() =>
      this.#stmt(`UPDATE messages SET requeued = 0 WHERE requeued = 1 AND state = 'queued' RETURNING *`).all(),
    ) as MessageRow[]
    return rows.map(messageOfRow).sort((a, b) => a.seq - b.seq)
  }

  list({ chatId, state, limit = 50 }: ListFilter): StoredMessage[] {
    const where: string[] = []
    const params: (number | string)[] = []
    if (chatId !== undefined) {
      where.push('chat_id = ?')
      params.push(chatId)
    }
    if (state !== undefined) {
      where.push('state = ?')
      params.push(state)
    }
    const sql = `SELECT * FROM messages ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq DESC LIMIT ?`
    const rows = this.#stmt(sql).all(...params, limit) as MessageRow[]
    return rows.map(messageOfRow).reverse()
  }

  prune(olderThan: number, limit: number): number[] {
    return this.#write(
      () =>
        this.#stmt(
          `DELETE FROM messages WHERE seq IN (
             SELECT seq FROM messages WHERE finished_at < ? AND state NOT IN ('queued', 'running') AND reply_state != 'pending'
             LIMIT ?) RETURNING update_id`,
        )
          .pluck()
          .all(olderThan, limit) as number[],
    )
  }

  stats(): InboxStats {
    // Arrival order is seq order, so the oldest queued message is the first one on the index.
    // The IN term lets SQLite use the partial index of unfinished messages; without it, it walks
    // the table from its first row to the first queued one.
    const oldest = this.#stmt(`SELECT received_at FROM messages WHERE state = 'queued' AND state IN ('queued', 'running') ORDER BY seq LIMIT 1`)
      .pluck()
      .get() as number | undefined
    return {
      kind: 'sqlite',
      writable: this.#writable,
      sizeBytes: fileSize(this.file) + fileSize(`${this.file}-wal`),
      oldestQueuedAt: oldest ?? null,
      lastWriteError: this.#lastWriteError,
    }
  }

  probeWritable(): boolean {
    try {
      this.#write(() => this.#stmt('INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)').run(Date.now()))
    } catch {
      // #write recorded the failure
    }
    return this.#writable
  }

  close(): void {
    if (this.#db.open) this.#db.close()
  }

  /** Brings an inbox written by an earlier version up to this schema. */
  #migrate(): void {
    const columns = this.#db.prepare('SELECT name FROM pragma_table_info(?)').pluck().all('messages') as string[]
    if (!columns.includes('thread_id')) this.#db.transaction(() => this.#db.exec(ADD_THREAD_ID))()
  }

  #store({ message, reply }: ToStore): number | 'duplicate' {
    const { updateId, chatId, messageId, threadId = null, updateJson, receivedAt } = message
    const result =
      reply === undefined
        ? this.#insert.run(updateId, chatId, messageId, threadId, updateJson, receivedAt)
        : this.#insertAnswered.run(updateId, chatId, messageId, threadId, updateJson, receivedAt, receivedAt, reply)
    return result.changes === 0 ? 'duplicate' : Number(result.lastInsertRowid)
  }

  #stmt(sql: string): Database.Statement {
    let statement = this.#statements.get(sql)
    if (!statement) {
      statement = this.#db.prepare(sql)
      this.#statements.set(sql, statement)
    }
    return statement
  }

  #write<T>(operation: () => T): T {
    try {
      const result = operation()
      this.#writable = true
      this.#lastWriteError = null
      return result
    } catch (error) {
      if (error instanceof RangeError) throw error
      this.#writable = false
      this.#lastWriteError = (error as Error).message
      throw new InboxWriteError(`the inbox could not be written: ${(error as Error).message}`, { cause: error })
    }
  }
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size
  } catch {
    return 0
  }
}
