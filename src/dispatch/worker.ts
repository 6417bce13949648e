import type { FastifyBaseLogger } from 'fastify'
import type { Message, Update } from 'grammy/types'
import type { Config } from '../config.js'
import type { Metrics } from '../metrics.js'
import type { Inbox, Outcome, StoredMessage } from '../store/inbox.js'
import { buildEnvelope, envelopeEnvironment } from '../brain/envelope.js'
import { brainEnvironment } from '../brain/env.js'
import { runBrain, type BrainAttempt } from '../brain/run.js'
import { isPermanentTelegramError, type ReplyTarget, type TelegramClient } from '../telegram/client.js'
import { ChatLockTimeout, type ChatLocks } from './chat-lock.js'
import { JobStopped, type StopReason, type Work, type WorkContext } from './dispatcher.js'

/** Exit status by which a brain asks to be retried (EX_TEMPFAIL). */
export const EXIT_TEMPFAIL = 75
// Backoff between attempts after exit 75: 1 s, 2 s, 4 s, … capped.
const RETRY_BACKOFF_BASE_MS = 1000
const RETRY_BACKOFF_MAX_MS = 15_000
const RESTART_NOTE = '⚠️ The service restarted while working on this message; running it again.'

export interface WorkerDeps {
  readonly config: Config
  readonly inbox: Inbox
  readonly telegram: TelegramClient
  readonly locks: ChatLocks
  readonly metrics: Metrics
  readonly log: FastifyBaseLogger
}

/**
 * What happens to one message in its chat's turn: its brain attempts (each in a global slot, under
 * the chat's lock, retried on exit 75 while the budget lasts), the outcome stored, then the reply
 * delivered. A message already finished (a restart found its reply unsent) only gets its reply.
 */
export function createMessageWork(deps: WorkerDeps): Work {
  return async (job, context) => {
    const log = deps.log.child({ update_id: job.updateId, chat_id: job.chatId })
    const message = deps.inbox.get(job.seq)
    if (!message) return
    if (message.state === 'queued' || message.state === 'running') {
      const outcome = await runAttempts(deps, message, context, log)
      if (outcome === 'interrupted') return
      try {
        deps.inbox.finish(message.seq, outcome, Date.now())
      } catch (error) {
        log.error({ err: error }, 'could not store the outcome; delivering the reply anyway')
      }
      await deliver(deps, message, outcome.reply, log)
    } else if (message.replyState === 'pending' && message.reply) {
      await deliver(deps, message, message.reply, log)
    }
  }
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

async function runAttempts(
  deps: WorkerDeps,
  message: StoredMessage,
  context: WorkContext,
  log: FastifyBaseLogger,
): Promise<Outcome | 'interrupted'> {
  const { config, inbox, metrics } = deps
  const update = JSON.parse(message.updateJson) as Update
  const telegramMessage = update.message as Message
  const redelivered = message.interruptions > 0
  if (redelivered) await notify(deps, message, RESTART_NOTE, log)

  const budgetDeadline = Date.now() + config.brain.messageBudgetMs
  let attempt = message.attempts
  let lastAttempt: BrainAttempt
  let limitMs = config.brain.timeoutMs
  for (;;) {
    attempt++
    const startedAt = Date.now()
    const deadline = Math.min(startedAt + config.brain.timeoutMs, budgetDeadline)
    // Which limit ends this attempt, for the timeout notice.
    limitMs = deadline === budgetDeadline ? config.brain.messageBudgetMs : config.brain.timeoutMs
    const envelope = buildEnvelope({
      update,
      message: telegramMessage,
      text: telegramMessage.text ?? telegramMessage.caption ?? '',
      attempt,
      redelivered,
      deadlineMs: deadline,
    })
    let result: BrainAttempt | ChatLockTimeout
    try {
      result = await context.inSlot(async () => {
        const release = await deps.locks.acquire(message.chatId, deadline, log)
        try {
          // Only now can the brain have side effects: a restart before this point is no redelivery.
          inbox.markRunning(message.seq, attempt, Date.now())
          return await runBrain({
            argv: config.brain.argv,
            cwd: config.brain.cwd,
            env: brainEnvironment(process.env, config.brain.envAllow, envelopeEnvironment(envelope)),
            stdin: JSON.stringify(envelope),
            deadline,
            killGraceMs: config.brain.killGraceMs,
            signal: context.signal,
            log,
            logFields: { attempt },
          })
        } finally {
          await release()
        }
      })
    } catch (error) {
      if (error instanceof JobStopped) return error.reason === 'shutdown' ? 'interrupted' : cancelledOutcome()
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

    if (context.signal.aborted && (context.signal.reason as StopReason) === 'shutdown') return 'interrupted'
    if (result.outcome !== 'exited' || result.exitCode !== EXIT_TEMPFAIL) break

    const backoff = Math.min(RETRY_BACKOFF_BASE_MS * 2 ** (attempt - message.attempts - 1), RETRY_BACKOFF_MAX_MS)
    if (Date.now() + backoff >= budgetDeadline) {
      return failed(
        `⚠️ brain kept failing temporarily (exit ${EXIT_TEMPFAIL}) until the time budget ran out after ` +
          `${attempt - message.attempts} attempts${lastLine(result.stderrTail, ': ')}`,
        result,
      )
    }
    log.info({ attempt, backoff_ms: backoff }, 'brain asked for a retry (exit 75)')
    if (!(await sleep(backoff, context.signal))) {
      return (context.signal.reason as StopReason) === 'shutdown' ? 'interrupted' : cancelled(result)
    }
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
  const raw = update.message
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
