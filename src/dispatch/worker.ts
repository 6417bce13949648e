import fs from 'node:fs'
import type { FastifyBaseLogger } from 'fastify'
import type { Message, Update } from 'grammy/types'
import type { Config } from '../config.js'
import { messageOf } from '../intake/classify.js'
import type { Metrics } from '../metrics.js'
import type { Inbox, MessageState, Outcome, StoredMessage } from '../store/inbox.js'
import { buildEnvelope, envelopeEnvironment, promptText, type RunMessage } from '../brain/envelope.js'
import { chatDirOf } from '../brain/chat-dir.js'
import { brainEnvironment } from '../brain/env.js'
import { EXIT_TEMPFAIL } from '../brain/protocol.js'
import { runBrain, type BrainAttempt } from '../brain/run.js'
import { isPermanentTelegramError, type ReplyTarget, type TelegramClient } from '../telegram/client.js'
import { downloadMedia, mediaDir, mediaOf } from '../telegram/media.js'
import type { ReactionEmoji } from '../telegram/reactions.js'
import { ChatLockTimeout, type ChatLocks } from './chat-lock.js'
import { JobStopped, type StopReason, type Work, type WorkContext } from './dispatcher.js'
import type { PendingAcks } from '../telegram/acks.js'
import { ChatFeedback } from '../telegram/feedback.js'

// Backoff between attempts after exit 75: 1 s, 2 s, 4 s, … capped.
const RETRY_BACKOFF_BASE_MS = 1000
const RETRY_BACKOFF_MAX_MS = 15_000
// A busy chat's next run takes at most this many collected messages; the rest go into the run after.
const COLLECT_MAX = 50
const RESTART_NOTE = '⚠️ The service restarted while working on this message; running it again.'

export interface WorkerDeps {
  readonly config: Config
  readonly inbox: Inbox
  readonly telegram: TelegramClient
  readonly locks: ChatLocks
  readonly metrics: Metrics
  readonly log: FastifyBaseLogger
  readonly acks: PendingAcks
}

/**
 * What happens in a chat's turn: the message (with, when BUSY_MODE collects, every other message
 * of the chat still queued) gets its media downloaded, then its brain attempts (each in a global
 * slot, under the chat's lock, retried on exit 75 while the budget lasts), the outcome stored, the
 * reply delivered and the final reaction set. A message already finished (a restart found its reply
 * unsent) only gets its reply; one that an earlier turn took along is skipped.
 */
export function createMessageWork(deps: WorkerDeps): Work {
  return async (job, context) => {
    const log = deps.log.child({ update_id: job.updateId, chat_id: job.chatId })
    const message = deps.inbox.get(job.seq)
    if (!message) return
    if (message.state === 'queued') {
      const collected = deps.config.busyMode === 'queue' ? [] : deps.inbox.queuedInChat(message.chatId).slice(0, COLLECT_MAX)
      const [first = message, ...rest] = collected
      const batch: Batch = [first, ...rest]
      try {
        await runTurn(deps, batch, context, log)
      } catch (error) {
        // Stopping with the service: the messages stay in the inbox for the next start.
        if (context.signal.aborted && (context.signal.reason as StopReason) === 'shutdown') return
        await failTurn(deps, batch, error, log)
      }
    } else if (message.replyState === 'pending' && message.reply) {
      context.settle()
      await deliver(deps, message, message.reply, log)
      // Only a brain's outcome gets a reaction; a command's or a notice's answer does not.
      if (message.startedAt !== null) finalReaction(deps, [message], message.state, undefined, Promise.resolve(), log)
    }
  }
}

/** A turn's messages in arrival order; the reply answers the last one. */
type Batch = readonly [StoredMessage, ...StoredMessage[]]

async function runTurn(deps: WorkerDeps, batch: Batch, context: WorkContext, log: FastifyBaseLogger): Promise<void> {
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
      for (const message of batch) inbox.finish(message.seq, cancelledOutcome(), cancelledAt)
    }
    return
  }
  const feedback = new ChatFeedback({ telegram, target: replyTarget(lead), log: turnLog, afterReceipt: deps.acks.settled(lead.updateId) })
  let outcome: Outcome | 'interrupted' | 'requeued'
  try {
    outcome = await runAttempts(deps, batch, messages, context, feedback, turnLog)
  } finally {
    await feedback.close()
  }
  if (outcome === 'interrupted') return
  if (outcome === 'requeued') {
    inbox.requeue(batch.map((message) => message.seq))
    turnLog.info('brain stopped by a newer message; its messages go into the next run (BUSY_MODE=interrupt)')
    return
  }
  context.settle()
  const finishedAt = Date.now()
  try {
    for (const message of batch) inbox.finish(message.seq, message === lead ? outcome : { ...outcome, reply: '' }, finishedAt)
  } catch (error) {
    turnLog.error({ err: error }, 'could not store the outcome; delivering the reply anyway')
  }
  await deliver(deps, lead, outcome.reply, turnLog)
  finalReaction(deps, batch, outcome.state, feedback.brainReaction, feedback.reactionsSettled, turnLog)
}

