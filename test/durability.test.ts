import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import Database from 'better-sqlite3'
import type { Update } from 'grammy/types'
import { startEmulator, type RecordedCall } from '../src/emulator/index.js'
import { ROOT, SECRET, TOKEN, delay, eventually, freePort, readBrainLog, startStack, tempDir } from './helpers/service.js'

const APPEND_BRAIN = path.join(ROOT, 'test/fixtures/append-brain.sh')

const replyTexts = (calls: readonly RecordedCall[]): string[] =>
  calls.filter((call) => call.method === 'sendMessage' && call.ok).map((call) => String(call.params['text']))

const starts = (log: string) => readBrainLog(log).filter((event) => event['ev'] === 'start')

t.test('SIGKILL while a brain runs: after a restart the message completes once, flagged redelivered, and the chat goes on in order', async (t) => {
  const port = String(await freePort())
  const stack = await startStack({ env: { PORT: port } })
  t.teardown(() => stack.close())
  const { emu } = stack
  const chat = 7001
  const interrupted = emu.sendText({ chatId: chat, text: 'sleep=3 interrupted' })
  const later = emu.sendText({ chatId: chat, text: 'later' })
  await eventually(() => starts(stack.brainLog).length === 1, 10_000, 'the first brain to start')
  await stack.svc.stop('SIGKILL')

  await stack.restart()
  await eventually(() => replyTexts(emu.calls).some((text) => text.startsWith(`reply ${later.update_id}`)), 20_000, 'the later reply')
  const runs = starts(stack.brainLog)
  t.same(
    runs.map((event) => [event['update_id'], event['redelivered']]),
    [
      [interrupted.update_id, false],
      [interrupted.update_id, true],
      [later.update_id, false],
    ],
    'the interrupted message ran again first, flagged redelivered; the later one after it',
  )
  const replies = replyTexts(emu.calls)
  t.equal(replies.filter((text) => text.startsWith(`reply ${interrupted.update_id}`)).length, 1, 'its reply arrived once')
  t.ok(
    replies.indexOf(replies.find((text) => text.startsWith(`reply ${interrupted.update_id}`))!) <
      replies.indexOf(replies.find((text) => text.startsWith(`reply ${later.update_id}`))!),
    'replies in order',
  )
  t.ok(replies.some((text) => text.startsWith('⚠️ The service restarted')), 'the user was told about the restart')
})

t.test('a crash run: 500 messages in 20 chats, SIGKILLed at random 5 times, nothing lost, order kept', async (t) => {
  const port = String(await freePort())
  const emulator = await startEmulator({ token: TOKEN, deliveryRetryMs: 100, deliveryRetryMaxMs: 300 })
  const appendDir = tempDir('coordinator-append-')
  // The brain writes there: as its BRAIN_CWD, the sandbox lets it.
  const env = { PORT: port, LOG_LEVEL: 'info', BRAIN_COMMAND: APPEND_BRAIN, BRAIN_ENV_ALLOW: 'APPEND_DIR', APPEND_DIR: appendDir, BRAIN_CWD: appendDir }
  const stack = await startStack({ emulator, env })
  t.teardown(async () => {
    await stack.close()
    await emulator.close()
  })
  const chats = Array.from({ length: 20 }, (_, i) => 8000 + i)
  const sent = new Map<number, number[]>()
  const updateOf = new Map<string, number>()
  for (let i = 0; i < 500; i++) {
    const chatId = chats[i % chats.length] as number
    const update = emulator.sendText({ chatId, text: `message ${i}` })
    sent.set(chatId, [...(sent.get(chatId) ?? []), update.update_id])
    updateOf.set(`${chatId}:${update.message?.message_id}`, update.update_id)
  }
  const runs = (chatId: number): { id: number; redelivered: boolean }[] => {
    const file = path.join(appendDir, `chat-${chatId}`)
    if (!fs.existsSync(file)) return []
    return fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => ({ id: Number(line.split(' ')[0]), redelivered: line.split(' ')[1] === '1' }))
  }
  // A brain's reply names its update; the crash-loop guard's notice answers the message it gave up on.
  const replied = () =>
    new Set(
      emulator.calls
        .filter((call) => call.method === 'sendMessage' && call.ok)
        .map((call) => {
          const text = String(call.params['text'])
          if (text.startsWith('reply ')) return Number(text.split(' ')[1])
          if (!/restarted \d+ times while this message ran/u.test(text)) return undefined
          const repliedTo = (call.params['reply_parameters'] as { message_id: number }).message_id
          return updateOf.get(`${String(call.params['chat_id'])}:${repliedTo}`)
        }),
    )

  // Each kill comes at a random moment after the restarted service made some progress: a message
  // interrupted by restart after restart is failed on purpose (the crash-loop guard), not lost.
  let kills = 0
  while (kills < 5) {
    const before = replied().size
    await eventually(() => replied().size >= Math.min(before + 10, 500), 60_000, 'progress since the last restart')
    await delay(Math.random() * 800)
    await stack.svc.stop('SIGKILL')
    kills++
    await stack.restart()
  }
  const all = [...sent.values()].flat()
  await eventually(() => all.every((id) => replied().has(id)), 120_000, 'a reply to every message').catch((error: Error) => {
    const missing = all.filter((id) => !replied().has(id))
    const inbox = new Database(path.join(stack.stateDir, 'inbox.sqlite'), { readonly: true })
    const rows = inbox.prepare(`SELECT seq, update_id, chat_id, state, attempts, interruptions, reply_state, reply FROM messages WHERE update_id IN (${missing.slice(0, 10).join(',')})`).all()
    inbox.close()
    const ids = new Set((rows as { update_id: number }[]).map((row) => row.update_id))
    const warnings = stack.allLogs().filter((line) => ids.has(line['update_id'] as number)).map((line) => `${line['time']} ${line['pid']} ${line.msg}`)
    throw new Error(`${error.message}: ${missing.length} without a reply, e.g. ${JSON.stringify(rows)}; warnings: ${JSON.stringify(warnings)}`)
  })

  let repeats = 0
  for (const chatId of chats) {
    const chatRuns = runs(chatId)
    const order = chatRuns.map((run) => run.id).filter((id, index, ids) => index === 0 || id !== ids[index - 1])
    t.same(order, sent.get(chatId), `chat ${chatId}: every message ran, in arrival order`)
    const seen = new Set<number>()
    for (const run of chatRuns) {
      if (seen.has(run.id)) {
        repeats++
        if (!run.redelivered) t.fail(`chat ${chatId}: update ${run.id} ran twice without the redelivered flag`)
      }
      seen.add(run.id)
    }
  }
  t.ok(repeats <= kills * 4, `${repeats} repeats, all flagged redelivered: at most one per slot per kill`)
  t.comment(`${kills} kills, ${repeats} messages re-run after a kill`)
})

