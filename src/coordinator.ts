import type { FastifyBaseLogger } from 'fastify'
import { answerCommand, type CommandAnswer } from './intake/service-commands.js'
import { classifyUpdate, type IncomingMessage } from './intake/classify.js'
import { InboxWriteError, type StoredMessage } from './store/inbox.js'
import { PendingAcks } from './telegram/acks.js'
import { Dispatcher, type Job } from './dispatch/dispatcher.js'
import { createMessageWork, deliver, type WorkerDeps } from './dispatch/worker.js'
import { mediaDir, removeMedia } from './telegram/media.js'

// A message a restart interrupted this often is failed instead of run again (a crash loop guard).
const MAX_INTERRUPTIONS = 3
const MAINTENANCE_EVERY_MS = 2000
const PRUNE_EVERY_MS = 10 * 60_000
const FIRST_PRUNE_AFTER_MS = 1000
// Rows deleted per step: each step holds the event loop for about a millisecond.
const PRUNE_BATCH = 500
// After the shutdown grace, how long stopped brains and replies in flight get to wind down.
const AFTER_KILL_MS = 3000

/** How the webhook should answer, and why. */
export interface Receipt {
  readonly status: 200 | 400 | 503
  readonly outcome: 'accepted' | 'duplicate' | 'ignored' | 'rejected'
  readonly detail?: string
  /** A Bot API call to return in the 200 body (ACK_MODE=webhook-reply: the receipt reaction). */
  readonly webhookReply?: Record<string, unknown>
}

/** What the coordinator is made of: what its messages' work needs, but the acks it keeps itself. */
export type CoordinatorDeps = Omit<WorkerDeps, 'acks'>

/**
 * The service's core: takes an update in (stored before it is acknowledged), acknowledges it with
 * the receipt reaction without waiting, and schedules it in its chat's queue. Knows nothing of HTTP.
 */
export class Coordinator {
  readonly dispatcher: Dispatcher
  readonly startedAt = Date.now()
  lastUpdateAt: number | undefined
  #deps: CoordinatorDeps
  #acks = new PendingAcks()
  // Learnt at start (getMe), so that "/status@OtherBot" in a group is left to the other bot.
  #botUsername: string | undefined
  #timers: NodeJS.Timeout[] = []
  #draining = false

