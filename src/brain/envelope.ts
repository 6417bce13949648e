import type { Message, Update } from 'grammy/types'
import { isPrivate } from '../telegram/message-kinds.js'
import { ENVELOPE_VERSION, type BrainFile, type Envelope, type EnvelopeMessage } from './protocol.js'

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

/** The envelope of one attempt (see protocol.ts). */
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
 * note when it could not be downloaded). In a group, where several people may talk, each message's
 * text starts with who said it ("Ada (@ada_l, 5550001): …"). Everything else is in the COORDINATOR_*
 * environment.
 */
export function promptText(envelope: Envelope): string {
  const lines = envelope.files.map((file) => `[file: ${file.kind} ${file.path ?? `(${file.note ?? 'not downloaded'})`}]`)
  const chat = (envelope.update.message ?? envelope.update.edited_message)?.chat
  const inGroup = chat !== undefined && !isPrivate(chat)
  const texts = inGroup ? envelope.messages.filter((message) => message.text !== '').map((message) => `${speaker(message.from)}: ${message.text}`) : [envelope.text]
  return [texts.join('\n\n'), ...lines].filter(Boolean).join('\n')
}

/** Who wrote a message, as a prompt names them: "Ada (@ada_l, 5550001)". */
function speaker(from: EnvelopeMessage['from']): string {
  if (from === null) return 'Someone'
  const details = [from.username === undefined ? undefined : `@${from.username}`, String(from.id)].filter(Boolean).join(', ')
  return `${from.first_name ?? 'Someone'} (${details})`
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
