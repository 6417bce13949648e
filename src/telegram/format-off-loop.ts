import { Worker } from 'node:worker_threads'
import { formatReply, type FormattedPart } from './format.js'
import { MESSAGE_LIMIT } from './split.js'

/**
 * Replies up to this many characters are formatted on the event loop: marked is quadratic on some
 * inputs (runs of emphasis), and this many characters of the worst known input take a few
 * milliseconds on a loaded machine. Anything longer goes to a worker thread.
 */
export const FORMAT_ON_LOOP_CHARS = 512
/** A reply whose formatting takes longer than this is sent as plain text instead. */
export const FORMAT_TIME_LIMIT_MS = 3000

/** Why a reply went out as plain text, for the log. */
export interface FormatFallback {
  readonly reason: 'time_limit' | 'thread_failed'
  readonly chars: number
  readonly error?: unknown
}

/**
 * formatReply, never blocking the event loop for long: a reply longer than
 * {@link FORMAT_ON_LOOP_CHARS} is formatted in a worker thread that is terminated after
 * `timeLimitMs`, and the reply then goes out as plain text (escaped, split at Telegram's limit)
 * so that it still arrives. `onFallback` hears about it.
 */
export async function formatOffLoop(
  markdown: string,
  onFallback: (fallback: FormatFallback) => void,
  timeLimitMs = FORMAT_TIME_LIMIT_MS,
): Promise<FormattedPart[]> {
  if (markdown.length <= FORMAT_ON_LOOP_CHARS) return formatReply(markdown)
  let worker: Worker
  try {
    worker = new Worker(new URL('./format-worker.js', import.meta.url), { workerData: markdown })
  } catch (error) {
    onFallback({ reason: 'thread_failed', chars: markdown.length, error })
    return plainParts(markdown)
  }
  return new Promise<FormattedPart[]>((resolve) => {
    let settled = false
    const finish = (parts: FormattedPart[], fallback?: FormatFallback): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (fallback !== undefined) onFallback(fallback)
      resolve(parts)
      void worker.terminate()
    }
    const timer = setTimeout(() => finish(plainParts(markdown), { reason: 'time_limit', chars: markdown.length }), timeLimitMs)
    worker.once('message', (parts: FormattedPart[]) => finish(parts))
    worker.once('error', (error) => finish(plainParts(markdown), { reason: 'thread_failed', chars: markdown.length, error }))
    worker.once('exit', (code) => {
      const error = new Error(`the formatting thread exited (${code}) without a result`)
      finish(plainParts(markdown), { reason: 'thread_failed', chars: markdown.length, error })
    })
  })
}

/**
 * The reply as plain text in parts of at most `limit` characters, broken at a newline, else a
 * space, else anywhere but inside a surrogate pair. Linear in the reply's length (a megabyte takes
 * milliseconds), so it is safe on the event loop whatever the text.
 */
export function plainParts(text: string, limit = MESSAGE_LIMIT): FormattedPart[] {
  const parts: FormattedPart[] = []
  let start = 0
  while (start < text.length) {
    let end = Math.min(start + limit, text.length)
    let next = end
    if (end < text.length) {
      // Searched within this part only: lastIndexOf on the whole text would scan back to its start.
      const window = text.slice(start, end + 1)
      const newline = start + window.lastIndexOf('\n')
      const space = start + window.lastIndexOf(' ')
      if (newline > start) [end, next] = [newline, newline + 1]
      else if (space > start) [end, next] = [space, space + 1]
      else if (isHighSurrogate(text.charCodeAt(end - 1))) [end, next] = [end - 1, end - 1]
    }
    const plain = text.slice(start, end).trim()
    if (plain !== '') parts.push({ html: escapeHtml(plain), plain })
    start = next
  }
  return parts
}

function escapeHtml(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff
}
