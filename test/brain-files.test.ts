// Files back from the brain: fd-3 `file` events become photos or documents in the chat, in the
// brain's order and before the reply; anything outside the chat's directory and BRAIN_CWD, too big,
// or past the per-run limit is refused with a note in the chat and the log.
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import type { RecordedCall } from '../src/emulator/index.js'
import { chatDirOf } from '../src/brain/chat-dir.js'
import { FILE_BYTES_MAX, FILE_EVENTS_MAX } from '../src/telegram/brain-files.js'
import { solidPng } from './helpers/png.js'
import { eventually, startStack, type LogLine, type Stack } from './helpers/service.js'

const SENT = new Set(['sendMessage', 'sendPhoto', 'sendDocument'])
const WAIT = { timeoutMs: 20_000 }

let stack: Stack
t.before(async () => {
  stack = await startStack({ env: { LOG_LEVEL: 'info' } })
})
t.teardown(() => stack.close())

/** A chat's directory with these files in it, as the brain will see it. */
function chatFiles(chatId: number, files: Record<string, Buffer | string>): string {
  const dir = chatDirOf(stack.stateDir, chatId)
  fs.mkdirSync(dir, { recursive: true })
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), content)
  return dir
}

/** A path in the chat's directory as the brain has it (`..` left as written). */
const inChat = (chatId: number, name: string): string => `${chatDirOf(stack.stateDir, chatId)}/${name}`

/** Sends `text` and waits for the reply; returns what the bot sent the chat, in order. */
async function run(chatId: number, text: string): Promise<RecordedCall[]> {
  const since = stack.emu.calls.length
  const update = stack.emu.sendText({ chatId, text })
  await stack.emu.waitFor(
    (call) => call.method === 'sendMessage' && String(call.params['text']).startsWith(`reply ${update.update_id}`),
    { ...WAIT, since },
  )
  return stack.emu.calls.slice(since).filter((call) => SENT.has(call.method) && Number(call.params['chat_id']) === chatId && call.ok)
}

const upload = (call: RecordedCall | undefined, field: string): unknown => {
  const value = call?.params[field]
  const attached = typeof value === 'string' ? /^attach:\/\/(.+)$/u.exec(value)?.[1] : undefined
  return JSON.parse(JSON.stringify(attached === undefined ? value : call?.params[attached])) as unknown
}

t.test('an image Telegram shows as a photo goes as one; other files as documents, with their captions', async (t) => {
  const chatId = 7101
  const png = solidPng(64, 48)
  chatFiles(chatId, { 'chart.png': png, 'notes.txt': 'plain text\n', 'banner.png': solidPng(420, 20) })
  // A relative path starts in the brain's working directory, BRAIN_CWD here.
  fs.writeFileSync(path.join(stack.env['BRAIN_CWD'] as string, 'relative.txt'), 'from BRAIN_CWD\n')
  const sent = await run(chatId, `send=file:${inChat(chatId, 'chart.png')},file:${inChat(chatId, 'notes.txt')},file:${inChat(chatId, 'banner.png')},file:relative.txt`)
  t.same(sent.map((call) => call.method), ['sendPhoto', 'sendDocument', 'sendDocument', 'sendDocument', 'sendMessage'])
  const [photo, document, banner, relative] = sent
  t.match(upload(relative, 'document'), { upload: 'relative.txt', size: 15 }, 'a relative path, from BRAIN_CWD')
  t.match(upload(photo, 'photo'), { upload: 'chart.png', size: png.length })
  t.equal(photo?.params['caption'], `caption of ${inChat(chatId, 'chart.png')}`)
  t.match(photo?.result, { photo: [{ width: 64, height: 48 }] })
  t.match(upload(document, 'document'), { upload: 'notes.txt', size: 11 })
  t.match(document?.result, { document: { file_name: 'notes.txt' }, caption: `caption of ${inChat(chatId, 'notes.txt')}` })
  t.match(upload(banner, 'document'), { upload: 'banner.png' }, 'a 21:1 image is past the photo ratio: a document')

  // What Telegram stored is the brain's file, byte for byte.
  const fileId = (photo?.result as { photo: { file_id: string }[] }).photo[0]?.file_id ?? ''
  t.ok(stack.emu.file(fileId)?.bytes.equals(png), 'the photo arrived intact')
  t.ok(stack.svc.logs.some((line) => line.msg === 'brain file sent' && line['file'] === 'chart.png' && line['kind'] === 'photo'))
})

