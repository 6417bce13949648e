import type { FastifyBaseLogger } from 'fastify'
import { forgetChatDir } from '../brain/chat-dir.js'
import { IntakeTriage, unsupportedAnswer, type Receipt, type TriageDeps } from '../intake/intake.js'
import { answerCommand, type ChatSnapshot, type CommandAnswer, type CommandContext } from '../intake/service-commands.js'
import type { ClusterChat, PostgresStore } from '../store/postgres/store.js'
import { deliver } from '../telegram/delivery.js'
import { signalChat, type ChatState } from './worker.js'

export interface ClusterIntakeDeps extends TriageDeps {
  readonly store: PostgresStore
  readonly chatState: ChatState | undefined
}

/**
 * The way in on a host of the Postgres mode: the update and its chat's wake-up job are stored in
 * one transaction before the answer (any failure: 503, and Telegram sends it again), then the 👀.
 * Service commands answer from the state every host shares, and /cancel reaches the host running
 * the chat's brain by NOTIFY.
 */
export class ClusterIntake extends IntakeTriage {
  #deps: ClusterIntakeDeps

  constructor(deps: ClusterIntakeDeps) {
    super(deps)
    this.#deps = deps
  }

  async receive(body: unknown, receivedAt = Date.now()): Promise<Receipt> {
    const { config, store } = this.#deps
    if (!this.accepting) return { status: 503, outcome: 'rejected', detail: 'shutting down' }
    const triaged = this.triage(body, receivedAt)
    if ('status' in triaged) return triaged
    const { classified, message, stored, messageLog } = triaged
    try {
      let answer: (CommandAnswer & { readonly what: string }) | undefined
      if (classified.kind === 'command') {
        const onError = (error: unknown): void => messageLog.warn({ err: error }, `/${classified.command.name} failed`)
        const context = this.#commandContext(message.chatId, await store.chat(message.chatId), receivedAt, onError)
        answer = { ...answerCommand(classified.command, context), what: `/${classified.command.name}` }
      } else if (classified.kind === 'unsupported') {
        answer = unsupportedAnswer(classified.what)
      }
      const seq = answer === undefined ? await store.accept(stored) : await store.acceptAnswered(stored, answer.reply)
      if (seq === 'duplicate') {
        messageLog.info('duplicate update ignored')
        return { status: 200, outcome: 'duplicate' }
      }
      if (answer === undefined) {
        const webhookReply = this.acknowledgeStored(triaged, seq, receivedAt)
        if (config.busyMode === 'interrupt') {
          signalChat(store.pool, { chat_id: message.chatId, reason: 'interrupt' }).catch((error: unknown) => messageLog.warn({ err: error }, 'could not interrupt the running brain'))
        }
        return { status: 200, outcome: 'accepted', ...(webhookReply ? { webhookReply } : {}) }
      }
      answer.act?.()
      messageLog.info({ seq, kind: answer.what }, 'answered by the service')
      void this.#sendAnswer(seq, messageLog)
      return { status: 200, outcome: 'accepted' }
    } catch (error) {
      messageLog.error({ err: error }, 'update not stored; answering 503 so Telegram re-sends it')
      return { status: 503, outcome: 'rejected', detail: 'database unavailable' }
    }
  }

  /**
   * Sends a stored answer. It is stored first, so one that cannot be read or sent now stays pending
   * and goes out, in order, with the chat's next turn on a worker.
   */
  async #sendAnswer(seq: number, log: FastifyBaseLogger): Promise<void> {
    try {
      const answered = await this.#deps.store.get(seq)
      if (answered !== undefined) await deliver({ inbox: this.#deps.store, telegram: this.#deps.telegram }, answered, answered.reply ?? '', log)
    } catch (error) {
      log.warn({ err: error }, "the service's answer could not be read back; it goes out with the chat's next turn")
    }
  }

  #commandContext(chatId: number, chat: ClusterChat, now: number, onError: (error: unknown) => void): CommandContext {
    const { store, config, chatState } = this.#deps
    const current: ChatSnapshot['current'] =
      chat.running !== undefined
        ? { since: chat.running.startedAt, runningSince: chat.running.startedAt, phase: 'running' }
        : chat.replying
          ? { since: now, runningSince: undefined, phase: 'replying' }
          : chat.head !== undefined
            ? { since: chat.head.receivedAt, runningSince: undefined, phase: 'waiting' }
            : undefined
    const snapshot: ChatSnapshot = {
      current,
      queuedBehind: current?.phase === 'waiting' ? chat.queued - 1 : chat.queued,
      brainsBusy: chat.runningEverywhere,
      brainsLimit: chat.slotsEverywhere,
      waiting: chat.queuedEverywhere,
    }
    const settled = (promise: Promise<unknown>): void => void promise.catch(onError)
    return {
      snapshot,
      config,
      now,
      onError,
      actions: {
        stopCurrent: () => {
          // Not started on any host yet: put aside where it waits. Started meanwhile: its host stops it.
          if (current?.phase === 'waiting' && chat.head !== undefined) settled(store.cancelIfQueued(chat.head.seq, now))
          settled(signalChat(store.pool, { chat_id: chatId, reason: 'cancel' }))
        },
        dropQueued: () => settled(store.cancelQueued(chatId, now)),
        forget: () => {
          forgetChatDir(config.stateDir, chatId, onError)
          if (chatState !== undefined) settled(chatState.forget(chatId))
        },
      },
    }
  }
}
