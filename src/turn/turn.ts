import fs from 'node:fs'
import type { FastifyBaseLogger } from 'fastify'
import type { Message, Update } from 'grammy/types'
import type { Config } from '../config.js'
import type { Metrics } from '../metrics.js'
import type { Outcome, StoredMessage, TurnStore } from '../store/inbox.js'
import { buildEnvelope, envelopeEnvironment, promptText, type RunMessage } from '../brain/envelope.js'
import { chatDirOf } from '../brain/chat-dir.js'
import { brainEnvironment } from '../brain/env.js'
import { EXIT_TEMPFAIL } from '../brain/protocol.js'
import { runBrain, type BrainAttempt } from '../brain/run.js'
import type { BrainSandbox } from '../brain/sandbox.js'
import { ChatLockTimeout, type ChatLocks } from '../dispatch/chat-lock.js'
import { JobStopped, type StopReason, type Work, type WorkContext } from '../dispatch/dispatcher.js'
import type { PendingAcks } from '../telegram/acks.js'
import type { TelegramClient } from '../telegram/client.js'
import { deliver, finalReaction, notify, replyTarget, type FinalReactionDeps } from '../telegram/delivery.js'
import { ChatFeedback } from '../telegram/feedback.js'
import { downloadMedia, mediaDir, mediaOf } from '../telegram/media.js'
import type { MediaQuota } from '../telegram/media-quota.js'
import { messageOf } from '../telegram/updates.js'
import {
  attemptMetric,
  cancelledOutcome,
  lockTimedOut,
  outcomeOf,
  RESTART_NOTICE,
  retriesExhausted,
  serviceFailed,
} from './outcome.js'
import { albumOf, settleAlbum } from './albums.js'

// Backoff between attempts after exit 75: 1 s, 2 s, 4 s, … capped.
const RETRY_BACKOFF_BASE_MS = 1000
const RETRY_BACKOFF_MAX_MS = 15_000
// A busy chat's next run takes at most this many collected messages; the rest go into the run after.
const COLLECT_MAX = 50

/** What a chat's turn works with. */
export interface TurnDeps {
  readonly config: Config
  readonly inbox: TurnStore
  readonly telegram: TelegramClient
  readonly locks: ChatLocks
  readonly metrics: Metrics
  readonly log: FastifyBaseLogger
  readonly acks: PendingAcks
  /** Wraps each attempt in the sandbox (or runs it as is, with BRAIN_SANDBOX=off). */
  readonly sandbox: BrainSandbox
  /** MEDIA_QUOTA_MB: downloads make room by deleting older messages' media, never a running turn's. */
  readonly mediaQuota: MediaQuota
}

/**
 * What happens in a chat's turn: the message (with, when BUSY_MODE collects, every other message
 * of the chat still queued) gets its media downloaded, then its brain attempts (each in a global
 * slot, under the chat's lock, retried on exit 75 while the budget lasts), the outcome stored, the
 * reply delivered and the final reaction set. A message already finished (a restart found its reply
 * unsent) only gets its reply; one that an earlier turn took along is skipped.
 */
export function createMessageWork(deps: TurnDeps): Work {
  return async (job, context) => {
    const log = deps.log.child({ update_id: job.updateId, chat_id: job.chatId })
    const message = await deps.inbox.get(job.seq)
    if (!message) return
    if (message.state === 'queued') {
      const album = albumOf(message)
      // An album's items go into one run: its first item's turn waits for the rest (whose own
      // turns then find them taken, and skip).
      const albumItems = album === undefined ? [] : await settleAlbum(deps.inbox, message, album, context.signal)
      if (album !== undefined && context.signal.aborted) {
        if ((context.signal.reason as StopReason) === 'cancel') {
          const cancelledAt = Date.now()
          for (const item of albumItems) await deps.inbox.finish(item.seq, cancelledOutcome(), cancelledAt)
        }
        return
      }
      // Dropped while its album settled (/cancel all).
      if (album !== undefined && (await deps.inbox.get(job.seq))?.state !== 'queued') return
      const collected = deps.config.busyMode === 'queue' ? albumItems : (await deps.inbox.queuedInChat(message.chatId)).slice(0, COLLECT_MAX)
      const [first = message, ...rest] = collected
      const batch: Batch = [first, ...rest]
      const releaseMedia = deps.mediaQuota.hold(batch.map((queued) => queued.updateId))
      try {
        await runTurn(deps, batch, context, log)
      } catch (error) {
        // Stopping with the service: the messages stay in the inbox for the next start.
        if (context.signal.aborted && (context.signal.reason as StopReason) === 'shutdown') return
        await failTurn(deps, batch, error, log)
      } finally {
        releaseMedia()
      }
    } else if (message.replyState === 'pending' && message.reply) {
      context.settle()
      await deliver(deps, message, message.reply, log)
      // Only a brain's outcome gets a reaction; a command's or a notice's answer does not.
      if (message.startedAt !== null) finalReaction(reactionDeps(deps), [message], message.state, undefined, Promise.resolve(), log)
    }
  }
}

