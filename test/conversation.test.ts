import fs from 'node:fs'
import path from 'node:path'
import Database from 'better-sqlite3'
import type { Message } from 'grammy/types'
import t from 'tap'
import type { RecordedCall } from '../src/emulator/index.js'
import { ROOT, brainLeader, eventually, liveGroupMembers, readBrainLog, startStack, type Stack } from './helpers/service.js'

// Each test runs its own stack and mostly waits for brains, so they run side by side.
t.jobs = 3

// Generous: CI machines are noisy; these bound waits, they are not what the tests measure.
const WAIT = { timeoutMs: 20_000 }

const inChat = (chatId: number) => (call: RecordedCall) => call.params['chat_id'] === chatId
const sent = (call: RecordedCall): Message | undefined => (call.ok ? (call.result as Message) : undefined)
const reactionsOn = (stack: Stack, chatId: number, messageId: number): string[] =>
  stack.emu
    .callsOf('setMessageReaction')
    .filter((call) => call.ok && call.params['chat_id'] === chatId && call.params['message_id'] === messageId)
    .map((call) => (call.params['reaction'] as { emoji: string }[])[0]?.emoji ?? '')
const brainStarts = (stack: Stack) => readBrainLog(stack.brainLog).filter((line) => line['ev'] === 'start')

t.test('typing and the final reaction, on every way a run can end', async (t) => {
  const stack = await startStack({ env: { BRAIN_TIMEOUT_S: '6', MESSAGE_BUDGET_S: '7' } })
  t.teardown(() => stack.close())
  const { emu } = stack
  const cases = [
    { chatId: 701, text: 'sleep=4.5', reaction: '👍', reply: /^reply/u },
    { chatId: 702, text: 'exit=3 stderr=boom', reaction: '💔', reply: /brain exited 3: boom/u },
    { chatId: 703, text: 'hang', reaction: '🥱', reply: /timed out/u },
    { chatId: 704, text: 'silent', reaction: '👍', reply: undefined },
  ]
  const updates = cases.map(({ chatId, text }) => emu.sendText({ chatId, text }))
  for (const [index, { chatId, reaction, reply }] of cases.entries()) {
    const messageId = updates[index]?.message?.message_id as number
    await eventually(() => reactionsOn(stack, chatId, messageId).includes(reaction), 20_000, `${reaction} in chat ${chatId}`)
    const texts = emu.callsOf('sendMessage').filter(inChat(chatId)).map((call) => sent(call)?.text ?? '')
    if (reply) t.match(texts, [reply], `chat ${chatId} got its answer`)
    else t.same(texts, [], `chat ${chatId} got no message for an empty reply`)
    t.same(reactionsOn(stack, chatId, messageId), ['👀', reaction], `chat ${chatId}: 👀, then ${reaction}`)
  }
  const typing = (chatId: number) => emu.callsOf('sendChatAction').filter(inChat(chatId))
  t.ok(typing(701).length >= 2, `typing is renewed during a 5 s run (${typing(701).length} times)`)
  for (const { chatId } of cases) t.ok(typing(chatId).length >= 1, `chat ${chatId} saw typing`)

  // A reply that cannot be sent (Telegram refuses it for good) must not leave typing on.
  emu.injectFault('sendMessage', { kind: 'reaction_invalid' })
  const refused = emu.sendText({ chatId: 705, text: 'sleep=1' })
  await stack.svc.waitForLog((line) => line.msg === 'reply could not be delivered' && line['update_id'] === refused.update_id, 20_000)
  emu.clearFaults()

  const settled = emu.calls.length
  // A later run longer than the renewal period: its own renewal proves the typing timers fired meanwhile.
  emu.sendText({ chatId: 706, text: 'sleep=5' })
  await emu.waitFor((call) => call.method === 'sendMessage' && inChat(706)(call), WAIT)
  t.ok(typing(706).length >= 2, 'the later run had its typing renewed')
  const late = emu.calls.slice(settled).filter((call) => call.method === 'sendChatAction' && !inChat(706)(call))
  t.same(late, [], 'no typing in the other chats after their runs ended')
})

