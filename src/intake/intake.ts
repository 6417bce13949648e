import type { FastifyBaseLogger } from 'fastify'
import type { Message } from 'grammy/types'
import type { Config } from '../config.js'
import { LogThrottle } from '../log.js'
import type { Dispatcher } from '../dispatch/dispatcher.js'
import type { Metrics } from '../metrics.js'
import { GroupCommit } from '../store/group-commit.js'
import { InboxWriteError, type Inbox, type NewMessage, type StoredMessage } from '../store/inbox.js'
import type { PendingAcks } from '../telegram/acks.js'
import type { TelegramClient } from '../telegram/client.js'
import { deliver } from '../telegram/delivery.js'
import { mediaGroupOf } from '../telegram/updates.js'
import { refusalOf, type AccessRules, type Refusal } from './access.js'
import { classifyUpdate, type Classification, type IncomingMessage } from './classify.js'
import { answerCommand, localCommandContext, type CommandAnswer } from './service-commands.js'

// A message from a chat or sender not allowed is logged once a minute per chat and sender, and
// for at most this many of them a minute: enough to find one's id, never a flood.
const REFUSED_LOG = { intervalMs: 60_000, maxKeys: 20 }

/** How the webhook should answer, and why. */
export interface Receipt {
  readonly status: 200 | 400 | 503
  readonly outcome: 'accepted' | 'duplicate' | 'ignored' | 'rejected'
  readonly detail?: string
  /** A Bot API call to return in the 200 body (ACK_MODE=webhook-reply: the receipt reaction). */
  readonly webhookReply?: Record<string, unknown>
}

/** An update classified as a message to store, with what storing and answering it need. */
export interface Triaged {
  readonly classified: Extract<Classification, { kind: 'message' | 'command' | 'unsupported' }>
  readonly message: IncomingMessage
  readonly updateId: number
  readonly stored: NewMessage
  readonly messageLog: FastifyBaseLogger
}

/** The answer to a kind of message the brain cannot take (`what`, e.g. "video_chat_started"). */
export function unsupportedAnswer(kind: string): { readonly reply: string; readonly what: string } {
  const what = kind.replaceAll('_', ' ')
  return { reply: `Sorry, I can't handle ${what}: please send text, a photo, a voice note or a file.`, what }
}

/** What every intake classifies and acknowledges updates with. */
export interface TriageDeps {
  readonly config: Config
  readonly telegram: TelegramClient
  readonly metrics: Metrics
  readonly log: FastifyBaseLogger
  readonly acks: PendingAcks
}

/** What the single-host intake hands updates to. */
export interface IntakeDeps extends TriageDeps {
  readonly inbox: Inbox
  readonly dispatcher: Dispatcher
}

/**
 * What an intake does whatever its store: classify an update and answer at once what needs no
 * storing, acknowledge a stored one with the receipt reaction, stop accepting at shutdown.
 */
export class IntakeTriage {
  /** When the last well-formed update arrived, for /healthz. */
  lastUpdateAt: number | undefined
  /** The bot's username, once learnt: "/status@OtherBot" in a group is then left to the other bot. */
  botUsername: string | undefined
  #base: TriageDeps
  #accepting = true
  #refusedLog = new LogThrottle(REFUSED_LOG.intervalMs, REFUSED_LOG.maxKeys)

  constructor(deps: TriageDeps) {
    this.#base = deps
  }

  /** False once shutdown began: the webhook answers 503 so Telegram re-sends later. */
  get accepting(): boolean {
    return this.#accepting
  }

  /** Refuses every update from now on (shutdown). */
  stopAccepting(): void {
    this.#accepting = false
  }

