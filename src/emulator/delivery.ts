import http from 'node:http'
import https from 'node:https'
import { performance } from 'node:perf_hooks'
import type { Update } from 'grammy/types'

/** Where and how wide the webhook is, as setWebhook configured it. */
export interface WebhookTarget {
  readonly url: string
  readonly secretToken: string | undefined
  readonly maxConnections: number
}

/** How patient delivery is: per-request timeout, then exponential backoff between retries. */
export interface DeliveryTiming {
  readonly timeoutMs: number
  readonly retryMs: number
  readonly retryMaxMs: number
}

/** An update waiting for delivery. `seq` tells apart two pushes of the same update_id. */
export interface QueuedUpdate {
  readonly seq: number
  readonly update: Update
  /** The lane: updates of one chat are delivered one at a time, in order; null is the chatless lane. */
  readonly chatId: number | null
}

/** One POST of an update to the webhook, successful or not. Times are performance.now() ms. */
export interface DeliveryAttempt {
  readonly update_id: number
  readonly chat_id: number | null
  /** 1 for the first try of this update, 2 for the first retry, … */
  readonly attempt: number
  readonly url: string
  /** The HTTP status the webhook answered; absent when it never answered. */
  readonly status?: number
  /** Why the attempt failed, in Telegram's getWebhookInfo wording; absent on a 2xx. */
  readonly error?: string
  readonly sentAt: number
  readonly answeredAt: number
}

/** What delivery tells its owner; the owner keeps the list of pending updates. */
export interface DeliveryHooks {
  /** False once an update was dropped (drop_pending_updates, reset): it is then neither sent nor retried. */
  isPending(seq: number): boolean
  /** The webhook answered 2xx; `reply` is its JSON body when it sent one (a webhook reply). */
  delivered(queued: QueuedUpdate, reply: string | undefined): void
  attempted(attempt: DeliveryAttempt): void
  failed(message: string): void
}

/** The keep-alive agents delivery posts through; owned by the caller so they outlive one webhook. */
export interface DeliveryAgents {
  readonly http: http.Agent
  readonly https: https.Agent
}

interface Lane {
  readonly chatId: number | null
  // The head is the update being sent or waiting for its retry; the rest wait behind it.
  readonly queue: QueuedUpdate[]
  attempts: number
  sending: boolean
  retryTimer: NodeJS.Timeout | undefined
}

interface PostOutcome {
  readonly status?: number
  readonly error?: string
  readonly reply?: string
}

// A webhook reply is a method call; anything bigger than this is not one worth reading.
const MAX_REPLY_BYTES = 1024 * 1024
const READ_TIMEOUT = 'Read timeout expired'

/**
 * Posts updates to a webhook the way Telegram does: one request at a time per chat (a chat's next
 * update waits until the current one got a 2xx), chats in parallel up to max_connections, and a
 * failed update retried with backoff while the ones behind it wait.
 */
export class WebhookDelivery {
  #target: WebhookTarget
  #url: URL
  readonly #timing: DeliveryTiming
  readonly #hooks: DeliveryHooks
  readonly #agents: DeliveryAgents
  readonly #lanes = new Map<number | null, Lane>()
  // Lanes whose head may be sent now, in the order they became ready, so every chat gets a turn.
  readonly #ready = new Set<Lane>()
  readonly #requests = new Set<http.ClientRequest>()
  #sending = 0
  #stopped = false

  constructor(target: WebhookTarget, timing: DeliveryTiming, hooks: DeliveryHooks, agents: DeliveryAgents) {
    this.#target = target
    this.#url = new URL(target.url)
    this.#timing = timing
    this.#hooks = hooks
    this.#agents = agents
  }

  /** Points delivery at a new URL/secret/width; queued updates and retries carry on there. */
  retarget(target: WebhookTarget): void {
    this.#target = target
    this.#url = new URL(target.url)
    this.#pump()
  }