t.test('a re-delivered update_id is processed once, before and after a restart', async (t) => {
  const port = String(await freePort())
  const stack = await startStack({ env: { PORT: port } })
  t.teardown(() => stack.close())
  const update = stack.emu.sendText({ chatId: 7100, text: 'only once' })
  await eventually(() => replyTexts(stack.emu.calls).length === 1, 10_000, 'the reply')
  const resend = () =>
    fetch(`${stack.svc.url}/telegram/webhook`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-telegram-bot-api-secret-token': SECRET },
      body: JSON.stringify(update),
    })
  t.equal((await resend()).status, 200)
  await stack.svc.stop('SIGTERM')
  await stack.restart()
  t.equal((await resend()).status, 200)
  // A later message in the chat, answered: had the re-sent update been queued, it would have run first.
  const later = stack.emu.sendText({ chatId: 7100, text: 'later' })
  await eventually(() => replyTexts(stack.emu.calls).some((text) => text.startsWith(`reply ${later.update_id}`)), 10_000, 'the later reply')
  t.equal(starts(stack.brainLog).filter((event) => event['update_id'] === update.update_id).length, 1, 'one brain run')
  t.equal(replyTexts(stack.emu.calls).filter((text) => text.startsWith(`reply ${update.update_id}`)).length, 1, 'one reply')
})

t.test('an unwritable store: 503 and nothing acknowledged; intake resumes when it recovers', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const blocker = new Database(path.join(stack.stateDir, 'inbox.sqlite'))
  t.teardown(() => blocker.close())
  blocker.exec('BEGIN EXCLUSIVE')

  const update = stack.emu.sendText({ chatId: 7200, text: 'stored?' })
  await stack.emu.waitForDelivery((attempt) => attempt.update_id === update.update_id && attempt.status === 503, { timeoutMs: 5000 })
  t.pass('the webhook answers 503, so Telegram keeps the update')
  t.equal((await fetch(`${stack.svc.url}/readyz`)).status, 503, 'readyz is 503')
  const health = (await (await fetch(`${stack.svc.url}/healthz`)).json()) as { status: string; store: { writable: boolean } }
  t.match(health, { status: 'degraded', store: { writable: false } })
  t.same(stack.emu.callsOf('setMessageReaction'), [], 'no 👀 for an update that was not stored')

  blocker.exec('COMMIT')
  await stack.emu.waitForDelivery((attempt) => attempt.update_id === update.update_id && attempt.status === 200, { timeoutMs: 10_000 })
  t.pass('the re-sent update is accepted once the store is writable')
  await eventually(() => replyTexts(stack.emu.calls).some((text) => text.startsWith(`reply ${update.update_id}`)), 10_000, 'the reply')
  await eventually(async () => (await fetch(`${stack.svc.url}/readyz`)).status === 200, 10_000, 'readyz to recover')
})

