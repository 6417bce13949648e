import type { Chat } from 'grammy/types'
import type { BotApiEmulator } from './emulator.js'
import { ANY_METHOD, parseFault } from './faults.js'
import { isRecord } from './params.js'
import type { NewUpdate } from './updates.js'

/** A request to the control API, with its JSON body already parsed. */
export interface ControlRequest {
  readonly method: string
  /** The path after /_emulator/, e.g. "updates". */
  readonly route: string
  readonly query: URLSearchParams
  readonly body: unknown
}

/** The control API's answer: `{ok: true, result}` or `{ok: false, description}` with a status. */
export interface ControlAnswer {
  readonly status: number
  readonly payload: { ok: true; result: unknown } | { ok: false; description: string }
}

const ROUTES =
  'POST updates, GET calls?method=&since=, GET deliveries?since=, GET webhook, POST faults, DELETE faults, POST reset'

type RouteHandler = (emulator: BotApiEmulator, request: ControlRequest) => unknown

// The emulator's test helpers over HTTP, for a demo or benchmark in another process.
const HANDLERS: Readonly<Record<string, RouteHandler>> = {
  'POST updates': (emulator, { body }) => {
    if (!isRecord(body)) throw new TypeError(`POST /_emulator/updates takes a raw Update or {chatId, text}; got ${JSON.stringify(body)}`)
    if (typeof body['text'] !== 'string') return emulator.pushUpdate(body as unknown as NewUpdate)
    const chatId = Number(body['chatId'] ?? body['chat_id'])
    if (!Number.isSafeInteger(chatId) || chatId === 0) {
      throw new TypeError(`{text, chatId} needs chatId as a non-zero integer; got ${JSON.stringify(body['chatId'] ?? body['chat_id'])}`)
    }
    return emulator.sendText({
      chatId,
      text: body['text'],
      ...(isRecord(body['from']) ? { from: body['from'] } : {}),
      ...(typeof body['threadId'] === 'number' ? { threadId: body['threadId'] } : {}),
      ...(isChatType(body['chatType']) ? { chatType: body['chatType'] } : {}),
    })
  },
  'GET calls': (emulator, { query }) => {
    const since = readSince(query)
    const method = query.get('method')?.toLowerCase()
    const calls = emulator.calls.slice(since)
    return method ? calls.filter((call) => call.method.toLowerCase() === method) : calls
  },
  'GET deliveries': (emulator, { query }) => emulator.deliveries.slice(readSince(query)),
  'GET webhook': (emulator) => emulator.webhookInfo,
  'POST faults': (emulator, { body }) => {
    if (!isRecord(body)) throw new TypeError(`POST /_emulator/faults takes {method?, fault, times?}; got ${JSON.stringify(body)}`)
    const method = typeof body['method'] === 'string' ? body['method'] : ANY_METHOD
    const times = body['times']
    if (times !== undefined && typeof times !== 'number') throw new TypeError(`"times" must be a number; got ${JSON.stringify(times)}`)
    emulator.injectFault(method, parseFault(body['fault']), times === undefined ? {} : { times })
    return true
  },
  'DELETE faults': (emulator) => {
    emulator.clearFaults()
    return true
  },
  'POST reset': (emulator) => {
    emulator.reset()
    return true
  },
}

/** Answers one control request; bad input is a 400 whose description says what was expected. */
export function handleControlRequest(emulator: BotApiEmulator, request: ControlRequest): ControlAnswer {
  const handler = HANDLERS[`${request.method.toUpperCase()} ${request.route}`]
  if (handler === undefined) {
    return { status: 404, payload: { ok: false, description: `No control route ${request.method} /_emulator/${request.route}; there are: ${ROUTES}` } }
  }
  try {
    return { status: 200, payload: { ok: true, result: handler(emulator, request) } }
  } catch (error) {
    if (error instanceof TypeError) return { status: 400, payload: { ok: false, description: error.message } }
    throw error
  }
}

function isChatType(value: unknown): value is Chat['type'] {
  return value === 'private' || value === 'group' || value === 'supergroup' || value === 'channel'
}

function readSince(query: URLSearchParams): number {
  const since = Number(query.get('since') ?? 0)
  if (!Number.isSafeInteger(since) || since < 0) {
    throw new TypeError(`"since" counts entries already seen: a whole number ≥ 0; got "${query.get('since')}"`)
  }
  return since
}
