import fs from 'node:fs'
import path from 'node:path'
import type { Message, Update } from 'grammy/types'
import t from 'tap'
import type { RecordedCall } from '../src/emulator/index.js'
import { CLI, SECRET, delay, eventually, readBrainLog, runProgram, startStack, tempDir } from './helpers/service.js'

// Each test runs its own stack, so they run side by side.
t.jobs = 3

/** A message as an update in a chat (not a channel) carries it. */
type UserMessage = NonNullable<Update['message']>

// Telegram's traffic as it arrives in real chats: service messages, upgrades, nulls, GIFs, deleted targets.
const OWNER = { id: 5_550_001, is_bot: false, first_name: 'Ada', username: 'ada_l' }
const GROUP = -5_550_300
const FORUM = -1_005_550_400
const WAIT = { timeoutMs: 20_000 }

const replyTo = (call: RecordedCall): number | undefined => (call.params['reply_parameters'] as { message_id?: number } | undefined)?.message_id
const now = (): number => Math.floor(Date.now() / 1000)

t.test('service messages are ignored without a word; a content-less one too', async (t) => {
  const stack = await startStack({ env: { ALLOW_ALL_CHATS: '0', ALLOWED_CHAT_IDS: `${GROUP},${OWNER.id}`, ALLOWED_USER_IDS: String(OWNER.id) } })
  t.teardown(() => stack.close())
  const { emu } = stack
  const group = emu.addChat({ id: GROUP, type: 'group', title: 'Household' })
  const pinned = emu.sendText({ chatId: GROUP, from: OWNER, text: 'silent' }).message as Message
  // Its brain's run is over (the final reaction) before the service messages come.
  await emu.waitFor((call) => call.method === 'setMessageReaction' && call.params['message_id'] === pinned.message_id && JSON.stringify(call.params['reaction']).includes('👍'), WAIT)
  const before = emu.calls.length
  const startsBefore = readBrainLog(stack.brainLog).filter((line) => line['ev'] === 'start').length

  let messageId = 500
  const service = (fields: Record<string, unknown>, chat: Message['chat'] = group): number => {
    const update = emu.pushUpdate({ message: { message_id: ++messageId, date: now(), chat, from: OWNER, ...fields } as unknown as UserMessage })
    return update.update_id
  }
  const privateChat = emu.addChat({ id: OWNER.id, type: 'private', firstName: 'Ada' })
  const ids = [
    service({ pinned_message: { ...pinned, reply_to_message: undefined } }),
    service({ new_chat_members: [{ id: 6_660_002, is_bot: false, first_name: 'Newcomer' }], new_chat_member: { id: 6_660_002, is_bot: false, first_name: 'Newcomer' } }),
    service({ left_chat_member: { id: 6_660_003, is_bot: false, first_name: 'Leaver' } }),
    service({ new_chat_title: 'Household 2' }),
    service({ video_chat_started: {} }),
    service({ video_chat_ended: { duration: 60 } }),
    service({ message_auto_delete_timer_changed: { message_auto_delete_time: 86_400 } }),
    service({ chat_shared: { request_id: 1, chat_id: -1_009_876_543_210 } }, privateChat),
    service({ write_access_allowed: { from_request: true } }, privateChat),
    service({}, privateChat),
  ]
  await eventually(() => ids.every((id) => emu.deliveries.some((attempt) => attempt.update_id === id && attempt.status === 200)), 20_000, 'every delivery answered 200')
  await delay(700)
  t.same(
    emu.calls.slice(before).map((call) => call.method),
    [],
    'no reaction, no reply, nothing sent for any of them',
  )
  t.equal(readBrainLog(stack.brainLog).filter((line) => line['ev'] === 'start').length, startsBefore, 'no brain ran')
})

