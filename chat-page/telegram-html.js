// Renders the Telegram HTML a bot sent (parse_mode HTML) as Telegram shows it, building every node
// itself: only Telegram's tags become elements, only http(s), tg: and mailto: links keep their
// address, and no attribute, style or handler of the input ever reaches the page. Anything else
// is kept as its text.

const SIMPLE_TAGS = new Map([
  ['b', 'b'], ['strong', 'b'],
  ['i', 'i'], ['em', 'i'],
  ['u', 'u'], ['ins', 'u'],
  ['s', 's'], ['strike', 's'], ['del', 's'],
  ['code', 'code'],
  ['pre', 'pre'],
  ['blockquote', 'blockquote'],
])
const SAFE_LINK = /^(https?:|tg:|mailto:)/iu
const LANGUAGE = /^language-([A-Za-z0-9_+#.-]{1,32})$/u

/**
 * A DocumentFragment for `html`, made of text nodes and Telegram's formatting elements only.
 * The input is parsed by DOMParser into an inert document (no scripts run, nothing loads) and
 * only read from there.
 */
export function renderTelegramHtml(html, doc = document) {
  const parsed = new DOMParser().parseFromString(`<!doctype html><body>${html}`, 'text/html')
  const fragment = doc.createDocumentFragment()
  for (const node of parsed.body.childNodes) append(fragment, node, doc)
  return fragment
}

function append(parent, node, doc) {
  if (node.nodeType === Node.TEXT_NODE) {
    parent.append(doc.createTextNode(node.data))
    return
  }
  if (node.nodeType !== Node.ELEMENT_NODE) return
  const tag = node.localName
  let element
  if (SIMPLE_TAGS.has(tag)) {
    element = doc.createElement(SIMPLE_TAGS.get(tag))
    if (tag === 'blockquote' && node.hasAttribute('expandable')) element.className = 'expandable'
    if (tag === 'code') {
      const language = LANGUAGE.exec(node.getAttribute('class') ?? '')?.[1]
      if (language) element.dataset.language = language
    }
  } else if (tag === 'a') {
    element = doc.createElement('a')
    const href = (node.getAttribute('href') ?? '').trim()
    if (SAFE_LINK.test(href)) {
      element.href = href
      element.target = '_blank'
      element.rel = 'noopener noreferrer nofollow'
    }
  } else if (tag === 'tg-spoiler' || (tag === 'span' && node.classList.contains('tg-spoiler'))) {
    element = doc.createElement('span')
    element.className = 'spoiler'
  } else {
    // Not Telegram's (tg-emoji included): its text only.
    for (const child of node.childNodes) append(parent, child, doc)
    return
  }
  for (const child of node.childNodes) append(element, child, doc)
  parent.append(element)
}
