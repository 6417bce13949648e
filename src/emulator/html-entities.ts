import type { MessageEntity } from 'grammy/types'

/** Message text after entity parsing: what Telegram stores and returns in `Message.text`/`entities`. */
export interface FormattedText {
  readonly text: string
  readonly entities: MessageEntity[]
}

/**
 * Markup Telegram refuses with `parse_mode: 'HTML'`. The message is Telegram's wording without the
 * "Bad Request: can't parse entities: " prefix, byte offsets counted in UTF-8 as Telegram does.
 */
export class EntityParseError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'EntityParseError'
  }
}

type SimpleEntityType = 'bold' | 'italic' | 'underline' | 'strikethrough' | 'spoiler' | 'code'

// The tags Telegram's HTML parse mode knows; each becomes one entity type when it closes.
const SIMPLE_TAGS: ReadonlyMap<string, SimpleEntityType> = new Map([
  ['b', 'bold'],
  ['strong', 'bold'],
  ['i', 'italic'],
  ['em', 'italic'],
  ['u', 'underline'],
  ['ins', 'underline'],
  ['s', 'strikethrough'],
  ['strike', 'strikethrough'],
  ['del', 'strikethrough'],
  ['span', 'spoiler'],
  ['tg-spoiler', 'spoiler'],
  ['code', 'code'],
])
const SUPPORTED_TAGS: ReadonlySet<string> = new Set([...SIMPLE_TAGS.keys(), 'a', 'pre', 'blockquote', 'tg-emoji'])

const NAMED_ENTITIES: ReadonlyMap<string, string> = new Map([
  ['lt', '<'],
  ['gt', '>'],
  ['amp', '&'],
  ['quot', '"'],
])
// "&#1114111;" is the longest entity worth looking for; a ";" further away ends no entity.
const MAX_ENTITY_LENGTH = 10
const MAX_CODE_POINT = 0x10ffff
const LANGUAGE_PREFIX = 'language-'
const SPAN_CLASS_PREFIX = 'tg-'
const TEXT_MENTION_PATTERN = /^tg:\/\/user\?id=(\d{1,19})$/u
const LINK_SCHEMES: ReadonlySet<string> = new Set(['http:', 'https:', 'tg:', 'ton:', 'mailto:'])
const CUSTOM_EMOJI_ID_PATTERN = /^\d{1,20}$/u

interface OpenTag {
  readonly name: string
  readonly argument: string
  readonly offset: number
}

/**
 * Parses text in Telegram's HTML parse mode into plain text and entities (UTF-16 offsets), rejecting
 * what Telegram rejects: unsupported or unclosed tags, mismatched end tags and a `<` that opens no
 * tag. An `&` that starts no entity (`&lt; &gt; &amp; &quot;` and numeric entities are the only
 * ones) is kept as it is, as Telegram keeps it ("fish & chips", "&nbsp;").
 * Leading/trailing whitespace is kept; trimming is the message's business, not the parser's.
 */
export function parseTelegramHtml(html: string): FormattedText {
  const parser = new HtmlParser(html)
  return parser.parse()
}

class HtmlParser {
  readonly #html: string
  #text = ''
  #at = 0
  readonly #open: OpenTag[] = []
  readonly #entities: MessageEntity[] = []
  // A <code class="language-x"> directly inside <pre> turns the pre into a pre with a language.
  readonly #codeLanguages = new Map<MessageEntity, string>()

  constructor(html: string) {
    this.#html = html
  }

