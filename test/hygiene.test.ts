import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { Api } from 'grammy'
import t from 'tap'
import { CONNECTION_TIMEOUT_MS, REQUEST_TIMEOUT_MS } from '../src/app.js'
import { CLI, SECRET, TOKEN, delay, runProgram, startStack, type LogLine } from './helpers/service.js'

const NEW_SECRET = 'rotated-secret_0123456789abcdef'
const WAIT = { timeoutMs: 20_000 }

const post = (url: string, secret: string | undefined, body = '{}'): Promise<Response> =>
  fetch(`${url}/telegram/webhook`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(secret === undefined ? {} : { 'x-telegram-bot-api-secret-token': secret }) },
    body,
  })

/** Opens a connection, sends `head`, then one byte a second; resolves with what came back and when the server hung up. */
function trickle(url: string, head: string): Promise<{ response: string; closedAfterMs: number }> {
  const { hostname, port } = new URL(url)
  const started = Date.now()
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), hostname)
    let response = ''
    const drip = setInterval(() => socket.write('x'), 1000)
    const done = (): void => {
      clearInterval(drip)
      clearTimeout(giveUp)
      socket.destroy()
      resolve({ response, closedAfterMs: Date.now() - started })
    }
    // Far past both timeouts: a server that never hangs up fails the test instead of hanging it.
    const giveUp = setTimeout(done, REQUEST_TIMEOUT_MS + CONNECTION_TIMEOUT_MS + 10_000)
    socket.setEncoding('latin1').on('data', (chunk: string) => (response += chunk))
    socket.on('close', done)
    socket.on('error', done)
    socket.write(head)
  })
}

t.test('secret rotation: the previous secret and the new one both work, nothing else does', async (t) => {
  // The webhook is registered with the old secret (SECRET) by the stack; the service already has the new one.
  const stack = await startStack({ env: { TELEGRAM_WEBHOOK_SECRET: NEW_SECRET, TELEGRAM_WEBHOOK_SECRET_PREVIOUS: SECRET } })
  t.teardown(() => stack.close())
  const { emu, svc } = stack
  const before = emu.sendText({ chatId: 901, text: 'under the old secret' })
  await emu.waitFor((call) => call.method === 'sendMessage' && String(call.params['text']).startsWith(`reply ${before.update_id}`), WAIT)

  await new Api(TOKEN, { apiRoot: emu.url }).setWebhook(`${svc.url}/telegram/webhook`, { secret_token: NEW_SECRET })
  const after = emu.sendText({ chatId: 901, text: 'under the new secret' })
  await emu.waitFor((call) => call.method === 'sendMessage' && String(call.params['text']).startsWith(`reply ${after.update_id}`), WAIT)
  t.ok(emu.deliveries.filter((attempt) => [before.update_id, after.update_id].includes(attempt.update_id)).every((attempt) => attempt.status === 200), 'both delivered at once')

  t.equal((await post(svc.url, 'some-other-secret_0123456789')).status, 401, 'a third secret is refused')
  t.equal((await post(svc.url, `${NEW_SECRET}x`)).status, 401, 'so is the new one with a character more')
  t.equal((await post(svc.url, SECRET.slice(0, -1))).status, 401, 'and the old one with a character less')
})

t.test('a client sending its body slowly loses the connection', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const head = (secret: string): string =>
    `POST /telegram/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\nX-Telegram-Bot-Api-Secret-Token: ${secret}\r\n\r\n{`
  const [refused, authentic] = await Promise.all([trickle(stack.svc.url, head('wrong')), trickle(stack.svc.url, head(SECRET))])
  t.match(refused.response, /^HTTP\/1\.1 401/u, 'a wrong secret is answered 401 at once')
  t.ok(refused.closedAfterMs < 3000, `and the connection closed, its body never read (${refused.closedAfterMs} ms)`)
  // Even with the right secret, a body still arriving after REQUEST_TIMEOUT_MS is cut off.
  t.ok(authentic.closedAfterMs >= REQUEST_TIMEOUT_MS - 1000, `the right secret gets its time (${authentic.closedAfterMs} ms)`)
  t.ok(authentic.closedAfterMs < REQUEST_TIMEOUT_MS + 8000, `but not more: closed after ${authentic.closedAfterMs} ms`)
  t.ok(stack.svc.running, 'the service runs on')
})

