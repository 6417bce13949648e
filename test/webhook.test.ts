import t from 'tap'
import { SECRET, eventually, readBrainLog, startStack } from './helpers/service.js'

const post = (url: string, body: string, headers: Record<string, string> = {}): Promise<Response> =>
  fetch(`${url}/telegram/webhook`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-telegram-bot-api-secret-token': SECRET, ...headers },
    body,
  })

t.test('webhook requests', async (t) => {
  const stack = await startStack({ env: { ALLOW_ALL_CHATS: '0', ALLOWED_CHAT_IDS: '5550001,-1001234567890', ALLOWED_USER_IDS: '5550001' } })
  t.teardown(() => stack.close())
  const { emu, svc } = stack
  const text = (updateId: number, chatId = 5550001, body = 'hello') =>
    JSON.stringify({
      update_id: updateId,
      message: { message_id: 77, date: 1764000000, chat: { id: chatId, type: 'private' }, from: { id: chatId, is_bot: false, first_name: 'Ada' }, text: body },
    })

  const repliesTo = (updateId: number): number =>
    emu.callsOf('sendMessage').filter((call) => call.ok && String(call.params['text']).startsWith(`reply ${updateId} `)).length
  const runsOf = (updateId: number): number =>
    readBrainLog(stack.brainLog).filter((event) => event['ev'] === 'start' && event['update_id'] === updateId).length
  // A later message in the allowed chat, answered: anything an earlier request queued there would have run before it.
  const laterMessageAnswered = async (): Promise<void> => {
    const later = emu.sendText({ chatId: 5550001, text: 'later' })
    await eventually(() => repliesTo(later.update_id) === 1, 10_000, 'the later message to be answered')
  }

  t.test('a wrong or missing secret is 401 and nothing is queued', async (t) => {
    t.equal((await post(svc.url, text(1), { 'x-telegram-bot-api-secret-token': 'wrong' })).status, 401)
    const noHeader = await fetch(`${svc.url}/telegram/webhook`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: text(2) })
    t.equal(noHeader.status, 401)
    await laterMessageAnswered()
    t.equal(runsOf(1) + runsOf(2), 0, 'no brain ran for them')
  })

  t.test('bad bodies get the right 4xx', async (t) => {
    t.equal((await post(svc.url, '{"update_id":')).status, 400, 'truncated JSON')
    t.equal((await post(svc.url, '[1,2]')).status, 400, 'not an object')
    t.equal((await post(svc.url, '{"update_id":"7"}')).status, 400, 'update_id not an integer')
    t.equal((await post(svc.url, '{"update_id":1.5}')).status, 400, 'update_id not an integer')
    t.equal((await post(svc.url, 'update_id=1', { 'content-type': 'application/x-www-form-urlencoded' })).status, 415, 'wrong content type')
    const huge = JSON.stringify({ update_id: 9, message: { text: 'x'.repeat(1024 * 1024) } })
    t.equal((await post(svc.url, huge)).status, 413, 'over 1 MiB')
  })

  t.test('a disallowed chat is ignored: 200, no reaction, no brain', async (t) => {
    const response = await post(svc.url, text(10, 9990001))
    t.equal(response.status, 200)
    await laterMessageAnswered()
    t.same(emu.callsOf('setMessageReaction').filter((call) => call.params['chat_id'] === 9990001), [], 'no reaction')
    t.equal(runsOf(10), 0, 'no brain')
  })

  t.test('a duplicate update_id is processed once', async (t) => {
    const update = emu.sendText({ chatId: 5550001, text: 'once' })
    await eventually(() => repliesTo(update.update_id) === 1, 10_000, 'the reply')
    const again = await post(svc.url, JSON.stringify(update))
    t.equal(again.status, 200)
    await laterMessageAnswered()
    t.equal(runsOf(update.update_id), 1, 'one brain run')
    t.equal(repliesTo(update.update_id), 1, 'one reply')
  })

  t.test('a failing reaction does not stop the reply', async (t) => {
    emu.injectFault('setMessageReaction', { kind: 'server_error' })
    t.teardown(() => emu.clearFaults())
    const update = emu.sendText({ chatId: 5550001, text: 'despite' })
    const reply = await emu.waitFor((call) => call.method === 'sendMessage' && String(call.params['text']).startsWith(`reply ${update.update_id}`), { timeoutMs: 10_000 })
    t.ok(reply.ok)
    t.ok(emu.callsOf('setMessageReaction').some((call) => call.status === 500), 'the reaction failed')
  })

  t.test('non-message updates and other message kinds', async (t) => {
    const callbackStatus = (await post(svc.url, JSON.stringify({ update_id: 500, callback_query: { id: 'x', from: { id: 1 }, data: 'y' } }))).status
    t.equal(callbackStatus, 200, 'a callback query is ignored with 200')
    emu.pushUpdate({
      message: {
        message_id: 90,
        date: 1_700_000_000,
        chat: { id: 5550001, type: 'private', first_name: 'T' },
        from: { id: 5550001, is_bot: false, first_name: 'T' },
        location: { latitude: 1, longitude: 2 },
      },
    })
    const note = await emu.waitFor((call) => call.method === 'sendMessage' && /can't handle location/u.test(String(call.params['text'])), { timeoutMs: 10_000 })
    t.ok(note.ok, 'a location gets a short "not supported" reply')
  })

  t.test('the healthz document', async (t) => {
    const response = await fetch(`${svc.url}/healthz`)
    t.equal(response.status, 200)
    const body = (await response.json()) as Record<string, unknown>
    t.match(body, {
      status: 'ok',
      uptime_s: Number,
      event_loop_delay_ms: Number,
      brains: { running: 0, limit: 4 },
      queue: { pending: 0, chats: 0 },
      store: { kind: 'sqlite', writable: true },
      last_update_at: String,
    })
    t.equal((await fetch(`${svc.url}/livez`)).status, 200)
    t.equal((await fetch(`${svc.url}/readyz`)).status, 200)
  })
})