/** A turn's messages in arrival order; the reply answers the last one. */
type Batch = readonly [StoredMessage, ...StoredMessage[]]

async function runTurn(deps: TurnDeps, batch: Batch, context: WorkContext, log: FastifyBaseLogger): Promise<void> {
  const { inbox, telegram } = deps
  const lead = batch.at(-1) as StoredMessage
  const turnLog = batch.length > 1 ? log.child({ collected: batch.map((message) => message.updateId) }) : log
  let messages: readonly [RunMessage, ...RunMessage[]]
  try {
    messages = await prepareMessages(deps, batch, context.signal, turnLog)
  } catch (error) {
    // Stopped while downloading: still queued, so a shutdown or an interrupt leaves them for the next run.
    if (!context.signal.aborted) throw error
    if ((context.signal.reason as StopReason) === 'cancel') {
      const cancelledAt = Date.now()
      for (const message of batch) await inbox.finish(message.seq, cancelledOutcome(), cancelledAt)
    }
    return
  }
  // Where the brain may send files from; a relative path starts where the brain runs.
  const chatDir = chatDirOf(deps.config.stateDir, lead.chatId)
  const brainCwd = deps.config.brain.cwd
  const fileRoots = { cwd: brainCwd ?? chatDir, allowedDirs: brainCwd === undefined ? [chatDir] : [chatDir, brainCwd] }
  const feedback = new ChatFeedback({ telegram, target: replyTarget(lead), log: turnLog, afterReceipt: deps.acks.settled(lead.updateId), fileRoots })
  let outcome: Outcome | 'interrupted' | 'requeued'
  try {
    outcome = await runAttempts(deps, batch, messages, context, feedback, turnLog)
  } finally {
    await feedback.close()
  }
  if (outcome === 'interrupted') return
  if (outcome === 'requeued') {
    await inbox.requeue(batch.map((message) => message.seq))
    turnLog.info('brain stopped by a newer message; its messages go into the next run (BUSY_MODE=interrupt)')
    return
  }
  context.settle()
  const finishedAt = Date.now()
  try {
    for (const message of batch) await inbox.finish(message.seq, message === lead ? outcome : { ...outcome, reply: '' }, finishedAt)
  } catch (error) {
    turnLog.error({ err: error }, 'could not store the outcome; delivering the reply anyway')
  }
  await deliver(deps, lead, outcome.reply, turnLog)
  finalReaction(reactionDeps(deps), batch, outcome.state, feedback.brainReaction, feedback.reactionsSettled, turnLog)
}

/**
 * The net under a turn: a failure of the service's own (not the brain's) fails the turn's messages
 * with a short notice, rather than leaving them running, unanswered, until the next start.
 */
async function failTurn(deps: TurnDeps, batch: Batch, error: unknown, log: FastifyBaseLogger): Promise<void> {
  log.error({ err: error }, 'the service failed while handling this message')
  const lead = batch.at(-1) as StoredMessage
  const outcome = serviceFailed(error)
  try {
    const at = Date.now()
    for (const message of batch) await deps.inbox.finish(message.seq, message === lead ? outcome : { ...outcome, reply: '' }, at)
  } catch (storeError) {
    log.error({ err: storeError }, 'could not store the failure either')
  }
  await deliver(deps, lead, outcome.reply, log)
}

/** Parses the stored updates and downloads their media (before the first attempt: in the place of a slot, not in one). */
async function prepareMessages(
  deps: TurnDeps,
  batch: Batch,
  signal: AbortSignal,
  log: FastifyBaseLogger,
): Promise<readonly [RunMessage, ...RunMessage[]]> {
  const { config, telegram } = deps
  const prepared: RunMessage[] = []
  for (const stored of batch) {
    const update = JSON.parse(stored.updateJson) as Update
    const message = messageOf(update) as Message
    const media = mediaOf(message)
    const files =
      media.length === 0
        ? []
        : await downloadMedia({
            api: telegram.api,
            token: config.botToken,
            apiRoot: config.apiRoot,
            dir: mediaDir(config.stateDir, stored.updateId),
            quota: deps.mediaQuota,
            media,
            signal,
            log,
          })
    prepared.push({ update, message, edited: update.message === undefined, files })
  }
  return prepared as [RunMessage, ...RunMessage[]]
}

/**
 * The brain attempts of a turn, each in a global slot and under the chat's lock, retried after exit
 * 75 with backoff while the message's budget lasts. Returns the outcome to store, or how a stop
 * (shutdown, a newer message) left the turn.
 */