t.test('REACTION_DONE set empty leaves the 👀', async (t) => {
  const stack = await startStack({ env: { REACTION_DONE: '' } })
  t.teardown(() => stack.close())
  const update = stack.emu.sendText({ chatId: 710, text: 'fine' })
  await stack.emu.waitFor((call) => call.method === 'sendMessage' && inChat(710)(call), WAIT)
  // The chat's next message is answered only once the first one's turn, its final reaction included, is over.
  stack.emu.sendText({ chatId: 710, text: 'later' })
  await stack.emu.waitFor((call) => call.method === 'sendMessage' && /^reply \d+ later$/u.test(sent(call)?.text ?? ''), WAIT)
  t.same(reactionsOn(stack, 710, update.message?.message_id as number), ['👀'])
})

t.test('/status, /cancel and /cancel all answer at once while a brain runs', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const { emu } = stack
  const chatId = 720
  const accepted = (updateId: number): boolean => emu.deliveries.some((delivery) => delivery.update_id === updateId && delivery.status === 200)
  const answerTo = async (text: string): Promise<{ text: string; ms: number }> => {
    const before = Date.now()
    const update = emu.sendText({ chatId, text })
    const call = await emu.waitFor(
      (call) =>
        call.method === 'sendMessage' &&
        (call.params['reply_parameters'] as { message_id?: number } | undefined)?.message_id === update.message?.message_id,
      WAIT,
    )
    return { text: sent(call)?.text ?? '', ms: Date.now() - before }
  }

  const status0 = await answerTo('/status')
  t.match(status0.text, /Nothing is running/u)
  const help = await answerTo('/help')
  t.match(help.text, /\/cancel all/u)

  emu.sendText({ chatId, text: 'sleep=30 grandchild' })
  const start = await eventually(() => brainStarts(stack).find((line) => line['chat_id'] === chatId), 20_000, 'brain start')
  const queuedUpdates = [emu.sendText({ chatId, text: 'second' }), emu.sendText({ chatId, text: 'third' })]
  await eventually(() => queuedUpdates.every((update) => accepted(update.update_id)), 10_000, 'both queued')

  const status = await answerTo('/status')
  t.ok(status.ms < 1000, `/status answered in ${status.ms} ms while the brain runs`)
  t.match(status.text, /Working on your message for \d+ s/u)
  t.match(status.text, /2 more messages queued/u)
  t.match(status.text, /Brains busy: 1 of 4/u)

  const grandchild = await eventually(
    () => readBrainLog(stack.brainLog).find((line) => line['ev'] === 'grandchild' && line['chat_id'] === chatId),
    10_000,
    'grandchild',
  )
  const cancel = await answerTo('/cancel')
  t.ok(cancel.ms < 1000, `/cancel answered in ${cancel.ms} ms`)
  t.match(cancel.text, /Stopped the brain/u)
  t.match(cancel.text, /2 queued messages will still be answered/u)
  // The brain and its grandchild share the process group the service started (pids inside a sandbox are its own).
  t.ok(grandchild['grandchild_pid'], 'the brain had started a grandchild')
  const leader = brainLeader(stack.svc, start['update_id'] as number) as number
  await eventually(() => liveGroupMembers(leader).length === 0, 10_000, 'brain gone')
  t.pass('no process of the cancelled brain is left')
  await emu.waitFor((call) => call.method === 'sendMessage' && /^reply \d+ second$/u.test(sent(call)?.text ?? ''), WAIT)
  await emu.waitFor((call) => call.method === 'sendMessage' && /^reply \d+ third$/u.test(sent(call)?.text ?? ''), WAIT)
  t.pass('the queued messages were answered after the cancel')

  emu.sendText({ chatId, text: 'sleep=30' })
  await eventually(() => brainStarts(stack).filter((line) => line['chat_id'] === chatId).length === 4, 20_000, 'fourth brain')
  const dropped = [emu.sendText({ chatId, text: 'drop me' }), emu.sendText({ chatId, text: 'and me' })]
  await eventually(() => dropped.every((update) => accepted(update.update_id)), 10_000, 'both queued')
  const cancelAll = await answerTo('/cancel all')
  t.ok(cancelAll.ms < 1000, `/cancel all answered in ${cancelAll.ms} ms`)
  t.match(cancelAll.text, /Stopped the brain/u)
  t.match(cancelAll.text, /Dropped 2 queued messages/u)
  // A message sent after them, answered: the dropped ones would have run before it.
  emu.sendText({ chatId, text: 'after the drop' })
  await emu.waitFor((call) => call.method === 'sendMessage' && /^reply \d+ after the drop$/u.test(sent(call)?.text ?? ''), WAIT)
  const ran = brainStarts(stack).map((line) => line['update_id'])
  for (const update of dropped) t.notOk(ran.includes(update.update_id), `dropped message ${update.update_id} never reached a brain`)
  t.match((await answerTo('/status')).text, /Nothing is running/u)
})

