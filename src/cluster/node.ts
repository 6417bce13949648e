import { hostname } from 'node:os'
import { ageSeconds, type HealthParts, type ServiceCore } from '../health.js'
import type { Receipt } from '../intake/intake.js'
import { jobsHeldByDead, migrateEngine, engineWakeUp } from '../dispatch/engine.js'
import { createPool, PostgresStore, PRUNE_LOCK, type ClusterStats } from '../store/postgres/store.js'
import { PendingAcks } from '../telegram/acks.js'
import { mediaDir, removeMedia } from '../telegram/media.js'
import { createMessageWork, type TurnDeps } from '../turn/turn.js'
import { ClusterIntake } from './intake.js'
import type { Role } from './role.js'
import { ClusterWorker, type ChatState } from './worker.js'

const PRUNE_EVERY_MS = 10 * 60_000
const FIRST_PRUNE_AFTER_MS = 1000
const PRUNE_BATCH = 500
// /healthz and /metrics read the shared queue at most this often.
const STATS_EVERY_MS = 2000

export type ClusterNodeDeps = Omit<TurnDeps, 'acks' | 'inbox'> & {
  readonly role: Role
  readonly databaseUrl: string
  readonly chatState?: (store: PostgresStore) => ChatState | undefined
}

/**
 * A host of the Postgres mode: the lifecycle of its intake and its worker, the shared store,
 * pruning (by one host at a time), and what /healthz reports of every host.
 */
export class ClusterNode implements ServiceCore {
  readonly startedAt = Date.now()
  readonly store: PostgresStore
  readonly intake: ClusterIntake | undefined
  readonly worker: ClusterWorker | undefined
  #deps: ClusterNodeDeps
  #timers: NodeJS.Timeout[] = []
  #stats: { at: number; value: Promise<ClusterStats & { heldByDead: number }> } | undefined
  #draining = false

  constructor(deps: ClusterNodeDeps) {
    this.#deps = deps
    const { config, role } = deps
    // The engine's workers, the listener's reconnects and intake's queries each need connections.
    const pool = createPool(deps.databaseUrl, config.maxConcurrentBrains + 10, `coordinator ${role}`)
    pool.on('error', (error) => deps.log.warn({ err: error }, 'idle database connection lost'))
    this.store = new PostgresStore(pool, engineWakeUp, hostname())
    const chatState = deps.chatState?.(this.store)
    const acks = new PendingAcks()
    this.intake = role === 'worker' ? undefined : new ClusterIntake({ ...deps, acks, store: this.store, chatState })
    this.worker =
      role === 'intake'
        ? undefined
        : new ClusterWorker({
            store: this.store,
            connectionString: deps.databaseUrl,
            slots: config.maxConcurrentBrains,
            stateDir: config.stateDir,
            work: createMessageWork({ ...deps, acks, inbox: this.store }),
            telegram: deps.telegram,
            chatState,
            log: deps.log,
          })
  }

  /** Creates the schemas (once, whichever host starts first), then starts the worker and pruning. */
  async start(): Promise<void> {
    await migrateEngine(this.store.pool, this.#deps.log)
    await PostgresStore.migrate(this.store.pool)
    await this.worker?.start()
    const firstPrune = setTimeout(() => void this.#prune(), FIRST_PRUNE_AFTER_MS)
    firstPrune.unref()
    this.#timers.push(firstPrune)
    const every = setInterval(() => void this.#prune(), PRUNE_EVERY_MS)
    every.unref()
    this.#timers.push(every)
  }

  get draining(): boolean {
    return this.#draining
  }

  receive(body: unknown): Receipt | Promise<Receipt> {
    if (this.intake === undefined) return { status: 503, outcome: 'rejected', detail: 'this host runs brains only (--role worker)' }
    return this.intake.receive(body)
  }

  async readiness(): Promise<Record<string, boolean>> {
    return {
      store_writable: await this.store.probeWritable(),
      ...(this.worker ? { database_reachable: !this.worker.fenced } : {}),
    }
  }

  async health(now: number): Promise<HealthParts> {
    const stats = await this.clusterStats()
    const { config, role } = this.#deps
    const running = this.worker?.runningJobs() ?? []
    return {
      degraded: !this.store.writable || (this.worker?.fenced ?? false),
      lastUpdateAt: this.intake?.lastUpdateAt,
      fields: {
        role,
        brains: { running: this.worker?.running ?? 0, limit: this.worker ? config.maxConcurrentBrains : 0, oldest_running_s: ageSeconds(running[0]?.runningSince, now) },
        queue: { pending: stats.queued, running: stats.running, oldest_pending_s: ageSeconds(stats.oldestQueuedAt, now) },
        workers: { live: stats.liveWorkers, slots: stats.liveSlots, dead: stats.deadWorkers, jobs_held_by_dead: stats.heldByDead },
        store: {
          kind: 'postgres',
          writable: this.store.writable,
          size_bytes: stats.sizeBytes,
          ...(this.store.lastWriteError ? { last_error: this.store.lastWriteError } : {}),
        },
      },
    }
  }

  /** The shared queue, read at most every 2 s however often it is asked. */
  clusterStats(): Promise<ClusterStats & { heldByDead: number }> {
    const now = Date.now()
    if (this.#stats === undefined || now - this.#stats.at >= STATS_EVERY_MS) {
      const value = Promise.all([this.store.clusterStats(), jobsHeldByDead(this.store.pool)]).then(([stats, heldByDead]) => ({ ...stats, heldByDead }))
      value.catch(() => (this.#stats = undefined))
      this.#stats = { at: now, value }
    }
    return this.#stats.value
  }

  /** Deletes old finished messages, on one host at a time (an advisory lock), in small batches. */
  async #prune(): Promise<void> {
    const { config, log } = this.#deps
    const client = await this.store.pool.connect().catch(() => undefined)
    if (client === undefined) return
    let pruned = 0
    try {
      const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [PRUNE_LOCK])
      if (!rows[0]?.locked) return
      try {
        const olderThan = Date.now() - config.inboxRetentionMs
        for (;;) {
          const updateIds = await this.store.prune(olderThan, PRUNE_BATCH)
          pruned += updateIds.length
          for (const updateId of updateIds) await removeMedia(mediaDir(config.stateDir, updateId))
          if (updateIds.length < PRUNE_BATCH || this.#draining) break
        }
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [PRUNE_LOCK])
      }
    } catch (error) {
      log.warn({ err: error }, 'pruning failed')
    } finally {
      client.release()
    }
    if (pruned > 0) log.info({ pruned }, 'messages pruned')
  }

  /** Stops intake, lets running brains finish within the grace, then closes the pool. */
  async stop(): Promise<void> {
    this.#draining = true
    this.intake?.stopAccepting()
    for (const timer of this.#timers) clearTimeout(timer)
    await this.worker?.stop(this.#deps.config.shutdownGraceMs)
    await this.store.pool.end().catch(() => undefined)
  }
}
