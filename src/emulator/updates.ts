import http from 'node:http'
import https from 'node:https'
import type { Update, WebhookInfo } from 'grammy/types'
import { POLLING_TERMINATED, WEBHOOK_ACTIVE } from './api-error.js'
import {
  WebhookDelivery,
  type DeliveryAgents,
  type DeliveryAttempt,
  type DeliveryHooks,
  type DeliveryTiming,
  type QueuedUpdate,
  type WebhookTarget,
} from './delivery.js'
import { isRecord } from './params.js'

/** An update as a test hands it in; the emulator assigns `update_id` when it is missing. */
export type NewUpdate = Omit<Update, 'update_id'> & { update_id?: number }

/** The kinds Telegram leaves out when allowed_updates is empty (its default). */
export const DEFAULT_EXCLUDED_UPDATE_KINDS: ReadonlySet<string> = new Set([
  'chat_member',
  'message_reaction',
  'message_reaction_count',
])

/** getUpdates hands out at most this many updates per call (and by default). */
export const MAX_UPDATES_PER_POLL = 100

/** What getUpdates was asked, already read from the call's parameters. */
export interface PollRequest {
  readonly offset: number | undefined
  readonly limit: number
  readonly timeoutS: number
  readonly allowedUpdates: readonly string[] | undefined
}

/** What setWebhook was asked, already read and checked. */
export interface WebhookRequest extends WebhookTarget {
  readonly allowedUpdates: readonly string[] | undefined
  readonly dropPendingUpdates: boolean
}

/** What the feed tells its owner about webhook traffic. */
export interface FeedHooks {
  attempted(attempt: DeliveryAttempt): void
  /** The webhook answered an update with a method call in its body (a webhook reply). */
  replied(update: Update, reply: string): void
}

interface Poller {
  readonly limit: number
  readonly resolve: (updates: Update[]) => void
  readonly reject: (error: Error) => void
  readonly timer: NodeJS.Timeout
}

/** The update's kind: its one field besides update_id ("message", "callback_query", …). */
export function updateKindOf(update: object): string | undefined {
  for (const key of Object.keys(update)) if (key !== 'update_id') return key
  return undefined
}

/** The chat an update belongs to, which decides its delivery lane; undefined when it has none. */
export function chatIdOf(update: object): number | undefined {
  const kind = updateKindOf(update)
  const payload = kind === undefined ? undefined : (update as Record<string, unknown>)[kind]
  if (!isRecord(payload)) return undefined
  const carrier = isRecord(payload['chat']) ? payload : isRecord(payload['message']) ? payload['message'] : undefined
  const chat = carrier?.['chat']
  return isRecord(chat) && typeof chat['id'] === 'number' ? chat['id'] : undefined
}

/**
 * The bot's stream of updates: assigns update ids, keeps what is not yet delivered, and hands it
 * out either by webhook or by getUpdates (never both, as Telegram insists).
 */
