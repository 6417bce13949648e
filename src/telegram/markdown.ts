import { Lexer, type MarkedToken, type Token, type Tokens } from 'marked'
import { MESSAGE_LIMIT } from './split.js'

/** One message's worth of a formatted reply. */
export interface FormattedPart {
  /** Telegram HTML, at most `limit` visible characters. */
  readonly html: string
  /** The same part's visible text, sent as is (no parse_mode) if Telegram rejects the HTML. */
  readonly plain: string
}

// Schemes Telegram makes clickable; anything else (javascript:, relative paths) is shown as its text.
const LINK_SCHEME = /^(?:https?|tg|mailto):/iu
// The language goes into a class attribute; only a plain identifier is safe there.
const LANGUAGE = /^[\w+-]+$/u
const BULLET = '• '
const TASK_DONE = '☑ '
const TASK_OPEN = '☐ '
const RULE = '———'

// CommonMark decodes character references in text and link destinations; marked leaves that to the
// browser, and Telegram knows only four named entities, so the common ones are decoded here.
const CHARACTER_REFERENCE = /&(?:#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6})|(amp|lt|gt|quot|apos|nbsp));/gu
const NAMED_REFERENCES: ReadonlyMap<string, string> = new Map([
  ['amp', '&'],
  ['lt', '<'],
  ['gt', '>'],
  ['quot', '"'],
  ['apos', "'"],
  ['nbsp', '\u00a0'],
])

// The entities our own HTML uses (escapeText and escapeAttribute write no others), and what each shows.
const ENTITY_TEXT: ReadonlyMap<string, string> = new Map([
  ['&lt;', '<'],
  ['&gt;', '>'],
  ['&amp;', '&'],
  ['&quot;', '"'],
])
const ENTITIES = [...ENTITY_TEXT.keys()]
const PRE_BLOCK = /(<pre>[^]*?<\/pre>)/u
const EMPTY_ELEMENT = /<([a-z-]+)[^>]*><\/\1>/gu
const LESS_THAN = 0x3c
const SLASH = 0x2f
const AMPERSAND = 0x26
const NEWLINE = 0x0a
const SPACE = 0x20

/**
 * Markdown → Telegram HTML, split into messages of at most `limit` visible characters (UTF-16 code
 * units, as Telegram counts them). Breaks prefer a newline, then a space; tags open at a break are
 * closed and reopened, so each part stands alone and a split code block stays a code block in both.
 * An empty or whitespace-only reply yields no parts. Synchronous and linear in the reply's length; for
 * a large reply most of the time is marked's lexing.
 */
export function formatReply(markdown: string, limit = MESSAGE_LIMIT): FormattedPart[] {
  if (!Number.isInteger(limit) || limit < 2) {
    throw new TypeError(`limit must be an integer of at least 2 (room for one surrogate pair); got ${limit}`)
  }
  return splitHtml(markdownToTelegramHtml(markdown), limit)
}

function splitHtml(html: string, limit: number): FormattedPart[] {
  const parts: FormattedPart[] = []
  // Start positions of the tags open at the previous break; the next part reopens them.
  let open: readonly number[] = []
  for (let start = 0; start < html.length; ) {
    const { end, next } = findBreak(html, start, limit)
    const body = readBody(html, start, end, open)
    const part = assemble(html, start, end, open, body)
    if (part) parts.push(part)
    open = body.open
    start = next
  }
  return parts
}

/**
 * Markdown (GFM, as LLM agents write it) → the HTML subset Telegram accepts with parse_mode HTML.
 * Headings become bold lines, lists get "• " / "1. " markers, tables become a monospaced block, and
 * raw HTML is shown as text. Every literal `<`, `>` and `&` is escaped, so the result always parses.
 */
export function markdownToTelegramHtml(markdown: string): string {
  try {
    return renderBlocks(new Lexer({ gfm: true }).lex(markdown), '\n\n').trim()
  } catch {
    // marked recurses once per nesting level ("> > > …" thousands deep overflows the stack); the
    // reply must still arrive, so it goes out as escaped text.
    return escapeText(markdown.trim())
  }
}

function renderBlocks(tokens: readonly Token[], separator: string): string {
  return tokens
    .map(renderBlock)
    .filter((html) => html !== '')
    .join(separator)
}

function renderBlock(token: Token): string {
  const block = token as MarkedToken
  switch (block.type) {
    case 'heading':
      return wrap('b', renderInline(block.tokens))
    case 'paragraph':
      return renderInline(block.tokens)
    case 'code':
      return renderCode(block)
    case 'blockquote':
      // Telegram cannot nest quotes, so an inner quote simply continues the outer one.
      return wrap('blockquote', renderBlocks(block.tokens, '\n\n').replace(/<\/?blockquote>/gu, ''))
    case 'list':
      return renderList(block)
    case 'table':
      return renderTable(block)
    case 'hr':
      return RULE
    case 'html':
      return escapeText(block.text.trimEnd())
    case 'space':
    case 'def':
    case 'checkbox':
      return ''
    default:
      return renderInline([token])
  }
}

function renderInline(tokens: readonly Token[]): string {
  return tokens.map(renderSpan).join('')
}

function renderSpan(token: Token): string {
  const span = token as MarkedToken
  switch (span.type) {
    case 'text':
      return span.tokens ? renderInline(span.tokens) : escapeText(decodeReferences(span.text))
    case 'escape':
    case 'html':
      return escapeText(span.text)
    case 'strong':
      return wrap('b', renderInline(span.tokens))
    case 'em':
      return wrap('i', renderInline(span.tokens))
    case 'del':
      return wrap('s', renderInline(span.tokens))
    case 'codespan':
      return wrap('code', escapeText(span.text))
    case 'br':
      return '\n'
    case 'link':
      // An autolink's text and destination are literal; character references stay as typed.
      if (span.autolink) return renderLink(span.href, escapeText(span.text))
      return renderLink(decodeReferences(span.href), renderInline(span.tokens))
    case 'image':
      return renderLink(decodeReferences(span.href), renderInline(span.tokens))
    default: {
      const generic = token as Tokens.Generic
      return generic.tokens ? renderInline(generic.tokens) : escapeText(generic.raw)
    }
  }
}

function renderLink(href: string, inner: string): string {
  // Links cannot nest; a linked image ([![alt](src)](href)) keeps only the outer link.
  const text = inner === '' ? escapeText(href) : inner.replace(/<a [^>]*>|<\/a>/gu, '')
  return LINK_SCHEME.test(href) ? `<a href="${escapeAttribute(href)}">${text}</a>` : text
}

function renderCode({ text, lang }: Tokens.Code): string {
  if (text === '') return ''
  // The info string may say more ("js title=x"); like marked's own renderer, the first word is the language.
  const language = /^\S*/u.exec(lang ?? '')?.[0] ?? ''
  const code = escapeText(text)
  return LANGUAGE.test(language) ? `<pre><code class="language-${language}">${code}</code></pre>` : `<pre>${code}</pre>`
}

function renderList(list: Tokens.List): string {
  const first = typeof list.start === 'number' ? list.start : 1
  return list.items
    .map((item, index) => {
      const number = list.ordered ? `${first + index}. ` : ''
      const marker = item.task ? number + (item.checked ? TASK_DONE : TASK_OPEN) : number || BULLET
      const body = renderBlocks(item.tokens, item.loose ? '\n\n' : '\n')
      return marker + indent(body, ' '.repeat(marker.length))
    })
    .join(list.loose ? '\n\n' : '\n')
}

// Continuation lines line up under the item's text; a code block's lines are its content and stay put.
function indent(html: string, pad: string): string {
  return html
    .split(PRE_BLOCK)
    .map((piece, index) => (index % 2 === 1 ? piece : piece.replace(/\n(?=[^\n])/gu, `\n${pad}`)))
    .join('')
}

// Telegram has no tables; a monospaced block with padded columns reads the same on every client.
function renderTable(table: Tokens.Table): string {
  const rows = [table.header, ...table.rows].map((row) =>
    row.map((cell) => visibleText(renderInline(cell.tokens)).replace(/\n/gu, ' ')),
  )
  const widths = table.header.map((_, column) => Math.max(1, ...rows.map((row) => width(row[column] ?? ''))))
  const lines = rows.map((row) =>
    widths
      .map((columnWidth, column) => pad(row[column] ?? '', columnWidth, table.align[column] ?? null))
      .join(' | ')
      .trimEnd(),
  )
  lines.splice(1, 0, widths.map((columnWidth) => '-'.repeat(columnWidth)).join('-+-'))
  return `<pre>${escapeText(lines.join('\n'))}</pre>`
}

function pad(text: string, columnWidth: number, align: 'left' | 'center' | 'right' | null): string {
  const room = columnWidth - width(text)
  if (align === 'right') return ' '.repeat(room) + text
  if (align === 'center') return ' '.repeat(Math.floor(room / 2)) + text + ' '.repeat(Math.ceil(room / 2))
  return text + ' '.repeat(room)
}

// Code points, not UTF-16 units: an emoji takes one column, not two.
function width(text: string): number {
  return [...text].length
}

function wrap(tag: string, inner: string): string {
  return inner === '' ? '' : `<${tag}>${inner}</${tag}>`
}

function escapeText(text: string): string {
  // Most text has none of the three; checking first saves three copies of it.
  if (!text.includes('&') && !text.includes('<') && !text.includes('>')) return text
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')
}

function escapeAttribute(text: string): string {
  return escapeText(text).replaceAll('"', '&quot;')
}

function decodeReferences(text: string): string {
  if (!text.includes('&')) return text
  return text.replace(CHARACTER_REFERENCE, (match, decimal?: string, hex?: string, name?: string) => {
    if (name !== undefined) return NAMED_REFERENCES.get(name) ?? match
    const code = decimal !== undefined ? Number.parseInt(decimal, 10) : Number.parseInt(hex ?? '', 16)
    const invalid = code === 0 || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)
    return invalid ? '\ufffd' : String.fromCodePoint(code)
  })
}