t.test('a flood of bad requests writes a bounded number of log lines: the first of each kind, then one summary', async (t) => {
  const stack = await startStack({ env: { LOG_LEVEL: 'info' } })
  t.teardown(() => stack.close())
  const { svc } = stack
  const linesBefore = svc.logs.length
  const kinds = [
    () => post(svc.url, 'wrong-secret'),
    () => post(svc.url, SECRET, '{"update_id":'),
    () => post(svc.url, SECRET, '[1]'),
    () => fetch(`${svc.url}/no/such/route`),
    () => fetch(`${svc.url}/telegram/webhook`, { method: 'POST', headers: { 'x-telegram-bot-api-secret-token': SECRET, 'content-type': 'text/csv' }, body: 'a,b' }),
  ]
  const total = 2500
  const statuses = new Map<number, number>()
  let sent = 0
  const worker = async (): Promise<void> => {
    while (sent < total) {
      const kind = kinds[sent++ % kinds.length] as () => Promise<Response>
      const response = await kind()
      await response.arrayBuffer()
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1)
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker))
  t.same([...statuses.keys()].sort(), [400, 401, 404, 415, 429], `every kind was refused (${JSON.stringify(Object.fromEntries(statuses))})`)
  // The flood keeps the CPU busy; the stall watch's lines are about that, not about the requests.
  const during = svc.logs.slice(linesBefore).filter((line: LogLine) => line.msg !== 'event loop stalled')
  t.ok(during.length <= 10, `${total} bad requests wrote ${during.length} log lines`)
  await svc.stop()
  const summary = svc.logs.find((line: LogLine) => /more rejected requests/u.test(line.msg))
  t.ok(summary, 'the rest are summed up in one line (at the latest when the service stops)')
  const counted = Object.values((summary?.['rejected'] ?? {}) as Record<string, number>).reduce((sum, count) => sum + count, 0)
  t.equal(counted + during.filter((line) => line.level === 40).length, total, 'every rejected request is counted once: logged or summed up')
})

t.test('state files are private whatever the umask; `coordinator inbox` prints control characters escaped', async (t) => {
  const previous = process.umask(0)
  let stack: Awaited<ReturnType<typeof startStack>>
  try {
    stack = await startStack()
  } finally {
    process.umask(previous)
  }
  t.teardown(() => stack.close())
  const { emu, stateDir } = stack
  const hostile = 'hi \u001b[2J\u001b]0;owned\u0007 there \u009b31m \u202eevil'
  const update = emu.sendText({ chatId: 902, text: hostile })
  await emu.waitFor((call) => call.method === 'sendMessage' && String(call.params['text']).startsWith(`reply ${update.update_id}`), WAIT)
  emu.sendPhoto({ chatId: 902, caption: 'a file too' })
  await emu.waitFor((call) => call.method === 'sendMessage' && /a file too/u.test(String(call.params['text'])), WAIT)
  await delay(300)

  const open: string[] = []
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const file = path.join(dir, entry.name)
      // The test brain's own log is the test's file, not the service's.
      if (file === stack.brainLog) continue
      if ((fs.statSync(file).mode & 0o077) !== 0) open.push(`${file} ${(fs.statSync(file).mode & 0o777).toString(8)}`)
      if (entry.isDirectory()) walk(file)
    }
  }
  walk(stateDir)
  t.same(open, [], 'nothing in STATE_DIR is readable by others (the launcher’s umask was 000)')
  t.ok(fs.existsSync(path.join(stateDir, 'media')) && fs.existsSync(path.join(stateDir, 'chats')), 'media and chat directories were checked')

  const listed = await runProgram(process.execPath, [CLI, 'inbox'], { env: { PATH: process.env['PATH'] ?? '', STATE_DIR: stateDir } })
  t.equal(listed.code, 0)
  // eslint-disable-next-line no-control-regex -- control characters are what it looks for
  t.notOk(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202e]/u.test(listed.stdout), 'no control character reaches the terminal')
  t.match(listed.stdout, /hi \\u001b\[2J\\u001b\]0;owned\\u0007/u, 'they show as escapes')
})
