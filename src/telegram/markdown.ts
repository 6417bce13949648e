import { Lexer, type MarkedToken, type Token, type Tokens } from 'marked'
import { visibleText } from './split.js'

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

const PRE_BLOCK = /(<pre>[^]*?<\/pre>)/u
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
