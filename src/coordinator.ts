import { ageSeconds, type HealthParts, type ServiceCore } from './health.js'
import { Intake, type Receipt } from './intake/intake.js'
import { MAX_INTERRUPTIONS, type Inbox, type QueuedMessage } from './store/inbox.js'
import { PendingAcks } from './telegram/acks.js'
import { Dispatcher, type Job } from './dispatch/dispatcher.js'
import { createMessageWork, type TurnDeps } from './turn/turn.js'
import { mediaDir, removeMedia } from './telegram/media.js'

const MAINTENANCE_EVERY_MS = 2000
const PRUNE_EVERY_MS = 10 * 60_000
const FIRST_PRUNE_AFTER_MS = 1000
// Rows deleted per step: each step holds the event loop for about a millisecond.
const PRUNE_BATCH = 500
// After the shutdown grace, how long stopped brains and replies in flight get to wind down.
const AFTER_KILL_MS = 3000

/** What the coordinator is made of: what its messages' work needs, but the acks it keeps itself. */
export type CoordinatorDeps = Omit<TurnDeps, 'acks' | 'inbox'> & { readonly inbox: Inbox }

/**
 * The service's lifecycle: builds intake and the dispatcher, and at start schedules what an earlier
 * run left in the inbox and starts maintenance (re-queued messages, pruning); at stop drains.
 */
export class Coordinator implements ServiceCore {
  readonly dispatcher: Dispatcher
  readonly intake: Intake
  readonly startedAt = Date.now()
  #deps: CoordinatorDeps
  #timers: NodeJS.Timeout[] = []

  constructor(deps: CoordinatorDeps) {
    this.#deps = deps
    // The receipt reactions in flight, which a turn's later reactions must not land under.
    const acks = new PendingAcks()
    this.dispatcher = new Dispatcher({
      maxConcurrent: deps.config.maxConcurrentBrains,
      work: createMessageWork({ ...deps, acks }),
    })
    this.intake = new Intake({ ...deps, acks, dispatcher: this.dispatcher })
  }

  /** True once shutdown began: the webhook answers 503 so Telegram re-sends later. */
  get draining(): boolean {
    return !this.intake.accepting
  }

  receive(body: unknown): Promise<Receipt> {
    return this.intake.receive(body)
  }

  readiness(): Record<string, boolean> {
    return { store_writable: this.#deps.inbox.stats().writable }
  }

  health(now: number): HealthParts {
    const { dispatcher, intake } = this
    const { config, inbox } = this.#deps
    const running = dispatcher.runningJobs()
    const store = inbox.stats()
    return {
      degraded: !store.writable,
      lastUpdateAt: intake.lastUpdateAt,
      fields: {
        brains: { running: dispatcher.running, limit: config.maxConcurrentBrains, oldest_running_s: ageSeconds(running[0]?.runningSince, now) },
        queue: { pending: dispatcher.queued, chats: dispatcher.chats, oldest_pending_s: ageSeconds(store.oldestQueuedAt, now) },
        store: {
          kind: store.kind,
          writable: store.writable,
          size_bytes: store.sizeBytes,
          oldest_queued_s: ageSeconds(store.oldestQueuedAt, now),
          ...(store.lastWriteError ? { last_error: store.lastWriteError } : {}),
        },
      },
    }
  }

  /**
   * Schedules what the inbox holds from an earlier run: unfinished messages (the interrupted ones
   * first in their chats, flagged redelivered) and replies computed but never sent. Then starts the
   * maintenance timers.
   */
  start(): { resumed: number; replies: number } {
    const { inbox, log } = this.#deps
    const recovery = inbox.recover(MAX_INTERRUPTIONS, Date.now())
    // Both lists come in seq order: merged, not copied and sorted, and each record is the job itself,
    // so a backlog of a million is scheduled without a second million objects.
    const { unfinished, undeliveredReplies } = recovery
    for (let u = 0, r = 0; u < unfinished.length || r < undeliveredReplies.length; ) {
      const next = r >= undeliveredReplies.length || (u < unfinished.length && (unfinished[u] as QueuedMessage).seq < (undeliveredReplies[r] as QueuedMessage).seq)
      this.dispatcher.enqueue((next ? unfinished[u++] : undeliveredReplies[r++]) as QueuedMessage)
    }
    if (unfinished.length + undeliveredReplies.length > 0) {
      log.info(
        {
          resumed: recovery.unfinished.length,
          redelivered: recovery.unfinished.filter((message) => message.interruptions > 0).length,
          replies: recovery.undeliveredReplies.length,
        },
        'inbox recovered',
      )
    }
    this.#every(MAINTENANCE_EVERY_MS, () => {
      inbox.probeWritable()
      for (const message of inbox.takeRequeued()) {
        log.info({ update_id: message.updateId, chat_id: message.chatId, seq: message.seq }, 'message re-queued')
        this.dispatcher.enqueue(toJob(message))
      }
    })
    // Once soon after start (a service restarted daily would otherwise wait), then every 10 minutes.
    const firstPrune = setTimeout(() => void this.#prune(), FIRST_PRUNE_AFTER_MS)
    firstPrune.unref()
    this.#timers.push(firstPrune)
    this.#every(PRUNE_EVERY_MS, () => void this.#prune())
    return { resumed: recovery.unfinished.length, replies: recovery.undeliveredReplies.length }
  }

  /** Deletes old finished messages in small batches, yielding between them so intake never waits long. */
  async #prune(): Promise<void> {
    const { inbox, log, config } = this.#deps
    const olderThan = Date.now() - config.inboxRetentionMs
    let pruned = 0
    try {
      for (;;) {
        const updateIds = inbox.prune(olderThan, PRUNE_BATCH)
        pruned += updateIds.length
        for (const updateId of updateIds) await removeMedia(mediaDir(config.stateDir, updateId))
        if (updateIds.length < PRUNE_BATCH || this.draining) break
        await new Promise((resolve) => setImmediate(resolve))
      }
    } catch (error) {
      log.warn({ err: error }, 'inbox pruning failed')
    }
    if (pruned > 0) log.info({ pruned }, 'inbox pruned')
  }

  /** Stops intake and maintenance, lets running brains finish within the grace, stops the rest. */
  async stop(): Promise<void> {
    this.intake.stopAccepting()
    for (const timer of this.#timers) clearInterval(timer)
    const { shutdownGraceMs, brain } = this.#deps.config
    await this.dispatcher.drain(shutdownGraceMs, brain.killGraceMs + AFTER_KILL_MS)
  }

  #every(ms: number, task: () => void): void {
    const timer = setInterval(() => {
      try {
        task()
      } catch (error) {
        this.#deps.log.warn({ err: error }, 'inbox maintenance failed')
      }
    }, ms)
    timer.unref()
    this.#timers.push(timer)
  }
}

function toJob(message: QueuedMessage): Job {
  return { seq: message.seq, chatId: message.chatId, updateId: message.updateId, receivedAt: message.receivedAt }
}
