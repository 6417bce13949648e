import type { FastifyBaseLogger } from 'fastify'
import { BRAIN_EVENT_SHAPES, parseBrainEvent } from '../brain/protocol.js'
import type { ReplyTarget, TelegramClient } from './client.js'
import { toReaction, type ReactionEmoji } from './reactions.js'
import { FILE_EVENTS_MAX, FileRefused, readBrainFile } from './brain-files.js'

/** Telegram shows "typing…" for about 5 s; it is renewed a little sooner. */
export const TYPING_EVERY_MS = 4000
/** The status message is edited at most this often, so a chatty brain can't hit Telegram's limits. */
export const PROGRESS_EDIT_EVERY_MS = 2000
/** `message` events a run may send; more are skipped (a looping brain must not flood the chat). */
export const MESSAGE_EVENTS_MAX = 20
// A status is one glance: longer progress texts are cut.
const STATUS_CHARS_MAX = 1000
// Warnings about bad events per run, so a brain writing garbage cannot flood the log.
const EVENT_WARNINGS_MAX = 10

/** Where a run's `file` events may take files from: relative paths start at `cwd`. */
export interface BrainFileRoots {
  readonly cwd: string
  readonly allowedDirs: readonly string[]
}

/**
 * What the chat sees while a brain works on its message: "typing…" while a brain runs, one status
 * message edited in place by the brain's `progress` events, its `message` and `file` events sent
 * at once (in the order the brain wrote them, all before the reply) and its `react` events applied. Everything here is best effort: a failure is logged and never touches
 * the run. {@link close} ends it all, before the reply is sent; only the brain's messages are waited
 * for then (they come before the reply), never the status message or a reaction.
 */
export class ChatFeedback {
  #telegram: TelegramClient
  #target: ReplyTarget
  #log: FastifyBaseLogger
  #typingTimer: NodeJS.Timeout | undefined
  // Each kind of call runs one after another, so it reaches the chat in the brain's order.
  #messages: Promise<void> = Promise.resolve()
  #status: Promise<void> = Promise.resolve()
  #reactions: Promise<void>
  #closed = false
  #warnings = 0
  #messagesSent = 0
  #filesSent = 0
  #fileRoots: BrainFileRoots
  #statusId: number | undefined
  #statusShown: string | undefined
  #statusWanted: string | undefined
  #statusAt = Number.NEGATIVE_INFINITY
  #statusTimer: NodeJS.Timeout | undefined
  #brainReaction: ReactionEmoji | undefined

  /** `afterReceipt` settles with the message's 👀, which the brain's reaction must not land under. */
  constructor(options: {
    telegram: TelegramClient
    target: ReplyTarget
    log: FastifyBaseLogger
    afterReceipt: Promise<void>
    fileRoots: BrainFileRoots
  }) {
    this.#telegram = options.telegram
    this.#fileRoots = options.fileRoots
    this.#target = options.target
    this.#log = options.log
    this.#reactions = options.afterReceipt
  }

  /** Settles when the brain's reactions have (a final reaction goes after them). */
  get reactionsSettled(): Promise<void> {
    return this.#reactions
  }

  /** The reaction the brain chose for the message, if any: it stands instead of REACTION_DONE. */
  get brainReaction(): ReactionEmoji | undefined {
    return this.#brainReaction
  }

