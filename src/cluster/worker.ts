import fs from 'node:fs'
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import type { FastifyBaseLogger } from 'fastify'
import { chatDirOf } from '../brain/chat-dir.js'
import { JobStopped, type RunningJob, type StopReason, type Work } from '../dispatch/dispatcher.js'
import { ChatEngine, releasePool, sweepDead, wakeForgotten } from '../dispatch/engine.js'
import { MAX_INTERRUPTIONS } from '../store/inbox.js'
import { DEAD_AFTER_MS, type PostgresStore } from '../store/postgres/store.js'
import { ChatStateError } from '../store/postgres/chat-state.js'
import { notify } from '../telegram/delivery.js'
import type { TelegramClient } from '../telegram/client.js'

// A host writes its heartbeat this often.
const HEARTBEAT_MS = 2000
// A host that could not write its heartbeat for this long stops its brains: well before the others
// take its chats back (DEAD_AFTER_MS), even counting KILL_GRACE_S, so no chat ever runs twice.
export const LOST_AFTER_MS = 8000
// Every host looks for dead ones (and chats left without a wake-up) this often.
const SWEEP_MS = 5000
// Messages stored this recently are checked for a wake-up at each sweep.
const FORGOTTEN_WINDOW_MS = 10 * 60_000
// The channel that carries /cancel (and BUSY_MODE=interrupt) to the host running a chat's brain.
export const CHAT_CHANNEL = 'coordinator_chats'
const RELISTEN_MS = 1000
// A chat whose turn failed for the service's own reasons is tried again after this long.
const RETRY_AFTER_MS = 2000

/** What a NOTIFY on {@link CHAT_CHANNEL} says: stop this chat's current message, for this reason. */
export interface ChatSignal {
  readonly chat_id: number
  readonly reason: Extract<StopReason, 'cancel' | 'interrupt'>
}

interface Turn {
  readonly job: RunningJob['job']
  readonly since: number
  readonly abort: AbortController
  runningSince: number | undefined
  settled: boolean
}

/** What carries a chat's directory between hosts (store/postgres/chat-state.ts). */
export interface ChatState {
  pull(chatId: number, dir: string): Promise<void>
  push(chatId: number, dir: string): Promise<{ readonly stored: boolean; readonly bytes: number; readonly reason?: string }>
  forget(chatId: number): Promise<void>
}

export interface ClusterWorkerDeps {
  readonly store: PostgresStore
  readonly connectionString: string
  readonly slots: number
  readonly stateDir: string
  readonly work: Work
  readonly telegram: TelegramClient
  /** Carries a chat's directory between hosts; undefined when CHAT_STATE_MAX_MB=0 (a shared directory). */
  readonly chatState: ChatState | undefined
  readonly log: FastifyBaseLogger
}

/**
 * One worker host: runs the engine's chat wake-ups with `slots` brains at a time, keeps its
 * heartbeat, takes back the chats of hosts that died, and listens for /cancel. When it cannot
 * reach the database for LOST_AFTER_MS it stops its brains (their messages are redelivered, on
 * whichever host, once the database is back) and, once it can again, hands its old jobs back and
 * starts afresh under a new id.
 */
export class ClusterWorker {
  #deps: ClusterWorkerDeps
  #id = newWorkerId()
  #engine = new ChatEngine()
  #turns = new Map<number, Turn>()
  #timers: NodeJS.Timeout[] = []
  #lastBeat = Date.now()
  #fenced = false
  // The id and engine pool a fence stopped: its jobs go back to the queue once the database answers.
  #fencedAs: { readonly id: string; readonly poolId: string | undefined } | undefined
  #stopping = false
  #listener: pg.Client | undefined

  constructor(deps: ClusterWorkerDeps) {
    this.#deps = deps
  }

  get id(): string {
    return this.#id
  }