async function runAttempts(
  deps: TurnDeps,
  batch: Batch,
  messages: readonly [RunMessage, ...RunMessage[]],
  context: WorkContext,
  feedback: ChatFeedback,
  log: FastifyBaseLogger,
): Promise<Outcome | 'interrupted' | 'requeued'> {
  const { config, inbox, metrics } = deps
  const lead = batch.at(-1) as StoredMessage
  // In a group everyone reads the notice; the brain's stderr may hold what only the operator should see.
  const details = inPrivateChat(lead)
  const redelivered = batch.some((message) => message.interruptions > 0)
  if (redelivered) await notify(deps.telegram, lead, RESTART_NOTICE, log)
  const chatDir = chatDirOf(config.stateDir, lead.chatId)
  const stopped = (): 'interrupted' | 'requeued' | undefined => {
    const reason = context.signal.reason as StopReason
    if (!context.signal.aborted || reason === 'cancel') return undefined
    return reason === 'shutdown' ? 'interrupted' : 'requeued'
  }

  // Both limits count from when a brain starts, not from the wait for a slot: the budget from the
  // first attempt, the timeout from each.
  let budgetDeadline = Number.POSITIVE_INFINITY
  const firstAttempt = Math.max(...batch.map((message) => message.attempts))
  let attempt = firstAttempt
  let lastAttempt: BrainAttempt
  let limitMs = config.brain.timeoutMs
  for (;;) {
    attempt++
    let result: BrainAttempt | ChatLockTimeout
    try {
      result = await context.inSlot(async () => {
        const startedAt = Date.now()
        if (budgetDeadline === Number.POSITIVE_INFINITY) budgetDeadline = startedAt + config.brain.messageBudgetMs
        const deadline = Math.min(startedAt + config.brain.timeoutMs, budgetDeadline)
        // Which limit ends this attempt, for the timeout notice.
        limitMs = deadline === budgetDeadline ? config.brain.messageBudgetMs : config.brain.timeoutMs
        const release = await deps.locks.acquire(lead.chatId, deadline, log)
        try {
          // Only now can the brain have side effects: a restart before this point is no redelivery.
          const runningAt = Date.now()
          for (const message of batch) await inbox.markRunning(message.seq, attempt, runningAt)
          await fs.promises.mkdir(chatDir, { recursive: true }).catch((error: unknown) => {
            log.warn({ err: error, chat_dir: chatDir }, 'could not create the chat directory; running the brain anyway')
          })
          const envelope = buildEnvelope({ messages, attempt, redelivered, deadlineMs: deadline, chatDir })
          feedback.startTyping()
          const env = brainEnvironment(process.env, config.brain.envAllow, envelopeEnvironment(envelope))
          const mediaDirs = batch.map((message) => mediaDir(config.stateDir, message.updateId))
          const command = deps.sandbox.wrap(config.brain.argv, env, { chatDir, mediaDirs })
          return await runBrain({
            ...command,
            startFailure: (attempt) => deps.sandbox.startFailure(attempt),
            stdin: config.brain.input === 'text' ? promptText(envelope) : JSON.stringify(envelope),
            deadline,
            killGraceMs: config.brain.killGraceMs,
            signal: context.signal,
            onEvent: (event) => feedback.handle(event),
            log,
            logFields: { attempt },
          })
        } finally {
          feedback.stopTyping()
          await release()
        }
      })
    } catch (error) {
      if (error instanceof JobStopped) return stopped() ?? cancelledOutcome()
      if (!(error instanceof ChatLockTimeout)) throw error
      result = error
    }
    if (result instanceof ChatLockTimeout) {
      log.warn({ err: result }, 'chat lock not acquired')
      return lockTimedOut(result)
    }
    lastAttempt = result
    metrics.brainRuns.inc({ outcome: attemptMetric(result) })
    metrics.brainDuration.observe(result.durationMs / 1000)

    const stop = stopped()
    if (stop) return stop
    if (result.outcome !== 'exited' || result.exitCode !== EXIT_TEMPFAIL) break

    const backoff = Math.min(RETRY_BACKOFF_BASE_MS * 2 ** (attempt - firstAttempt - 1), RETRY_BACKOFF_MAX_MS)
    if (Date.now() + backoff >= budgetDeadline) {
      return retriesExhausted(result, attempt - firstAttempt, details)
    }
    log.info({ attempt, backoff_ms: backoff }, 'brain asked for a retry (exit 75)')
    if (!(await sleep(backoff, context.signal))) return stopped() ?? cancelledOutcome(result)
  }
  return outcomeOf(lastAttempt, limitMs, details)
}

/** Whether the message came from a one-to-one chat with the bot (not a group or a channel). */
function inPrivateChat(message: StoredMessage): boolean {
  return messageOf(JSON.parse(message.updateJson) as Update)?.chat.type === 'private'
}

function reactionDeps(deps: TurnDeps): FinalReactionDeps {
  return { telegram: deps.telegram, acks: deps.acks, reactions: deps.config.reactions }
}

/** Resolves true after `ms`, or false as soon as the signal aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false)
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve(true)
    }, ms)
    const onAbort = (): void => {
      clearTimeout(timer)
      resolve(false)
    }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