/**
 * The net under a turn: a failure of the service's own (not the brain's) fails the turn's messages
 * with a short notice, rather than leaving them running, unanswered, until the next start.
 */
async function failTurn(deps: WorkerDeps, batch: Batch, error: unknown, log: FastifyBaseLogger): Promise<void> {
  log.error({ err: error }, 'the service failed while handling this message')
  const lead = batch.at(-1) as StoredMessage
  const outcome = failed(`⚠️ the service failed while handling this message: ${(error as Error).message ?? String(error)}`)
  try {
    const at = Date.now()
    for (const message of batch) deps.inbox.finish(message.seq, message === lead ? outcome : { ...outcome, reply: '' }, at)
  } catch (storeError) {
    log.error({ err: storeError }, 'could not store the failure either')
  }
  await deliver(deps, lead, outcome.reply, log)
}

/** Parses the stored updates and downloads their media (outside any brain slot). */
async function prepareMessages(
  deps: WorkerDeps,
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
            media,
            signal,
            log,
          })
    prepared.push({ update, message, edited: update.message === undefined, files })
  }
  return prepared as [RunMessage, ...RunMessage[]]
}

/** Sends a stored message's reply and records whether it arrived. */
export async function deliver(
  deps: Pick<WorkerDeps, 'inbox' | 'telegram'>,
  message: StoredMessage,
  reply: string,
  log: FastifyBaseLogger,
): Promise<void> {
  if (reply === '') return
  const target = replyTarget(message)
  try {
    await deps.telegram.sendReply(target, reply)
    deps.inbox.setReplyState(message.seq, 'sent')
    log.info({ chars: reply.length }, 'reply sent')
  } catch (error) {
    const permanent = isPermanentTelegramError(error)
    log.error({ err: error, permanent }, 'reply could not be delivered')
    try {
      // A transient failure stays pending, so the next start sends it again.
      if (permanent) deps.inbox.setReplyState(message.seq, 'failed')
    } catch (storeError) {
      log.error({ err: storeError }, 'could not record the failed reply')
    }
  }
}

/**
 * Replaces the receipt reaction by the outcome's (REACTION_*), once the 👀 and the brain's own
 * reactions have settled, so that none of them lands on top. The brain's reaction stands on success.
 */
function finalReaction(
  deps: WorkerDeps,
  batch: readonly StoredMessage[],
  state: MessageState,
  brainReaction: ReactionEmoji | undefined,
  brainReactionsSettled: Promise<void>,
  log: FastifyBaseLogger,
): void {
  const { reactions } = deps.config
  const emoji = state === 'done' ? reactions.done : state === 'failed' ? reactions.failed : state === 'timed_out' ? reactions.timedOut : undefined
  if (emoji === undefined) return
  for (const message of batch) {
    if (state === 'done' && brainReaction !== undefined && message === batch.at(-1)) continue
    void Promise.all([deps.acks.settled(message.updateId), brainReactionsSettled])
      .then(() => deps.telegram.react(message.chatId, message.messageId, emoji))
      .catch((error: unknown) => log.warn({ err: error, update_id: message.updateId }, 'final reaction not set'))
  }
}