t.test('progress: one status message, edited at most every 2 s, then deleted; malformed lines skipped', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const { emu } = stack
  const chatId = 730
  const update = emu.sendText({ chatId, text: 'garbage message=hello react=🔥 progress=12:400' })
  const reply = await emu.waitFor((call) => call.method === 'sendMessage' && /^reply/u.test(sent(call)?.text ?? '') && inChat(chatId)(call), WAIT)

  const messages = emu.callsOf('sendMessage').filter(inChat(chatId))
  const statuses = messages.filter((call) => /^step \d+ of 12$/u.test(sent(call)?.text ?? ''))
  t.equal(statuses.length, 1, 'one status message')
  const statusId = sent(statuses[0] as RecordedCall)?.message_id
  const edits = emu.callsOf('editMessageText').filter((call) => call.params['message_id'] === statusId)
  t.ok(edits.length >= 1 && edits.length <= 3, `the status was edited ${edits.length} times over about 5 s`)
  const times = [statuses[0] as RecordedCall, ...edits].map((call) => call.at)
  for (let i = 1; i < times.length; i++) {
    t.ok((times[i] as number) - (times[i - 1] as number) >= 1900, `edit ${i} came ${Math.round((times[i] as number) - (times[i - 1] as number))} ms after the one before`)
  }
  const deleted = await emu.waitFor((call) => call.method === 'deleteMessage' && call.params['message_id'] === statusId, WAIT)
  t.ok(deleted.ok, 'the status message was deleted when the answer came')
  t.ok(deleted.at >= (edits.at(-1)?.at ?? 0), 'and not edited after that')

  const hello = messages.find((call) => sent(call)?.text === 'hello')
  t.ok(hello && hello.seq < reply.seq, 'the message event arrived before the reply')
  t.same(reactionsOn(stack, chatId, update.message?.message_id as number), ['👀', '🔥'], "the brain's reaction stands; no 👍 over it")
  const warnings = stack.svc.logs.filter((line) => line.level === 40 && line['chat_id'] === chatId)
  t.ok(warnings.length >= 5, `malformed fd-3 lines were logged (${warnings.length} warnings) and skipped`)
})

t.test('Markdown replies arrive as valid HTML; a rejected one arrives as plain text', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const { emu } = stack
  emu.sendText({ chatId: 740, text: 'markdown' })
  const call = await emu.waitFor((call) => call.method === 'sendMessage' && inChat(740)(call), WAIT)
  t.equal(call.params['parse_mode'], 'HTML')
  t.ok(call.ok, `Telegram accepted the HTML: ${call.description ?? ''}`)
  const message = sent(call) as Message
  t.match(message.text, /Result for <you> & "them": 5 > 3/u)
  t.match(message.text, /if \(a < b && c > d\) console\.log\(`<ok>`\)/u)
  const entities = message.entities ?? []
  for (const expected of [
    { type: 'bold' },
    { type: 'pre', language: 'ts' },
    { type: 'text_link', url: 'https://example.com/?a=1&b=2' },
    { type: 'code' },
  ]) {
    t.ok(entities.some((entity) => Object.entries(expected).every(([key, value]) => (entity as unknown as Record<string, unknown>)[key] === value)), `has ${JSON.stringify(expected)}`)
  }

  emu.injectFault('sendMessage', { kind: 'entities_rejected' }, { times: 1 })
  emu.sendText({ chatId: 741, text: 'markdown' })
  const plain = await emu.waitFor((call) => call.method === 'sendMessage' && inChat(741)(call) && call.ok, WAIT)
  t.equal(plain.params['parse_mode'], undefined, 'sent again without parse_mode')
  t.match(sent(plain)?.text, /if \(a < b && c > d\)/u, 'with the same text')
  t.equal(emu.callsOf('sendMessage').filter(inChat(741)).length, 2, 'one refused, one plain')
})

