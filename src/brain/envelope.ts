import type { Message, Update } from 'grammy/types'
import type { BrainFile } from '../telegram/media.js'

/** The protocol version of the envelope; bumped only for incompatible changes. */
export const ENVELOPE_VERSION = 1

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

/** A message of the run, with what the service prepared for it. */
export interface RunMessage {
  readonly update: Update
  readonly message: Message
  readonly edited: boolean
  readonly files: readonly BrainFile[]
}

export interface EnvelopeInput {
  /** In arrival order; at least one. */
  readonly messages: readonly [RunMessage, ...RunMessage[]]
  readonly attempt: number
  readonly redelivered: boolean
  readonly deadlineMs: number
  readonly chatDir: string
}

export function buildEnvelope({ messages, attempt, redelivered, deadlineMs, chatDir }: EnvelopeInput): Envelope {
  const described = messages.map(describe)
  const last = described.at(-1) as EnvelopeMessage
  const { update, message } = messages.at(-1) as RunMessage
  return {
    version: ENVELOPE_VERSION,
    ...last,
    chat_id: message.chat.id,
    text: described.map((entry) => entry.text).filter(Boolean).join('\n\n'),
    files: described.flatMap((entry) => entry.files),
    messages: described,
    attempt,
    redelivered,
    deadline_ms: deadlineMs,
    chat_dir: chatDir,
    update,
  }
}

function describe({ update, message, edited, files }: RunMessage): EnvelopeMessage {
  const from = message.from
  return {
    update_id: update.update_id,
    message_id: message.message_id,
    date: message.date,
    text: message.text ?? message.caption ?? '',
    from: from ? { id: from.id, username: from.username, first_name: from.first_name } : null,
    edited,
    files,
  }
}

/**
 * What a BRAIN_INPUT=text brain reads: the text, then one `[file: kind path]` line per file (or its
 * note when it could not be downloaded). Everything else is in the COORDINATOR_* environment.
 */
export function promptText(envelope: Envelope): string {
  const lines = envelope.files.map((file) => `[file: ${file.kind} ${file.path ?? `(${file.note ?? 'not downloaded'})`}]`)
  return [envelope.text, ...lines].filter(Boolean).join('\n')
}

/** The COORDINATOR_* variables a brain gets beside its envelope. */
export function envelopeEnvironment(envelope: Envelope): Record<string, string> {
  return {
    COORDINATOR_CHAT_ID: String(envelope.chat_id),
    COORDINATOR_MESSAGE_ID: String(envelope.message_id),
    COORDINATOR_UPDATE_ID: String(envelope.update_id),
    COORDINATOR_ATTEMPT: String(envelope.attempt),
    COORDINATOR_DEADLINE_MS: String(envelope.deadline_ms),
    COORDINATOR_CHAT_DIR: envelope.chat_dir,
    ...(envelope.redelivered ? { COORDINATOR_REDELIVERED: '1' } : {}),
  }
}