t.test('a group upgraded to a supergroup: replies follow it, and the supergroup stays allowed', async (t) => {
  const stack = await startStack({ env: { ALLOW_ALL_CHATS: '0', ALLOWED_CHAT_IDS: `${GROUP},-5550301`, ALLOWED_USER_IDS: String(OWNER.id) } })
  t.teardown(() => stack.close())
  const { emu, svc } = stack
  emu.addChat({ id: GROUP, type: 'group', title: 'Household' })
  emu.addChat({ id: -5_550_301, type: 'group', title: 'Quiet' })

  // Announced: the service learns the new id from Telegram's service message while the brain works.
  const slow = emu.sendText({ chatId: GROUP, from: OWNER, text: 'sleep=2 before the upgrade' })
  await eventually(() => readBrainLog(stack.brainLog).some((line) => line['ev'] === 'start'), 20_000, 'the brain to start')
  const [, announced] = emu.migrateGroup({ chatId: GROUP, from: OWNER })
  const supergroup = announced.message?.chat.id as number
  const warning = await svc.waitForLog((line) => line['new_chat_id'] === supergroup)
  t.match(warning, { level: 40, chat_id: GROUP, msg: new RegExp(`put ${supergroup} in ALLOWED_CHAT_IDS`, 'u') }, 'a warning names the new id')
  const reply = await emu.waitFor((call) => call.method === 'sendMessage' && call.ok && /before the upgrade/u.test(String(call.params['text'])), WAIT)
  t.equal(reply.params['chat_id'], supergroup, 'the answer goes to the supergroup')
  t.equal(replyTo(reply), undefined, 'without a reply to an id the supergroup does not know')
  t.ok(emu.callsOf('setMessageReaction').some((call) => call.params['chat_id'] === GROUP && call.params['message_id'] === slow.message?.message_id), 'the message had its 👀 in the old group')

  // Not announced (the bot missed Telegram's note): the refusal's migrate_to_chat_id is followed.
  const quiet = emu.sendText({ chatId: -5_550_301, from: OWNER, text: 'sleep=1.5 missed upgrade' })
  await eventually(() => readBrainLog(stack.brainLog).filter((line) => line['ev'] === 'start').length === 2, 20_000, 'the second run')
  const [, unannounced] = emu.migrateGroup({ chatId: -5_550_301, announce: false })
  const quietSupergroup = unannounced.message?.chat.id as number
  const followed = await emu.waitFor((call) => call.method === 'sendMessage' && call.ok && /missed upgrade/u.test(String(call.params['text'])), WAIT)
  t.equal(followed.params['chat_id'], quietSupergroup, "a refusal's migrate_to_chat_id is followed")
  t.ok(emu.callsOf('sendMessage').some((call) => call.status === 400 && call.params['chat_id'] === -5_550_301), 'after Telegram refused the old id')
  await svc.waitForLog((line) => line['new_chat_id'] === quietSupergroup && line.level === 40)
  t.equal(emu.callsOf('sendMessage').filter((call) => call.ok && call.params['chat_id'] === quietSupergroup).length, 1, `the answer to ${quiet.update_id} was sent once`)

  // The new supergroup is allowed, even after a restart, though ALLOWED_CHAT_IDS still says the old id.
  await stack.svc.stop()
  await stack.restart()
  for (const chatId of [supergroup, quietSupergroup]) {
    const update = emu.sendText({ chatId, from: OWNER, text: `hello from ${chatId}` })
    const answer = await emu.waitFor(
      (call) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === chatId && replyTo(call) === update.message?.message_id,
      WAIT,
    )
    t.equal(answer.params['chat_id'], chatId, `supergroup ${chatId} reaches the brain`)
  }
})

