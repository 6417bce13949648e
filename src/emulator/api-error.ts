import type { ResponseParameters } from 'grammy/types'

/**
 * A Bot API failure, answered the way Telegram answers it: the HTTP status equals `error_code` and
 * the description is Telegram's own wording, so clients that match on it behave as in production.
 */
export class ApiError extends Error {
  readonly errorCode: number
  readonly description: string
  readonly parameters: ResponseParameters | undefined

  constructor(errorCode: number, description: string, parameters?: ResponseParameters) {
    super(description)
    this.name = 'ApiError'
    this.errorCode = errorCode
    this.description = description
    this.parameters = parameters
  }
}

/** 400 "Bad Request: <problem>", the shape of nearly every validation failure. */
export function badRequest(problem: string): ApiError {
  return new ApiError(400, `Bad Request: ${problem}`)
}

/** 429 with `parameters.retry_after`, as Telegram's flood control answers. */
export function tooManyRequests(retryAfterS: number): ApiError {
  return new ApiError(429, `Too Many Requests: retry after ${retryAfterS}`, { retry_after: retryAfterS })
}

/** A token other than the emulator's. */
export const UNAUTHORIZED = (): ApiError => new ApiError(401, 'Unauthorized')
/** An unknown method or path. */
export const NOT_FOUND = (): ApiError => new ApiError(404, 'Not Found')
export const INTERNAL_SERVER_ERROR = (): ApiError => new ApiError(500, 'Internal Server Error')
/** An emoji outside BOT_API_REACTIONS or the chat's allowed list. */
export const REACTION_INVALID = (): ApiError => badRequest('REACTION_INVALID')
/** What Telegram answers when a message's formatting does not parse; the entities_rejected fault's answer. */
export const ENTITIES_REJECTED = (): ApiError => badRequest(`can't parse entities: Unsupported start tag "x" at byte offset 0`)
/** A chat the bot has never seen (no update from it, no addChat). */
export const CHAT_NOT_FOUND = (): ApiError => badRequest('chat not found')
/** getUpdates while a webhook is set. */
export const WEBHOOK_ACTIVE = (): ApiError =>
  new ApiError(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first")
/** What a held getUpdates gets when a newer one arrives. */
export const POLLING_TERMINATED = (): ApiError =>
  new ApiError(409, 'Conflict: terminated by other getUpdates request; make sure that only one bot instance is running')
/** Anything sent to a group that became a supergroup: the client must follow migrate_to_chat_id. */
export const GROUP_MIGRATED = (supergroupId: number): ApiError =>
  new ApiError(400, 'Bad Request: group chat was upgraded to a supergroup chat', { migrate_to_chat_id: supergroupId })
/** A reply whose target does not exist (and may not be left out). */
export const REPLY_TARGET_NOT_FOUND = (): ApiError => badRequest('message to be replied not found')
/** message_thread_id in a chat without topics, or a topic that does not exist. */
export const THREAD_NOT_FOUND = (): ApiError => badRequest('message thread not found')
