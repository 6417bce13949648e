/** Telegram's limit for one message's text. */
export const MESSAGE_LIMIT = 4096

/** One message's worth of a formatted reply. */
export interface FormattedPart {
  /** Telegram HTML, at most `limit` visible characters. */
  readonly html: string
  /** The same part's visible text, sent as is (no parse_mode) if Telegram rejects the HTML. */
  readonly plain: string
}

// The entities our own HTML uses (markdown.ts escapes with no others), and what each shows.
const ENTITY_TEXT: ReadonlyMap<string, string> = new Map([
  ['&lt;', '<'],
  ['&gt;', '>'],
  ['&amp;', '&'],
  ['&quot;', '"'],
])
const ENTITIES = [...ENTITY_TEXT.keys()]
const EMPTY_ELEMENT = /<([a-z-]+)[^>]*><\/\1>/gu
const LESS_THAN = 0x3c
const SLASH = 0x2f
const AMPERSAND = 0x26
const NEWLINE = 0x0a
const SPACE = 0x20

/**
 * Splits our own Telegram HTML into messages of at most `limit` visible characters (UTF-16 code
 * units, as Telegram counts them). Breaks prefer a newline, then a space; tags open at a break are
 * closed and reopened, so each part stands alone and a split code block stays a code block in both.
 * Linear in the HTML's length.
 */
export function splitHtml(html: string, limit: number): FormattedPart[] {
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
export function visibleText(html: string): string {
  return readBody(html, 0, html.length, []).visible
}