  /** Shows "typing…" now and keeps it up until {@link stopTyping}. */
  startTyping(): void {
    if (this.#typingTimer !== undefined || this.#closed) return
    const sendTyping = (): void => {
      this.#telegram.typing(this.#target).catch((error: unknown) => this.#log.debug({ err: error }, 'typing not shown'))
    }
    sendTyping()
    this.#typingTimer = setInterval(sendTyping, TYPING_EVERY_MS)
  }

  stopTyping(): void {
    clearInterval(this.#typingTimer)
    this.#typingTimer = undefined
  }

  /** Takes one fd-3 event of the brain's. Anything but the documented shapes is logged and skipped. */
  handle(value: unknown): void {
    if (this.#closed) return
    const event = parseBrainEvent(value)
    if (event === undefined) {
      this.#warn({ event: JSON.stringify(value).slice(0, 200) }, `brain event skipped: expected ${BRAIN_EVENT_SHAPES}`)
    } else if (event.type === 'progress') {
      this.#progress(event.text.trim())
    } else if (event.type === 'message') {
      this.#message(event.text)
    } else if (event.type === 'react') {
      this.#react(event.emoji)
    } else if (event.type === 'file') {
      this.#file(event.path, event.caption)
    }
  }

  /**
   * Stops typing and progress, deletes the status message (without waiting for it), and waits for
   * the brain's messages to be sent.
   */
  async close(): Promise<void> {
    this.#closed = true
    this.stopTyping()
    clearTimeout(this.#statusTimer)
    this.#status = this.#status.then(async () => {
      if (this.#statusId === undefined) return
      try {
        await this.#telegram.deleteMessage(this.#target.chatId, this.#statusId)
      } catch (error) {
        this.#log.warn({ err: error }, 'status message not deleted')
      }
    })
    await this.#messages
  }

  #progress(text: string): void {
    this.#statusWanted = text.length > STATUS_CHARS_MAX ? `${text.slice(0, STATUS_CHARS_MAX - 1)}…` : text
    if (this.#statusTimer !== undefined) return
    const wait = Math.max(0, this.#statusAt + PROGRESS_EDIT_EVERY_MS - Date.now())
    this.#statusTimer = setTimeout(() => {
      this.#statusTimer = undefined
      this.#status = this.#status.then(() => this.#showStatus())
    }, wait)
  }

  async #showStatus(): Promise<void> {
    const text = this.#statusWanted
    if (this.#closed || text === undefined || text === this.#statusShown) return
    this.#statusAt = Date.now()
    try {
      if (this.#statusId === undefined) this.#statusId = await this.#telegram.sendStatus(this.#target, text)
      else await this.#telegram.editStatus(this.#target.chatId, this.#statusId, text)
      this.#statusShown = text
    } catch (error) {
      this.#log.warn({ err: error }, 'progress not shown')
    }
  }

  #message(text: string): void {
    if (++this.#messagesSent > MESSAGE_EVENTS_MAX) {
      if (this.#messagesSent === MESSAGE_EVENTS_MAX + 1) {
        this.#log.warn({ limit: MESSAGE_EVENTS_MAX }, 'brain sent too many message events; skipping the rest of this run')
      }
      return
    }
    this.#messages = this.#messages.then(async () => {
      try {
        await this.#telegram.sendReply(this.#target, text)
      } catch (error) {
        this.#log.warn({ err: error }, "brain's message not sent")
      }
    })
  }

  // Read and sent in the messages' line, so files and messages reach the chat in the brain's order.
  #file(requested: string, caption: string | undefined): void {
    const number = ++this.#filesSent
    this.#messages = this.#messages.then(async () => {
      try {
        if (number > FILE_EVENTS_MAX) throw new FileRefused(`more than ${FILE_EVENTS_MAX} files in one run`)
        const file = await readBrainFile(requested, { ...this.#fileRoots, caption })
        await this.#telegram.sendFile(this.#target, file)
        this.#log.info({ file: file.fileName, kind: file.kind, bytes: file.bytes.length }, 'brain file sent')
      } catch (error) {
        if (!(error instanceof FileRefused)) {
          this.#log.warn({ err: error, path: requested }, "brain's file not sent")
          return
        }
        // Past the limit, one note says so; the rest are only logged.
        if (number > FILE_EVENTS_MAX + 1) {
          this.#log.debug({ path: requested }, 'brain file refused: over the limit')
          return
        }
        this.#log.warn({ path: requested, reason: error.message }, 'brain file refused')
        try {
          await this.#telegram.sendStatus(this.#target, `⚠️ file not sent: ${error.message}`)
        } catch (noteError) {
          this.#log.warn({ err: noteError }, 'note about a refused file not sent')
        }
      }
    })
  }

  #react(emoji: string): void {
    const reaction = toReaction(emoji)
    if (!reaction) {
      this.#warn({ emoji: emoji.slice(0, 20) }, 'brain event skipped: not an emoji Telegram allows as a reaction')
      return
    }
    this.#brainReaction = reaction
    this.#reactions = this.#reactions.then(async () => {
      try {
        await this.#telegram.react(this.#target.chatId, this.#target.messageId, reaction)
      } catch (error) {
        this.#log.warn({ err: error }, "brain's reaction not set")
      }
    })
  }

  #warn(fields: Record<string, unknown>, message: string): void {
    if (++this.#warnings <= EVENT_WARNINGS_MAX) this.#log.warn(fields, message)
  }
}
