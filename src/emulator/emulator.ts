import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { Chat, File, Message, Update, UserFromGetMe, WebhookInfo } from 'grammy/types'
import {
  ApiError,
  ENTITIES_REJECTED,
  INTERNAL_SERVER_ERROR,
  NOT_FOUND,
  REACTION_INVALID,
  UNAUTHORIZED,
  tooManyRequests,
} from './api-error.js'
import {
  UpdateBuilder,
  type AudioMessageOptions,
  type DocumentMessageOptions,
  type MessageEditOptions,
  type PhotoMessageOptions,
  type GroupMigrationOptions,
  type TextMessageOptions,
  type VideoMessageOptions,
  type VideoNoteMessageOptions,
  type VoiceMessageOptions,
} from './builders.js'
import { ChatDirectory, type ChatSettings } from './chats.js'
import { handleControlRequest } from './control.js'
import type { DeliveryAttempt } from './delivery.js'
import { FaultTable, type FailureFault, type Fault, type FaultOptions } from './faults.js'
import { FileStore, type EmulatedFile } from './files.js'
import { readBody, readParams, sendJson } from './http-io.js'
import { findMethod, type MethodContext } from './methods.js'
import { isRecord, type Params } from './params.js'
import { Recorder, type WaitOptions } from './recorder.js'
import { UpdateFeed, type NewUpdate } from './updates.js'

/** One Bot API call as the emulator answered it. */
export interface RecordedCall {
  /** 1-based position in `emulator.calls`. */
  readonly seq: number
  /** The method's canonical name ("sendMessage"), or the path as sent when unknown; "downloadFile" for the file server. */
  readonly method: string
  readonly params: Params
  /** When the request arrived, performance.now() ms (same clock as deliveries' sentAt/answeredAt). */
  readonly at: number
  /** When the request arrived, Date.now() ms. */
  readonly wallClockMs: number
  /** The HTTP status answered; 0 when the connection was dropped by a `refuse` fault. */
  readonly status: number
  readonly ok: boolean
  readonly description?: string
  readonly result?: unknown
  /** 'webhook_reply' when the call came back in a webhook response body instead of a request. */
  readonly source: 'http' | 'webhook_reply'
}

/** How the emulated Telegram is set up. */
export interface EmulatorOptions {
  /** The one bot token it accepts, like "123456:TEST-token"; the digits are the bot's user id. */
  readonly token: string
  readonly bot?: { readonly id?: number; readonly username?: string; readonly firstName?: string }
  /** How long a webhook gets to answer an update before the attempt counts as failed (default 60 s). */
  readonly deliveryTimeoutMs?: number
  /** The first retry's delay after a failed delivery; it doubles per attempt (default 1 s). */
  readonly deliveryRetryMs?: number
  /** The longest delay between retries (default 32 × deliveryRetryMs). */
  readonly deliveryRetryMaxMs?: number
  /** The first update_id handed out (default: random, as Telegram does after a quiet week). */
  readonly firstUpdateId?: number
}

/** Where the emulator's HTTP server listens. */
export interface ListenOptions {
  /** 0 (the default) picks a free port. */
  readonly port?: number
  readonly host?: string
}

export const DEFAULT_DELIVERY_TIMEOUT_MS = 60_000
export const DEFAULT_DELIVERY_RETRY_MS = 1_000
const MAX_BACKOFF_FACTOR = 32
const DEFAULT_HOST = '127.0.0.1'
const TOKEN_PATTERN = /^(\d{1,20}):[A-Za-z0-9_-]{1,200}$/u
const FIRST_UPDATE_ID_RANGE = { min: 100_000_000, max: 900_000_000 } as const
// Longer than any client's idle keep-alive (Node's is 5 s), so the client always closes first.
const KEEP_ALIVE_TIMEOUT_MS = 65_000
const DOWNLOAD_METHOD = 'downloadFile'
const CONTROL_PREFIX = '/_emulator/'
const FILE_PREFIX = '/file/bot'
const BOT_PREFIX = '/bot'
const DESCRIBED_PARAMS_LENGTH = 160

/**
 * A local Telegram Bot API: a real HTTP server that speaks the Bot API wire format, so a service
 * using grammY with `apiRoot: emulator.url` cannot tell it from Telegram. It delivers injected
 * updates to the webhook (or getUpdates), records every call, and fails on request (faults).
 */
