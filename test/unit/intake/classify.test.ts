import t from 'tap'
import { refusalOf } from '../../../src/intake/access.js'
import { MAX_UPDATE_DEPTH, classifyUpdate, parseCommand, type ClassifyOptions } from '../../../src/intake/classify.js'

const ALLOWED = 5550001
const GROUP = -1001234567890
const isAllowedChat = (chatId: number): boolean => chatId === ALLOWED || chatId === GROUP
const rules = { isAllowedChat, allChats: false, allowedUsers: new Set([ALLOWED]) }
const options: ClassifyOptions = { refusalOf: (message) => refusalOf(message, rules), isAllowedChat, edits: 'ignore', botUsername: 'coordinator_bot' }

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
  t.match(classifyUpdate(update({ message: message() }), options), { kind: 'ignored', reason: 'no content the service knows' }, 'nothing a person sends: ignored')
})

t.test('a GIF, as Telegram sends it (its file in document too), is a message for the brain', async (t) => {
  const gif = { file_id: 'g', file_unique_id: 'ug', file_name: 'a.mp4', mime_type: 'video/mp4' }
  t.match(classifyUpdate(update({ message: message({ animation: { ...gif, width: 1, height: 1, duration: 1 }, document: gif }) }), options), { kind: 'message' })
})

t.test('service messages are ignored in allowed chats; in others they show the chat (refused)', async (t) => {
  for (const fields of [{ pinned_message: { message_id: 1 } }, { new_chat_members: [{ id: 9 }] }, { forum_topic_created: { name: 'x' } }, { video_chat_started: {} }]) {
    const name = Object.keys(fields)[0] as string
    t.match(classifyUpdate(update({ message: message({ chat: { id: GROUP, type: 'supergroup' }, ...fields }) }), options), { kind: 'ignored', reason: `service message (${name})` }, name)
  }
  t.match(classifyUpdate(update({ message: message({ chat: { id: -42, type: 'group' }, new_chat_members: [{ id: 9 }] }) }), options), { kind: 'refused', reason: 'chat not allowed' })
  const falsy = message({ caption: 'doc', document: { file_id: 'd' }, delete_chat_photo: false, migrate_to_chat_id: 0 })
  t.match(classifyUpdate(update({ message: falsy }), options), { kind: 'message' }, 'a false flag or a 0 id is no service message')
})

t.test('a group upgrade from an allowed group, seen from either side', async (t) => {
  const to = -1009999999999
  t.match(classifyUpdate(update({ message: message({ chat: { id: GROUP, type: 'group' }, migrate_to_chat_id: to }) }), options), { kind: 'migrated', from: GROUP, to })
  t.match(classifyUpdate(update({ message: message({ chat: { id: to, type: 'supergroup' }, migrate_from_chat_id: GROUP }) }), options), { kind: 'migrated', from: GROUP, to })
  t.match(classifyUpdate(update({ message: message({ chat: { id: -77, type: 'group' }, migrate_to_chat_id: to }) }), options), { kind: 'refused' }, 'not from an allowed group: no upgrade to follow')
})

t.test('groups: only listed senders; posts as a chat and via inline bots need their own listing', async (t) => {
  const inGroup = (fields: Record<string, unknown>) => update({ message: message({ chat: { id: GROUP, type: 'supergroup' }, text: 'hi', ...fields }) })
  t.match(classifyUpdate(inGroup({}), options), { kind: 'message' }, 'a listed sender')
  t.match(classifyUpdate(inGroup({ from: { id: 6660001, is_bot: false, first_name: 'M' } }), options), { kind: 'refused', reason: 'sender not allowed' })
  t.match(classifyUpdate(inGroup({ text: '/cancel all', from: { id: 6660001, is_bot: false, first_name: 'M' } }), options), { kind: 'refused' }, 'commands too')
  t.match(classifyUpdate(inGroup({ sender_chat: { id: GROUP, type: 'supergroup' } }), options), { kind: 'refused', reason: 'posted on behalf of a chat' })
  t.match(classifyUpdate(inGroup({ via_bot: { id: 7770001, is_bot: true, first_name: 'gif' } }), options), { kind: 'refused', reason: 'sent via an inline bot' })
  const listingGroup = { ...rules, allowedUsers: new Set([ALLOWED, GROUP]) }
  t.match(classifyUpdate(inGroup({ sender_chat: { id: GROUP, type: 'supergroup' } }), { ...options, refusalOf: (m) => refusalOf(m, listingGroup) }), { kind: 'message' }, 'an anonymous admin, once the group itself is listed')
  const listingBot = { ...rules, allowedUsers: new Set([ALLOWED, 7770001]) }
  t.match(classifyUpdate(inGroup({ via_bot: { id: 7770001, is_bot: true, first_name: 'gif' } }), { ...options, refusalOf: (m) => refusalOf(m, listingBot) }), { kind: 'message' }, 'unless listed')
  t.match(classifyUpdate(update({ message: message({ chat: { id: 5550002, type: 'private' }, from: { id: 5550002 }, text: 'hi' }) }), options), { kind: 'refused', reason: 'chat not allowed' })
  const byUser = { ...rules, allowedUsers: new Set([5550002]) }
  t.match(classifyUpdate(update({ message: message({ chat: { id: 5550002, type: 'private' }, from: { id: 5550002 }, text: 'hi' }) }), { ...options, refusalOf: (m) => refusalOf(m, byUser) }), { kind: 'message' }, 'a private chat allowed by its user')
})

t.test('null fields are absent', async (t) => {
  t.match(classifyUpdate(update({ message: message({ text: 'hi', caption: null, entities: null, reply_to_message: null }) }), options), { kind: 'message', message: { text: 'hi' } })
  const doc = classifyUpdate(update({ message: message({ text: null, document: { file_id: 'd', file_name: null } }) }), options)
  t.match(doc, { kind: 'message', message: { text: '' } })
  t.notOk(doc.kind === 'message' && 'file_name' in (doc.message.raw.document ?? {}), 'nested nulls too')
  const inArray = classifyUpdate(update({ message: message({ text: 'hi', entities: [{ type: 'bold', offset: 0, length: 2, url: null }] }) }), options)
  t.same(inArray.kind === 'message' && inArray.message.raw.entities, [{ type: 'bold', offset: 0, length: 2 }], 'in objects inside arrays too')
  const body = update({ message: message({ text: 'hi', entities: [{ type: 'bold', offset: 0, length: 2 }] }) })
  const plain = classifyUpdate(body, options)
  t.equal(plain.kind === 'message' && plain.message.update, body, 'an update without a null is kept as parsed, not copied')
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
  ]
  for (const [body, reason] of cases) t.match(classifyUpdate(body, options), { kind: 'ignored', updateId: 700, reason }, reason)
  const stranger = update({ message: message({ chat: { id: 999, type: 'private' }, from: { id: 999 }, text: 'hi' }) })
  t.match(classifyUpdate(stranger, options), { kind: 'refused', updateId: 700, reason: 'chat not allowed' }, 'a chat not allowed is refused (and logged)')
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
