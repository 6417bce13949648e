import { performance } from 'node:perf_hooks'
import { setTimeout as delay } from 'node:timers/promises'
import fc from 'fast-check'
import Fastify from 'fastify'
import { Api, GrammyError, HttpError } from 'grammy'
import type { Update } from 'grammy/types'
import t, { type Test } from 'tap'
import { UsageError } from '../src/cli/usage.js'
import { runEmulatorCommand } from '../src/cli/emulator.js'
import {
  MAX_DOWNLOAD_SIZE,
  parseTelegramHtml,
  startEmulator,
  type BotApiEmulator,
  type EmulatorOptions,
} from '../src/emulator/index.js'

const TOKEN = '123456:TEST-token'
const SECRET = 'emulator-test_secret'
// Generous: CI machines are noisy; these bound waits, they are not what the tests measure.
const WAIT_MS = 5_000

async function emulator(t: Test, options: Partial<EmulatorOptions> = {}): Promise<{ emu: BotApiEmulator; api: Api }> {
  const emu = await startEmulator({ token: TOKEN, deliveryRetryMs: 100, firstUpdateId: 1, ...options })
  t.teardown(() => emu.close())
  return { emu, api: new Api(TOKEN, { apiRoot: emu.url }) }
}

/** Rejects unless `promise` fails with a GrammyError; resolves with it. */
async function apiError(promise: Promise<unknown>): Promise<GrammyError> {
  try {
    await promise
  } catch (error) {
    if (error instanceof GrammyError) return error
    throw error
  }
  throw new Error('expected the call to fail with a GrammyError, but it succeeded')
}

interface Deferred {
  readonly promise: Promise<void>
  resolve(): void
}
function deferred(): Deferred {
  let resolve = (): void => {}
  const promise = new Promise<void>((done) => (resolve = done))
  return { promise, resolve }
}

interface Received {
  readonly update: Update
  readonly secret: string | undefined
  readonly contentType: string | undefined
}

type Outcome = number | { status: number; body: unknown }
type Respond = (update: Update, received: readonly Received[]) => Outcome | Promise<Outcome>

/** A real Fastify webhook receiver at /hook that answers as `respond` says. */
async function receiver(t: Test, respond: Respond = () => 200): Promise<{ url: string; received: Received[] }> {
  const app = Fastify()
  const received: Received[] = []
  app.post('/hook', async (request, reply) => {
    const update = request.body as Update
    const secret = request.headers['x-telegram-bot-api-secret-token']
    received.push({ update, secret: typeof secret === 'string' ? secret : undefined, contentType: request.headers['content-type'] })
    const outcome = await respond(update, received)
    if (typeof outcome === 'number') return reply.code(outcome).send()
    return reply.code(outcome.status).send(outcome.body)
  })
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  return { url: `${address}/hook`, received }
}

const chatOf = (update: Update): number | undefined => update.message?.chat.id

t.test('getMe, tokens and unknown methods answer like Telegram', async (t) => {
  const { emu, api } = await emulator(t, { bot: { username: 'coordinator_test_bot' } })
  const me = await api.getMe()
  t.equal(me.id, 123456, 'the bot id is the token prefix')
  t.equal(me.username, 'coordinator_test_bot')
  t.equal(me.is_bot, true)

  const stranger = await apiError(new Api('999:wrong', { apiRoot: emu.url }).getMe())
  t.equal(stranger.error_code, 401)
  t.equal(stranger.description, 'Unauthorized')

  const unknown = await fetch(`${emu.url}/bot${TOKEN}/sendTelepathy`, { method: 'POST' })
  t.equal(unknown.status, 404)
  t.same(await unknown.json(), { ok: false, error_code: 404, description: 'Not Found' })

  const anyCase = await fetch(`${emu.url}/bot${TOKEN}/GETME`)
  t.equal(anyCase.status, 200, 'method names are case-insensitive')
  t.match(await anyCase.json(), { ok: true, result: { id: 123456 } })

  const call = emu.callsOf('getMe')[0]
  t.ok(call, 'calls are recorded')
  t.match(call, { method: 'getMe', status: 200, ok: true, source: 'http' })
  t.type(call?.at, 'number')
  t.ok(Math.abs((call?.wallClockMs ?? 0) - Date.now()) < 60_000, 'wall-clock time is recorded too')
  t.match(emu.calls.find((c) => c.status === 401), { method: 'getMe', ok: false, description: 'Unauthorized' })
})

t.test('sendMessage needs a known chat and 1–4096 characters after parsing', async (t) => {
  const { emu, api } = await emulator(t)
  t.match(await apiError(api.sendMessage(42, 'hello')), { error_code: 400, description: 'Bad Request: chat not found' })

  const incoming = emu.sendText({ chatId: 42, text: 'hi bot' })
  t.equal(incoming.message?.message_id, 1)
  const sent = await api.sendMessage(42, 'hello')
  t.equal(sent.message_id, 2, 'message ids grow per chat across user and bot messages')
  t.equal(sent.chat.id, 42)
  t.equal(sent.from?.id, 123456)
  t.equal(sent.text, 'hello')
  t.equal(emu.sendText({ chatId: 43, text: 'other chat' }).message?.message_id, 1, 'another chat counts on its own')

  t.match(await apiError(api.sendMessage(42, '')), { error_code: 400, description: 'Bad Request: message text is empty' })
  t.match(await apiError(api.sendMessage(42, ' \n\t ')), { description: 'Bad Request: message text is empty' })
  t.match(await apiError(api.sendMessage(42, 'x'.repeat(4097))), { error_code: 400, description: 'Bad Request: message is too long' })
  t.equal((await api.sendMessage(42, 'x'.repeat(4096))).text?.length, 4096)
  const bold = await api.sendMessage(42, `<b>${'y'.repeat(4096)}</b>`, { parse_mode: 'HTML' })
  t.equal(bold.text?.length, 4096, 'the limit counts the text after entity parsing')
  t.match(
    await apiError(api.sendMessage(42, `<b>${'y'.repeat(4097)}</b>`, { parse_mode: 'HTML' })),
    { description: 'Bad Request: message is too long' },
  )
  t.equal((await api.sendMessage(42, '  padded  ')).text, 'padded', 'surrounding whitespace is trimmed')
})