t.test('files and messages reach the chat in the order the brain wrote them, before the reply', async (t) => {
  const chatId = 7102
  chatFiles(chatId, { 'a.png': solidPng(10, 10), 'b.txt': 'b' })
  const sent = await run(chatId, `send=msg:one,file:${inChat(chatId, 'a.png')},msg:two,file:${inChat(chatId, 'b.txt')}`)
  t.same(
    sent.map((call) => `${call.method} ${String(call.params['text'] ?? call.params['caption'])}`),
    ['sendMessage one', `sendPhoto caption of ${inChat(chatId, 'a.png')}`, 'sendMessage two', `sendDocument caption of ${inChat(chatId, 'b.txt')}`, `sendMessage ${String(sent.at(-1)?.params['text'])}`],
  )
  t.match(String(sent.at(-1)?.params['text']), /^reply \d+ send=/u)
})

t.test('a path outside the chat directory and BRAIN_CWD is refused, symlinks and .. included, with a note', async (t) => {
  const chatId = 7103
  const dir = chatFiles(chatId, {})
  const outside = path.join(path.dirname(stack.stateDir), `outside-${process.pid}.txt`)
  fs.writeFileSync(outside, 'secret')
  t.teardown(() => fs.rmSync(outside, { force: true }))
  fs.symlinkSync(outside, path.join(dir, 'link.txt'))
  fs.symlinkSync('/etc', path.join(dir, 'etc'))
  const sent = await run(
    chatId,
    `send=file:/etc/hostname,file:${inChat(chatId, 'link.txt')},file:${inChat(chatId, 'etc/hostname')},file:${inChat(chatId, `../../../${path.basename(outside)}`)},file:${inChat(chatId, 'missing.txt')}`,
  )
  t.same(sent.map((call) => call.method), ['sendMessage', 'sendMessage', 'sendMessage', 'sendMessage', 'sendMessage', 'sendMessage'], 'no file was sent')
  const notes = sent.slice(0, -1).map((call) => String(call.params['text']))
  t.same(notes, [
    "⚠️ file not sent: hostname: outside the chat's directory and the brain's working directory",
    "⚠️ file not sent: link.txt: outside the chat's directory and the brain's working directory",
    "⚠️ file not sent: hostname: outside the chat's directory and the brain's working directory",
    `⚠️ file not sent: ${path.basename(outside)}: outside the chat's directory and the brain's working directory`,
    '⚠️ file not sent: missing.txt: no such file',
  ])
  t.notMatch(notes.join('\n'), stack.stateDir, 'the chat is never shown server paths')
  // The log comes through the service's stdout, which may trail its Bot API calls.
  const refusedLines = (): LogLine[] => stack.svc.logs.filter((line) => line.msg === 'brain file refused' && line['chat_id'] === chatId)
  const refused = await eventually(() => refusedLines().length >= 5 && refusedLines(), 5000, 'five refusals logged')
  t.same(refused.map((line) => line['path']), ['/etc/hostname', ...['link.txt', 'etc/hostname', `../../../${path.basename(outside)}`, 'missing.txt'].map((name) => inChat(chatId, name))])
})

t.test(`a file over ${FILE_BYTES_MAX / 1024 / 1024} MB is refused with a note; past ${FILE_EVENTS_MAX} files a run, one note`, async (t) => {
  const chatId = 7104
  const dir = chatFiles(chatId, {})
  const huge = path.join(dir, 'huge.bin')
  fs.closeSync(fs.openSync(huge, 'w'))
  fs.truncateSync(huge, FILE_BYTES_MAX + 1) // sparse: no disk used
  const big = await run(chatId, `send=file:${inChat(chatId, 'huge.bin')}`)
  t.same(big.map((call) => call.method), ['sendMessage', 'sendMessage'])
  t.equal(big[0]?.params['text'], '⚠️ file not sent: huge.bin: 50 MB is over the 50 MB Telegram allows')
  t.ok(stack.svc.logs.some((line) => line.msg === 'brain file refused' && line['path'] === inChat(chatId, 'huge.bin')))

  const names = Array.from({ length: FILE_EVENTS_MAX + 2 }, (_, i) => `f${i}.txt`)
  chatFiles(chatId, Object.fromEntries(names.map((name) => [name, name])))
  const many = await run(chatId, `send=${names.map((name) => `file:${inChat(chatId, name)}`).join(',')}`)
  t.equal(many.filter((call) => call.method === 'sendDocument').length, FILE_EVENTS_MAX)
  t.same(
    many.filter((call) => call.method === 'sendMessage').map((call) => String(call.params['text'])).slice(0, -1),
    [`⚠️ file not sent: more than ${FILE_EVENTS_MAX} files in one run`],
  )
})