  constructor(deps: CoordinatorDeps) {
    this.#deps = deps
    this.dispatcher = new Dispatcher({
      maxConcurrent: deps.config.maxConcurrentBrains,
      work: createMessageWork({ ...deps, acks: this.#acks }),
    })
  }

  /** True once shutdown began: the webhook answers 503 so Telegram re-sends later. */
  get draining(): boolean {
    return this.#draining
  }

  /**
   * Handles one authentic webhook body. Synchronous up to the answer: the only waiting is the
   * inbox write, so the webhook answers in well under a millisecond of work.
   */
  receive(body: unknown, receivedAt = Date.now()): Receipt {
    const { config, inbox, log } = this.#deps
    if (this.#draining) return { status: 503, outcome: 'rejected', detail: 'shutting down' }
    const intake = classifyUpdate(body, {
      isAllowedChat: (chatId) => config.allowedChats === 'all' || config.allowedChats.has(chatId),
      edits: config.edits,
      botUsername: this.#botUsername,
    })
    if (intake.kind === 'invalid') return { status: 400, outcome: 'rejected', detail: intake.problem }
    this.lastUpdateAt = receivedAt
    if (intake.kind === 'ignored') {
      log.debug({ update_id: intake.updateId, reason: intake.reason }, 'update ignored')
      return { status: 200, outcome: 'ignored', detail: intake.reason }
    }

    const { message, updateId } = intake
    const stored = {
      updateId,
      chatId: message.chatId,
      messageId: message.messageId,
      updateJson: JSON.stringify(body),
      receivedAt,
    }
    const messageLog = log.child({ update_id: updateId, chat_id: message.chatId })
    // A command is answered from the state at arrival; it acts only once stored (never for a duplicate).
    let answer: (CommandAnswer & { readonly what: string }) | undefined
    if (intake.kind === 'command') {
      const { dispatcher } = this
      const onError = (error: unknown): void => messageLog.warn({ err: error }, `/${intake.command.name} failed`)
      const context = { chatId: message.chatId, dispatcher, inbox, config, now: receivedAt, onError }
      answer = { ...answerCommand(intake.command, context), what: `/${intake.command.name}` }
    } else if (intake.kind === 'unsupported') {
      const what = intake.what.replaceAll('_', ' ')
      answer = { reply: `Sorry, I can't handle ${what}: please send text, a photo, a voice note or a file.`, what }
    }
    let seq: number | 'duplicate'
    try {
      seq = answer === undefined ? inbox.accept(stored) : inbox.acceptAnswered(stored, answer.reply)
    } catch (error) {
      if (!(error instanceof InboxWriteError)) throw error
      messageLog.error({ err: error }, 'update not stored; answering 503 so Telegram re-sends it')
      return { status: 503, outcome: 'rejected', detail: 'inbox unavailable' }
    }
    if (seq === 'duplicate') {
      messageLog.info('duplicate update ignored')
      return { status: 200, outcome: 'duplicate' }
    }

    let webhookReply: Record<string, unknown> | undefined
    if (answer === undefined) {
      if (config.ackMode === 'webhook-reply') webhookReply = reactionCall(message, config.ackEmoji)
      else this.#acknowledge(updateId, message, receivedAt, messageLog)
      messageLog.info({ seq, chars: message.text.length, edited: message.edited || undefined }, 'message accepted')
      // A newer message stops the running brain; the next run takes every message not yet answered.
      if (config.busyMode === 'interrupt' && this.dispatcher.stop(message.chatId, 'interrupt')) {
        messageLog.info('running brain interrupted by this message')
      }
      this.dispatcher.enqueue({ seq, chatId: message.chatId, updateId, receivedAt })
    } else {
      answer.act?.()
      messageLog.info({ seq, kind: answer.what }, 'answered by the service')
      const answered = inbox.get(seq) as StoredMessage
      void deliver(this.#deps, answered, answered.reply ?? '', messageLog)
    }
    return { status: 200, outcome: 'accepted', ...(webhookReply ? { webhookReply } : {}) }
  }

  /** Fires the receipt reaction; its failure is logged and never touches the work. */
  #acknowledge(updateId: number, message: IncomingMessage, receivedAt: number, log: FastifyBaseLogger): void {
    const { telegram, config, metrics } = this.#deps
    const call = telegram.react(message.chatId, message.messageId, config.ackEmoji)
    this.#acks.track(updateId, call)
    call.then(
      () => metrics.ackLatency.observe((Date.now() - receivedAt) / 1000),
      (error: unknown) => log.warn({ err: error }, 'receipt reaction failed'),
    )
  }

  /**
   * Schedules what the inbox holds from an earlier run: unfinished messages (the interrupted ones
   * first in their chats, flagged redelivered) and replies computed but never sent. Then starts the
   * maintenance timers.
   */
  start(): { resumed: number; replies: number } {
    const { inbox, log, telegram } = this.#deps
    telegram.api.getMe().then(
      (me) => {
        this.#botUsername = me.username
      },
      (error: unknown) => log.warn({ err: error }, "could not learn the bot's username; commands addressed to any bot are answered"),
    )
    const recovery = inbox.recover(MAX_INTERRUPTIONS, Date.now())
    const jobs = [...recovery.unfinished, ...recovery.undeliveredReplies].sort((a, b) => a.seq - b.seq)
    for (const message of jobs) this.dispatcher.enqueue(toJob(message))
    if (jobs.length > 0) {
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
        if (updateIds.length < PRUNE_BATCH || this.#draining) break
        await new Promise((resolve) => setImmediate(resolve))
      }
    } catch (error) {
      log.warn({ err: error }, 'inbox pruning failed')
    }
    if (pruned > 0) log.info({ pruned }, 'inbox pruned')
  }

  /** Stops intake and maintenance, lets running brains finish within the grace, stops the rest. */
  async stop(): Promise<void> {
    this.#draining = true
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

/** The receipt reaction as a webhook reply: the Bot API runs it, but nobody learns whether it worked. */
function reactionCall(message: IncomingMessage, emoji: string): Record<string, unknown> {
  return {
    method: 'setMessageReaction',
    chat_id: message.chatId,
    message_id: message.messageId,
    reaction: [{ type: 'emoji', emoji }],
  }
}

function toJob(message: StoredMessage): Job {
  return { seq: message.seq, chatId: message.chatId, updateId: message.updateId, receivedAt: message.receivedAt }
}