  /**
   * What every intake does before it stores anything: classifies the update, and answers at once
   * what is ignored, refused, invalid or a group upgrade. What is left is to be stored.
   */
  triage(body: unknown, receivedAt: number): Receipt | Triaged {
    const { config, log, telegram } = this.#base
    const { migrations } = telegram
    const { allowedChats, allowedUsers } = config
    const listed = (chatId: number): boolean => allowedChats === 'all' || allowedChats.has(chatId)
    // A group's supergroup is allowed when the group was: else the upgrade makes the bot deaf.
    const isAllowedChat = (chatId: number): boolean => listed(chatId) || migrations.earlierIds(chatId).some(listed)
    const rules: AccessRules = { isAllowedChat, allChats: allowedChats === 'all', allowedUsers }
    const classified = classifyUpdate(body, {
      refusalOf: (message) => refusalOf(message, rules),
      isAllowedChat,
      edits: config.edits,
      botUsername: this.botUsername,
    })
    if (classified.kind === 'invalid') return { status: 400, outcome: 'rejected', detail: classified.problem }
    this.lastUpdateAt = receivedAt
    if (classified.kind === 'ignored') {
      log.debug({ update_id: classified.updateId, reason: classified.reason }, 'update ignored')
      return { status: 200, outcome: 'ignored', detail: classified.reason }
    }
    if (classified.kind === 'refused') {
      this.#logRefused(classified.updateId, classified.message, classified.reason, receivedAt)
      return { status: 200, outcome: 'ignored', detail: classified.reason }
    }
    if (classified.kind === 'migrated') {
      if (migrations.record(classified.from, classified.to)) {
        log.warn(
          { update_id: classified.updateId, chat_id: classified.from, new_chat_id: classified.to },
          `group ${classified.from} became supergroup ${classified.to}: replies go there now; put ${classified.to} in ALLOWED_CHAT_IDS`,
        )
      }
      return { status: 200, outcome: 'ignored', detail: 'chat migrated' }
    }
    const { message, updateId } = classified
    const stored: NewMessage = {
      updateId,
      chatId: message.chatId,
      messageId: message.messageId,
      threadId: message.threadId ?? null,
      updateJson: JSON.stringify(message.update),
      receivedAt,
    }
    return { classified, message, updateId, stored, messageLog: log.child({ update_id: updateId, chat_id: message.chatId }) }
  }

  /**
   * A message nobody allowed may not reach the brain: logged at info (throttled) with what the
   * operator needs to allow it on purpose — the chat's id, type and name, and the sender's.
   */
  #logRefused(updateId: number, message: Message, reason: Refusal, now: number): void {
    const sender = message.sender_chat?.id ?? message.from?.id
    const held = this.#refusedLog.admit(`${message.chat.id}/${sender ?? ''}`, now)
    if (held === false) return
    const { chat, from, sender_chat: senderChat, via_bot: viaBot } = message
    this.#base.log.info(
      {
        update_id: updateId,
        chat_id: chat.id,
        chat_type: chat.type,
        chat_title: 'title' in chat ? chat.title : undefined,
        chat_username: chat.username,
        from_id: from?.id,
        from_username: from?.username,
        sender_chat_id: senderChat?.id,
        via_bot: viaBot?.username,
        reason,
        ...(held > 0 ? { held_back: held } : {}),
      },
      `message not allowed (${reason}): to allow it, add its ${reason === 'chat not allowed' ? 'chat id to ALLOWED_CHAT_IDS' : 'sender id to ALLOWED_USER_IDS'}`,
    )
  }

  /**
   * A message stored for its brain: acknowledged with the receipt reaction (ACK_MODE=webhook-reply:
   * returned, for the webhook's answer) and logged.
   */
  acknowledgeStored({ message, updateId, messageLog }: Triaged, seq: number, receivedAt: number): Record<string, unknown> | undefined {
    const { config } = this.#base
    messageLog.info({ seq, chars: message.text.length, edited: message.edited || undefined }, 'message accepted')
    if (config.ackMode === 'webhook-reply') return reactionCall(message, config.ackEmoji)
    this.#acknowledge(updateId, message, receivedAt, messageLog)
    return undefined
  }

  /** Fires the receipt reaction; its failure is logged and never touches the work. */
  #acknowledge(updateId: number, message: IncomingMessage, receivedAt: number, log: FastifyBaseLogger): void {
    const { telegram, config, metrics, acks } = this.#base
    const call = telegram.react(message.chatId, message.messageId, config.ackEmoji)
    acks.track(updateId, call)
    call.then(
      () => metrics.ackLatency.observe((Date.now() - receivedAt) / 1000),
      (error: unknown) => log.warn({ err: error }, 'receipt reaction failed'),
    )
  }
}

