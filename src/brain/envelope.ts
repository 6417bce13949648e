import type { Message, Update } from 'grammy/types'

/** The protocol version of the envelope; bumped only for incompatible changes. */
export const ENVELOPE_VERSION = 1

/** What a brain reads on stdin: one JSON object, then EOF. */
export interface Envelope {
  readonly version: typeof ENVELOPE_VERSION
  readonly update_id: number
  readonly chat_id: number
  readonly message_id: number
  /** When the message was sent (Unix seconds, Telegram's clock). */
  readonly date: number
  readonly text: string
  readonly from: { readonly id: number; readonly username?: string; readonly first_name?: string } | null
  /** 1 for the first run of this message, counting up across retries (exit 75) and restarts. */
  readonly attempt: number
  /** True when the service restarted while an earlier attempt ran: side effects may have happened. */
  readonly redelivered: boolean
  /** When this attempt is killed (Unix epoch milliseconds). */
  readonly deadline_ms: number
  readonly update: Update
}

export interface EnvelopeInput {
  readonly update: Update
  readonly message: Message
  readonly text: string
  readonly attempt: number
  readonly redelivered: boolean
  readonly deadlineMs: number
}

export function buildEnvelope({ update, message, text, attempt, redelivered, deadlineMs }: EnvelopeInput): Envelope {
  const from = message.from
  return {
    version: ENVELOPE_VERSION,
    update_id: update.update_id,
    chat_id: message.chat.id,
    message_id: message.message_id,
    date: message.date,
    text,
    from: from ? { id: from.id, username: from.username, first_name: from.first_name } : null,
    attempt,
    redelivered,
    deadline_ms: deadlineMs,
    update,
  }
}

/** The COORDINATOR_* variables a brain gets beside its envelope. */
export function envelopeEnvironment(envelope: Envelope): Record<string, string> {
  return {
    COORDINATOR_CHAT_ID: String(envelope.chat_id),
    COORDINATOR_MESSAGE_ID: String(envelope.message_id),
    COORDINATOR_UPDATE_ID: String(envelope.update_id),
    COORDINATOR_ATTEMPT: String(envelope.attempt),
    COORDINATOR_DEADLINE_MS: String(envelope.deadline_ms),
    ...(envelope.redelivered ? { COORDINATOR_REDELIVERED: '1' } : {}),
  }
}
