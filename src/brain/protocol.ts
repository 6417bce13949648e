/**
 * The brain protocol: everything the service and a brain must agree on, in one place (the README's
 * "Brain protocol" says the same in prose). The service and the bundled adapters import it; it
 * imports nothing of the service's, so an adapter that imports it pulls in nothing else.
 *
 * A brain reads one {@link Envelope} as JSON on stdin (or its text with BRAIN_INPUT=text), writes
 * the reply to stdout, may write {@link BrainEvent}s as JSON lines to fd {@link EVENTS_FD}, and
 * exits 0, {@link EXIT_TEMPFAIL} (try again later) or anything else (a failure, reported to the chat).
 */
import type { Update } from 'grammy/types'

/** The exit status by which a brain asks to be run again later (EX_TEMPFAIL). */
export const EXIT_TEMPFAIL = 75

/** The file descriptor a brain writes its events to, one JSON object per line. */
export const EVENTS_FD = 3

/** The protocol version of the envelope; bumped only for incompatible changes. */
export const ENVELOPE_VERSION = 1

/**
 * One event of the fd-3 channel: a status to show, a message to send at once, a reaction to set,
 * a file to send (from the chat's directory or BRAIN_CWD; a relative path starts where the brain runs).
 */
export type BrainEvent =
  | { readonly type: 'progress' | 'message'; readonly text: string }
  | { readonly type: 'react'; readonly emoji: string }
  | { readonly type: 'file'; readonly path: string; readonly caption?: string }

/** The shapes {@link parseBrainEvent} accepts, for a warning about one it did not. */
export const BRAIN_EVENT_SHAPES =
  '{"type":"progress"|"message","text":…}, {"type":"react","emoji":…} or {"type":"file","path":…,"caption"?:…}'

/**
 * The one check of an fd-3 event: a `progress` or `message` with a text that is not blank, a
 * `react` with an emoji (whether Telegram allows that emoji is the receiver's concern), or a `file`
 * with a path and maybe a caption (whether the file may be sent is the receiver's concern too).
 * Anything else is undefined.
 */
export function parseBrainEvent(value: unknown): BrainEvent | undefined {
  if (typeof value !== 'object' || value === null) return undefined
  const { type, text, emoji, path, caption } = value as Record<string, unknown>
  if ((type === 'progress' || type === 'message') && typeof text === 'string' && text.trim() !== '') return { type, text }
  if (type === 'react' && typeof emoji === 'string') return { type, emoji }
  if (type === 'file' && typeof path === 'string' && path !== '' && (caption === undefined || typeof caption === 'string')) {
    return caption === undefined ? { type, path } : { type, path, caption }
  }
  return undefined
}

/** The kinds of message media a brain gets as files, in the order they are looked for in a message. */
export const FILE_KINDS = ['photo', 'voice', 'audio', 'video', 'video_note', 'document'] as const
export type FileKind = (typeof FILE_KINDS)[number]

/** What the brain learns about one file. path is null when it was not downloaded; note says why. */
export interface BrainFile {
  readonly kind: FileKind
  /** Absolute; the only name safe to open. */
  readonly path: string | null
  readonly mime_type: string | null
  /** The user's name for the file, untrusted: for showing, never for opening. */
  readonly file_name: string | null
  /** Bytes on disk when downloaded, else the size the message announced. */
  readonly size: number | null
  readonly note?: string
}

/** One user message as the brain sees it. */
export interface EnvelopeMessage {
  readonly update_id: number
  readonly message_id: number
  /** When the message was sent (Unix seconds, Telegram's clock). */
  readonly date: number
  /** The text, or the caption of a photo, voice note or document. */
  readonly text: string
  readonly from: { readonly id: number; readonly username?: string; readonly first_name?: string } | null
  /** True for an edit of an earlier message (EDITS=queue). */
  readonly edited: boolean
  /** Media downloaded for the brain (a path of null means it could not be; `note` says why). */
  readonly files: readonly BrainFile[]
}

/**
 * What a brain reads on stdin: one JSON object, then EOF. A run answers one or more messages (more
 * when BUSY_MODE collects what arrived while the chat was busy); the top-level fields describe the
 * last one, the one the reply answers, except `text` and `files`, which gather all of them.
 */
export interface Envelope extends EnvelopeMessage {
  readonly version: typeof ENVELOPE_VERSION
  readonly chat_id: number
  /** Every message of this run in arrival order; one element unless messages were collected. */
  readonly messages: readonly EnvelopeMessage[]
  /** 1 for the first run of this message, counting up across retries (exit 75) and restarts. */
  readonly attempt: number
  /** True when the service restarted while an earlier attempt ran: side effects may have happened. */
  readonly redelivered: boolean
  /** When this attempt is killed (Unix epoch milliseconds). */
  readonly deadline_ms: number
  /** A directory that belongs to this chat, kept across runs (a session id, notes). */
  readonly chat_dir: string
  /** The raw Telegram Update of the last message. */
  readonly update: Update
}
