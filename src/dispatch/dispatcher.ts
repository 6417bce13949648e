import PQueue from 'p-queue'

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
  readonly queue: PQueue
  // The chat's later jobs, as plain records: the queue gets them one at a time, so a long backlog
  // costs a few dozen bytes a message instead of a queued task (a closure and a promise) each.
  readonly backlog: Job[]
  // Jobs added and not yet finished, including the one running: the lane is dropped at zero.
  outstanding: number
  current: Current | undefined
}

interface Current {
  readonly job: Job
  readonly since: number
  runningSince: number | undefined
  settled: boolean
  readonly abort: AbortController
}

/**
 * Per-chat queues feeding one global limiter. Each chat has a p-queue of concurrency 1, so its
 * messages run one at a time in arrival order; each of them takes one of `maxConcurrent` global
 * slots to run its brain, so no chat can hold more than one slot and no chat blocks another.
 * A chat's queue exists only while it has work, so idle chats cost nothing.
 */
export class Dispatcher {
  readonly maxConcurrent: number
  #lanes = new Map<number, Lane>()
  // The global brain slots, shared by every chat.
  #slots: PQueue
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
    this.#work = work
  }

  /** Queues a job behind its chat's earlier ones. */
  enqueue(job: Job): void {
    let lane = this.#lanes.get(job.chatId)
    if (!lane) {
      lane = { queue: new PQueue({ concurrency: 1 }), backlog: [], outstanding: 0, current: undefined }
      this.#lanes.set(job.chatId, lane)
    }
    lane.outstanding++
    this.#queued++
    if (lane.outstanding === 1) this.#admit(lane, job)
    else lane.backlog.push(job)
  }

  #admit(lane: Lane, job: Job): void {
    void lane.queue.add(() => this.#run(lane, job))
  }

  /** Runs in the chat's turn; errors are the work's to handle, so one that escapes is only contained. */
  async #run(lane: Lane, job: Job): Promise<void> {
    this.#queued--
    if (this.#stopping) return this.#leave(lane, job)
    const abort = new AbortController()
    const current: Current = { job, since: Date.now(), runningSince: undefined, settled: false, abort }
    lane.current = current
    const inSlot = async <T>(run: () => Promise<T>): Promise<T> => {
      // A stop takes the job out of the line for a slot, but once its brain runs, the slot is held
      // until the brain is gone: p-queue would free it at the abort, with the brain still dying.
      const waiting = new AbortController()
      const stopWaiting = (): void => waiting.abort(abort.signal.reason)
      if (abort.signal.aborted) stopWaiting()
      else abort.signal.addEventListener('abort', stopWaiting, { once: true })
      try {
        return await this.#slots.add(
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
      } catch (error) {
        if (abort.signal.aborted && !(error instanceof JobStopped)) throw new JobStopped(abort.signal.reason as StopReason)
        throw error
      }
    }
    const settle = (): void => {
      current.settled = true
    }
    const work = this.#work(job, { inSlot, signal: abort.signal, settle }).catch(() => {
      // The work reports its own failures; nothing may stop the chat's queue.
    })
    this.#active.add(work)
    try {
      await work
    } finally {
      this.#active.delete(work)
      lane.current = undefined
      this.#leave(lane, job)
      const next = lane.backlog.shift()
      if (next) this.#admit(lane, next)
    }
  }

  #leave(lane: Lane, job: Job): void {
    if (--lane.outstanding === 0) this.#lanes.delete(job.chatId)
  }

  /**
   * Stops a chat's current job (its brain, or its wait for one), unless its outcome is already
   * decided. Returns the job that was stopped.
   */
  stop(chatId: number, reason: StopReason): Job | undefined {
    const current = this.#lanes.get(chatId)?.current
    if (!current || current.settled || current.abort.signal.aborted) return undefined
    current.abort.abort(reason)
    return current.job
  }

  chatStatus(chatId: number): ChatStatus {
    const lane = this.#lanes.get(chatId)
    if (!lane) return { running: undefined, queued: 0 }
    return { running: lane.current && describe(lane.current), queued: lane.queue.size + lane.backlog.length }
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
    // A job waiting for a slot would only start a brain; stop it now.
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
