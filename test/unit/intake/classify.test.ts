import t from 'tap'
import { MAX_UPDATE_DEPTH, classifyUpdate, parseCommand, type ClassifyOptions } from '../../../src/intake/classify.js'

const ALLOWED = 5550001
const options: ClassifyOptions = { isAllowedChat: (chatId) => chatId === ALLOWED, edits: 'ignore', botUsername: 'coordinator_bot' }

const message = (fields: Record<string, unknown> = {}) => ({
  message_id: 11,
  date: 1764000000,
  chat: { id: ALLOWED, type: 'private' },
  from: { id: ALLOWED, is_bot: false, first_name: 'Ada' },
  ...fields,
})
const update = (fields: Record<string, unknown>) => ({ update_id: 700, ...fields })

t.test('a text message is a message, with what scheduling and replying need', async (t) => {
  const intake = classifyUpdate(update({ message: message({ text: 'hello' }) }), options)
  t.match(intake, { kind: 'message', updateId: 700, message: { chatId: ALLOWED, messageId: 11, threadId: undefined, text: 'hello', edited: false } })
})

t.test('a topic message keeps its thread; a reply thread outside a topic does not', async (t) => {
  const inTopic = classifyUpdate(update({ message: message({ text: 'hi', is_topic_message: true, message_thread_id: 77 }) }), options)
  t.match(inTopic, { kind: 'message', message: { threadId: 77 } })
  const notTopic = classifyUpdate(update({ message: message({ text: 'hi', message_thread_id: 77 }) }), options)
  t.match(notTopic, { kind: 'message', message: { threadId: undefined } })
})

t.test('media with or without a caption is a message for the brain; the caption is its text', async (t) => {
  for (const kind of ['photo', 'voice', 'audio', 'video', 'video_note', 'document']) {
    const bare = classifyUpdate(update({ message: message({ [kind]: { file_id: 'f' } }) }), options)
    t.match(bare, { kind: 'message', message: { text: '' } }, `${kind} without a caption`)
  }
  const captioned = classifyUpdate(update({ message: message({ photo: [{ file_id: 'f' }], caption: 'look' }) }), options)
  t.match(captioned, { kind: 'message', message: { text: 'look' } })
})

t.test('content the brain cannot take is unsupported, named', async (t) => {
  for (const kind of ['animation', 'sticker', 'location', 'venue', 'contact', 'poll', 'dice']) {
    t.match(classifyUpdate(update({ message: message({ [kind]: {} }) }), options), { kind: 'unsupported', what: kind })
  }
  t.match(classifyUpdate(update({ message: message() }), options), { kind: 'unsupported', what: 'this kind of message' })
})

t.test('service commands are commands; other slash words go to the brain', async (t) => {
  t.match(classifyUpdate(update({ message: message({ text: '/status' }) }), options), { kind: 'command', command: { name: 'status', args: '' } })
  t.match(classifyUpdate(update({ message: message({ text: '/cancel all' }) }), options), { kind: 'command', command: { name: 'cancel', args: 'all' } })
  t.match(classifyUpdate(update({ message: message({ text: '/start' }) }), options), { kind: 'message' })
})

t.test('an edited message: ignored by default, a new message with edited: true under EDITS=queue, never a command', async (t) => {
  const edit = update({ edited_message: message({ text: '/status', edit_date: 1764000100 }) })
  t.match(classifyUpdate(edit, options), { kind: 'ignored', reason: 'edited message (EDITS=ignore)' })
  t.match(classifyUpdate(edit, { ...options, edits: 'queue' }), { kind: 'message', message: { edited: true, text: '/status' } })
})

t.test('bad top-level shapes are invalid (a 400), with the problem', async (t) => {
  const notObject = 'the body must be a JSON object (a Telegram Update)'
  const badId = 'update_id must be a non-negative integer'
  const cases: [unknown, string][] = [
    [null, notObject],
    [[], notObject],
    ['update', notObject],
    [42, notObject],
    [{}, badId],
    [{ update_id: '700' }, badId],
    [{ update_id: -1 }, badId],
    [{ update_id: 1.5 }, badId],
    [{ update_id: 2 ** 53 }, badId],
  ]
  for (const [body, problem] of cases) t.same(classifyUpdate(body, options), { kind: 'invalid', problem }, JSON.stringify(body))
})

