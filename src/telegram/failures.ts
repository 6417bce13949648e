import { GrammyError, HttpError } from 'grammy'
import type { TelegramSettings } from '../config.js'

/** Whether Telegram refused the call because of the token (401, or 404 for a malformed one). */
export function isBadToken(error: unknown): boolean {
  return error instanceof GrammyError && (error.error_code === 401 || error.error_code === 404)
}

/**
 * One line for a failed Bot API call, never containing the token: grammY's own messages are fine,
 * but node-fetch's name the request URL, and the token is part of it.
 */
export function describeTelegramFailure(error: unknown, { botToken, apiRoot }: TelegramSettings): string {
  const redact = (text: string): string => text.split(botToken).join('<token>')
  if (isBadToken(error)) {
    const { error_code: code, description } = error as GrammyError
    return `Telegram refused the bot token (${code}: ${description}); set TELEGRAM_BOT_TOKEN to the token @BotFather gave you`
  }
  if (error instanceof GrammyError) {
    return redact(`Telegram refused ${error.method} (${error.error_code}: ${error.description})`)
  }
  if (error instanceof HttpError) {
    return redact(`cannot reach the Telegram Bot API at ${apiRoot} (${networkReason(error.error)}); check the network and TELEGRAM_API_ROOT`)
  }
  return redact(`the Telegram Bot API call failed: ${error instanceof Error ? error.message : String(error)}`)
}

// node-fetch's FetchError: "request to <url> failed, reason: connect ECONNREFUSED …", or type
// 'invalid-json' when something other than the Bot API answered; grammY's own timeout is an Error.
function networkReason(cause: unknown): string {
  if (!(cause instanceof Error)) return String(cause)
  const { type } = cause as { type?: unknown }
  if (type === 'invalid-json') return 'it answered with something other than Bot API JSON'
  const reason = /reason: (.*)$/su.exec(cause.message)?.[1]
  return (reason ?? cause.message).trim()
}
