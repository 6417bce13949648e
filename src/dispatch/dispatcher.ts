import PQueue from 'p-queue'
import { Fifo } from './fifo.js'

/** A message waiting for or holding its chat's turn. */
export interface Job {
  readonly seq: number
  readonly chatId: number
  readonly updateId: number
  readonly receivedAt: number
}

/**
 * Why a job is being stopped: the user's /cancel, the service stopping, or (BUSY_MODE=interrupt) a
 * newer message in the chat.
 */
export type StopReason = 'cancel' | 'shutdown' | 'interrupt'

/** A job's slot was never granted because the job was stopped first (see {@link StopReason}). */
export class JobStopped extends Error {
  readonly reason: StopReason
  constructor(reason: StopReason) {
    super(`stopped (${reason}) before a brain slot was free`)
    this.name = 'JobStopped'
    this.reason = reason
  }
}

/**
 * The work done for one job while it holds its chat's turn. `inSlot` runs a piece of it inside one
 * of the global brain slots; whatever runs outside (reply delivery, retry backoff) keeps the chat's
 * turn but frees the slot for other chats.
 */
export type Work = (job: Job, context: WorkContext) => Promise<void>

export interface WorkContext {
  inSlot<T>(run: () => Promise<T>): Promise<T>
  /** Aborted with a StopReason when the user cancels, a newer message interrupts, or the service stops. */
  readonly signal: AbortSignal
  /** The outcome is decided (only the reply is left to send): the job can no longer be stopped. */
  settle(): void
}

/** What a chat's current job is doing: waiting (for a slot, a retry, its media), running a brain, or replying. */
export type JobPhase = 'waiting' | 'running' | 'replying'

/** What is running in one chat now. */
export interface RunningJob {
  readonly job: Job
  /** When the job got its chat's turn. */
  readonly since: number
  /** When its current brain attempt started, while one runs. */
  readonly runningSince: number | undefined
  readonly phase: JobPhase
}

export interface ChatStatus {
  readonly running: RunningJob | undefined
  readonly queued: number
}

interface Lane {
  readonly chatId: number
  // The chat's jobs not yet started, in arrival order, as plain records: a waiting message costs
  // its record and nothing more until its turn is built.
  readonly backlog: Fifo<Job>
  current: Current | undefined
  // While the backlog's head is in line for a slot: since when, and the ticket of its place in line
  // (a stopped head leaves its place behind, which the line then skips).
  readySince: number | undefined
  ticket: number
}

interface Current {
  readonly job: Job
  readonly since: number
  runningSince: number | undefined
  settled: boolean
  readonly abort: AbortController
  // Counted in the dispatcher's admitted turns until its first brain attempt enters the limiter.
  admitted: boolean
}

/** A lane's place in the line for a slot. */
interface Place {
  readonly lane: Lane
  readonly ticket: number
}

/**
 * Per-chat lines feeding one global limiter. A chat's messages run one at a time in arrival order;
 * each brain attempt takes one of `maxConcurrent` slots of a p-queue, so no chat holds more than one
 * slot and no chat blocks another. A chat's turn (the work, with everything it builds) starts only
 * when a slot is free for it: until then its messages are plain records in its line, and the chats
 * wait for slots in the order they became ready. A chat's line exists only while it has work, so
 * idle chats cost nothing.
 */
export class Dispatcher {
  readonly maxConcurrent: number
  #lanes = new Map<number, Lane>()
  // The global brain slots, shared by every chat.
  #slots: PQueue
  // Chats whose next job waits for a slot to start its turn, oldest first.
  #ready = new Fifo<Place>()
  // Turns started but not yet in the limiter (preparing their first attempt): they hold a slot's place.
  #admitted = 0
  #work: Work
  #queued = 0
  #stopping = false
  // The work of every chat's current job, so that a drain can wait for replies in flight.
  #active = new Set<Promise<void>>()

  constructor({ maxConcurrent, work }: { maxConcurrent: number; work: Work }) {
    if (!Number.isInteger(maxConcurrent) || maxConcurrent < 1) {
      throw new TypeError(`maxConcurrent must be a whole number of at least 1; got ${maxConcurrent}`)
    }
    this.maxConcurrent = maxConcurrent
    this.#slots = new PQueue({ concurrency: maxConcurrent })
    // A slot freed (or a wait for one given up) may let the next chat start.
    this.#slots.addEventListener('next', () => this.#pump())
    this.#work = work
  }

  /** Queues a job behind its chat's earlier ones. */
  enqueue(job: Job): void {
    let lane = this.#lanes.get(job.chatId)
    if (!lane) {
      lane = { chatId: job.chatId, backlog: new Fifo(), current: undefined, readySince: undefined, ticket: 0 }
      this.#lanes.set(job.chatId, lane)
    }
    lane.backlog.push(job)
    this.#queued++
    if (lane.current === undefined && lane.readySince === undefined) this.#line(lane)
    this.#pump()
  }

