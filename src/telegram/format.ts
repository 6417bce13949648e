import { markdownToTelegramHtml } from './markdown.js'
import { MESSAGE_LIMIT, splitHtml, type FormattedPart } from './split.js'

export type { FormattedPart } from './split.js'

/**
 * A reply as Telegram messages: Markdown → Telegram HTML (markdown.ts), split into messages of at
 * most `limit` visible characters (split.ts). An empty or whitespace-only reply yields no parts.
 * Synchronous and linear in the reply's length; for a large reply most of the time is marked's lexing.
 */
export function formatReply(markdown: string, limit = MESSAGE_LIMIT): FormattedPart[] {
  if (!Number.isInteger(limit) || limit < 2) {
    throw new TypeError(`limit must be an integer of at least 2 (room for one surrogate pair); got ${limit}`)
  }
  return splitHtml(markdownToTelegramHtml(markdown), limit)
}