// Our own HTML is read back by position, one atom at a time: a tag, an entity, a surrogate pair or
// one code unit. Atoms never become objects; a megabyte of reply would otherwise be a million of them.

/** Where the atom starting at `at` ends. */
function atomEnd(html: string, at: number): number {
  const code = html.charCodeAt(at)
  if (code === LESS_THAN) return tagEnd(html, at)
  if (code === AMPERSAND) return entityEnd(html, at)
  if (code >= 0xd800 && code <= 0xdbff) {
    const low = html.charCodeAt(at + 1)
    if (low >= 0xdc00 && low <= 0xdfff) return at + 2
  }
  return at + 1
}

// A tag is `<`, an optional `/`, a lowercase name and anything up to `>`; a `<` that starts none is text.
function tagEnd(html: string, at: number): number {
  const nameStart = html.charCodeAt(at + 1) === SLASH ? at + 2 : at + 1
  if (!isNameCode(html.charCodeAt(nameStart))) return at + 1
  const close = html.indexOf('>', nameStart)
  return close === -1 ? at + 1 : close + 1
}

function entityEnd(html: string, at: number): number {
  for (const entity of ENTITIES) if (html.startsWith(entity, at)) return at + entity.length
  return at + 1
}

function isNameCode(code: number): boolean {
  return (code >= 0x61 && code <= 0x7a) || code === 0x2d
}

