// The sandbox's chat page in a real browser: Debian's Chromium (/usr/bin/chromium) driven by
// playwright-core, against `coordinator sandbox` (the emulator, the real service, the echo brain).
// Screenshots go to test-artifacts/ (not committed).
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { chromium, type BrowserContext, type Locator, type Page } from 'playwright-core'
import { solidPng } from './helpers/png.js'
import { CLI, ROOT } from './helpers/service.js'

const CHROMIUM = '/usr/bin/chromium'
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]
const ARTIFACTS = path.join(ROOT, 'test-artifacts')
// Generous: two cores shared with other work; these bound waits, they are not measurements.
const WAIT = { timeout: 20_000 }
// The echo brain's pause per message (#slow: 3×).
const ECHO_DELAY_S = 1.5
// Expressions run in the page; strings, as the tests compile without the DOM's types.
const NAVIGATION_TIMING =
  "(() => { const entry = performance.getEntriesByType('navigation')[0]; return { domContentLoaded: Math.round(entry.domContentLoadedEventEnd), load: Math.round(entry.loadEventEnd) } })()"
const XSS_MARK = 'window.__xss'

if (!fs.existsSync(CHROMIUM)) {
  t.plan(0, `${CHROMIUM} is missing (apt-get install chromium)`)
  process.exit(0)
}

interface Sandbox {
  readonly url: string
  readonly child: ChildProcess
  readonly stderr: () => string
}

async function startSandbox(): Promise<Sandbox> {
  const child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, CLI, 'sandbox'], {
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: os.tmpdir(), ECHO_DELAY_S: String(ECHO_DELAY_S) },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk
      const first = out.split('\n')
      if (first.length > 1) resolve(first[0] ?? '')
    })
    child.once('exit', (code) => reject(new Error(`sandbox exited ${code}: ${stderr}`)))
    setTimeout(() => reject(new Error(`no URL within 30 s: ${stderr}`)), 30_000)
  })
  return { url, child, stderr: () => stderr }
}

const sandbox = await startSandbox()
const exited = new Promise<number | null>((resolve) => sandbox.child.once('exit', (code) => resolve(code)))
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chat-page-chromium-'))
const context: BrowserContext = await chromium.launchPersistentContext(userDataDir, {
  executablePath: CHROMIUM,
  headless: true,
  args: CHROMIUM_ARGS,
  viewport: { width: 1280, height: 800 },
})
t.teardown(async () => {
  await context.close()
  fs.rmSync(userDataDir, { recursive: true, force: true })
  sandbox.child.kill('SIGTERM')
  await exited
})
let stateDir = ''
const page: Page = context.pages()[0] ?? (await context.newPage())
const pageErrors: string[] = []
page.on('pageerror', (error) => pageErrors.push(error.message))
page.on('console', (message) => {
  if (message.type() === 'error') pageErrors.push(message.text())
})
fs.mkdirSync(ARTIFACTS, { recursive: true })

const messageBox = (): Locator => page.getByRole('textbox', { name: 'Message' })
const messages = (): Locator => page.getByRole('list', { name: 'Messages' }).getByRole('listitem')
const userMessage = (text: string): Locator => messages().filter({ hasText: text }).and(page.locator('.from-user'))
const botMessage = (text: string | RegExp): Locator => messages().filter({ hasText: text }).and(page.locator('.from-bot'))

async function send(text: string): Promise<void> {
  await messageBox().fill(text)
  await page.getByRole('button', { name: 'Send' }).click()
  await userMessage(text).last().waitFor(WAIT)
}

