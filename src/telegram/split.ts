/** Telegram's limit for one message's text. */
export const MESSAGE_LIMIT = 4096

/**
 * Splits a reply into messages of at most `limit` characters, preferring line boundaries, then
 * spaces, and never cutting a surrogate pair in two.
 */
export function splitMessage(text: string, limit = MESSAGE_LIMIT): string[] {
  const parts: string[] = []
  let rest = text
  while (rest.length > limit) {
    let cut = rest.lastIndexOf('\n', limit)
    if (cut <= 0) cut = rest.lastIndexOf(' ', limit)
    if (cut <= 0) cut = isHighSurrogate(rest.charCodeAt(limit - 1)) ? limit - 1 : limit
    const part = rest.slice(0, cut).trimEnd()
    if (part) parts.push(part)
    rest = rest.slice(cut).replace(/^[\n ]/u, '')
  }
  if (rest.trim()) parts.push(rest)
  return parts
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff
}