/** A tag or an entity: an atom of more than one code unit that is not a surrogate pair. */
function isMarkup(html: string, at: number, end: number): boolean {
  if (end === at + 1) return false
  const code = html.charCodeAt(at)
  return code === LESS_THAN || code === AMPERSAND
}

interface Break {
  /** Where this part's atoms end. */
  readonly end: number
  /** Where the next part's atoms start: past the newline or space broken at, which belongs to neither. */
  readonly next: number
}

/** The break for the part starting at `start`: its last newline, else its last space, else a hard cut. */
function findBreak(html: string, start: number, limit: number): Break {
  let units = 0
  let newline = -1
  let space = -1
  for (let at = start; at < html.length; ) {
    const code = html.charCodeAt(at)
    const end = atomEnd(html, at)
    // A tag shows nothing and an entity one character; anything else is as long as it looks.
    const width = isMarkup(html, at, end) ? (code === LESS_THAN ? 0 : 1) : end - at
    if (units + width > limit) {
      if (newline > start) return { end: newline, next: newline + 1 }
      if (space > start) return { end: space, next: space + 1 }
      return { end: at, next: at }
    }
    units += width
    if (code === NEWLINE) newline = at
    else if (code === SPACE) space = at
    at = end
  }
  return { end: html.length, next: html.length }
}