t.test('null fields are absent; a GIF reaches the brain as its file; a reply to a deleted message still arrives', async (t) => {
  const stack = await startStack({ env: { ALLOW_ALL_CHATS: '0', ALLOWED_CHAT_IDS: `${OWNER.id},${FORUM}`, ALLOWED_USER_IDS: String(OWNER.id) } })
  t.teardown(() => stack.close())
  const { emu } = stack
  const privateChat = emu.addChat({ id: OWNER.id, type: 'private', firstName: 'Ada' })

  // As some bridges and old libraries write updates: every absent field present as null.
  const nulls = emu.pushUpdate({
    message: {
      message_id: 700,
      date: now(),
      chat: { ...privateChat, last_name: null, username: null },
      from: { ...OWNER, last_name: null, language_code: null },
      text: 'nulls are nothing',
      caption: null,
      entities: null,
      reply_to_message: null,
      edit_date: null,
      photo: null,
      document: null,
    } as unknown as UserMessage,
  })
  const nullsReply = await emu.waitFor((call) => call.method === 'sendMessage' && replyTo(call) === 700, WAIT)
  t.match(String(nullsReply.params['text']), new RegExp(`^reply ${nulls.update_id} nulls are nothing`, 'u'))
  const stored = readBrainLog(stack.brainLog).find((line) => line['update_id'] === nulls.update_id)
  t.ok(stored, 'the brain ran for it')

  // A document whose text is null, with its service fields false or 0: still a document.
  const file = emu.addFile({ file_id: 'null-text-doc', file_unique_id: 'u-null-text-doc', bytes: Buffer.from('report\n'), file_path: 'documents/file_90.txt' })
  emu.pushUpdate({
    message: {
      message_id: 701,
      date: now(),
      chat: privateChat,
      from: OWNER,
      text: null,
      // As the same serialisers write absent service fields: false flags and 0 ids.
      delete_chat_photo: false,
      group_chat_created: false,
      migrate_to_chat_id: 0,
      migrate_from_chat_id: 0,
      document: { file_id: file.file_id, file_unique_id: file.file_unique_id, file_name: 'report.txt', mime_type: 'text/plain', file_size: 7, file_path: null },
    } as unknown as UserMessage,
  })
  await emu.waitFor((call) => call.method === 'sendMessage' && replyTo(call) === 701, WAIT)
  const documentRun = readBrainLog(stack.brainLog).find((line) => line['ev'] === 'start' && JSON.stringify(line['messages']).includes('report.txt'))
  t.ok(documentRun, 'the brain got the document of a message whose text was null')

  // A GIF, as Telegram sends it: the animation, and the same file as a document.
  const gif = emu.addFile({ file_id: 'gif-1', file_unique_id: 'u-gif-1', bytes: Buffer.from('GIF89a'), file_path: 'animations/file_91.mp4' })
  const gifFields = { file_id: gif.file_id, file_unique_id: gif.file_unique_id, file_name: 'happy.mp4', mime_type: 'video/mp4', file_size: 6 }
  emu.pushUpdate({
    message: {
      message_id: 702,
      date: now(),
      chat: privateChat,
      from: OWNER,
      caption: 'what is in this gif?',
      animation: { ...gifFields, width: 320, height: 320, duration: 2 },
      document: gifFields,
    } as UserMessage,
  })
  const gifReply = await emu.waitFor((call) => call.method === 'sendMessage' && replyTo(call) === 702, WAIT)
  t.match(String(gifReply.params['text']), /what is in this gif\?/u, 'the brain answered the GIF, not a "can\'t handle"')
  const gifRun = readBrainLog(stack.brainLog).find((line) => line['ev'] === 'start' && JSON.stringify(line['messages']).includes('happy.mp4'))
  t.match(gifRun?.['messages'], [{ files: [{ kind: 'document', mime_type: 'video/mp4', file_name: 'happy.mp4' }] }], 'as a document file')

  // In a forum topic, Telegram refuses a reply to a message that is gone: the answer goes without it.
  emu.addChat({ id: FORUM, type: 'supergroup', title: 'Forge Ops', isForum: true })
  const asked = emu.sendText({ chatId: FORUM, threadId: 42, from: OWNER, text: 'sleep=1.5 then answer' })
  await eventually(() => readBrainLog(stack.brainLog).some((line) => line['chat_id'] === FORUM), 20_000, 'the topic run')
  emu.deleteUserMessage(FORUM, asked.message?.message_id as number)
  const answer = await emu.waitFor((call) => call.method === 'sendMessage' && call.ok && /then answer/u.test(String(call.params['text'])), WAIT)
  t.equal(answer.params['message_thread_id'], 42, 'in its topic')
  t.equal(replyTo(answer), undefined, 'without reply_parameters')
  t.ok(
    emu.callsOf('sendMessage').some((call) => call.status === 400 && replyTo(call) === asked.message?.message_id),
    'after Telegram refused the reply',
  )
})

