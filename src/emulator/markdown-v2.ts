import type { MessageEntity } from 'grammy/types'
import { EntityParseError, type FormattedText } from './html-entities.js'

// Characters MarkdownV2 reserves: outside code, each must be escaped with a preceding '\' unless it is markup.
const RESERVED = new Set(['_', '*', '[', ']', '(', ')', '~', '`', '>', '#', '+', '-', '=', '|', '{', '}', '.', '!'])

type Toggle = 'bold' | 'italic' | 'underline' | 'strikethrough' | 'spoiler'

// Entity names as Telegram's errors spell them ("Can't find end of Bold entity").
const ENTITY_NAMES: Readonly<Record<Toggle | 'code' | 'pre' | 'text_link', string>> = {
  bold: 'Bold',
  italic: 'Italic',
  underline: 'Underline',
  strikethrough: 'Strikethrough',
  spoiler: 'Spoiler',
  code: 'Code',
  pre: 'Pre',
  text_link: 'TextUrl',
}

interface Open {
  readonly type: Toggle | 'text_link'
  /** Where its text starts (UTF-16, in the parsed text). */
  readonly offset: number
  /** Where its markup starts in the source, for the error. */
  readonly at: number
}

/**
 * Parses text in Telegram's MarkdownV2 parse mode into plain text and entities, refusing what
 * Telegram refuses: a reserved character not escaped, an entity never closed, a link without its
 * URL. Covers the markup the Bot API documents: *bold* _italic_ __underline__ ~strike~ ||spoiler||
 * `code` ```pre``` [text](url) and > block quotes; custom emoji (![…](tg://emoji?id=…)) keep their
 * text only.
 */
export function parseMarkdownV2(source: string): FormattedText {
  const byteOffset = (index: number): number => Buffer.byteLength(source.slice(0, index), 'utf8')
  const reserved = (index: number): EntityParseError =>
    new EntityParseError(`Character '${source[index]}' is reserved and must be escaped with the preceding '\\'`)
  let text = ''
  const entities: MessageEntity[] = []
  const open: Open[] = []
  let quoteStart: number | undefined
  let at = 0

  const toggle = (type: Toggle, width: number): void => {
    const index = open.findIndex((entry) => entry.type === type)
    if (index < 0) {
      open.push({ type, offset: text.length, at })
    } else {
      const [entry] = open.splice(index, 1)
      if (entry !== undefined && text.length > entry.offset) entities.push({ type, offset: entry.offset, length: text.length - entry.offset })
    }
    at += width
  }

  while (at < source.length) {
    const char = source[at] as string
    const lineStart = at === 0 || source[at - 1] === '\n'
    if (lineStart && quoteStart !== undefined && char !== '>') {
      // The quote ends with the line before this one, its line break not included.
      const end = text.length - 1
      if (end > quoteStart) entities.push({ type: 'blockquote', offset: quoteStart, length: end - quoteStart })
      quoteStart = undefined
    }
    if (char === '\\') {
      const next = source.codePointAt(at + 1)
      if (next === undefined) throw reserved(at)
      text += String.fromCodePoint(next)
      at += next > 0xffff ? 3 : 2
    } else if (char === '`') {
      at = readCode(source, at, byteOffset, (code, entity) => {
        const offset = text.length
        text += code
        if (code.length > 0) entities.push({ ...entity, offset, length: code.length } as MessageEntity)
      })
    } else if (char === '*') {
      toggle('bold', 1)
    } else if (char === '_') {
      if (source[at + 1] === '_') toggle('underline', 2)
      else toggle('italic', 1)
    } else if (char === '~') {
      toggle('strikethrough', 1)
    } else if (char === '|' && source[at + 1] === '|') {
      toggle('spoiler', 2)
    } else if (char === '[' || (char === '!' && source[at + 1] === '[')) {
      open.push({ type: 'text_link', offset: text.length, at })
      at += char === '!' ? 2 : 1
    } else if (char === ']' && open.at(-1)?.type === 'text_link') {
      const link = open.pop() as Open
      if (source[at + 1] !== '(') throw reserved(at)
      const end = urlEnd(source, at + 2)
      if (end < 0) throw new EntityParseError(`Can't find end of a URL at byte offset ${byteOffset(at + 1)}`)
      const url = source.slice(at + 2, end).replace(/\\([\\)])/gu, '$1')
      const isEmoji = source[link.at] === '!'
      if (!isEmoji && text.length > link.offset) entities.push({ type: 'text_link', offset: link.offset, length: text.length - link.offset, url })
      at = end + 1
    } else if (char === '>' && lineStart) {
      quoteStart ??= text.length
      at += 1
    } else if (RESERVED.has(char)) {
      throw reserved(at)
    } else {
      text += char
      at += 1
    }
  }
  if (quoteStart !== undefined && text.length > quoteStart) entities.push({ type: 'blockquote', offset: quoteStart, length: text.length - quoteStart })
  const unclosed = open[0]
  if (unclosed !== undefined) {
    throw new EntityParseError(`Can't find end of ${ENTITY_NAMES[unclosed.type]} entity at byte offset ${byteOffset(unclosed.at)}`)
  }
  return { text, entities: entities.sort((a, b) => a.offset - b.offset || b.length - a.length) }
}

/** Reads `code` or ```lang\npre``` from `at`; returns where it ends. Inside, only ` and \ are special. */
function readCode(
  source: string,
  at: number,
  byteOffset: (index: number) => number,
  emit: (code: string, entity: Pick<MessageEntity.PreMessageEntity, 'type' | 'language'> | { type: 'code' }) => void,
): number {
  const fence = source.startsWith('```', at)
  const marker = fence ? '```' : '`'
  let index = at + marker.length
  let language: string | undefined
  if (fence) {
    const newline = source.indexOf('\n', index)
    const firstLine = newline < 0 ? '' : source.slice(index, newline)
    if (newline >= 0 && /^[^\s`\\]*$/u.test(firstLine)) {
      language = firstLine === '' ? undefined : firstLine
      index = newline + 1
    }
  }
  let code = ''
  while (index < source.length) {
    if (source[index] === '\\' && index + 1 < source.length) {
      code += source[index + 1]
      index += 2
    } else if (source.startsWith(marker, index)) {
      emit(code, fence ? { type: 'pre', ...(language === undefined ? {} : { language }) } : { type: 'code' })
      return index + marker.length
    } else {
      code += source[index]
      index += 1
    }
  }
  throw new EntityParseError(`Can't find end of ${fence ? 'Pre' : 'Code'} entity at byte offset ${byteOffset(at)}`)
}

// The closing ')' of a link's URL, skipping escaped ones; -1 when there is none.
function urlEnd(source: string, from: number): number {
  for (let index = from; index < source.length; index++) {
    if (source[index] === '\\') index++
    else if (source[index] === ')') return index
  }
  return -1
}
