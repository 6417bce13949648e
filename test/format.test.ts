import fc from 'fast-check'
import t, { type Test } from 'tap'
import { parseTelegramHtml } from '../src/emulator/index.js'
import { formatReply, type FormattedPart } from '../src/telegram/format.js'
import { markdownToTelegramHtml } from '../src/telegram/markdown.js'
import { MESSAGE_LIMIT } from '../src/telegram/split.js'

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/u

/** Asserts the exact HTML for `markdown`, and that Telegram (the emulator) accepts it. */
function renders(t: Test, markdown: string, html: string): void {
  const rendered = markdownToTelegramHtml(markdown)
  t.equal(rendered, html, JSON.stringify(markdown))
  t.doesNotThrow(() => parseTelegramHtml(rendered), `Telegram accepts ${JSON.stringify(rendered)}`)
}

/** Checks what every part must be, whatever the input; returns the problem, or '' if there is none. */
function partProblem(part: FormattedPart, limit: number): string {
  let text: string
  try {
    text = parseTelegramHtml(part.html).text
  } catch (error) {
    return `${String(error)} in ${JSON.stringify(part.html)}`
  }
  if (text !== part.plain) return `plain ${JSON.stringify(part.plain)} is not the visible text ${JSON.stringify(text)}`
  if (text.length > limit) return `${text.length} visible units > ${limit}`
  if (text.trim() === '') return `empty part ${JSON.stringify(part.html)}`
  return ''
}

function checkParts(t: Test, parts: readonly FormattedPart[], limit: number): void {
  for (const part of parts) t.equal(partProblem(part, limit), '', part.html.slice(0, 60))
}

const withoutSpace = (text: string): string => text.replace(/\s/gu, '')

t.test('inline formatting becomes Telegram tags', async (t) => {
  renders(t, '**b** *i* _i_ ~~s~~ `c`', '<b>b</b> <i>i</i> <i>i</i> <s>s</s> <code>c</code>')
  renders(t, '**bold *italic [link](http://a.b)***', '<b>bold <i>italic <a href="http://a.b">link</a></i></b>')
  renders(t, 'line1  \nline2\nline3', 'line1\nline2\nline3')
  renders(t, 'stray * and _ and ** alone', 'stray * and _ and ** alone')
})

t.test('headings are bold and blocks are one blank line apart', async (t) => {
  renders(t, '# Title *x*\n\ntext\n\n\n\nmore', '<b>Title <i>x</i></b>\n\ntext\n\nmore')
  renders(t, 'Setext\n===\n## Two', '<b>Setext</b>\n\n<b>Two</b>')
  renders(t, 'a\n\n---\n\nb', 'a\n\n———\n\nb')
})

t.test('special characters and raw HTML are escaped as text', async (t) => {
  renders(t, 'a < b & c > d', 'a &lt; b &amp; c &gt; d')
  renders(t, 'a < b && c > d', 'a &lt; b &amp;&amp; c &gt; d')
  renders(t, 'x <script>alert(1)</script> "q"', 'x &lt;script&gt;alert(1)&lt;/script&gt; "q"')
  renders(t, '<div>hi</div>', '&lt;div&gt;hi&lt;/div&gt;')
  renders(t, 'a<br>b <!-- c -->', 'a&lt;br&gt;b &lt;!-- c --&gt;')
  renders(t, '\\<b\\> \\*x\\*', '&lt;b&gt; *x*')
  // Character references are decoded as CommonMark says; ones Telegram cannot show stay literal.
  renders(t, '&amp; &lt; &#128512; &copy;', '&amp; &lt; 😀 &amp;copy;')
})