t.test('many webhook requests at once: each stored and answered once; a commit that fails answers each 503 and loses none', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const { emu } = stack
  const post = (update: unknown) =>
    fetch(`${stack.svc.url}/telegram/webhook`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-telegram-bot-api-secret-token': SECRET },
      body: JSON.stringify(update),
    })
  const reactedTo = (updates: readonly Update[]) => {
    const reacted = new Set(emu.callsOf('setMessageReaction').map((call) => `${String(call.params['chat_id'])}/${String(call.params['message_id'])}`))
    return updates.filter((update) => reacted.has(`${update.message?.chat.id}/${update.message?.message_id}`))
  }
  const repliedOnce = (updates: readonly Update[]) => {
    const replies = replyTexts(emu.calls)
    return updates.every((update) => replies.filter((text) => text.startsWith(`reply ${update.update_id} `)).length === 1)
  }

  // The emulator delivers to up to 40 chats at once, as Telegram does.
  const chats = Array.from({ length: 40 }, (_, i) => 7400 + i)
  const first = chats.map((chatId) => emu.sendText({ chatId, text: `first ${chatId}` }))
  await eventually(() => repliedOnce(first), 30_000, 'a reply to each')
  t.equal(reactedTo(first).length, 40, 'a 👀 on each')
  t.same((await Promise.all(first.slice(0, 20).map(post))).map((response) => response.status), Array(20).fill(200), 'a re-sent update is a duplicate, answered 200')

  const blocker = new Database(path.join(stack.stateDir, 'inbox.sqlite'))
  t.teardown(() => blocker.close())
  blocker.exec('BEGIN EXCLUSIVE')
  const blocked = chats.slice(0, 20).map((chatId) => emu.sendText({ chatId, text: `blocked ${chatId}` }))
  const answers = await Promise.all(blocked.map(post))
  t.same(answers.map((response) => response.status), Array(20).fill(503), 'each request of a failed commit is answered 503')
  t.same(await Promise.all(answers.map((response) => response.json())), Array(20).fill({ error: 'inbox unavailable' }), 'with the usual error')
  await stack.emu.waitForDelivery((attempt) => attempt.update_id === blocked[19]?.update_id && attempt.status === 503, { timeoutMs: 5000 })
  t.same(reactedTo(blocked), [], 'no 👀 for any of them')

  blocker.exec('COMMIT')
  await eventually(() => repliedOnce(blocked), 30_000, 'a reply to each, once the inbox can be written')
  t.equal(reactedTo(blocked).length, 20, 'a 👀 on each')
  const stored = new Database(path.join(stack.stateDir, 'inbox.sqlite'), { readonly: true })
  t.teardown(() => stored.close())
  const rows = stored.prepare('SELECT update_id FROM messages').pluck().all() as number[]
  const ids = [...first, ...blocked].map((update) => update.update_id)
  t.same(rows.filter((id) => ids.includes(id)).sort(), [...ids].sort(), 'each update stored once')
})

t.test('SIGTERM with work queued: exit 0 within the grace, and the queued work runs after a restart', async (t) => {
  const port = String(await freePort())
  const stack = await startStack({ env: { PORT: port, SHUTDOWN_GRACE_S: '3' } })
  t.teardown(() => stack.close())
  const chat = 7300
  const running = stack.emu.sendText({ chatId: chat, text: 'sleep=1 running' })
  const queued = [stack.emu.sendText({ chatId: chat, text: 'queued one' }), stack.emu.sendText({ chatId: chat, text: 'queued two' })]
  await eventually(() => starts(stack.brainLog).length === 1, 10_000, 'the first brain')
  await eventually(() => stack.emu.deliveries.filter((d) => d.status === 200).length === 3, 10_000, 'all three accepted')
  const stopAt = Date.now()
  const exit = await stack.svc.stop('SIGTERM')
  t.same(exit, { code: 0, signal: null }, 'exit 0')
  t.ok(Date.now() - stopAt < 3000 + 2000, `stopped after ${Date.now() - stopAt} ms`)
  t.ok(replyTexts(stack.emu.calls).some((text) => text.startsWith(`reply ${running.update_id}`)), 'the running brain finished and replied')
  t.equal(starts(stack.brainLog).length, 1, 'nothing else started while draining')

  await stack.restart()
  await eventually(() => replyTexts(stack.emu.calls).length === 3, 15_000, 'the queued replies')
  t.same(
    replyTexts(stack.emu.calls).map((text) => Number(text.split(' ')[1])),
    [running.update_id, ...queued.map((update) => update.update_id)],
    'in order',
  )
})
