import fs from 'node:fs'
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import type { Update } from 'grammy/types'
import type { BotApiEmulator } from '../emulator/index.js'
import { imageInfo } from '../telegram/image-size.js'
import { userMessage, type PageEvent } from './page-events.js'

/** A chat of the sandbox and who may write in it. */
export interface SandboxChat {
  readonly id: number
  readonly type: 'private' | 'group'
  readonly title: string
  readonly users: readonly SandboxUser[]
}

export interface SandboxUser {
  readonly id: number
  readonly firstName: string
  readonly username: string
}

export interface PageServerOptions {
  readonly emulator: BotApiEmulator
  readonly chats: readonly SandboxChat[]
  /** The directory holding index.html, app.js and the rest of the page. */
  readonly staticDir: string
  /** What the page shows about the setup: the brain, the state directory. */
  readonly about: Readonly<Record<string, string>>
}

// The page's files, by URL path: nothing else under staticDir is served.
const STATIC_FILES: Readonly<Record<string, { file: string; type: string }>> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/telegram-html.js': { file: 'telegram-html.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
}
// A second wall behind the page's own sanitising: only this origin's scripts, styles and images.
const CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
// Requests from the page carry this header: a cross-site form or script cannot send it without a
// CORS preflight, which this server never grants.
export const PAGE_HEADER = 'x-chat-page'
const MAX_TEXT_BODY_BYTES = 64 * 1024
// A user may send bigger files than a bot may download (20 MB): the service then says so.
const MAX_UPLOAD_BYTES = 50 * 1024 * 1024
// Telegram's limit for a message's text; the emulator refuses longer ones too.
const MAX_TEXT_CHARS = 4096
const SSE_KEEPALIVE_MS = 15_000

/**
 * The chat page's HTTP server, on 127.0.0.1 only: the page's static files, `/api/events` (every
 * {@link PageEvent} so far, then live, as server-sent events), `/api/messages` and `/api/uploads`
 * (a user writes or sends a file, through the emulator, so the service gets a real update) and
 * `/api/files/<id>` (a file Telegram holds: a user's upload or what the bot sent).
 */
export class PageServer {
  readonly #options: PageServerOptions
  readonly #server: http.Server
  readonly #events: PageEvent[] = []
  readonly #streams = new Set<ServerResponse>()
  #keepAlive: NodeJS.Timeout | undefined
  #port = 0