export class BotApiEmulator {
  /** The bot as getMe describes it. */
  readonly bot: UserFromGetMe
  readonly #token: string
  readonly #chats = new ChatDirectory()
  readonly #files = new FileStore()
  readonly #faults = new FaultTable()
  readonly #feed: UpdateFeed
  readonly #builder: UpdateBuilder
  readonly #context: MethodContext
  readonly #calls = new Recorder<RecordedCall>('call', describeCall)
  readonly #deliveries = new Recorder<DeliveryAttempt>('delivery', describeDelivery)
  readonly #server: http.Server
  // Latency faults in progress, so close() does not wait for them.
  readonly #stalls = new Set<NodeJS.Timeout>()
  #url: string | undefined

  constructor(options: EmulatorOptions) {
    const match = TOKEN_PATTERN.exec(options.token)
    if (match?.[1] === undefined) {
      throw new TypeError(`The emulator's token must look like a bot token, "123456:ABC-def_ghi"; got "${options.token}"`)
    }
    this.#token = options.token
    this.bot = {
      id: options.bot?.id ?? Number(match[1]),
      is_bot: true,
      first_name: options.bot?.firstName ?? 'Emulated Bot',
      username: options.bot?.username ?? 'emulated_bot',
      can_join_groups: true,
      can_read_all_group_messages: false,
      supports_inline_queries: false,
      can_connect_to_business: false,
      has_main_web_app: false,
      has_topics_enabled: false,
      allows_users_to_create_topics: false,
      can_manage_bots: false,
      supports_join_request_queries: false,
    }

    const retryMs = positive('deliveryRetryMs', options.deliveryRetryMs ?? DEFAULT_DELIVERY_RETRY_MS)
    this.#feed = new UpdateFeed(
      options.firstUpdateId ?? randomFirstUpdateId(),
      {
        timeoutMs: positive('deliveryTimeoutMs', options.deliveryTimeoutMs ?? DEFAULT_DELIVERY_TIMEOUT_MS),
        retryMs,
        retryMaxMs: positive('deliveryRetryMaxMs', options.deliveryRetryMaxMs ?? retryMs * MAX_BACKOFF_FACTOR),
      },
      {
        attempted: (attempt) => this.#deliveries.add(attempt),
        replied: (_update, reply) => void this.#runWebhookReply(reply),
      },
    )
    this.#context = { bot: this.bot, chats: this.#chats, files: this.#files, feed: this.#feed }
    this.#builder = new UpdateBuilder(this.#chats, this.#files, (update) => this.pushUpdate(update))
    this.#server = http.createServer((request, response) => void this.#route(request, response))
    this.#server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS
  }

  /** The apiRoot to give grammY (`new Api(token, { apiRoot: emulator.url })`), e.g. "http://127.0.0.1:8081". */
  get url(): string {
    if (this.#url === undefined) throw new Error('The emulator is not listening yet; await emulator.listen() (or use startEmulator)')
    return this.#url
  }

  /** The token the emulator accepts. */
  get token(): string {
    return this.#token
  }

  /** Every API call so far, in the order answered. */
  get calls(): readonly RecordedCall[] {
    return this.#calls.entries
  }

  /** The calls of one method (any case), e.g. `callsOf('sendMessage')`. */
  callsOf(method: string): RecordedCall[] {
    const key = method.toLowerCase()
    return this.#calls.entries.filter((call) => call.method.toLowerCase() === key)
  }

  /** Every webhook delivery attempt so far, in the order they were answered. */
  get deliveries(): readonly DeliveryAttempt[] {
    return this.#deliveries.entries
  }

  /** What getWebhookInfo would answer right now. */
  get webhookInfo(): WebhookInfo {
    return this.#feed.webhookInfo()
  }

  /**
   * Resolves with the first call (already recorded or still to come) that matches; rejects after
   * `timeoutMs` (default 5 s) with the recent calls listed. Pass `since` to skip older calls.
   */
  waitFor(predicate: (call: RecordedCall) => boolean, options?: WaitOptions): Promise<RecordedCall> {
    return this.#calls.waitFor(predicate, options)
  }

  /** Like waitFor, over webhook delivery attempts. */
  waitForDelivery(predicate: (attempt: DeliveryAttempt) => boolean, options?: WaitOptions): Promise<DeliveryAttempt> {
    return this.#deliveries.waitFor(predicate, options)
  }

  /**
   * Injects a raw update (update_id assigned when missing) for the webhook or getUpdates. The chat
   * and message it carries become known, so the bot may react and reply to them.
   */
  pushUpdate(update: NewUpdate): Update {
    for (const message of carriedMessages(update)) this.#chats.remember(message)
    return this.#feed.push(update)
  }

  /** A user writes `text` in a chat; returns the update pushed. */
  sendText(options: TextMessageOptions): Update {
    return this.#builder.text(options)
  }

  /** A user sends a photo in Telegram's sizes, smallest first (each registered for getFile/download), with an optional caption. */
  sendPhoto(options: PhotoMessageOptions): Update {
    return this.#builder.photo(options)
  }

  /** A user sends a voice message (registered for getFile/download). */
  sendVoice(options: VoiceMessageOptions): Update {
    return this.#builder.voice(options)
  }

  /** A user sends a document (registered for getFile/download) with an optional caption. */
  sendDocument(options: DocumentMessageOptions): Update {
    return this.#builder.document(options)
  }

  /** A user sends a music file (registered for getFile/download) with an optional caption. */
  sendAudio(options: AudioMessageOptions): Update {
    return this.#builder.audio(options)
  }

  /** A user sends a video (registered for getFile/download) with an optional caption. */
  sendVideo(options: VideoMessageOptions): Update {
    return this.#builder.video(options)
  }

  /** A user sends a round video message (registered for getFile/download); these never have a caption. */
  sendVideoNote(options: VideoNoteMessageOptions): Update {
    return this.#builder.videoNote(options)
  }

  /**
   * A user edits a message they sent (its text, or a media message's caption); pushes the
   * edited_message update (edited_channel_post in a channel) with edit_date, subject to allowed_updates.
   */
  editUserMessage(options: MessageEditOptions): Update {
    return this.#builder.edit(options)
  }

  /**
   * Upgrades a group to a supergroup: pushes the two service messages Telegram sends, and from
   * then on refuses calls to the old id with `migrate_to_chat_id`. Returns both updates.
   */
  migrateGroup(options: GroupMigrationOptions): [Update, Update] {
    return this.#builder.migrate(options)
  }

  /** A user deletes a message (Telegram tells the bot nothing); replies to it find it gone. */
  deleteUserMessage(chatId: number, messageId: number): void {
    const known = this.#chats.find(chatId)
    if (known?.messages.delete(messageId) !== true) throw new TypeError(`deleteUserMessage: message ${messageId} is not known in chat ${chatId}`)
  }

  /** Makes a chat known (or updates it), e.g. to restrict its allowed reactions. */
  addChat(settings: ChatSettings): Chat {
    return this.#chats.ensure(settings).chat
  }

  /** Registers a file for getFile and the file server; returns what getFile answers. */
  addFile(file: EmulatedFile): File {
    return this.#files.add(file)
  }

  /** A file the emulated Telegram holds (a user's upload or one the bot sent): what getFile answers, and its bytes. */
  file(fileId: string): { readonly info: File; readonly bytes: Buffer } | undefined {
    const info = this.#files.info(fileId)
    const bytes = info === undefined ? undefined : this.#files.bytesAt(info.file_path)
    return info === undefined || bytes === undefined ? undefined : { info: { ...info }, bytes }
  }

  /**
   * Makes calls to `method` (any case; '*' for all, downloads included) misbehave, `times` times
   * or until clearFaults().
   */
  injectFault(method: string, fault: Fault, options?: FaultOptions): void {
    this.#faults.add(method, fault, options)
  }

  /** Disarms every fault, whatever its remaining `times`. */
  clearFaults(): void {
    this.#faults.clear()
  }

  /**
   * Forgets what happened: calls, deliveries, faults, undelivered updates, chats, messages and
   * files. The webhook registration stays (the service under test registered it once), and
   * update ids keep growing so a service that deduplicates by update_id stays correct.
   */
  reset(): void {
    this.#feed.reset()
    this.#chats.clear()
    this.#files.clear()
    this.#faults.clear()
    this.#calls.clear()
    this.#deliveries.clear()
  }

  /** Starts the HTTP server; resolves with the URL (also `emulator.url`). */
  async listen(options: ListenOptions = {}): Promise<string> {
    const host = options.host ?? DEFAULT_HOST
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject)
      this.#server.listen(options.port ?? 0, host, () => {
        this.#server.off('error', reject)
        resolve()
      })
    })
    const { port } = this.#server.address() as AddressInfo
    this.#url = `http://${urlHost(host)}:${port}`
    return this.#url
  }

  /** Stops delivering, drops every connection and closes the server. */
  async close(): Promise<void> {
    this.#feed.close()
    for (const stall of this.#stalls) clearTimeout(stall)
    this.#stalls.clear()
    if (!this.#server.listening) return
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()))
    this.#server.closeAllConnections()
    await closed
  }

  async #route(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const target = request.url ?? '/'
    const queryAt = target.indexOf('?')
    const path = queryAt < 0 ? target : target.slice(0, queryAt)
    const query = queryAt < 0 ? '' : target.slice(queryAt + 1)
    try {
      if (path.startsWith(BOT_PREFIX)) await this.#serveBotApi(request, response, path, query)
      else if (path.startsWith(FILE_PREFIX)) await this.#serveFile(request, response, path)
      else if (path.startsWith(CONTROL_PREFIX)) await this.#serveControl(request, response, path, query)
      else sendError(response, NOT_FOUND())
    } catch (error) {
      if (!response.headersSent) sendError(response, error instanceof ApiError ? error : INTERNAL_SERVER_ERROR())
    }
  }

  async #serveBotApi(request: IncomingMessage, response: ServerResponse, path: string, query: string): Promise<void> {
    const at = performance.now()
    const wallClockMs = Date.now()
    const slash = path.indexOf('/', BOT_PREFIX.length)
    const token = path.slice(BOT_PREFIX.length, slash < 0 ? undefined : slash)
    const requested = slash < 0 ? '' : safeDecode(path.slice(slash + 1))
    const record = { at, wallClockMs, source: 'http' } as const

    let params: Params = {}
    let unreadable: ApiError | undefined
    try {
      params = await readParams(request, query)
    } catch (error) {
      if (!(error instanceof ApiError)) throw error
      unreadable = error
    }
    const method = findMethod(requested)
    const call = { ...record, method: method?.name ?? requested, params }
    if (token !== this.#token) {
      this.#answerError(response, call, UNAUTHORIZED())
      return
    }
    if (method === undefined) {
      this.#answerError(response, call, NOT_FOUND())
      return
    }
    if (unreadable !== undefined) {
      this.#answerError(response, call, unreadable)
      return
    }
    if (await this.#misbehave(method.name, request, response, call)) return

    const hangUp = new AbortController()
    response.on('close', () => {
      if (!response.writableFinished) hangUp.abort()
    })
    try {
      const answer = await method.handler(params, this.#context, hangUp.signal)
      const described = answer.description === undefined ? {} : { description: answer.description }
      sendJson(response, 200, { ok: true, result: answer.result, ...described })
      this.#record({ ...call, status: 200, ok: true, result: answer.result, ...described })
    } catch (error) {
      if (error instanceof ApiError) {
        this.#answerError(response, call, error)
        return
      }
      sendError(response, INTERNAL_SERVER_ERROR())
      this.#record({ ...call, status: 500, ok: false, description: `Internal Server Error (emulator bug: ${String(error)})` })
    }
  }

  async #serveFile(request: IncomingMessage, response: ServerResponse, path: string): Promise<void> {
    const at = performance.now()
    const wallClockMs = Date.now()
    await readBody(request)
    const slash = path.indexOf('/', FILE_PREFIX.length)
    const token = path.slice(FILE_PREFIX.length, slash < 0 ? undefined : slash)
    const filePath = slash < 0 ? '' : safeDecode(path.slice(slash + 1))
    const call = { at, wallClockMs, source: 'http', method: DOWNLOAD_METHOD, params: { file_path: filePath } } as const
    if (token !== this.#token) {
      this.#answerError(response, call, UNAUTHORIZED())
      return
    }
    if (await this.#misbehave(DOWNLOAD_METHOD, request, response, call)) return
    const bytes = this.#files.bytesAt(filePath)
    if (bytes === undefined) {
      this.#answerError(response, call, NOT_FOUND())
      return
    }
    response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length })
    response.end(bytes)
    this.#record({ ...call, status: 200, ok: true })
  }

  async #serveControl(request: IncomingMessage, response: ServerResponse, path: string, query: string): Promise<void> {
    const body = await readBody(request)
    let payload: unknown
    try {
      payload = body.length === 0 ? undefined : (JSON.parse(body.toString('utf8')) as unknown)
    } catch {
      sendJson(response, 400, { ok: false, description: 'The control API takes JSON bodies; this one is not valid JSON' })
      return
    }
    const answer = handleControlRequest(this, {
      method: request.method ?? 'GET',
      route: path.slice(CONTROL_PREFIX.length),
      query: new URLSearchParams(query),
      body: payload,
    })
    sendJson(response, answer.status, answer.payload)
  }

  // Applies armed faults; true when the call was answered (or dropped) by one.
  async #misbehave(method: string, request: IncomingMessage, response: ServerResponse, call: PendingCall): Promise<boolean> {
    const verdict = this.#faults.take(method, call.params)
    if (verdict === undefined) return false
    if (verdict.delayMs > 0) await this.#stall(verdict.delayMs)
    const failure = verdict.failure
    if (failure === undefined) return false
    if (failure.kind === 'refuse') {
      request.socket.destroy()
      this.#record({ ...call, status: 0, ok: false, description: 'connection dropped (refuse fault)' })
      return true
    }
    this.#answerError(response, call, faultError(failure))
    return true
  }

  #stall(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#stalls.delete(timer)
        resolve()
      }, ms)
      this.#stalls.add(timer)
    })
  }

  #answerError(response: ServerResponse, call: PendingCall, error: ApiError): void {
    sendError(response, error)
    this.#record({ ...call, status: error.errorCode, ok: false, description: error.description })
  }

  #record(call: Omit<RecordedCall, 'seq'>): void {
    this.#calls.add({ seq: this.#calls.entries.length + 1, ...call })
  }

  // Telegram executes a method sent back in the webhook's response body and reports nothing.
  async #runWebhookReply(reply: string): Promise<void> {
    let body: unknown
    try {
      body = JSON.parse(reply) as unknown
    } catch {
      return
    }
    if (!isRecord(body) || typeof body['method'] !== 'string') return
    const { method: requested, ...params } = body
    const method = findMethod(requested)
    const call = { at: performance.now(), wallClockMs: Date.now(), source: 'webhook_reply', method: method?.name ?? requested, params } as const
    if (method === undefined) {
      this.#record({ ...call, status: 404, ok: false, description: 'Not Found' })
      return
    }
    try {
      const answer = await method.handler(params, this.#context, new AbortController().signal)
      this.#record({ ...call, status: 200, ok: true, result: answer.result })
    } catch (error) {
      const failure = error instanceof ApiError ? error : INTERNAL_SERVER_ERROR()
      this.#record({ ...call, status: failure.errorCode, ok: false, description: failure.description })
    }
  }
}