t.test('a photo and a voice note reach the brain as files; COORDINATOR_CHAT_DIR is per chat', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const { emu } = stack
  const photoBytes = Buffer.from('not really a jpeg, but bytes all the same')
  const photo = emu.sendPhoto({ chatId: 750, caption: 'what is this?', bytes: photoBytes })
  const voice = emu.sendVoice({ chatId: 750 })
  await eventually(() => brainStarts(stack).length === 2, 20_000, 'two runs')
  const [photoRun, voiceRun] = brainStarts(stack) as { messages: { update_id: number; text: string; files: { kind: string; path: string; mime_type: string; size: number }[] }[]; chat_dir: string }[]

  const photoFile = photoRun?.messages[0]?.files[0]
  t.equal(photoRun?.messages[0]?.text, 'what is this?', 'the caption is the text')
  t.match(photoFile, { kind: 'photo', mime_type: 'image/jpeg', size: photoBytes.length })
  t.equal(path.dirname(photoFile?.path ?? ''), path.join(stack.stateDir, 'media', String(photo.update_id)))
  t.same(fs.readFileSync(photoFile?.path ?? ''), photoBytes, 'the largest size, downloaded intact')

  const voiceFile = voiceRun?.messages[0]?.files[0]
  t.match(voiceFile, { kind: 'voice', path: String })
  t.equal(path.dirname(voiceFile?.path ?? ''), path.join(stack.stateDir, 'media', String(voice.update_id)))
  t.ok(fs.statSync(voiceFile?.path ?? '').size > 0)

  t.equal(photoRun?.chat_dir, path.join(stack.stateDir, 'chats', '750'))
  t.ok(fs.statSync(photoRun?.chat_dir ?? '').isDirectory(), 'the chat directory exists when the brain runs')
})

t.test('BUSY_MODE=collect: what arrives during a run goes into one next run', async (t) => {
  const stack = await startStack({ env: { BUSY_MODE: 'collect' } })
  t.teardown(() => stack.close())
  const { emu } = stack
  const first = emu.sendText({ chatId: 760, text: 'sleep=2' })
  await eventually(() => brainStarts(stack).length === 1, 20_000, 'first run')
  const later = ['two', 'three', 'four'].map((text) => emu.sendText({ chatId: 760, text }))
  await eventually(() => brainStarts(stack).length === 2, 20_000, 'second run')
  await emu.waitFor((call) => call.method === 'sendMessage' && /two\s+three\s+four/u.test(sent(call)?.text ?? ''), WAIT)
  const runs = brainStarts(stack) as { messages: { update_id: number }[] }[]
  t.same(runs.map((run) => run.messages.map((message) => message.update_id)), [[first.update_id], later.map((update) => update.update_id)])
  for (const update of [first, ...later]) {
    t.ok(reactionsOn(stack, 760, update.message?.message_id as number).includes('👀'), `message ${update.update_id} got 👀`)
  }
  // A later message, answered: had the collected ones been queued again, they would have run first.
  const after = emu.sendText({ chatId: 760, text: 'after' })
  await emu.waitFor((call) => call.method === 'sendMessage' && /^reply \d+ after$/u.test(sent(call)?.text ?? ''), WAIT)
  t.same(brainStarts(stack).map((run) => run['update_id']), [first.update_id, later.at(-1)?.update_id, after.update_id], 'the collected messages are not run again')
})