t.test('the page loads fast, with a textbox named Message, a Send button and the messages in a list', async (t) => {
  const started = Date.now()
  await page.goto(sandbox.url)
  await page.locator('body[data-ready="true"]').waitFor(WAIT)
  const readyMs = Date.now() - started
  const navigation = (await page.evaluate(NAVIGATION_TIMING)) as { domContentLoaded: number; load: number }
  t.comment(`first load (fresh profile): DOMContentLoaded ${navigation.domContentLoaded} ms, load ${navigation.load} ms, chat ready (events connected) ${readyMs} ms`)
  t.ok(readyMs < 10_000, `ready in ${readyMs} ms`)
  const reloadStarted = Date.now()
  await page.reload()
  await page.locator('body[data-ready="true"]').waitFor(WAIT)
  const reloadMs = Date.now() - reloadStarted
  const reloaded = (await page.evaluate(NAVIGATION_TIMING)) as { load: number }
  t.comment(`reload: load ${reloaded.load} ms, chat ready ${reloadMs} ms`)
  await messageBox().waitFor(WAIT)
  await page.getByRole('button', { name: 'Send' }).waitFor(WAIT)
  t.equal(await page.getByRole('list', { name: 'Messages' }).count(), 1)
  t.equal(await page.getByRole('navigation', { name: 'Chats' }).getByRole('button').count(), 2, 'a private chat and a group')
  stateDir = await page.locator('#about dt:text-is("state") + dd').innerText()
  t.ok(fs.existsSync(stateDir), `the service's state is in ${stateDir}`)
})

t.test('a message gets 👀 at once, "typing…", the status edited in place, then the reply and 👍', async (t) => {
  // #slow: three pauses, long enough for the status to be edited (at most every 2 s).
  await send('hello there #slow')
  const mine = userMessage('hello there #slow')
  await mine.locator('.reaction', { hasText: '👀' }).waitFor(WAIT)
  t.pass('👀 on the message')
  // Watched from now: as in Telegram, the bot's status message clears "typing…" until it is renewed.
  const typing = page.locator('#typing', { hasText: 'typing…' }).waitFor(WAIT)
  const status = botMessage(/thinking…/u)
  await status.waitFor(WAIT)
  const [statusId, first] = await status.evaluate((item: { dataset: Record<string, string | undefined>; innerText: string }) => [item.dataset['messageId'], item.innerText])
  const step = Number(/\((\d)\/3\)/u.exec(first ?? '')?.[1])
  t.ok(step < 3, `the status shows step ${step} of 3`)
  const later = new RegExp(`thinking… \\([${step + 1}-3]\\/3\\)`, 'u')
  await page.locator(`li[data-message-id="${statusId}"]`, { hasText: later }).waitFor(WAIT)
  t.pass('the status message was edited in place')
  await typing
  t.pass('typing… shown')
  await botMessage('echo: hello there #slow').waitFor(WAIT)
  await mine.locator('.reaction', { hasText: '👍' }).waitFor(WAIT)
  t.equal(await page.locator(`li[data-message-id="${statusId}"]`).count(), 0, 'the status message is gone once the reply came')
  const timeline = await page.locator('#timeline-entries').innerText()
  t.match(timeline, /sent[\s\S]*received by the service[\s\S]*reaction 👀[\s\S]*brain started \(attempt 1, pid \d+\)[\s\S]*brain exited 0 after \d+ ms[\s\S]*reply sent/u)
})

t.test('/status answers while a slow brain works; /cancel stops it', async (t) => {
  await send('a long one #long')
  await botMessage(/thinking…/u).waitFor(WAIT)
  await send('/status')
  await botMessage(/Working on your message for/u).waitFor(WAIT)
  t.pass('/status answered while the brain works')
  await send('/cancel')
  await botMessage(/Stopped the brain/u).waitFor(WAIT)
  t.equal(await botMessage('echo: a long one #long').count(), 0, 'the long one never answered')
})

