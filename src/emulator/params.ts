import { badRequest } from './api-error.js'

/**
 * A Bot API call's parameters as received: typed values from a JSON body, or strings from a query
 * string or form body. Telegram accepts both, so the readers below do too.
 */
export type Params = Readonly<Record<string, unknown>>

const INTEGER_PATTERN = /^-?\d+$/u

/** An integer parameter, or undefined when absent; a non-integer is a 400 naming the parameter. */
export function optionalInteger(params: Params, name: string): number | undefined {
  const value = params[name]
  if (value === undefined || value === null || value === '') return undefined
  const number = typeof value === 'string' && INTEGER_PATTERN.test(value.trim()) ? Number(value) : value
  if (typeof number !== 'number' || !Number.isSafeInteger(number)) {
    throw badRequest(`invalid ${name} specified`)
  }
  return number
}

/** An integer parameter that must be present; `emptyProblem` is Telegram's wording when it is not. */
export function requiredInteger(params: Params, name: string, emptyProblem = `${name} is empty`): number {
  const value = optionalInteger(params, name)
  if (value === undefined) throw badRequest(emptyProblem)
  return value
}

/** A string parameter; numbers are accepted as their decimal text, as Telegram does. */
export function optionalString(params: Params, name: string): string | undefined {
  const value = params[name]
  if (value === undefined || value === null) return undefined
  if (typeof value === 'string') return value
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  throw badRequest(`invalid ${name} specified`)
}

/** A boolean parameter: true/false, or "true"/"false"/"1"/"0" from a query string. */
export function optionalBoolean(params: Params, name: string): boolean | undefined {
  const value = params[name]
  if (value === undefined || value === null || value === '') return undefined
  if (typeof value === 'boolean') return value
  if (value === 'true' || value === '1' || value === 1) return true
  if (value === 'false' || value === '0' || value === 0) return false
  throw badRequest(`invalid ${name} specified`)
}

/**
 * An object or array parameter. JSON bodies carry it as a value; query strings and form bodies carry
 * it JSON-serialized, as the Bot API documents.
 */
export function optionalJson(params: Params, name: string, what = name): unknown {
  const value = params[name]
  if (value === undefined || value === null || value === '') return undefined
  if (typeof value !== 'string') return value
  try {
    return JSON.parse(value) as unknown
  } catch {
    throw badRequest(`can't parse ${what} JSON object`)
  }
}

/** The chat_id parameter: an integer id or an "@username". */
export function requiredChatId(params: Params): number | string {
  const value = params['chat_id']
  if (value === undefined || value === null || value === '') throw badRequest('chat_id is empty')
  if (typeof value === 'number') return value
  if (typeof value === 'string') {
    const text = value.trim()
    return INTEGER_PATTERN.test(text) ? Number(text) : text
  }
  throw badRequest('chat not found')
}

/** True when `value` is a plain JSON object (not an array). */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
