import type { BrainAttempt } from '../brain/run.js'
import { EXIT_TEMPFAIL } from '../brain/protocol.js'
import type { Outcome } from '../store/inbox.js'

/** Told to the chat before a message a restart interrupted runs again. */
export const RESTART_NOTICE = '⚠️ The service restarted while working on this message; running it again.'
// A stderr line quoted in a notice is cut to this many characters.
const QUOTED_LINE_CHARS = 300

/**
 * What a brain's last attempt leaves behind: its stdout as the reply on exit 0, otherwise a short
 * "⚠️ …" notice saying what went wrong. `limitMs` is the limit that ended a timed-out attempt.
 * `details` (a private chat) lets the notice quote the brain's stderr and the start error; in a
 * group everyone reads it, so it says only what failed, and the rest stays in the log.
 */
export function outcomeOf(result: BrainAttempt, limitMs: number, details = true): Outcome {
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
      return { ...base, state: 'failed', reply: `⚠️ brain exited ${result.exitCode}${details ? lastLine(result.stderrTail, ': ') : ''}` }
    case 'timed_out':
      return { ...base, state: 'timed_out', reply: `⚠️ timed out after ${formatSeconds(limitMs)} s; the brain was stopped` }
    case 'cancelled':
      return cancelledOutcome(result)
    case 'spawn_error':
      return {
        ...base,
        state: 'failed',
        reply: details ? `⚠️ brain could not start: ${result.error ?? 'unknown error'}` : '⚠️ brain could not start; the service log says why',
      }
  }
}

/** A failure with its notice; `result` is the attempt it came from, if there was one. */
export function failedOutcome(reply: string, result?: BrainAttempt): Outcome {
  return {
    state: 'failed',
    exitCode: result?.exitCode ?? null,
    exitSignal: result?.signal ?? null,
    stderrTail: result?.stderrTail ?? '',
    reply,
  }
}

/** The brain kept exiting 75 until the message's time budget could not fit another attempt. */
export function retriesExhausted(result: BrainAttempt, attempts: number, details = true): Outcome {
  return failedOutcome(
    `⚠️ brain kept failing temporarily (exit ${EXIT_TEMPFAIL}) until the time budget ran out after ` +
      `${attempts} attempts${details ? lastLine(result.stderrTail, ': ') : ''}`,
    result,
  )
}

/** The chat's lock (another coordinator's brain in the same chat) was not freed in time. */
export function lockTimedOut(error: Error): Outcome {
  return failedOutcome(`⚠️ timed out waiting for this chat's lock: ${error.message}`)
}

/** The service itself failed while handling the message. */
export function serviceFailed(error: unknown): Outcome {
  return failedOutcome(`⚠️ the service failed while handling this message: ${(error as Error).message ?? String(error)}`)
}

/** Cancelled (/cancel): no reply. */
export function cancelledOutcome(result?: BrainAttempt): Outcome {
  return { state: 'cancelled', exitCode: result?.exitCode ?? null, exitSignal: result?.signal ?? null, stderrTail: result?.stderrTail ?? '', reply: '' }
}

/** How an attempt counts in the brain_runs metric. */
export function attemptMetric(result: BrainAttempt): 'done' | 'failed' | 'timed_out' | 'cancelled' | 'spawn_error' {
  if (result.outcome === 'exited') return result.exitCode === 0 ? 'done' : 'failed'
  return result.outcome
}

function lastLine(text: string, prefix: string): string {
  const line = text.trim().split('\n').at(-1)?.trim()
  return line ? `${prefix}${line.length > QUOTED_LINE_CHARS ? `${line.slice(0, QUOTED_LINE_CHARS)}…` : line}` : ''
}

function formatSeconds(ms: number): string {
  return String(Math.round(ms / 100) / 10)
}