  /** Brains running on this host now. */
  get running(): number {
    let running = 0
    for (const turn of this.#turns.values()) if (turn.runningSince !== undefined) running++
    return running
  }

  /** The turns of this host, oldest brain first. */
  runningJobs(): RunningJob[] {
    return [...this.#turns.values()]
      .filter((turn) => turn.runningSince !== undefined)
      .map((turn) => ({ job: turn.job, since: turn.since, runningSince: turn.runningSince, phase: turn.settled ? 'replying' : 'running' }) as const)
      .sort((a, b) => (a.runningSince ?? 0) - (b.runningSince ?? 0))
  }

  /** Whether this host stopped its brains because it lost the database. */
  get fenced(): boolean {
    return this.#fenced
  }

  async start(): Promise<void> {
    await this.#register()
    await this.#engine.start(this.#deps.store.pool, this.#deps.slots, (chatId, signal) => this.#handle(chatId, signal), this.#deps.log)
    await this.#beat()
    this.#every(HEARTBEAT_MS, () => this.#beat())
    this.#every(SWEEP_MS, () => this.#sweep())
    void this.#listen()
  }

  /** Stops taking chats; running brains get `graceMs` to finish, then are stopped (redelivered later). */
  async stop(graceMs: number): Promise<void> {
    this.#stopping = true
    for (const timer of this.#timers) clearInterval(timer)
    const stopped = this.#engine.stop()
    const timer = setTimeout(() => this.#stopAll('shutdown'), graceMs)
    await stopped.catch((error: unknown) => this.#deps.log.warn({ err: error }, 'engine stop failed'))
    clearTimeout(timer)
    await this.#listener?.end().catch(() => undefined)
    await this.#deps.store.pool.query('UPDATE coordinator.workers SET stopped = true WHERE id = $1', [this.#id]).catch(() => undefined)
  }

  /** A chat's wake-up: its next message (or unsent reply) handled under the engine's lock on its queue. */
  async #handle(chatId: number, engineSignal: AbortSignal): Promise<void> {
    let again: 'now' | 'soon' | undefined
    try {
      again = await this.#turn(chatId, engineSignal)
      // The chat's other messages wait behind it: a fresh wake-up puts the chat at the back of the
      // line, behind the chats that waited meanwhile.
      if (again === undefined && (await this.#deps.store.hasOpen(chatId))) again = 'now'
    } catch (error) {
      this.#deps.log.warn({ err: error, chat_id: chatId }, "the chat's turn failed; it is woken up again")
      again = 'soon'
    }
    // Not failed (the engine retries a failed job after a backoff that grows to minutes) but done,
    // with a fresh wake-up in its place. Without the database this throws: the job stays this
    // host's, and goes back to the queue when the database answers again (#recover) or the others
    // give this host up.
    if (again !== undefined) await this.#deps.store.wakeUp(chatId, again === 'now' ? 0 : RETRY_AFTER_MS)
  }

  /**
   * The chat's next message (or unsent reply), run as on one host. Returns when the chat must be
   * woken up again: its message is unfinished (stopped with the host, or its outcome not stored).
   */
  async #turn(chatId: number, engineSignal: AbortSignal): Promise<'now' | 'soon' | undefined> {
    const { store, log, chatState, stateDir } = this.#deps
    if (this.#fenced || this.#stopping) return 'now'
    const head = await store.takeHead(chatId, MAX_INTERRUPTIONS, Date.now())
    if (head === undefined) return undefined
    const { message, reclaimed } = head
    if (reclaimed > 0) log.warn({ chat_id: chatId, reclaimed }, 'messages of a host that died or lost the database taken back')
    const abort = new AbortController()
    const onEngineStop = (): void => abort.abort('shutdown' satisfies StopReason)
    engineSignal.addEventListener('abort', onEngineStop, { once: true })
    const job = { seq: message.seq, chatId, updateId: message.updateId, receivedAt: message.receivedAt }
    const turn: Turn = { job, since: Date.now(), abort, runningSince: undefined, settled: false }
    this.#turns.set(chatId, turn)
    const chatDir = chatDirOf(stateDir, chatId)
    try {
      if (chatState !== undefined && message.state === 'queued') {
        try {
          await chatState.pull(chatId, chatDir)
        } catch (error) {
          // The database is unreachable: the wake-up is retried. A stored state that fails the
          // extraction checks is refused whole: the brain runs with what this host has.
          if (!(error instanceof ChatStateError)) throw error
          log.error({ err: error, chat_id: chatId }, 'the chat\'s stored state was refused; running with this host\'s copy')
        }
      }
      await this.#deps.work(job, {
        signal: abort.signal,
        settle: () => {
          turn.settled = true
        },
        inSlot: async (run) => {
          if (abort.signal.aborted) throw new JobStopped(abort.signal.reason as StopReason)
          turn.runningSince = Date.now()
          try {
            return await run()
          } catch (error) {
            if (abort.signal.aborted && !(error instanceof JobStopped)) throw new JobStopped(abort.signal.reason as StopReason)
            throw error
          } finally {
            turn.runningSince = undefined
          }
        },
      })
      // Stopped with the host: the chat's next turn, on whichever host, runs its message again.
      if (abort.signal.aborted && (abort.signal.reason as StopReason) === 'shutdown') return 'now'
      // Its outcome not stored (or the turn ended without one): the same, a little later.
      const after = await store.get(message.seq)
      if (after !== undefined && (after.state === 'running' || (after.state === 'queued' && message.state === 'queued' && !abort.signal.aborted))) {
        log.warn({ chat_id: chatId, seq: message.seq, state: after.state }, 'message unfinished after its turn; the chat is woken up again')
        return 'soon'
      }
      if (chatState !== undefined && message.state === 'queued' && fs.existsSync(chatDir)) {
        const pushed = await chatState.push(chatId, chatDir)
        if (!pushed.stored && pushed.reason === 'over the cap') {
          const notice = `⚠️ This chat's saved state is ${megabytes(pushed.bytes)}, over the limit (CHAT_STATE_MAX_MB): another host would start without it. Send /new to start over.`
          await notify(this.#deps.telegram, message, notice, log)
        }
      }
      return undefined
    } finally {
      engineSignal.removeEventListener('abort', onEngineStop)
      this.#turns.delete(chatId)
    }
  }

  /** Stops this host's brains for a chat: a /cancel (or an interrupting message) from any intake. */
  #signal(signal: ChatSignal): void {
    const turn = this.#turns.get(signal.chat_id)
    if (turn === undefined || turn.settled || turn.abort.signal.aborted) return
    this.#deps.log.info({ chat_id: signal.chat_id, reason: signal.reason }, 'brain stopped by a message to another host')
    turn.abort.abort(signal.reason)
  }

  #stopAll(reason: StopReason): void {
    for (const turn of this.#turns.values()) if (!turn.abort.signal.aborted) turn.abort.abort(reason)
  }

  async #register(): Promise<void> {
    await this.#deps.store.pool.query(
      `INSERT INTO coordinator.workers (id, host, slots) VALUES ($1, $2, $3)
       ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), stopped = false`,
      [this.#id, hostname(), this.#deps.slots],
    )
  }

  async #beat(): Promise<void> {
    const { store, log } = this.#deps
    try {
      const { rows } = await store.pool.query<{ stopped: boolean }>(
        'UPDATE coordinator.workers SET heartbeat_at = now(), pool_id = COALESCE($2, pool_id) WHERE id = $1 RETURNING stopped',
        [this.#id, this.#engine.poolId ?? null],
      )
      if (rows[0]?.stopped === true && !this.#fenced) {
        // The others gave this host up for dead while it could not write: its chats are theirs now.
        log.error('this host was taken for dead by the others; stopping its brains')
        this.#fence()
      }
      this.#lastBeat = Date.now()
      if (this.#fenced && !this.#stopping) await this.#recover()
    } catch (error) {
      if (!this.#fenced && Date.now() - this.#lastBeat >= LOST_AFTER_MS) {
        log.error({ err: error, since_ms: Date.now() - this.#lastBeat }, 'database unreachable; stopping this host\'s brains')
        this.#fence()
      }
    }
  }

  /** Stops every brain of this host and its engine: from now on its chats may run elsewhere. */
  #fence(): void {
    this.#fenced = true
    this.#stopAll('shutdown')
    const engine = this.#engine
    this.#fencedAs = { id: this.#id, poolId: engine.poolId }
    this.#engine = new ChatEngine()
    // The host comes back under a new id: the old one may already be given up for dead.
    this.#id = newWorkerId()
    void engine.stop().catch(() => undefined)
  }

  /**
   * Back in touch with the database after a fence: the old jobs go back to the queue, the old id is
   * marked stopped, and the engine starts afresh. A step that fails is tried again at the next beat.
   */
  async #recover(): Promise<void> {
    const { store, log } = this.#deps
    const fencedAs = this.#fencedAs
    if (fencedAs !== undefined) {
      if (fencedAs.poolId !== undefined) await releasePool(store.pool, fencedAs.poolId)
      await store.pool.query('UPDATE coordinator.workers SET stopped = true WHERE id = $1', [fencedAs.id])
      this.#fencedAs = undefined
    }
    await this.#register()
    await this.#engine.start(store.pool, this.#deps.slots, (chatId, signal) => this.#handle(chatId, signal), log)
    this.#fenced = false
    log.warn({ worker: this.#id }, 'database reachable again; taking chats under a new id')
  }

  async #sweep(): Promise<void> {
    if (this.#fenced) return
    try {
      const dead = await sweepDead(this.#deps.store.pool, DEAD_AFTER_MS)
      if (dead.length > 0) this.#deps.log.warn({ workers: dead }, 'hosts without a heartbeat taken for dead; their chats go to the others')
      const woken = await wakeForgotten(this.#deps.store.pool, FORGOTTEN_WINDOW_MS)
      if (woken > 0) this.#deps.log.info({ chats: woken }, 'chats with a new message and no wake-up woken up')
    } catch (error) {
      this.#deps.log.debug({ err: error }, 'sweep failed')
    }
  }

  /** LISTENs on a connection of its own, reconnecting whenever it drops. */
  async #listen(): Promise<void> {
    while (!this.#stopping) {
      const client = new pg.Client({ connectionString: this.#deps.connectionString, application_name: 'coordinator listener' })
      const ended = new Promise<void>((resolve) => {
        client.on('error', () => resolve())
        client.on('end', () => resolve())
      })
      client.on('notification', ({ payload }) => {
        const signal = parseSignal(payload)
        if (signal !== undefined) this.#signal(signal)
      })
      try {
        await client.connect()
        await client.query(`LISTEN ${CHAT_CHANNEL}`)
        this.#listener = client
        await ended
      } catch {
        // Retried below.
      }
      await client.end().catch(() => undefined)
      if (!this.#stopping) await new Promise((resolve) => setTimeout(resolve, RELISTEN_MS))
    }
  }

  #every(ms: number, task: () => Promise<void>): void {
    let busy = false
    const timer = setInterval(() => {
      if (busy) return
      busy = true
      void task().finally(() => (busy = false))
    }, ms)
    timer.unref()
    this.#timers.push(timer)
  }
}

/** Tells the host running a chat's brain to stop it (whichever host that is). */
export async function signalChat(pool: pg.Pool, signal: ChatSignal): Promise<void> {
  await pool.query('SELECT pg_notify($1, $2)', [CHAT_CHANNEL, JSON.stringify(signal)])
}

function parseSignal(payload: string | undefined): ChatSignal | undefined {
  try {
    const value = JSON.parse(payload ?? '') as Partial<ChatSignal>
    if (typeof value.chat_id === 'number' && (value.reason === 'cancel' || value.reason === 'interrupt')) return value as ChatSignal
  } catch {
    // Not ours.
  }
  return undefined
}

function newWorkerId(): string {
  return `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`
}

function megabytes(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`
}