t.test('a photo travels the real media path; the brain describes it and sends it back', async (t) => {
  const png = solidPng(120, 80, [0xe5, 0x39, 0x35])
  await messageBox().fill('what is this?')
  await page.locator('#file').setInputFiles({ name: 'red.png', mimeType: 'image/png', buffer: png })
  const mine = userMessage('what is this?')
  await mine.locator('img.photo').waitFor(WAIT)
  const reply = botMessage(/echo: what is this\?/u)
  await reply.waitFor(WAIT)
  t.match(await reply.innerText(), /Received:\s*•?\s*photo [^:]+: image\/jpeg, 0\.\d KiB/u, 'the brain got the downloaded photo')
  const back = page.locator('li.from-bot', { hasText: 'your photo, back' })
  await back.locator('img.photo').waitFor(WAIT)
  const size = await back.locator('img.photo').evaluate((image: { complete: boolean; naturalWidth: number; naturalHeight: number }) => [image.complete, image.naturalWidth, image.naturalHeight])
  t.same(size, [true, 120, 80], 'the photo the brain sent back shows, at its size')

  // A file that is not an image goes as a document, and comes back as one.
  await page.locator('#file').setInputFiles({ name: 'table.csv', mimeType: 'text/csv', buffer: Buffer.from('a,b\n1,2\n') })
  const listed = botMessage(/document table\.csv: text\/csv/u)
  await listed.waitFor(WAIT)
  const returned = page.locator('li.from-bot', { hasText: 'your document, back' }).locator('a.document')
  await returned.waitFor(WAIT)
  t.match(await returned.innerText(), /table\.csv/u)
  const download = await page.evaluate(async (href) => (await fetch(href)).text(), String(await returned.getAttribute('href')))
  t.equal(download, 'a,b\n1,2\n', 'the document the brain sent back downloads intact')
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page.png') })
})

t.test('a failing brain: 💔 and the notice; the timeline has its exit and stderr', async (t) => {
  await send('please #fail')
  await botMessage('⚠️ brain exited 3: the message asked the echo brain to fail').waitFor(WAIT)
  await userMessage('please #fail').locator('.reaction', { hasText: '💔' }).waitFor(WAIT)
  await userMessage('please #fail').click()
  await page.locator('#timeline-entries', { hasText: 'brain exited 3' }).waitFor(WAIT)
  t.equal(await page.locator('#stderr').innerText(), 'the message asked the echo brain to fail')
})

t.test('a reply is rendered from Telegram HTML; a script in it never runs', async (t) => {
  const attack = 'x <img src=x onerror="window.__xss=1"> <script>window.__xss=2</script> [click](javascript:window.__xss=3) **bold** `code`'
  await send(attack)
  const reply = botMessage(/echo: x/u)
  await reply.waitFor(WAIT)
  t.equal(await reply.locator('.text b').innerText(), 'bold', 'Markdown bold arrives as <b>')
  t.equal(await reply.locator('.text code').innerText(), 'code')
  t.equal(await reply.locator('img').count(), 0, 'no <img> from the text')
  t.match(await reply.innerText(), /<img src=x onerror="window.__xss=1">/u, 'the tag is shown as text')
  t.equal(await reply.locator('.text a').count(), 0, 'the javascript: link is shown as its text, not as a link')
  await reply.locator('.text').getByText('click').click()
  t.equal(await page.evaluate(XSS_MARK), undefined, 'nothing ran')

  // The renderer itself, given hostile HTML that a bot could send as parse_mode HTML.
  const errorsBefore = pageErrors.length
  const hostile =
    '<b onclick="window.__xss=4">b</b><img src=x onerror="window.__xss=5"><a href="javascript:window.__xss=6">j</a>' +
    '<a href="https://example.com/" style="color:red">ok</a><iframe src="https://example.com"></iframe>' +
    '<pre><code class="language-js" onmouseover="x()">1 &lt; 2</code></pre><blockquote expandable>q</blockquote>' +
    '<span class="tg-spoiler">s</span><svg><script>window.__xss=7</script></svg><u>u</u><s>s</s><i>i</i>'
  // Run in the page, as the page's own module; a string, as the tests compile without the DOM's types.
  const rendered = await page.evaluate(`(async () => {
    const { renderTelegramHtml } = await import('/telegram-html.js')
    const box = document.createElement('div')
    box.append(renderTelegramHtml(${JSON.stringify(hostile)}))
    return box.innerHTML
  })()`)
  t.equal(
    rendered,
    '<b>b</b><a>j</a><a href="https://example.com/" target="_blank" rel="noopener noreferrer nofollow">ok</a>' +
      '<pre><code data-language="js">1 &lt; 2</code></pre><blockquote class="expandable">q</blockquote>' +
      '<span class="spoiler">s</span>window.__xss=7<u>u</u><s>s</s><i>i</i>',
  )
  await page.waitForTimeout(300)
  t.equal(await page.evaluate(XSS_MARK), undefined, 'still nothing ran')
  // The parsing document inherits the page's Content-Security-Policy, which refuses the hostile
  // handlers and style even there: the second wall, reported on the console.
  const blocked = pageErrors.splice(errorsBefore)
  t.ok(blocked.every((text) => text.includes('Content Security Policy')), `only CSP reports while rendering (${blocked.length})`)
})

