import type { IncomingMessage, ServerResponse } from 'node:http'
import { ApiError, badRequest } from './api-error.js'
import { isRecord, type Params } from './params.js'
import { MAX_UPLOAD_SIZE, readMultipart } from './uploads.js'

// Bot API calls are small JSON; the biggest real one (a 4096-character message with markup) is tens of KB.
const MAX_BODY_BYTES = 10 * 1024 * 1024

// An upload may be 50 MB; the form around it adds a little.
const MAX_MULTIPART_BYTES = MAX_UPLOAD_SIZE + 1024 * 1024

/** Reads a request body, refusing (413) one that is unreasonably big for a Bot API call. */
export function readBody(request: IncomingMessage, maxBytes = MAX_BODY_BYTES): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    request.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size <= maxBytes) chunks.push(chunk)
    })
    request.on('end', () => {
      if (size > maxBytes) reject(new ApiError(413, 'Request Entity Too Large'))
      else resolve(chunks.length === 1 && chunks[0] ? chunks[0] : Buffer.concat(chunks))
    })
    request.on('error', reject)
  })
}

/**
 * A call's parameters from its query string and body, as Telegram takes them: JSON, or
 * application/x-www-form-urlencoded. Body values win over query values of the same name.
 */
export async function readParams(request: IncomingMessage, query: string): Promise<Params> {
  const params: Record<string, unknown> = {}
  if (query !== '') for (const [name, value] of new URLSearchParams(query)) params[name] = value
  const type = (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? ''
  const body = await readBody(request, type === 'multipart/form-data' ? MAX_MULTIPART_BYTES : MAX_BODY_BYTES)
  if (body.length === 0) return params

  if (type === 'application/json' || type === '') {
    let parsed: unknown
    try {
      parsed = JSON.parse(body.toString('utf8')) as unknown
    } catch {
      throw badRequest("can't parse JSON object")
    }
    if (!isRecord(parsed)) throw badRequest("can't parse JSON object")
    return query === '' ? parsed : Object.assign(params, parsed)
  }
  if (type === 'application/x-www-form-urlencoded') {
    for (const [name, value] of new URLSearchParams(body.toString('utf8'))) params[name] = value
    return params
  }
  if (type === 'multipart/form-data') {
    return Object.assign(params, await readMultipart(body, request.headers['content-type'] ?? ''))
  }
  throw badRequest(`unsupported content type "${type}"; send application/json or application/x-www-form-urlencoded`)
}

/** Answers with a JSON body and the given status. */
export function sendJson(response: ServerResponse, status: number, payload: unknown): void {
  const body = JSON.stringify(payload)
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
  })
  response.end(body)
}