t.test('code keeps its content verbatim, escaped', async (t) => {
  renders(
    t,
    '```ts\nconst a = b < c && `d` // &amp;\n```',
    '<pre><code class="language-ts">const a = b &lt; c &amp;&amp; `d` // &amp;amp;</code></pre>',
  )
  renders(t, '`a<b &amp; ``x`', '<code>a&lt;b &amp;amp; ``x</code>')
  renders(t, '``` js title="x"\nq\n```', '<pre><code class="language-js">q</code></pre>')
  renders(t, '```c++\nq\n```', '<pre><code class="language-c++">q</code></pre>')
  renders(t, '```\n  indented\n```', '<pre>  indented</pre>')
  renders(t, '    indented code', '<pre>indented code</pre>')
  // Only a plain identifier may go into the class attribute.
  renders(t, '```c#\nx\n```', '<pre>x</pre>')
  renders(t, '```a"><b>\nx\n```', '<pre>x</pre>')
  renders(t, '```\n```\n\nafter', 'after')
})

t.test('an unclosed fence runs to the end of the reply', async (t) => {
  renders(
    t,
    'look:\n\n```py\nprint(1 < 2)\n\n# still code',
    'look:\n\n<pre><code class="language-py">print(1 &lt; 2)\n\n# still code</code></pre>',
  )
})

t.test('links keep safe schemes only and escape the href', async (t) => {
  renders(t, '[q](https://x.y/?a=1&b="2")', '<a href="https://x.y/?a=1&amp;b=&quot;2&quot;">q</a>')
  renders(t, '[q](https://x.y/?a=1&amp;b=2)', '<a href="https://x.y/?a=1&amp;b=2">q</a>')
  renders(t, '[j](javascript:alert(1)) [r](/relative) [f](file:///etc/passwd)', 'j r f')
  renders(t, '[tg](tg://user?id=1) [m](mailto:a@b.c)', '<a href="tg://user?id=1">tg</a> <a href="mailto:a@b.c">m</a>')
  renders(
    t,
    '<https://a.b> and foo@bar.com and www.x.org',
    '<a href="https://a.b">https://a.b</a> and <a href="mailto:foo@bar.com">foo@bar.com</a> and <a href="http://www.x.org">www.x.org</a>',
  )
  renders(
    t,
    '![a cat](http://i/cat.png) ![](https://i/x.png) ![local](cat.png)',
    '<a href="http://i/cat.png">a cat</a> <a href="https://i/x.png">https://i/x.png</a> local',
  )
  renders(t, '[ref link][r]\n\n[r]: https://x.y', '<a href="https://x.y">ref link</a>')
  renders(t, '[![logo](http://i/logo.png)](https://x.y)', '<a href="https://x.y">logo</a>')
})

t.test('lists get markers and nest by indentation', async (t) => {
  renders(t, '- a\n  - b\n    1. c\n- d', '• a\n  • b\n    1. c\n• d')
  renders(t, '3. x\n4. y\n   continued', '3. x\n4. y\n   continued')
  renders(t, '* a\n\n* b', '• a\n\n• b')
  renders(t, '- [ ] todo\n- [x] done', '☐ todo\n☑ done')
  // A code block's lines are content: indenting them would change the code.
  renders(t, '- a\n  ```js\n  code\n    more\n  ```\n- b', '• a\n<pre><code class="language-js">code\n  more</code></pre>\n• b')
})

t.test('blockquotes do not nest', async (t) => {
  renders(t, '> quote **b**\n> > inner\n>\n> - item', '<blockquote>quote <b>b</b>\n\ninner\n\n• item</blockquote>')
})

t.test('tables become aligned monospaced blocks', async (t) => {
  renders(
    t,
    '| name | n |\n|---|--:|\n| **apple** | 1 |\n| kiwi <3 | 12 |',
    '<pre>name    |  n\n--------+---\napple   |  1\nkiwi &lt;3 | 12</pre>',
  )
})

t.test('markdown nested too deeply for marked is sent as escaped text', async (t) => {
  const deep = `${'> '.repeat(5_000)}a < b`
  const html = markdownToTelegramHtml(deep)
  t.equal(html, `${'&gt; '.repeat(5_000)}a &lt; b`)
  checkParts(t, formatReply(deep), MESSAGE_LIMIT)
})

