import { EventEmitter } from 'node:events'
import type { FastifyBaseLogger } from 'fastify'
import { Logger, run, runMigrations, type Runner, type WorkerEvents } from 'graphile-worker'
import type pg from 'pg'
import type { WakeUp } from '../store/postgres/store.js'

/**
 * The job-queue engine of the Postgres mode, and the only file that knows it is Graphile Worker.
 *
 * A job is a wake-up for a chat, never the message itself: the turn reads the chat's next message
 * from the messages table, in update_id order. Each chat's jobs go into a named queue `chat:<id>`,
 * which Graphile Worker runs one job at a time across every host: one brain per chat, in order.
 * A job locked by a host that died would hold its chat's queue for hours; the hosts' heartbeats
 * tell who died, and `sweepDead` hands their jobs back with the engine's force_unlock_workers.
 */

const TASK = 'chat'
// A wake-up whose handler throws (only when the database is gone) is retried by the engine.
const MAX_ATTEMPTS = 1000
// New jobs arrive at once by LISTEN/NOTIFY. A chat's next wake-up is added while its current one
// still holds the chat's queue, so the notice can find the queue locked: idle workers look again
// this often (and for jobs due later, a retry).
const POLL_INTERVAL_MS = 250

/**
 * The SQL that wakes a chat up, run in the statement that stores its message: a job in the chat's
 * queue, unless one is already waiting there. A chat has at most one waiting wake-up (its job key),
 * however many messages it has queued: a worker takes the chat's next message, and wakes the chat
 * up again after its turn while more are open. While a chat's wake-up runs, a new one waits behind it.
 */
export const engineWakeUp: WakeUp = {
  sql: (chatId, delaySeconds) =>
    `(EXISTS (SELECT 1 FROM graphile_worker.jobs WHERE key = 'wake:' || ${chatId} AND locked_at IS NULL)
      OR graphile_worker.add_job('${TASK}', json_build_object('chat_id', ${chatId}), queue_name => 'chat:' || ${chatId},
           max_attempts => ${MAX_ATTEMPTS}, job_key => 'wake:' || ${chatId}, job_key_mode => 'preserve_run_at'` +
    (delaySeconds === undefined ? '' : `, run_at => now() + make_interval(secs => ${delaySeconds})`) +
    ') IS NOT NULL)',
}

/**
 * Wakes up the chats with a message stored in the last `windowMs` (but not the last second) that
 * have no wake-up at all: one whose intake saw a waiting wake-up just as a worker took it (and
 * finished its turn before the message was committed). Returns how many.
 */
export async function wakeForgotten(pool: pg.Pool, windowMs: number): Promise<number> {
  const now = Date.now()
  const { rows } = await pool.query<{ woken: number }>(
    `SELECT count(*)::int AS woken FROM (
       SELECT ${engineWakeUp.sql('chat_id')} FROM (
         SELECT DISTINCT chat_id FROM coordinator.messages
         WHERE state = 'queued' AND received_at BETWEEN $1 AND $2) recent
       WHERE NOT EXISTS (SELECT 1 FROM graphile_worker.jobs WHERE key = 'wake:' || recent.chat_id)) woken`,
    [now - windowMs, now - 1000],
  )
  return (rows[0] as { woken: number }).woken
}

/** Creates or updates the engine's own schema (graphile_worker). */
export async function migrateEngine(pool: pg.Pool, log: FastifyBaseLogger): Promise<void> {
  await runMigrations({ pgPool: pool, logger: engineLogger(log) })
}

/** Runs a chat's turn for a wake-up; `signal` aborts when the engine stops. */
export type ChatHandler = (chatId: number, signal: AbortSignal) => Promise<void>

/** The engine's workers on one host: `concurrency` jobs (brains) at a time. */
export class ChatEngine {
  #runner: Runner | undefined
  #poolId: string | undefined

  /** The id that the engine locks this host's jobs with, once started. */
  get poolId(): string | undefined {
    return this.#poolId
  }

  async start(pool: pg.Pool, concurrency: number, handle: ChatHandler, log: FastifyBaseLogger): Promise<void> {
    const events: WorkerEvents = new EventEmitter()
    events.on('pool:create', ({ workerPool }) => {
      this.#poolId = workerPool.id
    })
    this.#runner = await run({
      pgPool: pool,
      concurrency,
      pollInterval: POLL_INTERVAL_MS,
      noHandleSignals: true,
      events,
      logger: engineLogger(log),
      taskList: {
        [TASK]: async (payload, helpers) => {
          const chatId = (payload as { chat_id?: unknown }).chat_id
          if (typeof chatId !== 'number') return
          await handle(chatId, helpers.abortSignal ?? new AbortController().signal)
        },
      },
    })
  }

  /** Stops taking jobs and waits for the running ones (their brains stopped by the caller). */
  async stop(): Promise<void> {
    const runner = this.#runner
    this.#runner = undefined
    await runner?.stop()
  }
}

/**
 * Marks as stopped the hosts whose heartbeat is older than `deadAfterMs`, and hands back to the
 * queue every job locked by an engine pool that no live host owns (a dead host's, or one that died
 * before its first heartbeat named its pool), where another host takes it. Returns the dead hosts' ids.
 */
export async function sweepDead(pool: pg.Pool, deadAfterMs: number): Promise<string[]> {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    const { rows } = await client.query<{ id: string }>(
      `UPDATE coordinator.workers SET stopped = true
       WHERE NOT stopped AND heartbeat_at < now() - make_interval(secs => $1) RETURNING id`,
      [deadAfterMs / 1000],
    )
    await client.query(
      `SELECT graphile_worker.force_unlock_workers(array_agg(DISTINCT locked_by))
       FROM graphile_worker.jobs
       WHERE locked_by IS NOT NULL AND locked_at < now() - make_interval(secs => $1)
         AND locked_by NOT IN (SELECT pool_id FROM coordinator.workers WHERE NOT stopped AND pool_id IS NOT NULL)
       HAVING count(*) > 0`,
      [deadAfterMs / 1000],
    )
    await client.query('COMMIT')
    return rows.map((row) => row.id)
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined)
    throw error
  } finally {
    client.release()
  }
}

/** Hands back the jobs an engine pool of this host held, after it lost the database and stopped its brains. */
export async function releasePool(pool: pg.Pool, poolId: string): Promise<void> {
  await pool.query('SELECT graphile_worker.force_unlock_workers($1::text[])', [[poolId]])
}

/** Jobs locked by a pool no live host owns (none once the next sweep ran), for /healthz. */
export async function jobsHeldByDead(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query(
    `SELECT count(*)::int AS held FROM graphile_worker.jobs
     WHERE locked_by IS NOT NULL
       AND locked_by NOT IN (SELECT pool_id FROM coordinator.workers WHERE NOT stopped AND pool_id IS NOT NULL)`,
  )
  return (rows[0] as { held: number }).held
}

function engineLogger(log: FastifyBaseLogger): Logger {
  const engineLog = log.child({ engine: 'graphile-worker' })
  return new Logger(() => (level, message, meta) => {
    if (level === 'error') engineLog.error(meta ?? {}, message)
    else if (level === 'warning') engineLog.warn(meta ?? {}, message)
    else engineLog.debug(meta ?? {}, message)
  })
}