t.test('a group: several people, the sender is switchable', async (t) => {
  await page.getByRole('navigation', { name: 'Chats' }).getByRole('button', { name: 'Sandbox group' }).click()
  await page.getByRole('combobox', { name: 'Sender' }).selectOption({ label: 'Grace' })
  await send('hi from grace')
  t.equal(await userMessage('hi from grace').locator('.who').innerText(), 'Grace')
  await botMessage('echo: hi from grace').waitFor(WAIT)
  await page.getByRole('navigation', { name: 'Chats' }).getByRole('button', { name: 'Ada (private)' }).click()
  await botMessage('echo: hello there').waitFor(WAIT)
  t.equal(await botMessage('echo: hi from grace').count(), 0, "each chat shows its own messages")
})

t.test('at phone width (390 px) nothing overflows; the timeline opens on demand', async (t) => {
  await page.setViewportSize({ width: 390, height: 844 })
  const overflow = await page.evaluate('document.documentElement.scrollWidth - window.innerWidth')
  t.equal(overflow, 0, 'no horizontal scrolling')
  t.ok(await messageBox().isVisible(), 'the textbox shows')
  t.ok(await page.getByRole('button', { name: 'Send' }).isVisible(), 'Send shows')
  t.notOk(await page.locator('#timeline').isVisible(), 'the timeline is folded away')
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page-phone.png') })
  await page.getByRole('button', { name: 'Timeline' }).click()
  t.ok(await page.locator('#timeline').isVisible(), 'and opens')
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page-phone-timeline.png') })
  await page.getByRole('button', { name: 'Timeline' }).click()
  await page.setViewportSize({ width: 1280, height: 800 })
})

t.test('only the page may post: another Host or a request without the page header is refused', async (t) => {
  const { port } = new URL(sandbox.url)
  const post = (headers: Record<string, string>): Promise<number> =>
    new Promise((resolve, reject) => {
      const request = http.request({ host: '127.0.0.1', port, path: '/api/messages', method: 'POST', headers: { 'content-type': 'application/json', ...headers } }, (response) => {
        response.resume()
        resolve(response.statusCode ?? 0)
      })
      request.once('error', reject)
      request.end(JSON.stringify({ chatId: 1001, fromId: 1001, text: 'forged' }))
    })
  t.equal(await post({}), 403, 'no page header')
  t.equal(await post({ 'x-chat-page': '1', host: `evil.example:${port}` }), 403, 'a rebound name')
  t.equal(await post({ 'x-chat-page': '1' }), 200, 'the page itself')
  t.same(pageErrors, [], 'no error in the page')
})

t.test('SIGTERM stops the sandbox cleanly: exit 0, its temporary state removed', async (t) => {
  sandbox.child.kill('SIGTERM')
  t.equal(await exited, 0, sandbox.stderr())
  t.notOk(fs.existsSync(stateDir), 'the state directory is gone')
})
