import { timingSafeEqual } from 'node:crypto'

/** Telegram's header carrying the webhook secret. */
export const SECRET_HEADER = 'x-telegram-bot-api-secret-token'

/**
 * The webhook's first check: whether a request's secret header is one of the secrets
 * (TELEGRAM_WEBHOOK_SECRET, and TELEGRAM_WEBHOOK_SECRET_PREVIOUS while rotating). The comparison
 * takes the same time however much of a wrong secret matches, and whichever secret it nearly is.
 */
export function secretVerifier(secrets: readonly string[]): (given: string | string[] | undefined) => boolean {
  const expected = secrets.map((secret) => Buffer.from(secret))
  return (given) => {
    // A repeated header arrives as an array: never authentic.
    if (typeof given !== 'string') return false
    const buffer = Buffer.from(given)
    return expected.map((secret) => buffer.length === secret.length && timingSafeEqual(buffer, secret)).includes(true)
  }
}