  parse(): FormattedText {
    const html = this.#html
    while (this.#at < html.length) {
      const char = html[this.#at]
      if (char === '&') {
        this.#readCharacterEntity()
      } else if (char === '<') {
        if (html[this.#at + 1] === '/') this.#readEndTag()
        else this.#readStartTag()
      } else {
        let end = this.#at + 1
        while (end < html.length && html[end] !== '<' && html[end] !== '&') end++
        this.#text += html.slice(this.#at, end)
        this.#at = end
      }
    }
    const unclosed = this.#open.at(-1)
    if (unclosed) throw new EntityParseError(`Can't find end tag corresponding to start tag "${unclosed.name}"`)
    const entities = this.#entities.sort((a, b) => a.offset - b.offset || b.length - a.length)
    return { text: this.#text, entities }
  }

  #readCharacterEntity(): void {
    const decoded = decodeCharacterEntity(this.#html, this.#at)
    if (decoded === undefined) {
      this.#text += '&'
      this.#at += 1
      return
    }
    this.#text += decoded.value
    this.#at = decoded.end
  }

  #readStartTag(): void {
    const html = this.#html
    const begin = this.#at
    let at = begin + 1
    const nameStart = at
    while (at < html.length && !isSpace(html[at]) && html[at] !== '>') at++
    if (at >= html.length) throw new EntityParseError(`Unclosed start tag at byte offset ${this.#byteOffset(begin)}`)
    const name = html.slice(nameStart, at).toLowerCase()
    if (!SUPPORTED_TAGS.has(name)) {
      throw new EntityParseError(`Unsupported start tag "${name}" at byte offset ${this.#byteOffset(begin)}`)
    }

    let argument = ''
    while (html[at] !== '>') {
      while (at < html.length && isSpace(html[at])) at++
      if (at >= html.length) throw new EntityParseError(`Unclosed start tag at byte offset ${this.#byteOffset(begin)}`)
      if (html[at] === '>') break
      const attributeStart = at
      while (at < html.length && !isSpace(html[at]) && html[at] !== '=' && html[at] !== '>') at++
      const attribute = html.slice(attributeStart, at).toLowerCase()
      if (attribute === '') {
        throw new EntityParseError(`Empty attribute name in the tag "${name}" at byte offset ${this.#byteOffset(begin)}`)
      }
      while (at < html.length && isSpace(html[at])) at++
      if (html[at] !== '=') {
        if (name === 'blockquote' && attribute === 'expandable') {
          argument = 'expandable'
          continue
        }
        throw new EntityParseError(
          `Expected equal sign in declaration of an attribute of the tag "${name}" at byte offset ${this.#byteOffset(begin)}`,
        )
      }
      at++
      while (at < html.length && isSpace(html[at])) at++
      if (at >= html.length) throw new EntityParseError(`Unclosed start tag "${name}" at byte offset ${this.#byteOffset(begin)}`)

      let value = ''
      const quote = html[at]
      if (quote === '"' || quote === "'") {
        at++
        while (at < html.length && html[at] !== quote) {
          const decoded = html[at] === '&' ? decodeCharacterEntity(html, at) : undefined
          if (decoded) {
            value += decoded.value
            at = decoded.end
          } else {
            value += html[at]
            at++
          }
        }
        if (at >= html.length) throw new EntityParseError(`Unclosed start tag at byte offset ${this.#byteOffset(begin)}`)
        at++
      } else {
        const tokenStart = at
        while (at < html.length && /[A-Za-z0-9.-]/u.test(html[at] ?? '')) at++
        value = html.slice(tokenStart, at).toLowerCase()
        if (at < html.length && !isSpace(html[at]) && html[at] !== '>') {
          throw new EntityParseError(`Unexpected end of name token at byte offset ${this.#byteOffset(tokenStart)}`)
        }
        if (at >= html.length) throw new EntityParseError(`Unclosed start tag at byte offset ${this.#byteOffset(begin)}`)
      }
      argument = tagArgument(name, attribute, value) ?? argument
    }
    this.#at = at + 1

    if (name === 'span' && argument !== 'spoiler') {
      throw new EntityParseError(`Tag "span" must have class "tg-spoiler" at byte offset ${this.#byteOffset(begin)}`)
    }
    if (name === 'tg-emoji' && !CUSTOM_EMOJI_ID_PATTERN.test(argument)) {
      throw new EntityParseError('Invalid custom emoji identifier specified')
    }
    this.#open.push({ name, argument, offset: this.#text.length })
  }

  #readEndTag(): void {
    const html = this.#html
    const begin = this.#at
    const tag = this.#open.pop()
    if (tag === undefined) throw new EntityParseError(`Unexpected end tag at byte offset ${this.#byteOffset(begin)}`)
    let at = begin + 2
    while (at < html.length && !isSpace(html[at]) && html[at] !== '>') at++
    const name = html.slice(begin + 2, at).toLowerCase()
    while (at < html.length && isSpace(html[at])) at++
    if (html[at] !== '>') throw new EntityParseError(`Unclosed end tag at byte offset ${this.#byteOffset(begin)}`)
    if (name !== '' && name !== tag.name) {
      throw new EntityParseError(
        `Unmatched end tag at byte offset ${this.#byteOffset(begin)}, expected "</${tag.name}>", found "</${name}>"`,
      )
    }
    this.#at = at + 1
    this.#closeEntity(tag)
  }

  #closeEntity(tag: OpenTag): void {
    const offset = tag.offset
    const length = this.#text.length - offset
    if (length === 0) return

    const simple = SIMPLE_TAGS.get(tag.name)
    if (simple !== undefined) {
      const entity: MessageEntity = { type: simple, offset, length }
      this.#entities.push(entity)
      if (simple === 'code' && tag.argument !== '') this.#codeLanguages.set(entity, tag.argument)
      return
    }
    switch (tag.name) {
      case 'pre': {
        const inner = this.#entities.at(-1)
        const language = inner && inner.offset === offset && inner.length === length ? this.#codeLanguages.get(inner) : undefined
        if (inner && language !== undefined) {
          this.#entities.pop()
          this.#entities.push({ type: 'pre', offset, length, language })
        } else {
          this.#entities.push({ type: 'pre', offset, length })
        }
        return
      }
      case 'blockquote':
        this.#entities.push({ type: tag.argument === 'expandable' ? 'expandable_blockquote' : 'blockquote', offset, length })
        return
      case 'tg-emoji':
        this.#entities.push({ type: 'custom_emoji', offset, length, custom_emoji_id: tag.argument })
        return
      case 'a': {
        const link = linkEntity(tag.argument === '' ? this.#text.slice(offset) : tag.argument, offset, length)
        if (link) this.#entities.push(link)
        return
      }
    }
  }

  #byteOffset(index: number): number {
    return Buffer.byteLength(this.#html.slice(0, index), 'utf8')
  }
}

function tagArgument(tag: string, attribute: string, value: string): string | undefined {
  if (tag === 'a' && attribute === 'href') return value
  if (tag === 'code' && attribute === 'class' && value.startsWith(LANGUAGE_PREFIX)) return value.slice(LANGUAGE_PREFIX.length)
  if (tag === 'span' && attribute === 'class' && value.startsWith(SPAN_CLASS_PREFIX)) return value.slice(SPAN_CLASS_PREFIX.length)
  if (tag === 'tg-emoji' && attribute === 'emoji-id') return value
  return undefined
}

// Telegram silently drops a link whose URL it cannot use rather than failing the message.
function linkEntity(href: string, offset: number, length: number): MessageEntity | undefined {
  const mention = TEXT_MENTION_PATTERN.exec(href)
  if (mention?.[1] !== undefined) {
    return { type: 'text_mention', offset, length, user: { id: Number(mention[1]), is_bot: false, first_name: '' } }
  }
  const url = /^[a-z][a-z0-9+.-]*:/iu.test(href) ? href : `http://${href}`
  try {
    const parsed = new URL(url)
    if (!LINK_SCHEMES.has(parsed.protocol)) return undefined
  } catch {
    return undefined
  }
  return { type: 'text_link', offset, length, url }
}

function decodeCharacterEntity(html: string, at: number): { value: string; end: number } | undefined {
  const semicolon = html.indexOf(';', at + 1)
  if (semicolon < 0 || semicolon - at > MAX_ENTITY_LENGTH) return undefined
  const body = html.slice(at + 1, semicolon)
  const named = NAMED_ENTITIES.get(body)
  if (named !== undefined) return { value: named, end: semicolon + 1 }
  let codePoint: number
  if (/^#[0-9]+$/u.test(body)) codePoint = Number.parseInt(body.slice(1), 10)
  else if (/^#[xX][0-9a-fA-F]+$/u.test(body)) codePoint = Number.parseInt(body.slice(2), 16)
  else return undefined
  const surrogate = codePoint >= 0xd800 && codePoint <= 0xdfff
  if (codePoint === 0 || codePoint > MAX_CODE_POINT || surrogate) return undefined
  return { value: String.fromCodePoint(codePoint), end: semicolon + 1 }
}

function isSpace(char: string | undefined): boolean {
  return char === ' ' || char === '\n' || char === '\t' || char === '\r' || char === '\f' || char === '\v'
}
