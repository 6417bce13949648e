import type { MessageEntity } from 'grammy/types'
import { badRequest } from './api-error.js'
import { EntityParseError, parseTelegramHtml, type FormattedText } from './html-entities.js'
import { parseMarkdownV2 } from './markdown-v2.js'
import { optionalJson, optionalString, type Params } from './params.js'

/** Telegram's limit for a text message, counted after entity parsing and trimming. */
export const MAX_MESSAGE_TEXT_LENGTH = 4096

const LEADING_SPACE = /^\s+/u
const TRAILING_SPACE = /\s+$/u

/**
 * Reads `text`, `parse_mode` and `entities` the way sendMessage and editMessageText do: parses HTML,
 * or MarkdownV2, trims surrounding whitespace (moving the entities with it), then enforces 1–4096
 * characters, counted as Telegram counts them: UTF-16 code units of the parsed text. The legacy
 * Markdown mode is accepted but not parsed: the text is kept as sent.
 */
export function readMessageText(params: Params): FormattedText {
  const raw = optionalString(params, 'text') ?? ''
  const parseMode = optionalString(params, 'parse_mode') ?? ''
  let formatted: FormattedText
  switch (parseMode.toLowerCase()) {
    case 'html':
      formatted = parseOrThrow(parseTelegramHtml, raw)
      break
    case 'markdownv2':
      formatted = parseOrThrow(parseMarkdownV2, raw)
      break
    case '':
      formatted = { text: raw, entities: readEntities(params) }
      break
    case 'markdown':
      formatted = { text: raw, entities: [] }
      break
    default:
      throw badRequest('unsupported parse_mode')
  }
  const trimmed = trim(formatted)
  if (trimmed.text === '') throw badRequest('message text is empty')
  if (trimmed.text.length > MAX_MESSAGE_TEXT_LENGTH) throw badRequest('message is too long')
  return trimmed
}

function parseOrThrow(parse: (source: string) => FormattedText, source: string): FormattedText {
  try {
    return parse(source)
  } catch (error) {
    if (error instanceof EntityParseError) throw badRequest(`can't parse entities: ${error.message}`)
    throw error
  }
}

function readEntities(params: Params): MessageEntity[] {
  const entities = optionalJson(params, 'entities', 'entities')
  if (entities === undefined) return []
  if (!Array.isArray(entities)) throw badRequest("can't parse entities JSON object")
  return entities as MessageEntity[]
}

function trim({ text, entities }: FormattedText): FormattedText {
  const lead = LEADING_SPACE.exec(text)?.[0].length ?? 0
  const trail = TRAILING_SPACE.exec(text.slice(lead))?.[0].length ?? 0
  if (lead === 0 && trail === 0) return { text, entities }
  const kept = text.slice(lead, text.length - trail)
  const moved: MessageEntity[] = []
  for (const entity of entities) {
    const start = Math.max(0, entity.offset - lead)
    const end = Math.min(kept.length, entity.offset + entity.length - lead)
    if (end > start) moved.push({ ...entity, offset: start, length: end - start })
  }
  return { text: kept, entities: moved }
}