interface Body {
  /** What Telegram shows for the part. */
  readonly visible: string
  /** Where its HTML starts and ends once newlines at the edges are left out; -1 if nothing else shows. */
  readonly textStart: number
  readonly textEnd: number
  /** Start positions of the tags still open at the part's end. */
  readonly open: number[]
}

/** One walk over a part's atoms: what it shows, where its text lies, which tags are open after it. */
function readBody(html: string, start: number, end: number, open: readonly number[]): Body {
  const stack = [...open]
  let textStart = -1
  let textEnd = -1
  let visible = ''
  // Text between markup is copied in runs, not character by character.
  let literalStart = start
  for (let at = start; at < end; ) {
    const code = html.charCodeAt(at)
    const atomStop = atomEnd(html, at)
    if (isMarkup(html, at, atomStop)) {
      visible += html.slice(literalStart, at)
      literalStart = atomStop
      if (code === LESS_THAN) {
        if (html.charCodeAt(at + 1) === SLASH) stack.pop()
        else stack.push(at)
        at = atomStop
        continue
      }
      visible += ENTITY_TEXT.get(html.slice(at, atomStop)) ?? ''
    }
    if (code !== NEWLINE) {
      if (textStart === -1) textStart = at
      textEnd = atomStop
    }
    at = atomStop
  }
  visible += html.slice(literalStart, end)
  return { visible, textStart, textEnd, open: stack }
}

function assemble(html: string, start: number, end: number, open: readonly number[], body: Body): FormattedPart | undefined {
  const { textStart, textEnd } = body
  const plain = trimNewlines(body.visible)
  if (plain.trim() === '') return undefined
  // Newlines at a part's edges only separated it from its neighbours (Telegram would trim them anyway);
  // the tags among them stay.
  const pieces = open.map((at) => html.slice(at, tagEnd(html, at)))
  pieces.push(tagsIn(html, start, textStart), html.slice(textStart, textEnd), tagsIn(html, textEnd, end))
  for (const at of body.open.toReversed()) pieces.push(`</${tagName(html, at)}>`)
  let result = pieces.join('')
  // A break next to a start or end tag can leave a pair with nothing inside; drop it.
  for (let previous = ''; previous !== result; ) {
    previous = result
    result = result.replace(EMPTY_ELEMENT, '')
  }
  return { html: result, plain }
}

function tagsIn(html: string, start: number, end: number): string {
  let tags = ''
  for (let at = start; at < end; ) {
    const atomStop = atomEnd(html, at)
    if (isMarkup(html, at, atomStop) && html.charCodeAt(at) === LESS_THAN) tags += html.slice(at, atomStop)
    at = atomStop
  }
  return tags
}

function tagName(html: string, at: number): string {
  const nameStart = at + 1
  let nameEnd = nameStart
  while (isNameCode(html.charCodeAt(nameEnd))) nameEnd++
  return html.slice(nameStart, nameEnd)
}

function trimNewlines(text: string): string {
  let start = 0
  let end = text.length
  while (start < end && text.charCodeAt(start) === NEWLINE) start++
  while (end > start && text.charCodeAt(end - 1) === NEWLINE) end--
  return text.slice(start, end)
}

/** The text Telegram shows for a piece of our own HTML. */
function visibleText(html: string): string {
  return readBody(html, 0, html.length, []).visible
}