t.test('HTML parse mode accepts what Telegram accepts and refuses the rest', async (t) => {
  const { emu, api } = await emulator(t)
  emu.sendText({ chatId: 7, text: 'start' })
  const html = (text: string): Promise<unknown> => api.sendMessage(7, text, { parse_mode: 'HTML' })

  const rich = await api.sendMessage(
    7,
    '<b>bold</b> <I>it</I> <a href="https://example.com/?a=1&amp;b=2">link</a> <span class="tg-spoiler">s</span> ' +
      '<pre><code class="language-ts">x</code></pre> <blockquote expandable>q</blockquote> &lt;&amp;&gt;&quot;&#33;&#x41;',
    { parse_mode: 'HTML' },
  )
  t.equal(rich.text, 'bold it link s x q <&>"!A')
  t.same(rich.entities, [
    { type: 'bold', offset: 0, length: 4 },
    { type: 'italic', offset: 5, length: 2 },
    { type: 'text_link', offset: 8, length: 4, url: 'https://example.com/?a=1&b=2' },
    { type: 'spoiler', offset: 13, length: 1 },
    { type: 'pre', offset: 15, length: 1, language: 'ts' },
    { type: 'expandable_blockquote', offset: 17, length: 1 },
  ])

  const refused: Array<[string, string]> = [
    ['<div>x</div>', 'Unsupported start tag "div" at byte offset 0'],
    ['<b>never closed', `Can't find end tag corresponding to start tag "b"`],
    ['<b><i>x</b></i>', 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'],
    ['1 < 2', 'Unsupported start tag "" at byte offset 2'],
    ['a<b', 'Unclosed start tag at byte offset 1'],
    ['x</b>', 'Unexpected end tag at byte offset 1'],
    ['<span>x</span>', 'Tag "span" must have class "tg-spoiler" at byte offset 0'],
    ['é<u>', `Can't find end tag corresponding to start tag "u"`],
    ['éé<q>', 'Unsupported start tag "q" at byte offset 4'],
  ]
  for (const [text, problem] of refused) {
    const error = await apiError(html(text))
    t.equal(error.error_code, 400, text)
    t.equal(error.description, `Bad Request: can't parse entities: ${problem}`, text)
  }
  // An & that starts no entity is kept as it is.
  t.equal(((await html('fish & chips &nbsp; &amp;')) as { text: string }).text, 'fish & chips &nbsp; &')
  t.match(await apiError(html('<b> </b>')), { description: 'Bad Request: message text is empty' })
  t.match(await apiError(api.sendMessage(7, 'x', { parse_mode: 'Klingon' as 'HTML' })), { description: 'Bad Request: unsupported parse_mode' })
})

t.test('escaped text in a tag always parses back to itself', async (t) => {
  const escape = (text: string): string => text.replace(/&/gu, '&amp;').replace(/</gu, '&lt;').replace(/>/gu, '&gt;')
  fc.assert(
    fc.property(fc.string({ unit: 'grapheme', minLength: 1 }), fc.constantFrom('b', 'i', 'u', 's', 'code', 'tg-spoiler'), (text, tag) => {
      const parsed = parseTelegramHtml(`<${tag}>${escape(text)}</${tag}>`)
      return parsed.text === text && parsed.entities.length === 1 && parsed.entities[0]?.length === text.length
    }),
  )
  t.pass('property held')
})

t.test('replies need a known message unless allowed to go without', async (t) => {
  const { emu, api } = await emulator(t)
  const question = emu.sendText({ chatId: 5, text: 'question?' })
  const questionId = question.message?.message_id ?? 0

  const answer = await api.sendMessage(5, 'answer', { reply_parameters: { message_id: questionId } })
  t.equal(answer.reply_to_message?.message_id, questionId)
  t.equal(answer.reply_to_message?.text, 'question?')

  const missing = await apiError(api.sendMessage(5, 'lost', { reply_parameters: { message_id: 999 } }))
  t.equal(missing.description, 'Bad Request: message to be replied not found')
  const loose = await api.sendMessage(5, 'anyway', { reply_parameters: { message_id: 999, allow_sending_without_reply: true } })
  t.equal(loose.reply_to_message, undefined)

  const topic = emu.sendText({ chatId: -1001234567890, text: 'in a topic', threadId: 77 })
  t.equal(topic.message?.chat.type, 'supergroup')
  t.equal(topic.message?.message_thread_id, 77)
  const inTopic = await api.sendMessage(-1001234567890, 'reply in topic', { message_thread_id: 77 })
  t.equal(inTopic.message_thread_id, 77)
})

t.test('setMessageReaction checks the emoji, the chat’s allowed list and the message', async (t) => {
  const { emu, api } = await emulator(t)
  const update = emu.sendText({ chatId: 9, text: 'react to me' })
  const messageId = update.message?.message_id ?? 0

  t.equal(await api.setMessageReaction(9, messageId, [{ type: 'emoji', emoji: '👀' }]), true)
  t.equal(await api.setMessageReaction(9, messageId, []), true, 'an empty list removes the reaction')
  const invalid = await apiError(api.setMessageReaction(9, messageId, [{ type: 'emoji', emoji: '🦖' as '👀' }]))
  t.equal(invalid.error_code, 400)
  t.equal(invalid.description, 'Bad Request: REACTION_INVALID')
  t.match(await apiError(api.setMessageReaction(9, messageId, [{ type: 'emoji', emoji: '❤️' as '❤' }])), {
    description: 'Bad Request: REACTION_INVALID',
  })
  t.match(await apiError(api.setMessageReaction(9, 404, [{ type: 'emoji', emoji: '👀' }])), {
    description: 'Bad Request: message to react not found',
  })
  t.match(await apiError(api.setMessageReaction(10, 1, [{ type: 'emoji', emoji: '👀' }])), { description: 'Bad Request: chat not found' })
  t.match(
    await apiError(api.setMessageReaction(9, messageId, [{ type: 'emoji', emoji: '👀' }, { type: 'emoji', emoji: '👍' }])),
    { description: 'Bad Request: REACTIONS_TOO_MANY' },
  )

  emu.addChat({ id: -100777, type: 'supergroup', allowedReactions: ['👍'] })
  const groupMessage = emu.sendText({ chatId: -100777, text: 'restricted' }).message?.message_id ?? 0
  t.equal(await api.setMessageReaction(-100777, groupMessage, [{ type: 'emoji', emoji: '👍' }]), true)
  t.match(await apiError(api.setMessageReaction(-100777, groupMessage, [{ type: 'emoji', emoji: '🔥' }])), {
    description: 'Bad Request: REACTION_INVALID',
  })
})

t.test('editMessageText, deleteMessage and sendChatAction', async (t) => {
  const { emu, api } = await emulator(t)
  const userMessage = emu.sendText({ chatId: 3, text: 'mine' }).message?.message_id ?? 0
  const sent = await api.sendMessage(3, 'draft')

  const edited = await api.editMessageText(3, sent.message_id, '<i>final</i>', { parse_mode: 'HTML' })
  t.match(edited, { message_id: sent.message_id, text: 'final', entities: [{ type: 'italic', offset: 0, length: 5 }] })
  t.type(edited !== true && edited.edit_date, 'number')
  const same = await apiError(api.editMessageText(3, sent.message_id, '<i>final</i>', { parse_mode: 'HTML' }))
  t.equal(same.error_code, 400)
  t.equal(
    same.description,
    'Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message',
  )
  const reordered = await apiError(
    api.editMessageText(3, sent.message_id, 'final', { entities: [{ length: 5, offset: 0, type: 'italic' } as const] }),
  )
  t.match(reordered.description, /^Bad Request: message is not modified: /, 'the same entities as plain entities are no change either')
  t.match(await api.editMessageText(3, sent.message_id, 'final'), { text: 'final' }, 'dropping the entities is a change')
  t.match(await api.editMessageText(3, sent.message_id, '<b>x'), { text: '<b>x' }, 'without parse_mode the text is taken as is')
  t.match(await apiError(api.editMessageText(3, sent.message_id, '<b>x', { parse_mode: 'HTML' })), {
    description: `Bad Request: can't parse entities: Can't find end tag corresponding to start tag "b"`,
  })
  t.match(await apiError(api.editMessageText(3, 999, 'x')), { description: 'Bad Request: message to edit not found' })
  t.match(await apiError(api.editMessageText(3, userMessage, 'x')), { description: "Bad Request: message can't be edited" })

  t.equal(await api.deleteMessage(3, sent.message_id), true)
  t.match(await apiError(api.deleteMessage(3, sent.message_id)), { error_code: 400, description: 'Bad Request: message to delete not found' })
  t.match(await apiError(api.deleteMessage(3, 4242)), { error_code: 400, description: 'Bad Request: message to delete not found' })
  t.match(await apiError(api.editMessageText(3, sent.message_id, 'too late')), {
    error_code: 400,
    description: 'Bad Request: message to edit not found',
  })
})

t.test('sendChatAction takes exactly the Bot API’s actions, in a topic too', async (t) => {
  const { emu, api } = await emulator(t)
  emu.sendText({ chatId: 3, text: 'hi' })
  const actions = [
    'typing',
    'upload_photo',
    'record_video',
    'upload_video',
    'record_voice',
    'upload_voice',
    'upload_document',
    'choose_sticker',
    'find_location',
    'record_video_note',
    'upload_video_note',
  ] as const
  for (const action of actions) t.equal(await api.sendChatAction(3, action), true, action)
  for (const wrong of ['dancing', 'TYPING', 'record_audio', 'upload_audio']) {
    const error = await apiError(api.sendChatAction(3, wrong as 'typing'))
    t.equal(error.error_code, 400, wrong)
    t.equal(error.description, 'Bad Request: wrong parameter action in request', wrong)
  }

  emu.sendText({ chatId: -1001234567890, text: 'in a topic', threadId: 77 })
  t.equal(await api.sendChatAction(-1001234567890, 'typing', { message_thread_id: 77 }), true)
  t.match(emu.callsOf('sendChatAction').at(-1), { ok: true, params: { message_thread_id: 77 } })
  const badThread = await fetch(`${emu.url}/bot${TOKEN}/sendChatAction?chat_id=3&action=typing&message_thread_id=seven`)
  t.equal(badThread.status, 400, 'a thread id must be an integer')
  t.match(await apiError(api.sendChatAction(4, 'typing')), { description: 'Bad Request: chat not found' })
})

t.test('getFile and the file server', async (t) => {
  const { emu, api } = await emulator(t)
  const bytes = Buffer.from('a voice, pretending')
  const update = emu.sendVoice({ chatId: 11, bytes, caption: 'listen' })
  const voice = update.message?.voice
  t.equal(update.message?.caption, 'listen')
  t.ok(voice, 'the update carries the voice')

  const file = await api.getFile(voice?.file_id ?? '')
  t.equal(file.file_id, voice?.file_id)
  t.equal(file.file_size, bytes.length)
  t.type(file.file_path, 'string')
  const download = await fetch(`${emu.url}/file/bot${TOKEN}/${file.file_path}`)
  t.equal(download.status, 200)
  t.same(Buffer.from(await download.arrayBuffer()), bytes)
  t.match(emu.callsOf('downloadFile')[0], { status: 200, params: { file_path: file.file_path } })

  const photo = emu.sendPhoto({ chatId: 11, caption: 'look' }).message?.photo?.[0]
  t.ok(photo && (await api.getFile(photo.file_id)).file_path, 'photos are registered too')
  const doc = emu.sendDocument({ chatId: 11, fileName: 'notes.md' }).message?.document
  t.equal(doc?.file_name, 'notes.md')

  emu.addFile({ file_id: 'huge', file_unique_id: 'u-huge', bytes: Buffer.alloc(1), file_size: MAX_DOWNLOAD_SIZE + 1 })
  t.match(await apiError(api.getFile('huge')), { error_code: 400, description: 'Bad Request: file is too big' })
  t.match(await apiError(api.getFile('nope')), { error_code: 400 })
  t.equal((await fetch(`${emu.url}/file/bot${TOKEN}/no/such/file`)).status, 404)
  t.equal((await fetch(`${emu.url}/file/bot1:bad/${file.file_path}`)).status, 401)
})

t.test('audio, video and video notes carry the Bot API’s fields and download like any file', async (t) => {
  const { emu, api } = await emulator(t)
  const download = async (fileId: string): Promise<Buffer> => {
    const file = await api.getFile(fileId)
    const response = await fetch(`${emu.url}/file/bot${TOKEN}/${file.file_path}`)
    t.equal(response.status, 200, `${fileId} downloads`)
    return Buffer.from(await response.arrayBuffer())
  }

  const song = Buffer.from('ID3 pretend mp3')
  const audioMessage = emu.sendAudio({ chatId: 12, bytes: song, durationS: 215, performer: 'Band', title: 'Song', fileName: 'song.mp3', caption: 'listen' }).message
  t.same(audioMessage?.audio, {
    file_id: audioMessage?.audio?.file_id,
    file_unique_id: audioMessage?.audio?.file_unique_id,
    file_size: song.length,
    duration: 215,
    performer: 'Band',
    title: 'Song',
    file_name: 'song.mp3',
    mime_type: 'audio/mpeg',
  })
  t.equal(audioMessage?.caption, 'listen')
  t.same(await download(audioMessage?.audio?.file_id ?? ''), song)
  const bare = emu.sendAudio({ chatId: 12 }).message?.audio
  t.ok(bare && bare.duration > 0, 'a duration is always there')
  t.equal(bare?.performer, undefined, 'performer, title and file name only when the sender gave them')
  t.equal(bare?.title, undefined)
  t.equal(bare?.file_name, undefined)

  const clip = Buffer.from('pretend mp4')
  const videoMessage = emu.sendVideo({ chatId: 12, bytes: clip, width: 640, height: 360, durationS: 12, fileName: 'clip.mov', mimeType: 'video/quicktime', caption: 'watch' }).message
  t.match(videoMessage?.video, { width: 640, height: 360, duration: 12, file_name: 'clip.mov', mime_type: 'video/quicktime', file_size: clip.length })
  t.equal(videoMessage?.caption, 'watch')
  t.match((await api.getFile(videoMessage?.video?.file_id ?? '')).file_path, /\.mov$/u, 'the file path keeps the extension')
  t.same(await download(videoMessage?.video?.file_id ?? ''), clip)
  t.match(emu.sendVideo({ chatId: 12 }).message?.video, { width: 1280, height: 720, mime_type: 'video/mp4' })

  const round = Buffer.from('pretend round video')
  const noteMessage = emu.sendVideoNote({ chatId: 12, bytes: round, length: 240, durationS: 7, fileId: 'my-note' }).message
  t.same(noteMessage?.video_note, { file_id: 'my-note', file_unique_id: 'u-my-note', file_size: round.length, length: 240, duration: 7 })
  t.equal(noteMessage?.caption, undefined, 'video notes have no caption')
  t.same(await download('my-note'), round)

  const ids = [audioMessage, videoMessage, noteMessage].map((message) => message?.message_id)
  t.same(ids, [1, 3, 5], 'media messages take message ids like any other')

  const sneaky = emu.sendDocument({ chatId: 12, fileName: '../../etc/passwd' }).message?.document
  t.match((await api.getFile(sneaky?.file_id ?? '')).file_path, /^documents\/file_\d+\.bin$/u, 'a file name never shapes the path')
})

t.test('a photo comes in Telegram’s sizes, the largest last, each downloadable', async (t) => {
  const { emu, api } = await emulator(t)
  const original = Buffer.from('the full-size photo')
  const photo = emu.sendPhoto({ chatId: 13, bytes: original }).message?.photo ?? []
  t.same(
    photo.map((size) => [size.width, size.height]),
    [[90, 68], [320, 240], [800, 600], [1280, 960]],
    'thumbnails scaled to fit 90, 320 and 800, then the original',
  )
  t.equal(new Set(photo.map((size) => size.file_id)).size, photo.length, 'every size is its own file')
  t.equal(new Set(photo.map((size) => size.file_unique_id)).size, photo.length)
  for (const size of photo) {
    const file = await api.getFile(size.file_id)
    t.equal(file.file_size, size.file_size, `${size.width}×${size.height} is registered with its size`)
  }
  const largest = await api.getFile(photo.at(-1)?.file_id ?? '')
  const bytes = Buffer.from(await (await fetch(`${emu.url}/file/bot${TOKEN}/${largest.file_path}`)).arrayBuffer())
  t.same(bytes, original, 'the given bytes are the largest size')

  const small = emu.sendPhoto({ chatId: 13, width: 100, height: 300, fileId: 'tall' }).message?.photo ?? []
  t.same(
    small.map((size) => [size.file_id, size.width, size.height]),
    [['tall-90', 30, 90], ['tall', 100, 300]],
    'no thumbnail as big as the photo itself; a chosen file id names the largest',
  )
})

t.test('getFile refuses any kind of file over 20 MB, which a test fakes with fileSize', async (t) => {
  const { emu, api } = await emulator(t)
  const huge = { chatId: 14, fileSize: MAX_DOWNLOAD_SIZE + 1 }
  const files = {
    photo: emu.sendPhoto(huge).message?.photo?.at(-1),
    voice: emu.sendVoice(huge).message?.voice,
    document: emu.sendDocument(huge).message?.document,
    audio: emu.sendAudio(huge).message?.audio,
    video: emu.sendVideo(huge).message?.video,
    video_note: emu.sendVideoNote(huge).message?.video_note,
  }
  for (const [kind, file] of Object.entries(files)) {
    t.equal(file?.file_size, MAX_DOWNLOAD_SIZE + 1, `the ${kind} message reports the size`)
    const error = await apiError(api.getFile(file?.file_id ?? ''))
    t.equal(error.error_code, 400, kind)
    t.equal(error.description, 'Bad Request: file is too big', kind)
  }
  const atLimit = emu.sendVideo({ chatId: 14, fileSize: MAX_DOWNLOAD_SIZE }).message?.video
  t.equal((await api.getFile(atLimit?.file_id ?? '')).file_size, MAX_DOWNLOAD_SIZE, 'exactly 20 MB is still allowed')
})

t.test('a user’s edit arrives as edited_message with edit_date, subject to allowed_updates', async (t) => {
  const { emu, api } = await emulator(t)
  const original = emu.sendText({ chatId: 15, text: 'helo' }).message
  const messageId = original?.message_id ?? 0
  const edit = emu.editUserMessage({ chatId: 15, messageId, text: '/fix hello' })
  const edited = edit.edited_message
  t.equal(edit.message, undefined)
  t.match(edited, { message_id: messageId, date: original?.date, chat: { id: 15 }, from: original?.from, text: '/fix hello' })
  t.type(edited?.edit_date, 'number')
  t.ok((edited?.edit_date ?? 0) >= (original?.date ?? Infinity), 'edited no earlier than sent')
  t.same(edited?.entities, [{ type: 'bot_command', offset: 0, length: 4 }], 'commands are marked in the new text')

  const kinds = (updates: readonly Update[]): string[] => updates.map((update) => Object.keys(update).find((key) => key !== 'update_id') ?? '')
  const first = await api.getUpdates({ timeout: 0 })
  t.same(kinds(first), ['message', 'edited_message'], 'edited_message is delivered by default')
  const reply = await api.sendMessage(15, 'noted', { reply_parameters: { message_id: messageId } })
  t.equal(reply.reply_to_message?.text, '/fix hello', 'Telegram knows the message by its new text')

  let offset = (first.at(-1)?.update_id ?? 0) + 1
  t.same(await api.getUpdates({ offset, timeout: 0, allowed_updates: ['message'] }), [])
  emu.editUserMessage({ chatId: 15, messageId, text: 'unseen edit' })
  const unfiltered = emu.sendText({ chatId: 15, text: 'still seen' })
  const onlyMessages = await api.getUpdates({ offset, timeout: 0 })
  t.same(kinds(onlyMessages), ['message'], 'an edit is dropped when allowed_updates leaves it out')
  offset = unfiltered.update_id + 1

  await api.getUpdates({ offset, timeout: 0, allowed_updates: ['edited_message'] })
  emu.editUserMessage({ chatId: 15, messageId, text: 'seen edit' })
  emu.sendText({ chatId: 15, text: 'unseen message' })
  const onlyEdits = await api.getUpdates({ offset, timeout: 0 })
  t.same(kinds(onlyEdits), ['edited_message'])
  t.equal(onlyEdits[0]?.edited_message?.text, 'seen edit')
  offset = (onlyEdits.at(-1)?.update_id ?? 0) + 1

  await api.getUpdates({ offset, timeout: 0, allowed_updates: [] })
  const backToDefault = emu.editUserMessage({ chatId: 15, messageId, text: 'default again' })
  t.same((await api.getUpdates({ offset, timeout: 0 })).map((u) => u.update_id), [backToDefault.update_id], 'an empty list restores the default')

  const hook = await receiver(t)
  await api.setWebhook(hook.url, { allowed_updates: ['message', 'edited_message'] })
  const hooked = emu.editUserMessage({ chatId: 15, messageId, text: 'via webhook' })
  await emu.waitForDelivery((d) => d.update_id === hooked.update_id && d.status === 200, { timeoutMs: WAIT_MS })
  t.equal(hook.received.at(-1)?.update.edited_message?.text, 'via webhook')
})

t.test('editUserMessage edits captions and channel posts, and refuses what a user cannot edit', async (t) => {
  const { emu, api } = await emulator(t)
  const photo = emu.sendPhoto({ chatId: 16, caption: 'befor' }).message
  const recaptioned = emu.editUserMessage({ chatId: 16, messageId: photo?.message_id ?? 0, text: 'before' }).edited_message
  t.equal(recaptioned?.caption, 'before')
  t.same(recaptioned?.photo, photo?.photo, 'the media stays')
  t.equal(recaptioned?.text, undefined)

  const post = emu.sendText({ chatId: -1009876543210, chatType: 'channel', text: 'news' }).channel_post
  const editedPost = emu.editUserMessage({ chatId: -1009876543210, messageId: post?.message_id ?? 0, text: 'fresh news' })
  t.match(editedPost, { edited_channel_post: { text: 'fresh news', chat: { type: 'channel' } } })

  const mine = emu.sendText({ chatId: 16, text: 'same' }).message?.message_id ?? 0
  const botMessage = await api.sendMessage(16, 'from the bot')
  const note = emu.sendVideoNote({ chatId: 16 }).message?.message_id ?? 0
  t.throws(() => emu.editUserMessage({ chatId: 16, messageId: 999, text: 'x' }), { name: 'TypeError', message: /message 999 in chat 16 is not known/u })
  t.throws(() => emu.editUserMessage({ chatId: 99, messageId: 1, text: 'x' }), TypeError, 'an unknown chat')
  t.throws(() => emu.editUserMessage({ chatId: 16, messageId: botMessage.message_id, text: 'x' }), { message: /sent by a bot/u })
  t.throws(() => emu.editUserMessage({ chatId: 16, messageId: mine, text: 'same' }), { message: /unchanged edit/u })
  t.throws(() => emu.editUserMessage({ chatId: 16, messageId: mine, text: '' }), { message: /empty/u })
  t.throws(() => emu.editUserMessage({ chatId: 16, messageId: note, text: 'x' }), { message: /neither text nor a caption/u })
})

t.test('webhook delivery: secret header, JSON, webhook info', async (t) => {
  const { emu, api } = await emulator(t)
  const hook = await receiver(t)
  t.equal(await api.setWebhook(hook.url, { secret_token: SECRET }), true)

  const update = emu.sendText({ chatId: 21, text: '/start' })
  const delivery = await emu.waitForDelivery((d) => d.update_id === update.update_id, { timeoutMs: WAIT_MS })
  t.equal(delivery.status, 200)
  t.equal(delivery.chat_id, 21)
  t.ok(delivery.answeredAt >= delivery.sentAt)
  t.equal(hook.received.length, 1)
  t.same(hook.received[0]?.update, update)
  t.equal(hook.received[0]?.secret, SECRET)
  t.match(hook.received[0]?.contentType, /^application\/json/)
  t.same(update.message?.entities, [{ type: 'bot_command', offset: 0, length: 6 }], 'commands are marked as Telegram does')

  const info = await api.getWebhookInfo()
  t.match(info, { url: hook.url, has_custom_certificate: false, pending_update_count: 0, max_connections: 40 })
  t.equal(info.last_error_date, undefined)

  t.match(await apiError(api.getUpdates()), {
    error_code: 409,
    description: "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
  })

  t.equal(await api.setWebhook(hook.url), true)
  const unsigned = emu.sendText({ chatId: 21, text: 'no secret now' })
  await emu.waitForDelivery((d) => d.update_id === unsigned.update_id && d.status === 200, { timeoutMs: WAIT_MS })
  t.equal(hook.received.at(-1)?.secret, undefined, 'no header once the secret is gone')
})

t.test('a failed delivery is retried and holds only its own chat', async (t) => {
  const { emu, api } = await emulator(t, { deliveryRetryMs: 400 })
  const hook = await receiver(t, (update, received) => {
    const firstForChatA = chatOf(update) === 1 && received.filter((r) => chatOf(r.update) === 1).length === 1
    return firstForChatA ? 500 : 200
  })
  await api.setWebhook(hook.url, { secret_token: SECRET })

  const a1 = emu.sendText({ chatId: 1, text: 'a1' })
  const a2 = emu.sendText({ chatId: 1, text: 'a2' })
  const b1 = emu.sendText({ chatId: 2, text: 'b1' })

  const failed = await emu.waitForDelivery((d) => d.update_id === a1.update_id, { timeoutMs: WAIT_MS })
  t.equal(failed.status, 500)
  t.equal(failed.error, 'Wrong response from the webhook: 500 Internal Server Error')
  const info = await api.getWebhookInfo()
  t.equal(info.last_error_message, 'Wrong response from the webhook: 500 Internal Server Error')
  t.type(info.last_error_date, 'number')

  const a2Delivered = await emu.waitForDelivery((d) => d.update_id === a2.update_id && d.status === 200, { timeoutMs: WAIT_MS })
  const a1Retried = emu.deliveries.find((d) => d.update_id === a1.update_id && d.status === 200)
  const b1Delivered = emu.deliveries.find((d) => d.update_id === b1.update_id && d.status === 200)
  t.ok(a1Retried, 'the failed update was sent again')
  t.equal(a1Retried?.attempt, 2)
  t.ok(b1Delivered, 'the other chat was delivered')
  if (!a1Retried || !b1Delivered) return

  t.ok(a2Delivered.sentAt >= a1Retried.answeredAt, 'a chat’s next update waits for the current one’s 2xx')
  t.ok(b1Delivered.answeredAt < a1Retried.sentAt, 'another chat is not held by the failing one')
  t.same(
    hook.received.filter((r) => chatOf(r.update) === 1).map((r) => r.update.message?.text),
    ['a1', 'a1', 'a2'],
    'chat 1 saw its updates in order, the failed one twice',
  )
  t.equal((await api.getWebhookInfo()).pending_update_count, 0)
})

t.test('a slow webhook holds its chat strictly one request at a time', async (t) => {
  const { emu, api } = await emulator(t)
  const release = deferred()
  let inFlightForChat1 = 0
  let maxInFlightForChat1 = 0
  const hook = await receiver(t, async (update) => {
    if (chatOf(update) !== 1) return 200
    inFlightForChat1 += 1
    maxInFlightForChat1 = Math.max(maxInFlightForChat1, inFlightForChat1)
    if (update.message?.text === 'slow') await release.promise
    inFlightForChat1 -= 1
    return 200
  })
  await api.setWebhook(hook.url)

  const slow = emu.sendText({ chatId: 1, text: 'slow' })
  const next = emu.sendText({ chatId: 1, text: 'next' })
  const other = emu.sendText({ chatId: 2, text: 'other chat' })
  try {
    await emu.waitForDelivery((d) => d.update_id === other.update_id, { timeoutMs: WAIT_MS })
    // Chat 2's next update, delivered: the emulator moved on, and still held chat 1's.
    const laterInChat2 = emu.sendText({ chatId: 2, text: 'later' })
    await emu.waitForDelivery((d) => d.update_id === laterInChat2.update_id, { timeoutMs: WAIT_MS })
    t.notOk(hook.received.some((r) => r.update.update_id === next.update_id), 'the chat’s next update is held')
    t.equal((await api.getWebhookInfo()).pending_update_count, 2, 'the held and the in-flight update are pending')
  } finally {
    release.resolve()
  }
  await emu.waitForDelivery((d) => d.update_id === next.update_id, { timeoutMs: WAIT_MS })
  t.equal(maxInFlightForChat1, 1)
  t.same(emu.deliveries.filter((d) => d.chat_id === 1).map((d) => d.update_id), [slow.update_id, next.update_id])
})

t.test('silent and unreachable webhooks count as failures', async (t) => {
  const { emu, api } = await emulator(t, { deliveryTimeoutMs: 300, deliveryRetryMs: 100 })
  const release = deferred()
  const hook = await receiver(t, async (_update, received) => {
    if (received.length === 1) await release.promise
    return 200
  })
  try {
    await api.setWebhook(hook.url)
    const update = emu.sendText({ chatId: 12, text: 'anyone there?' })
    const retried = await emu.waitForDelivery((d) => d.update_id === update.update_id && d.status === 200, { timeoutMs: WAIT_MS })
    t.equal(retried.attempt, 2)
    t.match(emu.deliveries[0], { update_id: update.update_id, attempt: 1, error: 'Read timeout expired' })
    t.equal(emu.deliveries[0]?.status, undefined, 'a timed-out attempt has no status')
  } finally {
    release.resolve()
  }

  await api.setWebhook('http://127.0.0.1:1/hook')
  const lost = emu.sendText({ chatId: 12, text: 'into the void' })
  await emu.waitForDelivery((d) => d.update_id === lost.update_id && d.attempt >= 2, { timeoutMs: WAIT_MS })
  const info = await api.getWebhookInfo()
  t.equal(info.last_error_message, 'Connection refused')
  t.equal(info.pending_update_count, 1)
  await api.deleteWebhook({ drop_pending_updates: true })
  t.equal((await api.getWebhookInfo()).pending_update_count, 0, 'drop_pending_updates forgets them')
  t.same(await api.getUpdates({ timeout: 0 }), [])
})

t.test('allowed_updates filters kinds; chatless updates have their own lane', async (t) => {
  const { emu, api } = await emulator(t)
  const hook = await receiver(t)
  await api.setWebhook(hook.url)

  const reaction = emu.pushUpdate({
    message_reaction: { chat: { id: 4, type: 'private', first_name: 'A' }, message_id: 1, date: 1, old_reaction: [], new_reaction: [] },
  })
  const unknownKind = emu.pushUpdate({ future_kind: { hello: 'world' } } as unknown as Update)
  const text = emu.sendText({ chatId: 4, text: 'hi' })
  await emu.waitForDelivery((d) => d.update_id === text.update_id, { timeoutMs: WAIT_MS })
  const chatless = await emu.waitForDelivery((d) => d.update_id === unknownKind.update_id, { timeoutMs: WAIT_MS })
  t.equal(chatless.chat_id, null)
  t.notOk(emu.deliveries.some((d) => d.update_id === reaction.update_id), 'message_reaction is off by default')
  t.ok(text.update_id > reaction.update_id, 'update ids grow globally')

  await api.setWebhook(hook.url, { allowed_updates: ['message_reaction'] })
  t.same((await api.getWebhookInfo()).allowed_updates, ['message_reaction'])
  const wanted = emu.pushUpdate({
    message_reaction: { chat: { id: 4, type: 'private', first_name: 'A' }, message_id: 1, date: 1, old_reaction: [], new_reaction: [] },
  })
  const unwanted = emu.sendText({ chatId: 4, text: 'not subscribed' })
  await emu.waitForDelivery((d) => d.update_id === wanted.update_id, { timeoutMs: WAIT_MS })
  // Another wanted update in the same chat, delivered: chat 4's updates go in order, so the unwanted one would be in.
  const laterWanted = emu.pushUpdate({
    message_reaction: { chat: { id: 4, type: 'private', first_name: 'A' }, message_id: 1, date: 2, old_reaction: [], new_reaction: [] },
  })
  await emu.waitForDelivery((d) => d.update_id === laterWanted.update_id, { timeoutMs: WAIT_MS })
  t.notOk(emu.deliveries.some((d) => d.update_id === unwanted.update_id), 'messages are off once not listed')
})

t.test('a webhook may answer with a method call', async (t) => {
  const { emu, api } = await emulator(t)
  const hook = await receiver(t, (update) => ({
    status: 200,
    body: { method: 'sendMessage', chat_id: update.message?.chat.id, text: `echo: ${update.message?.text}` },
  }))
  await api.setWebhook(hook.url)
  emu.sendText({ chatId: 31, text: 'ping' })
  const call = await emu.waitFor((c) => c.method === 'sendMessage', { timeoutMs: WAIT_MS })
  t.match(call, { source: 'webhook_reply', ok: true, result: { text: 'echo: ping', chat: { id: 31 } } })
})

t.test('faults: 429 with retry_after, 500, REACTION_INVALID, dropped connections, latency', async (t) => {
  const { emu, api } = await emulator(t)
  const messageId = emu.sendText({ chatId: 8, text: 'x' }).message?.message_id ?? 0

  emu.injectFault('sendMessage', { kind: 'rate_limit', retryAfter: 7 }, { times: 1 })
  const limited = await apiError(api.sendMessage(8, 'one'))
  t.equal(limited.error_code, 429)
  t.equal(limited.description, 'Too Many Requests: retry after 7')
  t.equal(limited.parameters.retry_after, 7)
  t.equal((await api.sendMessage(8, 'two')).text, 'two', 'times: 1 fires once')

  emu.injectFault('*', { kind: 'server_error' })
  t.match(await apiError(api.getMe()), { error_code: 500, description: 'Internal Server Error' })
  t.match(await apiError(api.sendChatAction(8, 'typing')), { error_code: 500 })
  emu.clearFaults()
  t.equal(await api.sendChatAction(8, 'typing'), true, 'clearFaults ends them')

  emu.injectFault('setMessageReaction', { kind: 'reaction_invalid' }, { times: 1 })
  t.match(await apiError(api.setMessageReaction(8, messageId, [{ type: 'emoji', emoji: '👍' }])), {
    description: 'Bad Request: REACTION_INVALID',
  })

  emu.injectFault('getMe', { kind: 'refuse' }, { times: 1 })
  await t.rejects(api.getMe(), HttpError, 'a dropped connection is a network error for grammY')
  t.match(emu.callsOf('getMe').at(-1), { status: 0, ok: false })

  emu.injectFault('getMe', { kind: 'latency', ms: 300 }, { times: 1 })
  const started = performance.now()
  await api.getMe()
  t.ok(performance.now() - started >= 290, 'latency delays the answer')

  t.throws(() => emu.injectFault('getMe', { kind: 'rate_limit', retryAfter: 0 }), TypeError)
})

t.test('entities_rejected fails only formatted calls, so a plain-text fallback gets through', async (t) => {
  const { emu, api } = await emulator(t)
  const rejected = `Bad Request: can't parse entities: Unsupported start tag "x" at byte offset 0`
  emu.sendText({ chatId: 17, text: 'x' })

  emu.injectFault('sendMessage', { kind: 'entities_rejected' }, { times: 1 })
  t.equal((await api.sendMessage(17, 'plain first')).text, 'plain first', 'a plain call passes and does not use up the fault')
  t.equal((await api.sendMessage(17, 'no parse mode', { entities: [] })).text, 'no parse mode', 'an empty entities list is plain text')
  const formatted = await apiError(api.sendMessage(17, '<b>bold</b>', { parse_mode: 'HTML' }))
  t.equal(formatted.error_code, 400)
  t.equal(formatted.description, rejected)
  t.match(await api.sendMessage(17, '<b>bold</b>', { parse_mode: 'HTML' }), { text: 'bold' }, 'times: 1 counts only the call it failed')

  emu.injectFault('*', { kind: 'entities_rejected' })
  t.match(await apiError(api.sendMessage(17, 'bold', { entities: [{ type: 'bold', offset: 0, length: 4 }] })), { description: rejected })
  const sent = await api.sendMessage(17, '<b>fallback</b>')
  t.equal(sent.text, '<b>fallback</b>', 'the same text without parse_mode is sent as is')
  t.match(await apiError(api.editMessageText(17, sent.message_id, '<i>x</i>', { parse_mode: 'MarkdownV2' })), { description: rejected })
  t.equal(await api.sendChatAction(17, 'typing'), true, 'calls without formatting are untouched')
  emu.clearFaults()

  emu.injectFault('sendMessage', { kind: 'server_error' }, { times: 1 })
  emu.injectFault('sendMessage', { kind: 'entities_rejected' }, { times: 1 })
  t.match(await apiError(api.sendMessage(17, 'plain')), { error_code: 500 }, 'an older failure fault still comes first')
  t.match(await apiError(api.sendMessage(17, '<b>x</b>', { parse_mode: 'HTML' })), { description: rejected })
})

t.test('getUpdates long-polls, confirms by offset, and yields to a webhook', async (t) => {
  const { emu, api } = await emulator(t)
  const early = emu.sendText({ chatId: 50, text: 'early' })
  t.equal((await api.getWebhookInfo()).pending_update_count, 1, 'updates wait for getUpdates')
  t.same((await api.getUpdates({ timeout: 0 })).map((u) => u.update_id), [early.update_id])

  const started = performance.now()
  const poll = api.getUpdates({ offset: early.update_id + 1, timeout: 10 })
  await delay(150)
  const late = emu.sendText({ chatId: 50, text: 'late' })
  const updates = await poll
  t.same(updates.map((u) => u.update_id), [late.update_id], 'the held poll answers when an update arrives')
  t.ok(performance.now() - started < 5_000, 'long before the poll timeout')

  t.same(await api.getUpdates({ offset: late.update_id + 1, timeout: 0 }), [], 'confirmed updates are gone')
  const quiet = performance.now()
  t.same(await api.getUpdates({ timeout: 1 }), [])
  t.ok(performance.now() - quiet >= 900, 'an empty poll waits out its timeout')

  const hook = await receiver(t)
  emu.sendText({ chatId: 50, text: 'queued before the webhook' })
  await api.setWebhook(hook.url)
  await emu.waitForDelivery((d) => d.status === 200, { timeoutMs: WAIT_MS })
  t.equal(hook.received[0]?.update.message?.text, 'queued before the webhook', 'a new webhook gets what was waiting')
  await api.deleteWebhook()
  const after = emu.sendText({ chatId: 50, text: 'after delete' })
  t.same((await api.getUpdates({ timeout: 0 })).map((u) => u.update_id), [after.update_id])
})

t.test('waitFor resolves on a matching call and explains a timeout', async (t) => {
  const { emu, api } = await emulator(t)
  emu.sendText({ chatId: 60, text: 'x' })
  const waiting = emu.waitFor((c) => c.method === 'sendMessage' && c.ok, { timeoutMs: WAIT_MS })
  await api.sendMessage(60, 'done')
  t.match(await waiting, { method: 'sendMessage', result: { text: 'done' } })

  await api.getMe()
  await t.rejects(emu.waitFor((c) => c.method === 'deleteMessage', { timeoutMs: 100 }), {
    message: /No call matched within 100 ms .*\n.*sendMessage → 200.*\n.*getMe → 200/su,
  })

  emu.reset()
  t.equal(emu.calls.length, 0, 'reset forgets the calls')
  t.match(await apiError(api.sendMessage(60, 'forgotten')), { description: 'Bad Request: chat not found' })
})

t.test('the control API works over HTTP for other processes', async (t) => {
  const { emu, api } = await emulator(t)
  const post = (route: string, body: unknown): Promise<Response> =>
    fetch(`${emu.url}/_emulator/${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })

  const pushed = (await (await post('updates', { chatId: 70, text: 'over http' })).json()) as { ok: boolean; result: Update }
  t.equal(pushed.ok, true)
  t.equal(pushed.result.message?.text, 'over http')
  const raw = (await (await post('updates', { message: { message_id: 5, date: 1, chat: { id: 71, type: 'private', first_name: 'R' }, from: { id: 71, is_bot: false, first_name: 'R' }, text: 'raw' } })).json()) as { result: Update }
  t.type(raw.result.update_id, 'number')
  t.equal((await api.sendMessage(71, 'reply', { reply_parameters: { message_id: 5 } })).reply_to_message?.message_id, 5, 'raw updates make chats and messages known')

  await api.sendMessage(70, 'bot says')
  const seen = emu.calls.length
  const calls = (await (await fetch(`${emu.url}/_emulator/calls?method=sendMessage`)).json()) as { result: Array<{ params: { text: string } }> }
  t.same(calls.result.map((c) => c.params.text), ['reply', 'bot says'])
  await api.getMe()
  const since = (await (await fetch(`${emu.url}/_emulator/calls?since=${seen}`)).json()) as { result: Array<{ method: string }> }
  t.same(since.result.map((c) => c.method), ['getMe'])

  t.equal((await post('faults', { method: 'getMe', fault: { kind: 'server_error' }, times: 1 })).status, 200)
  t.match(await apiError(api.getMe()), { error_code: 500 })
  const badFault = await post('faults', { fault: { kind: 'meteor' } })
  t.equal(badFault.status, 400)
  t.match(await badFault.json(), { ok: false, description: /A fault must be .*\{kind: 'entities_rejected'\}/u })
  t.equal((await post('faults', { method: 'sendMessage', fault: { kind: 'entities_rejected' }, times: 1 })).status, 200)
  t.match(await apiError(api.sendMessage(70, '<b>x</b>', { parse_mode: 'HTML' })), { description: /^Bad Request: can't parse entities: / })
  t.equal((await api.sendMessage(70, '<b>x</b>', { parse_mode: 'HTML' })).text, 'x')
  await post('faults', { fault: { kind: 'server_error' } })
  t.equal((await fetch(`${emu.url}/_emulator/faults`, { method: 'DELETE' })).status, 200)
  t.equal((await api.getMe()).id, 123456)

  t.same(await (await fetch(`${emu.url}/_emulator/deliveries`)).json(), { ok: true, result: [] })
  t.equal((await post('reset', {})).status, 200)
  t.equal(emu.calls.length, 0)
  t.equal((await fetch(`${emu.url}/_emulator/nope`)).status, 404)
})

t.test('form-encoded and query-string calls are understood', async (t) => {
  const { emu } = await emulator(t)
  emu.sendText({ chatId: 80, text: 'x' })
  const form = await fetch(`${emu.url}/bot${TOKEN}/sendMessage`, {
    method: 'POST',
    body: new URLSearchParams({ chat_id: '80', text: '<b>form</b>', parse_mode: 'HTML' }),
  })
  t.match(await form.json(), { ok: true, result: { text: 'form', entities: [{ type: 'bold' }] } })
  const query = await fetch(`${emu.url}/bot${TOKEN}/setMessageReaction?chat_id=80&message_id=1&reaction=${encodeURIComponent('[{"type":"emoji","emoji":"🦖"}]')}`)
  t.equal(query.status, 400)
  t.same(await query.json(), { ok: false, error_code: 400, description: 'Bad Request: REACTION_INVALID' })
})

t.test('the emulator command refuses bad arguments with a usage error', async (t) => {
  await t.rejects(runEmulatorCommand(['--port', 'eighty', '--token', TOKEN]), UsageError)
  await t.rejects(runEmulatorCommand(['--bogus']), UsageError)
})