export class UpdateFeed {
  #nextUpdateId: number
  #nextSeq = 1
  // Undelivered updates in arrival order: pending_update_count, and what getUpdates hands out.
  readonly #pending = new Map<number, QueuedUpdate>()
  // [] means Telegram's default: everything but DEFAULT_EXCLUDED_UPDATE_KINDS.
  #allowedUpdates: readonly string[] = []
  #webhook: WebhookTarget | undefined
  #delivery: WebhookDelivery | undefined
  #lastError: { readonly date: number; readonly message: string } | undefined
  #poller: Poller | undefined
  #pollerWakeScheduled = false
  readonly #timing: DeliveryTiming
  readonly #hooks: FeedHooks
  readonly #agents: DeliveryAgents = {
    http: new http.Agent({ keepAlive: true }),
    https: new https.Agent({ keepAlive: true }),
  }

  constructor(firstUpdateId: number, timing: DeliveryTiming, hooks: FeedHooks) {
    this.#nextUpdateId = firstUpdateId
    this.#timing = timing
    this.#hooks = hooks
  }

  /** Undelivered updates: what getWebhookInfo reports as pending_update_count. */
  get pendingCount(): number {
    return this.#pending.size
  }

  /**
   * Adds an update and returns it with its update_id. An update of a kind the bot did not ask for
   * (allowed_updates) is returned but never delivered, as Telegram never creates it.
   */
  push(input: NewUpdate): Update {
    const updateId = input.update_id ?? this.#nextUpdateId
    if (!Number.isSafeInteger(updateId) || updateId <= 0) {
      throw new TypeError(`update_id must be a positive integer; got ${JSON.stringify(input.update_id)}`)
    }
    this.#nextUpdateId = Math.max(this.#nextUpdateId, updateId + 1)
    // update_id first, as Telegram sends it.
    const update = { update_id: updateId, ...input } as Update
    update.update_id = updateId
    if (!this.#isAllowed(update)) return update

    const queued: QueuedUpdate = { seq: this.#nextSeq++, update, chatId: chatIdOf(update) ?? null }
    this.#pending.set(queued.seq, queued)
    if (this.#delivery) this.#delivery.enqueue(queued)
    else this.#wakePollerSoon()
    return update
  }

  setWebhook(request: WebhookRequest): void {
    if (request.dropPendingUpdates) this.#dropPending()
    if (request.allowedUpdates !== undefined) this.#allowedUpdates = request.allowedUpdates
    if (this.#webhook?.url !== request.url) this.#lastError = undefined
    const target: WebhookTarget = { url: request.url, secretToken: request.secretToken, maxConnections: request.maxConnections }
    this.#webhook = target
    this.#endPoll(WEBHOOK_ACTIVE())
    if (this.#delivery) {
      this.#delivery.retarget(target)
      return
    }
    this.#delivery = new WebhookDelivery(target, this.#timing, this.#deliveryHooks(), this.#agents)
    for (const queued of this.#pending.values()) this.#delivery.enqueue(queued)
  }

  /** Removes the webhook; undelivered updates stay for getUpdates unless dropped. Returns whether one was set. */
  deleteWebhook(dropPendingUpdates: boolean): boolean {
    if (dropPendingUpdates) this.#dropPending()
    const wasSet = this.#webhook !== undefined
    this.#webhook = undefined
    this.#delivery?.stop()
    this.#delivery = undefined
    return wasSet
  }

  webhookInfo(): WebhookInfo {
    const info: WebhookInfo = {
      url: this.#webhook?.url ?? '',
      has_custom_certificate: false,
      pending_update_count: this.#pending.size,
    }
    if (this.#lastError) {
      info.last_error_date = this.#lastError.date
      info.last_error_message = this.#lastError.message
    }
    if (this.#webhook) info.max_connections = this.#webhook.maxConnections
    if (this.#allowedUpdates.length > 0) info.allowed_updates = [...this.#allowedUpdates] as WebhookInfo['allowed_updates']
    return info
  }

  /**
   * getUpdates: confirms everything below `offset`, then answers at once when updates are waiting,
   * or holds the call up to `timeoutS` for the first one to arrive. A newer call ends an older one
   * with 409, as Telegram does.
   */
  poll(request: PollRequest, signal?: AbortSignal): Promise<Update[]> {
    if (this.#webhook) return Promise.reject(WEBHOOK_ACTIVE())
    if (request.allowedUpdates !== undefined) this.#allowedUpdates = request.allowedUpdates
    this.#confirm(request.offset)
    this.#endPoll(POLLING_TERMINATED())
    const ready = this.#take(request.limit)
    if (ready.length > 0 || request.timeoutS <= 0 || signal?.aborted) return Promise.resolve(ready)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#poller = undefined
        resolve([])
      }, request.timeoutS * 1000)
      const poller: Poller = { limit: request.limit, resolve, reject, timer }
      this.#poller = poller
      // A client that hung up must not be handed updates (nor end the next poll with a 409).
      signal?.addEventListener('abort', () => {
        if (this.#poller === poller) this.#endPoll()
      })
    })
  }

  /** Forgets every undelivered update and the last error; the webhook (if any) stays set. */
  reset(): void {
    this.#dropPending()
    this.#lastError = undefined
    this.#endPoll()
  }

  /** Stops all delivery, aborts requests on the wire and frees the keep-alive sockets. */
  close(): void {
    this.#delivery?.abort()
    this.#delivery = undefined
    this.#endPoll()
    this.#agents.http.destroy()
    this.#agents.https.destroy()
  }

  #deliveryHooks(): DeliveryHooks {
    return {
      isPending: (seq: number) => this.#pending.has(seq),
      delivered: (queued: QueuedUpdate, reply: string | undefined) => {
        this.#pending.delete(queued.seq)
        if (reply !== undefined) this.#hooks.replied(queued.update, reply)
      },
      attempted: (attempt: DeliveryAttempt) => this.#hooks.attempted(attempt),
      failed: (message: string) => {
        this.#lastError = { date: Math.floor(Date.now() / 1000), message }
      },
    }
  }

  #isAllowed(update: Update): boolean {
    const kind = updateKindOf(update)
    if (kind === undefined) return true
    if (this.#allowedUpdates.length === 0) return !DEFAULT_EXCLUDED_UPDATE_KINDS.has(kind)
    return this.#allowedUpdates.includes(kind)
  }

  #dropPending(): void {
    this.#pending.clear()
    this.#delivery?.dropQueued()
  }

  // offset > 0 confirms updates below it; a negative offset keeps only the last |offset| updates.
  #confirm(offset: number | undefined): void {
    if (offset === undefined || offset === 0) return
    if (offset > 0) {
      for (const [seq, queued] of this.#pending) if (queued.update.update_id < offset) this.#pending.delete(seq)
      return
    }
    let surplus = this.#pending.size + offset
    for (const seq of this.#pending.keys()) {
      if (surplus-- <= 0) break
      this.#pending.delete(seq)
    }
  }

  #take(limit: number): Update[] {
    const updates: Update[] = []
    for (const queued of this.#pending.values()) {
      if (updates.length >= limit) break
      updates.push(queued.update)
    }
    return updates
  }

  // Waits a tick so that updates pushed together reach a long poll together.
  #wakePollerSoon(): void {
    if (this.#poller === undefined || this.#pollerWakeScheduled) return
    this.#pollerWakeScheduled = true
    setImmediate(() => {
      this.#pollerWakeScheduled = false
      const poller = this.#poller
      if (poller === undefined) return
      const updates = this.#take(poller.limit)
      if (updates.length === 0) return
      this.#poller = undefined
      clearTimeout(poller.timer)
      poller.resolve(updates)
    })
  }

  // Ends a held getUpdates: with an error, or (no error) with an empty answer.
  #endPoll(error?: Error): void {
    const poller = this.#poller
    if (poller === undefined) return
    this.#poller = undefined
    clearTimeout(poller.timer)
    if (error) poller.reject(error)
    else poller.resolve([])
  }
}