t.test('BUSY_MODE=interrupt: a new message stops the brain; the next run gets every message', async (t) => {
  const stack = await startStack({ env: { BUSY_MODE: 'interrupt' } })
  t.teardown(() => stack.close())
  const { emu } = stack
  const first = emu.sendText({ chatId: 770, text: 'sleep=30' })
  const firstStart = await eventually(() => brainStarts(stack)[0], 20_000, 'first run')
  const second = emu.sendText({ chatId: 770, text: 'never mind' })
  await emu.waitFor((call) => call.method === 'sendMessage' && /sleep=30\s+never mind/u.test(sent(call)?.text ?? ''), WAIT)
  t.same(liveGroupMembers(brainLeader(stack.svc, firstStart['update_id'] as number) as number), [], 'the interrupted brain is gone')
  const runs = brainStarts(stack) as { messages: { update_id: number }[] }[]
  t.same(runs.map((run) => run.messages.map((message) => message.update_id)), [[first.update_id], [first.update_id, second.update_id]])
  t.equal(emu.callsOf('sendMessage').filter(inChat(770)).length, 1, 'one answer for both')
})

t.test('EDITS=queue hands an edit to the brain as a new message; the default ignores it', async (t) => {
  const stack = await startStack({ env: { EDITS: 'queue' } })
  t.teardown(() => stack.close())
  const { emu } = stack
  const original = emu.sendText({ chatId: 780, text: 'frist' })
  await emu.waitFor((call) => call.method === 'sendMessage' && inChat(780)(call), WAIT)
  const edit = emu.editUserMessage({ chatId: 780, messageId: original.message?.message_id as number, text: 'first' })
  await eventually(() => brainStarts(stack).length === 2, 20_000, 'the edit ran')
  const run = brainStarts(stack)[1] as { messages: { update_id: number; text: string; edited: boolean }[] }
  t.same(run.messages, [{ update_id: edit.update_id, text: 'first', edited: true, files: [] }])

  await stack.svc.stop()
  await stack.restart({ EDITS: 'ignore' })
  emu.editUserMessage({ chatId: 780, messageId: original.message?.message_id as number, text: 'first!' })
  await stack.svc.waitForLog((line) => line.msg === 'update ignored' && /EDITS=ignore/u.test(String(line['reason'])))
  t.equal(brainStarts(stack).length, 2, 'ignored')
})

t.test('BRAIN_INPUT=text feeds a prompt-on-stdin CLI; /new forgets the chat dir it keeps its memory in', async (t) => {
  const stack = await startStack({
    env: {
      BRAIN_COMMAND: path.join(ROOT, 'scripts/brains/with-history'),
      BRAIN_INPUT: 'text',
      BRAIN_ENV_ALLOW: 'LLM_COMMAND',
      LLM_COMMAND: 'tr a-z A-Z',
    },
  })
  t.teardown(() => stack.close())
  const { emu } = stack
  const ask = async (chatId: number, text: string): Promise<string> => {
    const update = emu.sendText({ chatId, text })
    const call = await emu.waitFor(
      (call) =>
        call.method === 'sendMessage' &&
        (call.params['reply_parameters'] as { message_id?: number } | undefined)?.message_id === update.message?.message_id &&
        inChat(chatId)(call),
      WAIT,
    )
    return sent(call)?.text ?? ''
  }
  t.equal(await ask(790, 'hello there'), 'HELLO THERE', 'stdin is the bare text')
  t.match(await ask(790, 'and again'), /USER: HELLO THERE[^]*AND AGAIN/u, 'the brain remembers, in its chat dir')
  t.equal(await ask(791, 'other chat'), 'OTHER CHAT', 'another chat has its own memory')
  t.match(await ask(790, '/new'), /Starting over/u)
  t.equal(await ask(790, 'fresh'), 'FRESH', 'after /new the chat starts over')

  const photo = emu.sendPhoto({ chatId: 792, caption: 'look' })
  const reply = await emu.waitFor((call) => call.method === 'sendMessage' && inChat(792)(call), WAIT)
  t.match(sent(reply)?.text, new RegExp(`^LOOK\\n\\[FILE: PHOTO ${path.join(stack.stateDir, 'media', String(photo.update_id)).toUpperCase()}/PHOTO\\.JPG\\]$`, 'u'), 'files follow the text as [file: kind path] lines')
})