t.test('an empty or blank reply has no parts', async (t) => {
  t.same(formatReply(''), [])
  t.same(formatReply(' \n\n\t '), [])
  t.same(formatReply('```\n```'), [])
  t.same(formatReply('**x**'), [{ html: '<b>x</b>', plain: 'x' }])
})

t.test('a long reply with a code block splits into parts that each parse, tags reopened', async (t) => {
  const lines = Array.from({ length: 400 }, (_, index) => `line ${index}: if (a < b && c > d) return "\`x\`"`)
  const markdown = `Intro with **bold**.\n\n\`\`\`js\n${lines.join('\n')}\n\`\`\`\n\nOutro [link](https://x.y).`
  const parts = formatReply(markdown)
  t.ok(parts.length >= 4, `${parts.length} parts`)
  checkParts(t, parts, MESSAGE_LIMIT)
  // The code was broken between lines: each part holds whole lines in a js block of its own.
  const blocks = parts.map((part) => {
    const { text, entities } = parseTelegramHtml(part.html)
    const pre = entities.find((entity) => entity.type === 'pre')
    t.ok(pre?.type === 'pre' && pre.language === 'js', `a js code block in ${JSON.stringify(part.html.slice(0, 60))}`)
    return pre ? text.slice(pre.offset, pre.offset + pre.length) : ''
  })
  t.equal(blocks.join('\n'), lines.join('\n'))
  t.match(parts.at(-1)?.html, /<a href="https:\/\/x\.y">link<\/a>/u)
  t.equal(withoutSpace(parts.map((part) => part.plain).join('')), withoutSpace(parseTelegramHtml(markdownToTelegramHtml(markdown)).text))
})

t.test('a break prefers a newline, then a space, and reopens tags with their attributes', async (t) => {
  t.same(formatReply('aaa\nbbb ccc', 10), [
    { html: 'aaa', plain: 'aaa' },
    { html: 'bbb ccc', plain: 'bbb ccc' },
  ])
  t.same(
    formatReply('[one two three four](https://x.y/?a=1&b=2)', 10).map((part) => part.html),
    ['<a href="https://x.y/?a=1&amp;b=2">one two</a>', '<a href="https://x.y/?a=1&amp;b=2">three four</a>'],
  )
  t.same(
    formatReply('**one two** three', 8).map((part) => part.html),
    ['<b>one two</b>', 'three'],
  )
})

t.test('a single line longer than the limit is cut hard, never inside an entity or a surrogate pair', async (t) => {
  const long = formatReply('x'.repeat(10_000))
  t.same(
    long.map((part) => part.plain.length),
    [4096, 4096, 1808],
  )
  checkParts(t, long, MESSAGE_LIMIT)
  t.same(
    formatReply('&'.repeat(7), 3).map((part) => part.html),
    ['&amp;&amp;&amp;', '&amp;&amp;&amp;', '&amp;'],
  )
  const emoji = '😀'.repeat(10)
  for (const limit of [2, 3, 5, 7]) {
    const parts = formatReply(`a${emoji}`, limit)
    checkParts(t, parts, limit)
    t.notOk(parts.some((part) => LONE_SURROGATE.test(part.plain)), `no surrogate pair cut in two at limit ${limit}`)
    t.equal(parts.map((part) => part.plain).join(''), `a${emoji}`)
  }
})

