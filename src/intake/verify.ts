import { timingSafeEqual } from 'node:crypto'

/** Telegram's header carrying the webhook secret. */
export const SECRET_HEADER = 'x-telegram-bot-api-secret-token'

/**
 * The webhook's first check: whether a request's secret header is TELEGRAM_WEBHOOK_SECRET. The
 * comparison takes the same time however much of a wrong secret matches.
 */
export function secretVerifier(secret: string): (given: string | string[] | undefined) => boolean {
  const expected = Buffer.from(secret)
  return (given) => {
    // A repeated header arrives as an array: never authentic.
    if (typeof given !== 'string') return false
    const buffer = Buffer.from(given)
    return buffer.length === expected.length && timingSafeEqual(buffer, expected)
  }
}