t.test('/new waits for a running brain', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const { emu } = stack
  emu.sendText({ chatId: 795, text: 'sleep=10' })
  await eventually(() => brainStarts(stack).length === 1, 20_000, 'brain start')
  emu.sendText({ chatId: 795, text: '/new' })
  const answer = await emu.waitFor((call) => call.method === 'sendMessage' && inChat(795)(call), WAIT)
  t.match(sent(answer)?.text, /once it has answered, or \/cancel it first/u)
  t.ok(fs.existsSync(path.join(stack.stateDir, 'chats', '795')), 'the running brain keeps its chat dir')
})

t.test('ACK_MODE=webhook-reply returns the 👀 in the webhook answer', async (t) => {
  const stack = await startStack({ env: { ACK_MODE: 'webhook-reply' } })
  t.teardown(() => stack.close())
  const { emu } = stack
  const update = emu.sendText({ chatId: 796, text: 'hi' })
  const ack = await emu.waitFor((call) => call.method === 'setMessageReaction' && inChat(796)(call), WAIT)
  t.equal(ack.source, 'webhook_reply', 'no outbound request for the 👀')
  t.equal(ack.params['message_id'], update.message?.message_id)
  t.ok(ack.ok)
  await emu.waitFor((call) => call.method === 'sendMessage' && inChat(796)(call), WAIT)
})

t.test("downloaded media goes with the inbox's retention", async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const { emu } = stack
  const photo = emu.sendPhoto({ chatId: 799, caption: 'keep me for a while' })
  await emu.waitFor((call) => call.method === 'sendMessage' && inChat(799)(call), WAIT)
  const dir = path.join(stack.stateDir, 'media', String(photo.update_id))
  t.ok(fs.existsSync(dir), 'downloaded')
  await stack.svc.stop()
  const inbox = new Database(path.join(stack.stateDir, 'inbox.sqlite'))
  inbox.prepare('UPDATE messages SET finished_at = finished_at - ? WHERE update_id = ?').run(100 * 3600_000, photo.update_id)
  inbox.close()
  await stack.restart()
  await eventually(() => !fs.existsSync(dir), 10_000, 'the media directory pruned')
  t.pass('pruned with its message, 100 h after it finished (INBOX_RETENTION_H=72)')
})

t.test('a big Markdown reply is formatted off the event loop and arrives as valid parts, in order', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const { emu } = stack
  emu.sendText({ chatId: 800, text: 'big=300' })
  await stack.svc.waitForLog((line) => line.msg === 'reply sent' && line['chat_id'] === 800, 60_000)
  const parts = emu.callsOf('sendMessage').filter(inChat(800))
  t.ok(parts.length >= 40, `${parts.length} parts`)
  t.ok(parts.every((call) => call.ok && call.params['parse_mode'] === 'HTML'), 'every part valid Telegram HTML')
  const text = parts.map((call) => sent(call)?.text ?? '').join('\n')
  // Past FORMAT_TIME_LIMIT_MS (a machine busy enough) the reply goes out as plain text: its
  // headings then keep their Markdown.
  const plain = stack.svc.logs.find((line) => line.msg.startsWith('reply not formatted'))
  t.not(plain?.['reason'], 'thread_failed', 'the formatting thread did not fail')
  const heading = plain === undefined ? /^Section (\d+)$/gmu : /^## Section (\d+)$/gmu
  const numbers = [...text.matchAll(heading)].map((match) => Number(match[1]))
  t.ok(numbers.length > 1000 && numbers.every((n, i) => n === i + 1), `all ${numbers.length} sections, in order${plain ? ' (as plain text: past the time limit)' : ''}`)
})

t.test('a chat directory that cannot be created does not stop the brain', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  fs.mkdirSync(path.join(stack.stateDir, 'chats'), { recursive: true })
  fs.writeFileSync(path.join(stack.stateDir, 'chats', '801'), 'a file where the directory should be')
  stack.emu.sendText({ chatId: 801, text: 'still here' })
  const reply = await stack.emu.waitFor((call) => call.method === 'sendMessage' && inChat(801)(call), WAIT)
  t.match(sent(reply)?.text, /^reply \d+ still here$/u)
  t.ok(stack.svc.logs.some((line) => line.msg.startsWith('could not create the chat directory')), 'warned')
})