  #line(lane: Lane): void {
    lane.readySince = Date.now()
    this.#ready.push({ lane, ticket: ++lane.ticket })
  }

  /** Starts the turns of the chats first in line, as long as a slot is free for each. */
  #pump(): void {
    while (!this.#stopping && this.#admitted + this.#slots.pending + this.#slots.size < this.maxConcurrent) {
      const place = this.#ready.shift()
      if (place === undefined) return
      const { lane } = place
      if (place.ticket !== lane.ticket || lane.readySince === undefined) continue
      lane.readySince = undefined
      this.#start(lane, lane.backlog.shift() as Job, undefined)
    }
  }

  /**
   * Builds and runs a job's turn. Errors are the work's to handle, so one that escapes is only
   * contained. A job stopped while it waited in line starts at once, already stopped, so that its
   * work records how it ended.
   */
  #start(lane: Lane, job: Job, stoppedBy: StopReason | undefined): void {
    this.#queued--
    const abort = new AbortController()
    if (stoppedBy !== undefined) abort.abort(stoppedBy)
    const current: Current = { job, since: Date.now(), runningSince: undefined, settled: false, abort, admitted: stoppedBy === undefined }
    if (current.admitted) this.#admitted++
    lane.current = current
    const leaveAdmitted = (): void => {
      if (!current.admitted) return
      current.admitted = false
      this.#admitted--
    }
    const inSlot = async <T>(run: () => Promise<T>): Promise<T> => {
      // A stop takes the job out of the line for a slot, but once its brain runs, the slot is held
      // until the brain is gone: p-queue would free it at the abort, with the brain still dying.
      const waiting = new AbortController()
      const stopWaiting = (): void => waiting.abort(abort.signal.reason)
      if (abort.signal.aborted) stopWaiting()
      else abort.signal.addEventListener('abort', stopWaiting, { once: true })
      try {
        const attempt = this.#slots.add(
          async () => {
            abort.signal.removeEventListener('abort', stopWaiting)
            if (abort.signal.aborted) throw new JobStopped(abort.signal.reason as StopReason)
            current.runningSince = Date.now()
            try {
              return await run()
            } finally {
              current.runningSince = undefined
            }
          },
          { signal: waiting.signal },
        )
        // The attempt is in the limiter now (running or waiting there): it no longer needs its admission.
        leaveAdmitted()
        return await attempt
      } catch (error) {
        if (abort.signal.aborted && !(error instanceof JobStopped)) throw new JobStopped(abort.signal.reason as StopReason)
        throw error
      } finally {
        leaveAdmitted()
      }
    }
    const settle = (): void => {
      current.settled = true
    }
    const work = this.#work(job, { inSlot, signal: abort.signal, settle })
      .catch(() => {
        // The work reports its own failures; nothing may stop the chat's line.
      })
      .finally(() => {
        this.#active.delete(work)
        leaveAdmitted()
        lane.current = undefined
        if (lane.backlog.size > 0) this.#line(lane)
        else this.#lanes.delete(lane.chatId)
        this.#pump()
      })
    this.#active.add(work)
  }

  /**
   * Stops a chat's current job (its brain, or its wait for one), unless its outcome is already
   * decided. Returns the job that was stopped.
   */
  stop(chatId: number, reason: StopReason): Job | undefined {
    const lane = this.#lanes.get(chatId)
    if (!lane) return undefined
    const { current } = lane
    if (current) {
      if (current.settled || current.abort.signal.aborted) return undefined
      current.abort.abort(reason)
      return current.job
    }
    if (lane.readySince === undefined || this.#stopping) return undefined
    lane.readySince = undefined
    const job = lane.backlog.shift() as Job
    this.#start(lane, job, reason)
    return job
  }

  chatStatus(chatId: number): ChatStatus {
    const lane = this.#lanes.get(chatId)
    if (!lane) return { running: undefined, queued: 0 }
    if (lane.current) return { running: describe(lane.current), queued: lane.backlog.size }
    const head = lane.backlog.peek()
    if (lane.readySince === undefined || head === undefined) return { running: undefined, queued: lane.backlog.size }
    return { running: { job: head, since: lane.readySince, runningSince: undefined, phase: 'waiting' }, queued: lane.backlog.size - 1 }
  }

  /** Brains running now (slots in use). */
  get running(): number {
    return this.#slots.pending
  }

  /** Jobs waiting for their turn or for a slot. */
  get queued(): number {
    return this.#queued + this.#slots.size
  }

  /** Chats with work. */
  get chats(): number {
    return this.#lanes.size
  }

  /** The jobs running in a slot now, oldest first. */
  runningJobs(): RunningJob[] {
    const running: RunningJob[] = []
    for (const lane of this.#lanes.values()) {
      if (lane.current?.runningSince !== undefined) running.push(describe(lane.current))
    }
    return running.sort((a, b) => (a.runningSince ?? 0) - (b.runningSince ?? 0))
  }

  get stopping(): boolean {
    return this.#stopping
  }

  /**
   * Starts no more jobs, lets the current ones finish (brains and reply delivery) for `graceMs`,
   * then stops them with reason 'shutdown' and waits up to `afterStopMs` for them to wind down.
   * Queued jobs are left where they are: the inbox keeps them for the next start.
   */
  async drain(graceMs: number, afterStopMs: number): Promise<void> {
    this.#stopping = true
    // A job not running a brain now (preparing, or waiting for a slot again) would only start one; stop it.
    for (const lane of this.#lanes.values()) {
      if (lane.current && lane.current.runningSince === undefined) lane.current.abort.abort('shutdown' satisfies StopReason)
    }
    if (await settlesWithin([...this.#active], graceMs)) return
    for (const lane of this.#lanes.values()) lane.current?.abort.abort('shutdown' satisfies StopReason)
    await settlesWithin([...this.#active], afterStopMs)
  }
}

function describe(current: Current): RunningJob {
  const phase: JobPhase = current.settled ? 'replying' : current.runningSince === undefined ? 'waiting' : 'running'
  return { job: current.job, since: current.since, runningSince: current.runningSince, phase }
}

async function settlesWithin(promises: Promise<unknown>[], ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms)
  })
  const settled = await Promise.race([Promise.allSettled(promises).then(() => true as const), timeout])
  clearTimeout(timer)
  return settled
}