type PendingCall = Omit<RecordedCall, 'seq' | 'status' | 'ok' | 'description' | 'result'>

/** Starts an emulator listening on `host:port` (default 127.0.0.1 and a free port). */
export async function startEmulator(options: EmulatorOptions & ListenOptions): Promise<BotApiEmulator> {
  const emulator = new BotApiEmulator(options)
  await emulator.listen({
    ...(options.port === undefined ? {} : { port: options.port }),
    ...(options.host === undefined ? {} : { host: options.host }),
  })
  return emulator
}

function faultError(fault: Exclude<FailureFault, { kind: 'refuse' }>): ApiError {
  switch (fault.kind) {
    case 'rate_limit':
      return tooManyRequests(fault.retryAfter)
    case 'server_error':
      return INTERNAL_SERVER_ERROR()
    case 'reaction_invalid':
      return REACTION_INVALID()
    case 'entities_rejected':
      return ENTITIES_REJECTED()
  }
}

function sendError(response: ServerResponse, error: ApiError): void {
  sendJson(response, error.errorCode, {
    ok: false,
    error_code: error.errorCode,
    description: error.description,
    ...(error.parameters === undefined ? {} : { parameters: error.parameters }),
  })
}

const MESSAGE_KINDS = ['message', 'edited_message', 'channel_post', 'edited_channel_post', 'business_message', 'edited_business_message'] as const