t.test('authentic updates of other shapes are ignored (a 200), with the reason', async (t) => {
  const cases: [Record<string, unknown>, string][] = [
    [update({ callback_query: { id: '1' } }), 'not a message (callback_query)'],
    [update({}), 'not a message (empty)'],
    [update({ message: message({ chat: { id: 'x' }, text: 'hi' }) }), 'malformed message'],
    [update({ message: message({ message_id: 0, text: 'hi' }) }), 'malformed message'],
    [update({ message: message({ text: 42 }) }), 'malformed message'],
    [update({ message: message({ caption: {} }) }), 'malformed message'],
    [update({ message: message({ text: 'hi', message_thread_id: 'x' }) }), 'malformed message'],
    [update({ message: 'hello' }), 'malformed message'],
    [update({ message: message({ chat: { id: 999, type: 'private' }, text: 'hi' }) }), 'chat not allowed'],
  ]
  for (const [body, reason] of cases) t.match(classifyUpdate(body, options), { kind: 'ignored', updateId: 700, reason }, reason)
})

t.test(`nesting deeper than ${MAX_UPDATE_DEPTH} levels is ignored; exactly ${MAX_UPDATE_DEPTH} is not`, async (t) => {
  const nested = (levels: number): Record<string, unknown> => {
    // The update itself is level 1, message level 2, and so on.
    let inner: Record<string, unknown> = {}
    for (let level = 4; level < levels; level++) inner = { deeper: inner }
    return update({ message: message({ text: 'deep', entities: [inner] }) })
  }
  t.match(classifyUpdate(nested(MAX_UPDATE_DEPTH), options), { kind: 'message' })
  t.match(classifyUpdate(nested(MAX_UPDATE_DEPTH + 1), options), { kind: 'ignored', reason: `nested more than ${MAX_UPDATE_DEPTH} levels deep` })
  let deep: Record<string, unknown> = {}
  for (let level = 0; level < 200_000; level++) deep = { deeper: deep }
  t.match(classifyUpdate(update({ message: deep }), options), { kind: 'ignored' }, '200,000 levels: decided without overflowing the stack')
})

t.test('parseCommand: names, arguments, case and mentions', async (t) => {
  t.same(parseCommand('/status'), { name: 'status', args: '' })
  t.same(parseCommand('  /STATUS  '), { name: 'status', args: '' }, 'case and surrounding space do not matter')
  t.same(parseCommand('/cancel   all '), { name: 'cancel', args: 'all' })
  t.same(parseCommand('/cancel\nall'), { name: 'cancel', args: 'all' }, 'arguments after a line break')
  t.same(parseCommand('/help', 'my_bot'), { name: 'help', args: '' })
  t.same(parseCommand('/new@My_Bot', 'my_bot'), { name: 'new', args: '' }, 'addressed to this bot, in any case')
  t.same(parseCommand('/status@other_bot'), { name: 'status', args: '' }, "before the bot's name is known, any mention is answered")
  for (const text of ['/status@other_bot', '/cancel@other_bot all']) {
    t.equal(parseCommand(text, 'my_bot'), undefined, `${text}: addressed to another bot, left to it`)
  }
  for (const text of ['/start', '/statusx', 'status', 'please /status', '/ status', '/status@', '/stat-us', '']) {
    t.equal(parseCommand(text, 'my_bot'), undefined, `${JSON.stringify(text)} is not a service command`)
  }
})

t.test('a command addressed to another bot goes to the brain as text', async (t) => {
  t.match(classifyUpdate(update({ message: message({ text: '/status@other_bot' }) }), options), { kind: 'message', message: { text: '/status@other_bot' } })
  t.match(classifyUpdate(update({ message: message({ text: '/status@coordinator_bot' }) }), options), { kind: 'command', command: { name: 'status' } })
})