t.test('an album of 3 photos: one brain run with every file, one answer, every item marked', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const { emu } = stack
  const chatId = 5_550_500
  const album = '13911402875209417'
  const items: Message[] = []
  for (const [index, caption] of ['the kitchen, before', undefined, undefined].entries()) {
    items.push(emu.sendPhoto({ chatId, mediaGroupId: album, ...(caption === undefined ? {} : { caption }) }).message as Message)
    // As Telegram sends them: one update per item, a little apart.
    if (index < 2) await delay(150)
  }
  const last = items.at(-1) as Message
  const answer = await emu.waitFor((call) => call.method === 'sendMessage' && call.params['chat_id'] === chatId && call.ok, WAIT)
  t.equal(replyTo(answer), last.message_id, 'the answer replies to the last item')
  for (const item of items) {
    await emu.waitFor(
      (call) => call.method === 'setMessageReaction' && call.params['message_id'] === item.message_id && JSON.stringify(call.params['reaction']).includes('👍'),
      WAIT,
    )
  }
  await delay(1500)
  const runs = readBrainLog(stack.brainLog).filter((line) => line['ev'] === 'start' && line['chat_id'] === chatId)
  t.equal(runs.length, 1, 'one brain run')
  const messages = runs[0]?.['messages'] as { files: { kind: string; path: string | null }[] }[]
  t.equal(messages.length, 3, 'with the three items')
  t.same(messages.flatMap((message) => message.files.map((file) => file.kind)), ['photo', 'photo', 'photo'], 'and the three photos')
  t.ok(messages.every((message) => message.files.every((file) => file.path !== null)), 'all downloaded')
  t.equal(emu.callsOf('sendMessage').filter((call) => call.params['chat_id'] === chatId).length, 1, 'one answer')
  for (const item of items) {
    const reactions = emu.callsOf('setMessageReaction').filter((call) => call.params['message_id'] === item.message_id && call.params['chat_id'] === chatId)
    t.same(reactions.map((call) => (call.params['reaction'] as { emoji: string }[])[0]?.emoji), ['👀', '👍'], `item ${item.message_id}: 👀, then 👍`)
  }
})

t.test('an unreadable record of group upgrades stops the start with one line (exit 2)', async (t) => {
  const stateDir = tempDir()
  fs.writeFileSync(path.join(stateDir, 'chat-migrations.json'), '{"-5550300": ')
  const env = { PATH: process.env['PATH'] ?? '', TELEGRAM_BOT_TOKEN: '123456:x', TELEGRAM_WEBHOOK_SECRET: SECRET, ALLOWED_CHAT_IDS: '1', BRAIN_COMMAND: '/bin/cat', STATE_DIR: stateDir, PORT: '0' }
  const run = await runProgram(process.execPath, [CLI, 'serve'], { env })
  t.equal(run.code, 2)
  t.match(run.stderr, /^coordinator: STATE_DIR holds a group-upgrade record that cannot be read \(.*\): fix or delete chat-migrations\.json there\n$/u)
})

t.test('an album under BUSY_MODE=collect and interrupt: still one run, one answer', async (t) => {
  for (const mode of ['collect', 'interrupt']) {
    const stack = await startStack({ env: { BUSY_MODE: mode } })
    const { emu } = stack
    const chatId = mode === 'collect' ? 5_550_601 : 5_550_602
    for (let index = 0; index < 3; index++) {
      emu.sendPhoto({ chatId, mediaGroupId: `album-${mode}`, ...(index === 0 ? { caption: `three in ${mode}` } : {}) })
      await delay(150)
    }
    await emu.waitFor((call) => call.method === 'sendMessage' && call.params['chat_id'] === chatId && call.ok, WAIT)
    await delay(2000)
    const runs = readBrainLog(stack.brainLog).filter((line) => line['ev'] === 'start' && line['chat_id'] === chatId)
    t.equal(runs.length, 1, `${mode}: one brain run`)
    t.equal((runs[0]?.['messages'] as unknown[] | undefined)?.length, 3, `${mode}: with the three items`)
    t.equal(emu.callsOf('sendMessage').filter((call) => call.params['chat_id'] === chatId).length, 1, `${mode}: one answer`)
    const interruptions = stack.svc.logs.filter((line) => line.msg === 'running brain interrupted by this message' && line['chat_id'] === chatId)
    t.equal(interruptions.length, 0, `${mode}: an album's items join its turn, none interrupts it`)
    await stack.close()
  }
})