t.test('a megabyte reply, the most a brain returns, splits into full, valid parts losing nothing', async (t) => {
  const section = [
    '## Step',
    'Some **bold** and *italic* text with `a < b`, a [link](https://x.y/?a=1&b="2") & <tags> 😀 — more words.',
    `\`\`\`ts\n${'if (a < b && c > d) return "`x`" // &amp;\n'.repeat(30)}\`\`\``,
    '- item *one*\n- item two\n  1. nested <b>',
    '> quoted **line**',
    '| a | b |\n|---|--:|\n| 1 | 22 |',
  ].join('\n\n')
  const markdown = Array.from({ length: Math.ceil(2 ** 20 / section.length) }, () => section).join('\n\n')
  const parts = formatReply(markdown)
  const problems = parts.map((part, index) => [index, partProblem(part, MESSAGE_LIMIT)]).filter(([, problem]) => problem !== '')
  t.same(problems, [], 'every part parses, shows something and fits the limit')
  const visible = parseTelegramHtml(markdownToTelegramHtml(markdown)).text
  t.equal(withoutSpace(parts.map((part) => part.plain).join('')), withoutSpace(visible))
  // Lines are short, so a part breaks at most one line before the limit.
  t.ok(parts.length <= Math.ceil(visible.length / (MESSAGE_LIMIT - 200)), `${parts.length} parts for ${visible.length} units`)
})

t.test('a limit that cannot hold a surrogate pair is refused', async (t) => {
  t.throws(() => formatReply('x', 1), { name: 'TypeError', message: /got 1$/u })
  t.throws(() => formatReply('x', 2.5), TypeError)
})

// Pieces agents' Markdown is made of, and the ones that break naive formatters.
const FRAGMENTS = [
  '**', '*', '_', '__', '~~', '`', '```', '```js\n', '<', '>', '&', '&amp;', '&#0;', '"', '[x](', ')', '](https://a.b/?q="1"&r=2)',
  '<b>', '</i>', '<https://x.y>', '\n', '\n\n', '  \n', '- ', '1. ', '   - ', '> ', '# ', '---', '| a | b |\n|---|---|\n', '| 1 |',
  '- [ ] ', '\\', ' ', '😀', '👨‍👩‍👧', 'é', '\u00a0', '\t',
]
const markdownish = fc
  .array(
    fc.oneof(
      fc.constantFrom(...FRAGMENTS),
      fc.string({ maxLength: 12 }),
      fc
        .tuple(fc.constantFrom('a', 'word ', '😀', ' ', '\n', '&', '<', '`', '*'), fc.integer({ min: 1, max: 400 }))
        .map(([piece, count]) => piece.repeat(count)),
    ),
    { maxLength: 40 },
  )
  .map((pieces) => pieces.join(''))
const anyText = fc.oneof(markdownish, fc.string({ unit: 'binary', maxLength: 300 }), fc.string({ unit: 'grapheme', maxLength: 300 }))
const anyLimit = fc.oneof(fc.constant(MESSAGE_LIMIT), fc.integer({ min: 2, max: 20 }), fc.integer({ min: 50, max: 200 }))

t.test('any reply renders to HTML that Telegram accepts', async (t) => {
  fc.assert(
    fc.property(anyText, (markdown) => {
      parseTelegramHtml(markdownToTelegramHtml(markdown))
    }),
    { numRuns: 400 },
  )
  t.pass('property held')
})

t.test('any reply splits into valid, non-empty parts within the limit, losing nothing', async (t) => {
  fc.assert(
    fc.property(anyText, anyLimit, (markdown, limit) => {
      const parts = formatReply(markdown, limit)
      for (const part of parts) {
        const problem = partProblem(part, limit)
        if (problem !== '') throw new Error(problem)
      }
      const visible = parseTelegramHtml(markdownToTelegramHtml(markdown)).text
      const joined = parts.map((part) => part.plain).join('')
      if (withoutSpace(joined) !== withoutSpace(visible)) {
        throw new Error(`lost text: ${JSON.stringify(joined)} vs ${JSON.stringify(visible)}`)
      }
      if (!LONE_SURROGATE.test(visible) && parts.some((part) => LONE_SURROGATE.test(part.plain))) throw new Error('cut a surrogate pair')
    }),
    { numRuns: 400 },
  )
  t.pass('property held')
})