async function runAttempts(
  deps: WorkerDeps,
  batch: Batch,
  messages: readonly [RunMessage, ...RunMessage[]],
  context: WorkContext,
  feedback: ChatFeedback,
  log: FastifyBaseLogger,
): Promise<Outcome | 'interrupted' | 'requeued'> {
  const { config, inbox, metrics } = deps
  const lead = batch.at(-1) as StoredMessage
  const redelivered = batch.some((message) => message.interruptions > 0)
  if (redelivered) await notify(deps, lead, RESTART_NOTE, log)
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
          for (const message of batch) inbox.markRunning(message.seq, attempt, runningAt)
          await fs.promises.mkdir(chatDir, { recursive: true }).catch((error: unknown) => {
            log.warn({ err: error, chat_dir: chatDir }, 'could not create the chat directory; running the brain anyway')
          })
          const envelope = buildEnvelope({ messages, attempt, redelivered, deadlineMs: deadline, chatDir })
          feedback.startTyping()
          return await runBrain({
            argv: config.brain.argv,
            cwd: config.brain.cwd,
            env: brainEnvironment(process.env, config.brain.envAllow, envelopeEnvironment(envelope)),
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
      return failed(`⚠️ timed out waiting for this chat's lock: ${result.message}`)
    }
    lastAttempt = result
    metrics.brainRuns.inc({ outcome: attemptMetric(result) })
    metrics.brainDuration.observe(result.durationMs / 1000)

    const stop = stopped()
    if (stop) return stop
    if (result.outcome !== 'exited' || result.exitCode !== EXIT_TEMPFAIL) break

    const backoff = Math.min(RETRY_BACKOFF_BASE_MS * 2 ** (attempt - firstAttempt - 1), RETRY_BACKOFF_MAX_MS)
    if (Date.now() + backoff >= budgetDeadline) {
      return failed(
        `⚠️ brain kept failing temporarily (exit ${EXIT_TEMPFAIL}) until the time budget ran out after ` +
          `${attempt - firstAttempt} attempts${lastLine(result.stderrTail, ': ')}`,
        result,
      )
    }
    log.info({ attempt, backoff_ms: backoff }, 'brain asked for a retry (exit 75)')
    if (!(await sleep(backoff, context.signal))) return stopped() ?? cancelled(result)
  }
  return toOutcome(lastAttempt, limitMs)
}

function toOutcome(result: BrainAttempt, limitMs: number): Outcome {
  const base = { exitCode: result.exitCode, exitSignal: result.signal, stderrTail: result.stderrTail }
  switch (result.outcome) {
    case 'exited':
      if (result.exitCode === 0) {
        const reply = result.stdoutTruncated ? `${result.stdout}\n\n[reply cut at 1 MiB]` : result.stdout
        return { ...base, state: 'done', reply }
      }
      if (result.exitCode === null) {
        return { ...base, state: 'failed', reply: `⚠️ brain was killed by ${result.signal ?? 'a signal'}` }
      }
      return { ...base, state: 'failed', reply: `⚠️ brain exited ${result.exitCode}${lastLine(result.stderrTail, ': ')}` }
    case 'timed_out':
      return { ...base, state: 'timed_out', reply: `⚠️ timed out after ${formatSeconds(limitMs)} s; the brain was stopped` }
    case 'cancelled':
      return cancelled(result)
    case 'spawn_error':
      return { ...base, state: 'failed', reply: `⚠️ brain could not start: ${result.error ?? 'unknown error'}` }
  }
}

function failed(reply: string, result?: BrainAttempt): Outcome {
  return {
    state: 'failed',
    exitCode: result?.exitCode ?? null,
    exitSignal: result?.signal ?? null,
    stderrTail: result?.stderrTail ?? '',
    reply,
  }
}

function cancelled(result: BrainAttempt): Outcome {
  return { state: 'cancelled', exitCode: result.exitCode, exitSignal: result.signal, stderrTail: result.stderrTail, reply: '' }
}

function cancelledOutcome(): Outcome {
  return { state: 'cancelled', exitCode: null, exitSignal: null, stderrTail: '', reply: '' }
}

function attemptMetric(result: BrainAttempt): 'done' | 'failed' | 'timed_out' | 'cancelled' | 'spawn_error' {
  if (result.outcome === 'exited') return result.exitCode === 0 ? 'done' : 'failed'
  return result.outcome
}

async function notify(deps: WorkerDeps, message: StoredMessage, text: string, log: FastifyBaseLogger): Promise<void> {
  try {
    await deps.telegram.sendReply(replyTarget(message), text)
  } catch (error) {
    log.warn({ err: error }, 'could not send a notice')
  }
}

export function replyTarget(message: StoredMessage): ReplyTarget {
  const update = JSON.parse(message.updateJson) as Update
  const raw = messageOf(update)
  return {
    chatId: message.chatId,
    messageId: message.messageId,
    threadId: raw?.is_topic_message === true ? raw.message_thread_id : undefined,
  }
}

function lastLine(text: string, prefix: string): string {
  const line = text.trim().split('\n').at(-1)?.trim()
  return line ? `${prefix}${line.length > 300 ? `${line.slice(0, 300)}…` : line}` : ''
}

function formatSeconds(ms: number): string {
  return String(Math.round(ms / 100) / 10)
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