/**
 * The way in on a single host, for an authentic webhook body: classifies it, stores it in the inbox
 * (before it is acknowledged), acknowledges it with the receipt reaction without waiting, and
 * enqueues it in its chat's line. The service's own commands are answered here, at once. Knows
 * nothing of HTTP.
 */
export class Intake extends IntakeTriage {
  #deps: IntakeDeps
  #commits: GroupCommit

  constructor(deps: IntakeDeps) {
    super(deps)
    this.#deps = deps
    this.#commits = new GroupCommit(deps.inbox)
  }

  /**
   * Handles one authentic webhook body. The only waiting is the inbox write, committed together
   * with the other requests read in the same turn of the event loop, so the webhook answers in well
   * under a millisecond of work.
   */
  async receive(body: unknown, receivedAt = Date.now()): Promise<Receipt> {
    const { config, inbox, dispatcher } = this.#deps
    if (!this.accepting) return { status: 503, outcome: 'rejected', detail: 'shutting down' }
    const triaged = this.triage(body, receivedAt)
    if ('status' in triaged) return triaged
    const { classified, message, updateId, stored, messageLog } = triaged
    // A command is answered from the state at arrival; it acts only once stored (never for a duplicate).
    let answer: (CommandAnswer & { readonly what: string }) | undefined
    if (classified.kind === 'command') {
      const onError = (error: unknown): void => messageLog.warn({ err: error }, `/${classified.command.name} failed`)
      const context = localCommandContext({ chatId: message.chatId, dispatcher, inbox, config, now: receivedAt, onError })
      answer = { ...answerCommand(classified.command, context), what: `/${classified.command.name}` }
    } else if (classified.kind === 'unsupported') {
      answer = unsupportedAnswer(classified.what)
    }
    let seq: number | 'duplicate'
    try {
      seq = await this.#commits.accept(stored, answer?.reply)
    } catch (error) {
      if (!(error instanceof InboxWriteError)) throw error
      messageLog.error({ err: error }, 'update not stored; answering 503 so Telegram re-sends it')
      return { status: 503, outcome: 'rejected', detail: 'inbox unavailable' }
    }
    if (seq === 'duplicate') {
      messageLog.info('duplicate update ignored')
      return { status: 200, outcome: 'duplicate' }
    }

    let webhookReply: Record<string, unknown> | undefined
    if (answer === undefined) {
      webhookReply = this.acknowledgeStored(triaged, seq, receivedAt)
      // A newer message stops the running brain; the next run takes every message not yet answered.
      if (config.busyMode === 'interrupt' && !joinsAlbum(inbox, message, seq) && dispatcher.stop(message.chatId, 'interrupt')) {
        messageLog.info('running brain interrupted by this message')
      }
      dispatcher.enqueue({ seq, chatId: message.chatId, updateId, receivedAt })
    } else {
      answer.act?.()
      messageLog.info({ seq, kind: answer.what }, 'answered by the service')
      const answered = inbox.get(seq) as StoredMessage
      void deliver(this.#deps, answered, answered.reply ?? '', messageLog)
    }
    return { status: 200, outcome: 'accepted', ...(webhookReply ? { webhookReply } : {}) }
  }

}

/**
 * An album's later item, while an earlier one still waits in the queue: it joins the turn settling
 * that album (turn/albums.ts) instead of interrupting it.
 */
function joinsAlbum(inbox: Inbox, message: IncomingMessage, seq: number): boolean {
  const album = message.raw.media_group_id
  return album !== undefined && inbox.queuedInChat(message.chatId).some((queued) => queued.seq !== seq && mediaGroupOf(queued.updateJson) === album)
}

/** The receipt reaction as a webhook reply: the Bot API runs it, but nobody learns whether it worked. */
function reactionCall(message: IncomingMessage, emoji: string): Record<string, unknown> {
  return {
    method: 'setMessageReaction',
    chat_id: message.chatId,
    message_id: message.messageId,
    reaction: [{ type: 'emoji', emoji }],
  }
}