function carriedMessages(update: NewUpdate): Message[] {
  const messages: Message[] = []
  for (const kind of MESSAGE_KINDS) {
    const message: unknown = update[kind]
    if (isRecord(message) && typeof message['message_id'] === 'number' && isRecord(message['chat']) && typeof message['chat']['id'] === 'number') {
      messages.push(message as unknown as Message)
    }
  }
  return messages
}

function positive(name: string, value: number): number {
  if (!(Number.isFinite(value) && value > 0)) throw new TypeError(`Emulator option ${name} must be a positive number of ms; got ${value}`)
  return value
}

function randomFirstUpdateId(): number {
  const { min, max } = FIRST_UPDATE_ID_RANGE
  return min + Math.floor(Math.random() * (max - min))
}

function urlHost(host: string): string {
  if (host === '0.0.0.0' || host === '') return DEFAULT_HOST
  if (host === '::') return '[::1]'
  return host.includes(':') ? `[${host}]` : host
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}

function describeCall(call: RecordedCall): string {
  const params = JSON.stringify(call.params)
  const shown = params.length > DESCRIBED_PARAMS_LENGTH ? `${params.slice(0, DESCRIBED_PARAMS_LENGTH)}…` : params
  return `#${call.seq} ${call.method} → ${call.status}${call.description ? ` ${call.description}` : ''} ${shown}`
}

function describeDelivery(attempt: DeliveryAttempt): string {
  const outcome = attempt.error ?? String(attempt.status)
  return `update ${attempt.update_id} chat ${attempt.chat_id ?? '-'} attempt ${attempt.attempt} → ${outcome}`
}
