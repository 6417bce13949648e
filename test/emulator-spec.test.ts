// The emulator against the Bot API's contract (10.1) for the calls the service makes: it must
// refuse what Telegram refuses and accept what Telegram accepts, or the service's tests prove
// nothing about real Telegram.
import { Api, GrammyError } from 'grammy'
import t, { type Test } from 'tap'
import { startEmulator, type BotApiEmulator } from '../src/emulator/index.js'

const TOKEN = '123456:spec-token'
const FORUM = -1_001_000_000_777
const GROUP = -7_770_001

async function emulator(t: Test): Promise<{ emu: BotApiEmulator; api: Api }> {
  const emu = await startEmulator({ token: TOKEN })
  t.teardown(() => emu.close())
  return { emu, api: new Api(TOKEN, { apiRoot: emu.url }) }
}

async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise
  } catch (error) {
    if (error instanceof GrammyError) return error.description
    throw error
  }
  throw new Error('expected Telegram to refuse the call')
}

t.test('replies: reply_parameters needs message_id; in a forum topic a missing target is refused anyway', async (t) => {
  const { emu, api } = await emulator(t)
  const asked = emu.sendText({ chatId: 5, text: 'question' }).message?.message_id as number
  const noId = api.raw.sendMessage({ chat_id: 5, text: 'x', reply_parameters: { allow_sending_without_reply: true } as never })
  t.equal(await refusal(noId), "Bad Request: can't parse reply parameters JSON object", 'ReplyParameters.message_id is required')
  emu.deleteUserMessage(5, asked)
  const loose = await api.sendMessage(5, 'still sent', { reply_parameters: { message_id: asked, allow_sending_without_reply: true } })
  t.equal(loose.reply_to_message, undefined, 'outside topics, allow_sending_without_reply sends it anyway')

  emu.addChat({ id: FORUM, type: 'supergroup', isForum: true })
  const inTopic = emu.sendText({ chatId: FORUM, threadId: 9, text: 'in a topic' }).message?.message_id as number
  emu.deleteUserMessage(FORUM, inTopic)
  const topicReply = api.sendMessage(FORUM, 'lost', { message_thread_id: 9, reply_parameters: { message_id: inTopic, allow_sending_without_reply: true } })
  t.equal(await refusal(topicReply), 'Bad Request: message to be replied not found', 'a topic refuses a reply to a deleted message')
  const plain = await api.sendMessage(FORUM, 'without the reply', { message_thread_id: 9 })
  t.equal(plain.message_thread_id, 9, 'and takes the message without it')
})

t.test('a thread id outside a forum is refused, by sendMessage and sendChatAction', async (t) => {
  const { emu, api } = await emulator(t)
  emu.addChat({ id: GROUP, type: 'group' })
  emu.addChat({ id: -1_001_000_000_778, type: 'supergroup' })
  for (const chatId of [5, GROUP, -1_001_000_000_778]) {
    emu.addChat({ id: chatId })
    t.equal(await refusal(api.sendMessage(chatId, 'x', { message_thread_id: 3 })), 'Bad Request: message thread not found', `sendMessage in ${chatId}`)
    t.equal(await refusal(api.sendChatAction(chatId, 'typing', { message_thread_id: 3 })), 'Bad Request: message thread not found', `sendChatAction in ${chatId}`)
  }
})

t.test('chat actions are lower-case only', async (t) => {
  const { emu, api } = await emulator(t)
  emu.addChat({ id: 5 })
  t.equal(await api.sendChatAction(5, 'typing'), true)
  t.equal(await refusal(api.raw.sendChatAction({ chat_id: 5, action: 'Typing' as 'typing' })), 'Bad Request: wrong parameter action in request')
  t.equal(await refusal(api.raw.sendChatAction({ chat_id: 5, action: 'TYPING' as 'typing' })), 'Bad Request: wrong parameter action in request')
})

t.test('text: 4096 UTF-16 units after entity parsing; parse_mode may be absent; a bare & is fine in HTML', async (t) => {
  const { emu, api } = await emulator(t)
  emu.addChat({ id: 5 })
  const emoji = '😀'.repeat(2048)
  t.equal((await api.sendMessage(5, emoji)).text.length, 4096, '2048 emoji are 4096 UTF-16 units: accepted')
  t.equal(await refusal(api.sendMessage(5, `${emoji}a`)), 'Bad Request: message is too long', 'one unit more is refused')
  const tagged = await api.sendMessage(5, `<b>${'x'.repeat(4096)}</b>`, { parse_mode: 'HTML' })
  t.equal(tagged.text.length, 4096, 'tags do not count')
  const escaped = await api.sendMessage(5, `${'&amp;'.repeat(4096)}`, { parse_mode: 'HTML' })
  t.equal(escaped.text, '&'.repeat(4096), 'nor do entities beyond the character they stand for')
  t.equal((await api.sendMessage(5, 'plain *text* <b>')).text, 'plain *text* <b>', 'no parse_mode: the text as sent')
  t.equal((await api.sendMessage(5, 'fish & chips', { parse_mode: 'HTML' })).text, 'fish & chips')
})

t.test('MarkdownV2: reserved characters must be escaped; entities parse', async (t) => {
  const { emu, api } = await emulator(t)
  emu.addChat({ id: 5 })
  const md = (text: string) => api.sendMessage(5, text, { parse_mode: 'MarkdownV2' })
  const parsed = await md('*bold* _it_ __under__ ~gone~ ||hidden|| `a.b` [link](https://example.com/a\\)b) 1\\.5\\!')
  t.equal(parsed.text, 'bold it under gone hidden a.b link 1.5!')
  t.same(parsed.entities, [
    { type: 'bold', offset: 0, length: 4 },
    { type: 'italic', offset: 5, length: 2 },
    { type: 'underline', offset: 8, length: 5 },
    { type: 'strikethrough', offset: 14, length: 4 },
    { type: 'spoiler', offset: 19, length: 6 },
    { type: 'code', offset: 26, length: 3 },
    { type: 'text_link', offset: 30, length: 4, url: 'https://example.com/a)b' },
  ])
  const pre = await md('```ts\nconst a = 1;\n```')
  // The message is trimmed after parsing, and the pre entity with it.
  t.equal(pre.text, 'const a = 1;')
  t.same(pre.entities, [{ type: 'pre', offset: 0, length: 12, language: 'ts' }])
  const refused: [string, string][] = [
    ['Version 1.5', "Character '.' is reserved and must be escaped with the preceding '\\'"],
    ['well done!', "Character '!' is reserved and must be escaped with the preceding '\\'"],
    ['a-b', "Character '-' is reserved and must be escaped with the preceding '\\'"],
    ['(aside)', "Character '(' is reserved and must be escaped with the preceding '\\'"],
    ['*never closed', "Can't find end of Bold entity at byte offset 0"],
    ['é _x', "Can't find end of Italic entity at byte offset 3"],
    ['`code', "Can't find end of Code entity at byte offset 0"],
  ]
  for (const [text, problem] of refused) t.equal(await refusal(md(text)), `Bad Request: can't parse entities: ${problem}`, text)
})