  enqueue(queued: QueuedUpdate): void {
    if (this.#stopped) return
    let lane = this.#lanes.get(queued.chatId)
    if (lane === undefined) {
      lane = { chatId: queued.chatId, queue: [], attempts: 0, sending: false, retryTimer: undefined }
      this.#lanes.set(queued.chatId, lane)
    }
    lane.queue.push(queued)
    if (lane.queue.length === 1 && !lane.sending && lane.retryTimer === undefined) {
      this.#ready.add(lane)
      this.#pump()
    }
  }

  /** Forgets queued updates and pending retries; requests already on the wire finish. */
  dropQueued(): void {
    for (const lane of this.#lanes.values()) {
      if (lane.sending) {
        lane.queue.length = 1
        continue
      }
      clearTimeout(lane.retryTimer)
      this.#ready.delete(lane)
      this.#lanes.delete(lane.chatId)
    }
  }

  /** Stops sending and retrying; requests on the wire finish (and count if they succeed). */
  stop(): void {
    this.#stopped = true
    for (const lane of this.#lanes.values()) clearTimeout(lane.retryTimer)
    this.#lanes.clear()
    this.#ready.clear()
  }

  /** Stops and also aborts the requests on the wire. */
  abort(): void {
    this.stop()
    for (const request of this.#requests) request.destroy()
    this.#requests.clear()
  }

  #pump(): void {
    if (this.#stopped) return
    for (const lane of this.#ready) {
      if (this.#sending >= this.#target.maxConnections) return
      this.#ready.delete(lane)
      this.#send(lane)
    }
  }

  #send(lane: Lane): void {
    const queued = lane.queue[0]
    if (queued === undefined) return
    lane.sending = true
    lane.attempts += 1
    this.#sending += 1
    const url = this.#target.url
    const sentAt = performance.now()
    void this.#post(queued.update).then((outcome) => this.#settle(lane, queued, url, sentAt, outcome))
  }

  #settle(lane: Lane, queued: QueuedUpdate, url: string, sentAt: number, outcome: PostOutcome): void {
    this.#sending -= 1
    lane.sending = false
    const ok = outcome.error === undefined && outcome.status !== undefined && outcome.status >= 200 && outcome.status < 300
    this.#hooks.attempted({
      update_id: queued.update.update_id,
      chat_id: queued.chatId,
      attempt: lane.attempts,
      url,
      ...(outcome.status === undefined ? {} : { status: outcome.status }),
      ...(outcome.error === undefined ? {} : { error: outcome.error }),
      sentAt,
      answeredAt: performance.now(),
    })
    if (ok) {
      this.#hooks.delivered(queued, outcome.reply)
    } else {
      this.#hooks.failed(outcome.error ?? `Wrong response from the webhook: ${outcome.status ?? 0}`)
    }
    if (this.#stopped) return

    if (!ok && this.#hooks.isPending(queued.seq)) {
      const backoff = Math.min(this.#timing.retryMs * 2 ** (lane.attempts - 1), this.#timing.retryMaxMs)
      lane.retryTimer = setTimeout(() => {
        lane.retryTimer = undefined
        this.#advance(lane)
        this.#pump()
      }, backoff)
    } else {
      lane.queue.shift()
      lane.attempts = 0
      this.#advance(lane)
    }
    this.#pump()
  }

  // Makes the lane ready for its next update, skipping dropped ones, or retires it when empty.
  #advance(lane: Lane): void {
    while (lane.queue[0] !== undefined && !this.#hooks.isPending(lane.queue[0].seq)) {
      lane.queue.shift()
      lane.attempts = 0
    }
    if (lane.queue.length === 0) {
      if (this.#lanes.get(lane.chatId) === lane) this.#lanes.delete(lane.chatId)
      return
    }
    this.#ready.add(lane)
  }

  #post(update: Update): Promise<PostOutcome> {
    const url = this.#url
    const { secretToken } = this.#target
    const body = JSON.stringify(update)
    const headers: http.OutgoingHttpHeaders = {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    }
    if (secretToken !== undefined) headers['x-telegram-bot-api-secret-token'] = secretToken
    const secure = url.protocol === 'https:'
    const request = (secure ? https : http).request(url, {
      method: 'POST',
      headers,
      agent: secure ? this.#agents.https : this.#agents.http,
    })

    return new Promise((resolve) => {
      let settled = false
      const finish = (outcome: PostOutcome): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        this.#requests.delete(request)
        resolve(outcome)
      }
      const timer = setTimeout(() => {
        finish({ error: READ_TIMEOUT })
        request.destroy()
      }, this.#timing.timeoutMs)

      request.on('response', (response) => {
        const status = response.statusCode ?? 0
        const wantsReply =
          status >= 200 && status < 300 && (response.headers['content-type'] ?? '').includes('application/json')
        const chunks: Buffer[] = []
        let size = 0
        response.on('data', (chunk: Buffer) => {
          size += chunk.length
          if (wantsReply && size <= MAX_REPLY_BYTES) chunks.push(chunk)
        })
        response.on('end', () => {
          if (status < 200 || status >= 300) {
            finish({ status, error: `Wrong response from the webhook: ${status} ${response.statusMessage ?? ''}`.trimEnd() })
            return
          }
          const reply = wantsReply && size > 0 && size <= MAX_REPLY_BYTES ? Buffer.concat(chunks).toString('utf8') : undefined
          finish(reply === undefined ? { status } : { status, reply })
        })
        response.on('error', (error) => finish({ status, error: describeNetworkError(error) }))
      })
      request.on('error', (error) => finish({ error: describeNetworkError(error) }))
      this.#requests.add(request)
      request.end(body)
    })
  }
}

function describeNetworkError(error: NodeJS.ErrnoException): string {
  switch (error.code) {
    case 'ECONNREFUSED':
      return 'Connection refused'
    case 'ECONNRESET':
      return 'Connection reset by peer'
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'Failed to resolve host: Name or service not known'
    case 'ETIMEDOUT':
      return 'Connection timed out'
    default:
      return `Connection error: ${error.message}`
  }
}
