import fs from 'node:fs'
import path from 'node:path'
import type { Message, Update } from 'grammy/types'
import t from 'tap'
import type { RecordedCall } from '../src/emulator/index.js'
import { chatDirOf } from '../src/brain/chat-dir.js'
import { delay, eventually, readBrainLog, startStack, tempDir, type Stack } from './helpers/service.js'

/** A message as an update in a chat (not a channel) carries it. */
type UserMessage = NonNullable<Update['message']>

// Who may talk: the owner and a colleague; the group is allowed, the stranger is in it but not listed.
const OWNER = { id: 5_550_001, first_name: 'Ada', username: 'ada_l' }
const COLLEAGUE = { id: 5_550_002, first_name: 'Grace' }
const STRANGER = { id: 6_660_001, first_name: 'Mallory', username: 'mallory' }
const GROUP = -1_001_234_567_890
const OTHER_CHANNEL = -1_009_999_999_999
const INLINE_BOT = { id: 7_770_001, is_bot: true, first_name: 'Gif search', username: 'gif' }
const WAIT = { timeoutMs: 20_000 }

const replyTo = (call: RecordedCall): number | undefined => (call.params['reply_parameters'] as { message_id?: number } | undefined)?.message_id
const brainStarts = (stack: Stack) => readBrainLog(stack.brainLog).filter((line) => line['ev'] === 'start')
const touching = (stack: Stack, messageId: number) =>
  stack.emu.calls.filter((call) => call.params['chat_id'] === GROUP && (call.params['message_id'] === messageId || replyTo(call) === messageId))

t.test('in an allowed group only listed senders reach the brain, and strangers never stop their work', async (t) => {
  const stack = await startStack({
    env: { ALLOW_ALL_CHATS: '0', ALLOWED_CHAT_IDS: String(GROUP), ALLOWED_USER_IDS: `${OWNER.id},${COLLEAGUE.id}`, LOG_LEVEL: 'info' },
  })
  t.teardown(() => stack.close())
  const { emu } = stack
  emu.addChat({ id: GROUP, type: 'supergroup', title: 'Forge Ops' })

  // The owner's slow job, then everything a stranger (or nobody listed) can send into the group.
  const job = emu.sendText({ chatId: GROUP, from: OWNER, text: 'sleep=4 the owner job' })
  await eventually(() => brainStarts(stack).length === 1, 20_000, 'the owner job to start')
  const strangers: { what: string; update: { message?: Message } }[] = [
    { what: 'text', update: emu.sendText({ chatId: GROUP, from: STRANGER, text: 'run rm -rf / please' }) },
    { what: '/cancel all', update: emu.sendText({ chatId: GROUP, from: STRANGER, text: '/cancel all' }) },
    { what: '/new', update: emu.sendText({ chatId: GROUP, from: STRANGER, text: '/new' }) },
    { what: '/status', update: emu.sendText({ chatId: GROUP, from: STRANGER, text: '/status' }) },
  ]
  const raw = (what: string, fields: Partial<Message>): void => {
    const update = emu.pushUpdate({
      message: { message_id: 9000 + strangers.length, date: Math.floor(Date.now() / 1000), chat: { id: GROUP, type: 'supergroup', title: 'Forge Ops' }, ...fields } as UserMessage,
    })
    strangers.push({ what, update })
  }
  raw('anonymous admin', {
    from: { id: 1_087_968_824, is_bot: true, first_name: 'Group', username: 'GroupAnonymousBot' },
    sender_chat: { id: GROUP, type: 'supergroup', title: 'Forge Ops' },
    text: '/cancel',
  })
  raw('post as another channel', {
    from: { id: 136_817_688, is_bot: true, first_name: 'Channel', username: 'Channel_Bot' },
    sender_chat: { id: OTHER_CHANNEL, type: 'channel', title: 'Unrelated' },
    text: 'hello from a channel',
  })
  raw('automatic forward from the linked channel', {
    from: { id: 777_000, is_bot: false, first_name: 'Telegram' },
    sender_chat: { id: OTHER_CHANNEL, type: 'channel', title: 'Linked' },
    is_automatic_forward: true,
    text: 'channel post',
  })
  // An inline bot's message, even when a listed person sent it: it speaks for the bot.
  raw('via_bot', { from: { ...OWNER, is_bot: false }, via_bot: INLINE_BOT, text: '/new' })

  const reply = await emu.waitFor((call) => call.method === 'sendMessage' && replyTo(call) === job.message?.message_id, WAIT)
  t.match(String(reply.params['text']), /^reply \d+ sleep=4 the owner job/u, "the owner's job ran to its end: nobody stopped it")
  await delay(500)
  t.equal(brainStarts(stack).length, 1, 'one brain run: the owner’s')
  for (const { what, update } of strangers) {
    t.same(touching(stack, update.message?.message_id as number), [], `${what}: no 👀, no reply`)
  }
  // Once the chat is idle, a stranger's /new still forgets nothing.
  const chatDir = chatDirOf(stack.stateDir, GROUP)
  t.ok(fs.existsSync(chatDir), 'the group has a chat directory')
  const lateNew = emu.sendText({ chatId: GROUP, from: STRANGER, text: '/new' })
  await delay(1000)
  t.same(touching(stack, lateNew.message?.message_id as number), [], "the stranger's /new is not answered")
  t.ok(fs.existsSync(chatDir), "and the group's chat directory is still there")

  // A listed colleague may talk and use the commands.
  const status = emu.sendText({ chatId: GROUP, from: COLLEAGUE, text: '/status' })
  const answer = await emu.waitFor((call) => call.method === 'sendMessage' && replyTo(call) === status.message?.message_id, WAIT)
  t.match(String(answer.params['text']), /Nothing is running/u, 'a listed sender’s /status is answered')
  const envelopeAsk = emu.sendText({ chatId: GROUP, from: COLLEAGUE, text: 'envelope' })
  const envelopeReply = await emu.waitFor((call) => call.method === 'sendMessage' && replyTo(call) === envelopeAsk.message?.message_id, WAIT)
  t.match(String(envelopeReply.params['text']), /"from":\{"id":5550002,[^}]*"first_name":"Grace"\}/u, 'the envelope says who is speaking')

  // The operator can find the ids to allow in the log, once per chat and sender.
  const refused = stack.svc.logs.filter((line) => line.msg.startsWith('message not allowed'))
  const strangerLine = refused.find((line) => line['from_id'] === STRANGER.id)
  t.match(strangerLine, { level: 30, chat_id: GROUP, chat_type: 'supergroup', chat_title: 'Forge Ops', from_username: 'mallory', reason: 'sender not allowed' })
  t.match(strangerLine?.msg, /ALLOWED_USER_IDS/u)
  t.equal(refused.filter((line) => line['from_id'] === STRANGER.id).length, 1, "the stranger's four messages: one line a minute")
  t.ok(refused.some((line) => line['sender_chat_id'] === OTHER_CHANNEL && line['reason'] === 'posted on behalf of a chat'))
  t.ok(refused.some((line) => line['via_bot'] === 'gif' && line['reason'] === 'sent via an inline bot'))
})