  constructor(options: PageServerOptions) {
    this.#options = options
    this.#server = http.createServer((request, response) => {
      this.#handle(request, response).catch((error: unknown) => {
        if (!response.headersSent) sendJson(response, error instanceof BodyTooLarge ? 413 : 500, { error: (error as Error).message })
        else response.destroy()
      })
    })
  }

  /** Listens on 127.0.0.1 (port 0: any free one); resolves with the page's URL. */
  async listen(port: number): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject)
      this.#server.listen(port, '127.0.0.1', () => {
        this.#server.off('error', reject)
        resolve()
      })
    })
    this.#port = (this.#server.address() as AddressInfo).port
    this.#keepAlive = setInterval(() => {
      for (const stream of this.#streams) stream.write(': keep-alive\n\n')
    }, SSE_KEEPALIVE_MS)
    this.#keepAlive.unref()
    return `http://127.0.0.1:${this.#port}/`
  }

  /** Records an event and sends it to every open page. */
  publish(event: PageEvent): void {
    this.#events.push(event)
    const frame = sseFrame('page', event)
    for (const stream of this.#streams) stream.write(frame)
  }

  async close(): Promise<void> {
    clearInterval(this.#keepAlive)
    for (const stream of this.#streams) stream.end()
    this.#server.closeAllConnections()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1')
    // Another site's page whose name resolves to 127.0.0.1 (DNS rebinding) names itself in Host.
    const host = request.headers.host ?? ''
    if (host !== `127.0.0.1:${this.#port}` && host !== `localhost:${this.#port}`) {
      sendJson(response, 403, { error: `this page answers on 127.0.0.1:${this.#port} only` })
      return
    }
    const method = request.method ?? 'GET'
    const page = STATIC_FILES[url.pathname]
    if (method === 'GET' && page !== undefined) {
      const body = await fs.promises.readFile(path.join(this.#options.staticDir, page.file))
      response.writeHead(200, { 'content-type': page.type, 'cache-control': 'no-cache', 'content-security-policy': CONTENT_SECURITY_POLICY, 'x-content-type-options': 'nosniff' })
      response.end(body)
      return
    }
    if (method === 'GET' && url.pathname === '/favicon.ico') {
      response.writeHead(204).end()
      return
    }
    if (method === 'GET' && url.pathname === '/api/events') return this.#stream(response)
    if (method === 'GET' && url.pathname.startsWith('/api/files/')) return this.#file(decodeURIComponent(url.pathname.slice('/api/files/'.length)), response)
    if (method === 'POST' && (url.pathname === '/api/messages' || url.pathname === '/api/uploads')) {
      if (request.headers[PAGE_HEADER] !== '1') {
        sendJson(response, 403, { error: `requests must come from the chat page (${PAGE_HEADER} header)` })
        return
      }
      const update = url.pathname === '/api/messages' ? await this.#sendText(request) : await this.#upload(request, url.searchParams)
      if (typeof update === 'string') {
        sendJson(response, 400, { error: update })
        return
      }
      this.publish({ type: 'message', at: Date.now(), message: userMessage(update) })
      sendJson(response, 200, { update_id: update.update_id, message_id: update.message?.message_id })
      return
    }
    sendJson(response, 404, { error: `no ${method} ${url.pathname}` })
  }

  #stream(response: ServerResponse): void {
    response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
    // A page that reconnects starts over from everything so far.
    response.write(sseFrame('reset', { chats: this.#options.chats, about: this.#options.about }))
    for (const event of this.#events) response.write(sseFrame('page', event))
    this.#streams.add(response)
    response.on('close', () => this.#streams.delete(response))
  }

  #file(fileId: string, response: ServerResponse): void {
    const file = this.#options.emulator.file(fileId)
    if (file === undefined) {
      sendJson(response, 404, { error: 'no such file' })
      return
    }
    const image = imageInfo(file.bytes)
    response.writeHead(200, {
      'content-type': image?.mimeType ?? 'application/octet-stream',
      'content-length': file.bytes.length,
      // A document is a download, never rendered in the page's origin.
      ...(image === undefined ? { 'content-disposition': 'attachment' } : {}),
      'x-content-type-options': 'nosniff',
      'cache-control': 'private, max-age=3600',
    })
    response.end(file.bytes)
  }

  async #sendText(request: IncomingMessage): Promise<Update | string> {
    let body: unknown
    try {
      body = JSON.parse((await readBody(request, MAX_TEXT_BODY_BYTES)).toString('utf8')) as unknown
    } catch {
      return 'expected JSON: {"chatId": …, "fromId": …, "text": …}'
    }
    const { chatId, fromId, text } = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>
    const sender = this.#sender(chatId, fromId)
    if (typeof sender === 'string') return sender
    if (typeof text !== 'string' || text.trim() === '') return 'the message is empty'
    if (text.length > MAX_TEXT_CHARS) return `a message is at most ${MAX_TEXT_CHARS} characters`
    return this.#options.emulator.sendText({ ...sender, text })
  }

  async #upload(request: IncomingMessage, query: URLSearchParams): Promise<Update | string> {
    const sender = this.#sender(Number(query.get('chatId')), Number(query.get('fromId')))
    if (typeof sender === 'string') return sender
    const bytes = await readBody(request, MAX_UPLOAD_BYTES)
    if (bytes.length === 0) return 'the file is empty'
    const caption = query.get('caption')?.trim() || undefined
    const fileName = path.basename(query.get('name') || 'file')
    const image = imageInfo(bytes)
    const { emulator } = this.#options
    if (image !== undefined) return emulator.sendPhoto({ ...sender, bytes, width: image.width, height: image.height, ...(caption ? { caption } : {}) })
    const mimeType = request.headers['content-type'] || 'application/octet-stream'
    return emulator.sendDocument({ ...sender, bytes, fileName, mimeType, ...(caption ? { caption } : {}) })
  }

  #sender(chatId: unknown, fromId: unknown): { chatId: number; chatType: 'private' | 'group'; from: { id: number; first_name: string; username: string } } | string {
    const chat = this.#options.chats.find((candidate) => candidate.id === chatId)
    if (chat === undefined) return `no sandbox chat ${String(chatId)}`
    const user = chat.users.find((candidate) => candidate.id === fromId)
    if (user === undefined) return `no user ${String(fromId)} in ${chat.title}`
    return { chatId: chat.id, chatType: chat.type, from: { id: user.id, first_name: user.firstName, username: user.username } }
  }
}

function sseFrame(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`
}

function sendJson(response: ServerResponse, status: number, payload: unknown): void {
  const body = JSON.stringify(payload)
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  response.end(body)
}

class BodyTooLarge extends Error {}

function readBody(request: IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    request.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > maxBytes) {
        reject(new BodyTooLarge(`at most ${maxBytes} bytes`))
        request.destroy()
        return
      }
      chunks.push(chunk)
    })
    request.on('end', () => resolve(Buffer.concat(chunks)))
    request.on('error', reject)
  })
}
