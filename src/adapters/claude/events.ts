import fs from 'node:fs'
import { EVENTS_FD, type BrainEvent } from '../../brain/protocol.js'

/** A brain-side floor between two progress events; the service edits the status every 2 s anyway. */
export const PROGRESS_EVERY_MS = 1000

// Writing to fd 3 fails like this when the service is not listening (run by hand, or it went away).
const GONE_CODES: ReadonlySet<string> = new Set(['EBADF', 'EPIPE', 'ECONNRESET', 'EINVAL', 'ENOTSOCK'])

/** Where events go: fd 3 under the service, a readable note on stderr when run by hand. May throw. */
export type EventSink = (event: BrainEvent) => void

/**
 * A brain's side of the fd-3 event channel: `progress` (throttled, the latest text wins), `message`
 * and `react` (sent at once). Everything here is a courtesy to the user and never fails the brain:
 * a closed or missing fd 3 silently turns events off.
 */
export class BrainEvents {
  #sink: EventSink | undefined
  readonly #progressEveryMs: number
  #progressAt = Number.NEGATIVE_INFINITY
  #progressPending: string | undefined
  #progressTimer: NodeJS.Timeout | undefined

  constructor(sink: EventSink | undefined, progressEveryMs = PROGRESS_EVERY_MS) {
    this.#sink = sink
    this.#progressEveryMs = progressEveryMs
  }

  /** Shows `text` as the run's status; within {@link PROGRESS_EVERY_MS} of the last one it waits, and a newer text replaces it. */
  progress(text: string): void {
    if (this.#sink === undefined) return
    const wait = this.#progressAt + this.#progressEveryMs - Date.now()
    if (wait <= 0 && this.#progressTimer === undefined) {
      this.#sendProgress(text)
      return
    }
    this.#progressPending = text
    this.#progressTimer ??= setTimeout(() => {
      this.#progressTimer = undefined
      const pending = this.#progressPending
      this.#progressPending = undefined
      if (pending !== undefined) this.#sendProgress(pending)
    }, Math.max(wait, 0))
  }

  /** Sends `text` to the chat at once, as its own message. */
  message(text: string): void {
    this.#write({ type: 'message', text })
  }

  react(emoji: string): void {
    this.#write({ type: 'react', emoji })
  }

  /** Sends a file from the chat's directory or the working directory to the chat, before the reply. */
  file(filePath: string, caption?: string): void {
    this.#write({ type: 'file', path: filePath, ...(caption === undefined ? {} : { caption }) })
  }

  /** Drops a progress text still waiting for its turn: the run is over and the status goes away. */
  close(): void {
    clearTimeout(this.#progressTimer)
    this.#progressTimer = undefined
    this.#progressPending = undefined
  }

  #sendProgress(text: string): void {
    this.#progressAt = Date.now()
    this.#write({ type: 'progress', text })
  }

  #write(event: BrainEvent): void {
    if (this.#sink === undefined) return
    try {
      this.#sink(event)
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? ''
      // EAGAIN: the service is behind on reading; this one event is dropped, the next may pass.
      if (code === 'EAGAIN') return
      if (!GONE_CODES.has(code)) process.stderr.write(`events: fd ${EVENTS_FD} failed (${code || String(error)}); no more progress\n`)
      this.#sink = undefined
      this.close()
    }
  }
}

/**
 * The sink for this process: fd 3 when the service started it (it always sets COORDINATOR_UPDATE_ID)
 * and fd 3 is a pipe or socket; otherwise event texts go to stderr. Run by hand, fd 3 may be
 * anything, even a descriptor Node took for itself, so it is never written blindly.
 */
export function eventSinkFor(env: NodeJS.ProcessEnv, label: string): EventSink {
  if (env['COORDINATOR_UPDATE_ID'] !== undefined && isPipe(EVENTS_FD)) {
    return (event) => {
      fs.writeSync(EVENTS_FD, `${JSON.stringify(event)}\n`)
    }
  }
  return (event) => {
    const what = event.type === 'react' ? event.emoji : event.type === 'file' ? event.path : event.text
    process.stderr.write(`${label}: ${event.type}: ${what}\n`)
  }
}

function isPipe(fd: number): boolean {
  try {
    const stat = fs.fstatSync(fd)
    return stat.isFIFO() || stat.isSocket()
  } catch {
    return false
  }
}
