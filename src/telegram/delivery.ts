import type { FastifyBaseLogger } from 'fastify'
import type { OutcomeReactions } from '../config.js'
import type { MessageState, StoredMessage, TurnStore } from '../store/inbox.js'
import type { PendingAcks } from './acks.js'
import { isPermanentTelegramError, type ReplyTarget, type TelegramClient } from './client.js'
import type { ReactionEmoji } from './reactions.js'

/** Where a stored message's reply goes: to the message, in its forum topic (stored at intake). */
export function replyTarget(message: StoredMessage): ReplyTarget {
  return { chatId: message.chatId, messageId: message.messageId, threadId: message.threadId ?? undefined }
}

/** Sends a stored message's reply and records whether it arrived. */
export async function deliver(
  deps: { readonly inbox: TurnStore; readonly telegram: TelegramClient },
  message: StoredMessage,
  reply: string,
  log: FastifyBaseLogger,
): Promise<void> {
  if (reply === '') return
  const target = replyTarget(message)
  try {
    await deps.telegram.sendReply(target, reply)
    await deps.inbox.setReplyState(message.seq, 'sent')
    log.info({ chars: reply.length }, 'reply sent')
  } catch (error) {
    const permanent = isPermanentTelegramError(error)
    log.error({ err: error, permanent }, 'reply could not be delivered')
    try {
      // A transient failure stays pending, so the next start sends it again.
      if (permanent) await deps.inbox.setReplyState(message.seq, 'failed')
    } catch (storeError) {
      log.error({ err: storeError }, 'could not record the failed reply')
    }
  }
}

/** Sends a notice to a stored message's chat without recording it; a failure is only logged. */
export async function notify(telegram: TelegramClient, message: StoredMessage, text: string, log: FastifyBaseLogger): Promise<void> {
  try {
    await telegram.sendReply(replyTarget(message), text)
  } catch (error) {
    log.warn({ err: error }, 'could not send a notice')
  }
}

/** What {@link finalReaction} needs. */
export interface FinalReactionDeps {
  readonly telegram: TelegramClient
  readonly acks: PendingAcks
  readonly reactions: OutcomeReactions
}

/**
 * Replaces the receipt reaction by the outcome's (REACTION_*), once the 👀 and the brain's own
 * reactions have settled, so that none of them lands on top. The brain's reaction stands on success.
 */
export function finalReaction(
  deps: FinalReactionDeps,
  batch: readonly StoredMessage[],
  state: MessageState,
  brainReaction: ReactionEmoji | undefined,
  brainReactionsSettled: Promise<void>,
  log: FastifyBaseLogger,
): void {
  const { reactions } = deps
  const emoji = state === 'done' ? reactions.done : state === 'failed' ? reactions.failed : state === 'timed_out' ? reactions.timedOut : undefined
  if (emoji === undefined) return
  for (const message of batch) {
    if (state === 'done' && brainReaction !== undefined && message === batch.at(-1)) continue
    void Promise.all([deps.acks.settled(message.updateId), brainReactionsSettled])
      .then(() => deps.telegram.react(message.chatId, message.messageId, emoji))
      .catch((error: unknown) => log.warn({ err: error, update_id: message.updateId }, 'final reaction not set'))
  }
}