t.test('bad-secret requests are rate limited per client, authentic ones never', async (t) => {
  const stack = await startStack({ env: { TRUSTED_PROXIES: '127.0.0.1,::1' } })
  t.teardown(() => stack.close())
  const statuses: number[] = []
  for (let i = 0; i < 25; i++) statuses.push((await post(stack.svc.url, '{}', { 'x-telegram-bot-api-secret-token': 'nope' })).status)
  t.ok(statuses.slice(0, 20).every((status) => status === 401), 'the first 20 are 401')
  t.ok(statuses.slice(20).every((status) => status === 429), 'then 429')
  const other = await post(stack.svc.url, '{}', { 'x-telegram-bot-api-secret-token': 'nope', 'x-forwarded-for': '203.0.113.9' })
  t.equal(other.status, 401, 'another client behind the trusted loopback proxy is counted separately')
  for (let i = 0; i < 30; i++) {
    const update = { update_id: 1000 + i, message: { message_id: 1, date: 1, chat: { id: 42, type: 'private' }, text: 'silent' } }
    const response = await post(stack.svc.url, JSON.stringify(update))
    if (response.status !== 200) t.fail(`authentic delivery ${i} answered ${response.status}`)
  }
  t.pass('30 authentic deliveries from the limited client all answered 200')
})

t.test('X-Forwarded-For is not believed unless TRUSTED_PROXIES names the peer', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  for (let i = 0; i < 20; i++) await post(stack.svc.url, '{}', { 'x-telegram-bot-api-secret-token': 'nope' })
  const spoofed = await post(stack.svc.url, '{}', { 'x-telegram-bot-api-secret-token': 'nope', 'x-forwarded-for': '203.0.113.77' })
  t.equal(spoofed.status, 429, 'a made-up X-Forwarded-For does not escape the limit')
  const line = stack.svc.logs.find((l) => l.msg === 'webhook request without the right secret')
  t.match(line, { ip: /^(127\.0\.0\.1|::1|::ffff:127\.0\.0\.1)$/u }, 'the log names the real peer')
})