t.test('a private chat is allowed by its chat id or its user; the log shows a stranger’s id', async (t) => {
  const stack = await startStack({ env: { ALLOW_ALL_CHATS: '0', ALLOWED_CHAT_IDS: String(OWNER.id), ALLOWED_USER_IDS: String(COLLEAGUE.id), LOG_LEVEL: 'info' } })
  t.teardown(() => stack.close())
  const { emu } = stack
  const owner = emu.sendText({ chatId: OWNER.id, text: 'hi' })
  const colleague = emu.sendText({ chatId: COLLEAGUE.id, text: 'hello' })
  const stranger = emu.sendText({ chatId: STRANGER.id, from: { username: 'mallory' }, text: 'let me in' })
  for (const update of [owner, colleague]) {
    await emu.waitFor((call) => call.method === 'sendMessage' && call.params['chat_id'] === update.message?.chat.id, WAIT)
  }
  await delay(500)
  t.same(emu.calls.filter((call) => call.params['chat_id'] === STRANGER.id), [], 'the stranger gets nothing')
  const line = await stack.svc.waitForLog((l) => l.msg.startsWith('message not allowed') && l['chat_id'] === STRANGER.id)
  t.match(line, { level: 30, chat_type: 'private', from_username: 'mallory', reason: 'chat not allowed', update_id: stranger.update_id })
  t.match(line.msg, /ALLOWED_CHAT_IDS/u)

  // The bot added to a group not allowed yet: the join itself shows the group's id.
  emu.pushUpdate({
    message: {
      message_id: 1,
      date: Math.floor(Date.now() / 1000),
      chat: { id: -4_012_345_678, type: 'group', title: 'Book club' },
      from: { id: OWNER.id, is_bot: false, first_name: 'Ada' },
      new_chat_members: [{ id: emu.bot.id, is_bot: true, first_name: emu.bot.first_name }],
    } as UserMessage,
  })
  const joined = await stack.svc.waitForLog((l) => l.msg.startsWith('message not allowed') && l['chat_id'] === -4_012_345_678)
  t.match(joined, { chat_type: 'group', chat_title: 'Book club', from_id: OWNER.id, reason: 'chat not allowed' }, "adding the bot to a group logs the group's id")
})

t.test('BRAIN_INPUT=text: in a group the prompt names who speaks', async (t) => {
  const dir = tempDir()
  const prompts = path.join(dir, 'prompts')
  const brain = path.join(dir, 'brain.sh')
  fs.writeFileSync(brain, `#!/bin/sh\ncat >> "${prompts}"\necho '---' >> "${prompts}"\necho ok\n`, { mode: 0o755 })
  const stack = await startStack({
    env: { ALLOW_ALL_CHATS: '0', ALLOWED_CHAT_IDS: `${GROUP},${OWNER.id}`, ALLOWED_USER_IDS: String(OWNER.id), BRAIN_COMMAND: brain, BRAIN_INPUT: 'text', BRAIN_CWD: dir },
  })
  t.teardown(() => stack.close())
  const { emu } = stack
  emu.sendText({ chatId: GROUP, from: OWNER, text: 'what is on today?' })
  await emu.waitFor((call) => call.method === 'sendMessage' && call.params['chat_id'] === GROUP, WAIT)
  emu.sendText({ chatId: OWNER.id, text: 'just me' })
  await emu.waitFor((call) => call.method === 'sendMessage' && call.params['chat_id'] === OWNER.id, WAIT)
  t.equal(fs.readFileSync(prompts, 'utf8'), 'Ada (@ada_l, 5550001): what is on today?---\njust me---\n')
})
