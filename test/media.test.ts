import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, readdir, rm, stat, truncate, writeFile, mkdir } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import { Api } from 'grammy'
import type { Message } from 'grammy/types'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import type { BrainFile } from '../src/brain/protocol.js'
import { startEmulator, type BotApiEmulator } from '../src/emulator/index.js'
import {
  MAX_DOWNLOAD_SIZE,
  downloadMedia,
  mediaDir,
  mediaOf,
  removeMedia,
  safeFileName,
  type MediaRef,
} from '../src/telegram/media.js'

const TOKEN = '123456:TEST-token'
const CHAT_ID = 4242
const MB = 1024 * 1024

interface Setup {
  readonly emu: BotApiEmulator
  readonly dir: string
  readonly logLines: Record<string, unknown>[]
  download(media: readonly MediaRef[], extra?: { signal?: AbortSignal; timeoutMs?: number }): Promise<BrainFile[]>
}

/** A fresh emulator, a temp dir for one update's media, and a logger whose lines the test can read. */
async function setup(t: Test): Promise<Setup> {
  const emu = await startEmulator({ token: TOKEN, firstUpdateId: 1 })
  t.teardown(() => emu.close())
  const root = await mkdtemp(path.join(os.tmpdir(), 'coordinator-media-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const dir = mediaDir(root, 1)
  const logLines: Record<string, unknown>[] = []
  const log: FastifyBaseLogger = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(JSON.parse(line) as Record<string, unknown>) })
  const api = new Api(TOKEN, { apiRoot: emu.url })
  return {
    emu,
    dir,
    logLines,
    download: (media, extra = {}) => downloadMedia({ api, token: TOKEN, apiRoot: emu.url, dir, media, log, ...extra }),
  }
}

/** The one message an update carries (the emulator's helpers always make one). */
function messageOf(update: { message?: Message }): Message {
  if (update.message === undefined) throw new Error('expected an update with a message')
  return update.message
}

/** A private-chat message with arbitrary media fields, for shapes the emulator's helpers don't build. */
function messageWith(content: Partial<Message>): Message {
  return { message_id: 1, date: 0, chat: { id: CHAT_ID, type: 'private', first_name: 'Ann' }, ...content } as Message
}

function only<T>(items: readonly T[]): T {
  if (items.length !== 1) throw new Error(`expected exactly one item, got ${items.length}`)
  return items[0] as T
}

async function listing(dir: string): Promise<string[]> {
  try {
    return await readdir(dir)
  } catch {
    return []
  }
}

t.test('a photo: the largest size is chosen and its bytes arrive intact as photo.jpg', async (t) => {
  const { emu, dir, download } = await setup(t)
  const sizes = [
    { width: 90, height: 67, bytes: randomBytes(100) },
    { width: 1280, height: 960, bytes: randomBytes(9_000) },
    { width: 320, height: 240, bytes: randomBytes(1_000) },
  ].map((size, index) => {
    emu.addFile({ file_id: `photo-${index}`, file_unique_id: `u-photo-${index}`, bytes: size.bytes })
    return { ...size, file_id: `photo-${index}`, file_unique_id: `u-photo-${index}`, file_size: size.bytes.length }
  })
  const message = messageWith({ photo: sizes.map(({ bytes: _bytes, ...size }) => size), caption: 'look' })

  const ref = only(mediaOf(message))
  t.match(ref, { kind: 'photo', fileId: 'photo-1', size: 9_000, mimeType: 'image/jpeg', fileName: null })

  const file = only(await download([ref]))
  t.same(file, { kind: 'photo', path: path.join(dir, 'photo.jpg'), mime_type: 'image/jpeg', file_name: null, size: 9_000 })
  t.ok(path.isAbsolute(file.path ?? ''), 'the path is absolute')
  t.ok((await readFile(path.join(dir, 'photo.jpg'))).equals(sizes[1]?.bytes ?? Buffer.alloc(0)), 'the bytes are the largest size’s')
  t.same(await listing(dir), ['photo.jpg'], 'no temporary file is left beside it')
})

t.test('an emulated photo and voice note download under their fixed names', async (t) => {
  const { emu, dir, download } = await setup(t)
  const photoBytes = randomBytes(2_048)
  const voiceBytes = randomBytes(5_000)
  const photo = mediaOf(messageOf(emu.sendPhoto({ chatId: CHAT_ID, bytes: photoBytes })))
  const voice = mediaOf(messageOf(emu.sendVoice({ chatId: CHAT_ID, bytes: voiceBytes })))
  t.match(only(voice), { kind: 'voice', mimeType: 'audio/ogg', size: 5_000 })

  const files = await download([...photo, ...voice])
  t.same(
    files.map((file) => file.path),
    [path.join(dir, 'photo.jpg'), path.join(dir, 'voice.ogg')],
  )
  t.ok((await readFile(path.join(dir, 'photo.jpg'))).equals(photoBytes), 'photo bytes intact')
  t.ok((await readFile(path.join(dir, 'voice.ogg'))).equals(voiceBytes), 'voice bytes intact')
})

t.test('a document with a hostile file name lands inside dir under a safe name', async (t) => {
  const { emu, dir, download } = await setup(t)
  const bytes = randomBytes(3_000)
  const update = emu.sendDocument({ chatId: CHAT_ID, bytes, fileName: '../../etc/passwd', mimeType: 'text/plain' })
  const evil = emu.sendDocument({ chatId: CHAT_ID, fileName: 'in\u0000voice\u202Efdp.exe\n.txt', mimeType: 'text/plain' })

  const [passwd, control] = await download([...mediaOf(messageOf(update)), ...mediaOf(messageOf(evil))])
  t.equal(passwd?.path, path.join(dir, 'passwd'), 'only the last path segment is kept')
  t.equal(passwd?.file_name, '../../etc/passwd', 'the brain still learns what the user called it')
  t.equal(passwd?.mime_type, 'text/plain')
  t.ok((await readFile(path.join(dir, 'passwd'))).equals(bytes), 'bytes intact')
  t.equal(control?.path, path.join(dir, 'invoicefdp.exe.txt'), 'control and bidi characters are removed')
  t.same((await listing(dir)).sort(), ['invoicefdp.exe.txt', 'passwd'])
})

t.test('safeFileName keeps a plain name and its extension, and nothing that could escape', async (t) => {
  const cases: [string, string | null][] = [
    ['report.pdf', 'report.pdf'],
    ['Отчёт (финал).docx', 'Отчёт (финал).docx'],
    ['../../etc/passwd', 'passwd'],
    ['C:\\Users\\ann\\notes.txt', 'notes.txt'],
    ['..', null],
    ['../', null],
    ['.bashrc', 'bashrc'],
    ['\u0007\u0000', null],
    ['$(rm -rf ~);`id`.sh', '_(rm -rf _)__id_.sh'],
    ['name. . .', 'name'],
  ]
  for (const [input, expected] of cases) t.equal(safeFileName(input), expected, JSON.stringify(input))

  const long = safeFileName(`${'x'.repeat(300)}.pdf`)
  t.equal(long?.length, 100, 'at most 100 characters')
  t.ok(long?.endsWith('.pdf'), 'the extension survives truncation')
  const wide = safeFileName(`${'😀'.repeat(90)}.txt`) ?? ''
  t.ok(Buffer.byteLength(wide) <= 200 && wide.endsWith('.txt'), 'multi-byte names stay well under 255 bytes')
  t.notOk(wide.includes('\uFFFD'), 'no surrogate pair is split')
})

t.test('names without a user file name come from the kind and MIME type; collisions get an index', async (t) => {
  const { emu, dir, download } = await setup(t)
  for (const id of ['doc-a', 'doc-b', 'doc-c', 'note', 'vid']) emu.addFile({ file_id: id, file_unique_id: `u-${id}`, bytes: Buffer.from(id) })
  const refs: MediaRef[] = [
    only(mediaOf(messageWith({ document: { file_id: 'doc-a', file_unique_id: 'u-doc-a', mime_type: 'application/pdf' } }))),
    { kind: 'document', fileId: 'doc-b', fileUniqueId: 'u-doc-b', size: null, mimeType: 'application/pdf', fileName: null },
    { kind: 'document', fileId: 'doc-c', fileUniqueId: 'u-doc-c', size: null, mimeType: 'application/x-unknown', fileName: null },
    only(mediaOf(messageWith({ video_note: { file_id: 'note', file_unique_id: 'u-note', length: 240, duration: 2 } }))),
    only(mediaOf(messageWith({ video: { file_id: 'vid', file_unique_id: 'u-vid', width: 1, height: 1, duration: 1, mime_type: 'video/quicktime' } }))),
  ]
  const files = await download(refs)
  t.same(
    files.map((file) => path.relative(dir, file.path ?? '')),
    ['document.pdf', '2-document.pdf', 'document', 'video_note.mp4', 'video.mov'],
  )
  t.equal(files[3]?.mime_type, 'video/mp4', 'a video note is an MP4 even though Telegram does not say so')
})

t.test('a second call reuses the downloaded files: no getFile, no download', async (t) => {
  const { emu, dir, download } = await setup(t)
  const bytes = randomBytes(4_000)
  const media = mediaOf(messageOf(emu.sendDocument({ chatId: CHAT_ID, bytes, fileName: 'data.bin' })))

  const first = await download(media)
  const before = await stat(path.join(dir, 'data.bin'))
  const second = await download(media)
  t.same(second, first, 'the brain learns the same thing')
  t.equal(emu.callsOf('getFile').length, 1, 'getFile was called once')
  t.equal(emu.callsOf('downloadFile').length, 1, 'the file was downloaded once')
  t.equal((await stat(path.join(dir, 'data.bin'))).mtimeMs, before.mtimeMs, 'the file was not rewritten')

  await truncate(path.join(dir, 'data.bin'), 10)
  const third = only(await download(media))
  t.equal(emu.callsOf('downloadFile').length, 2, 'a file of the wrong size is downloaded again')
  t.equal(third.size, 4_000)
  t.ok((await readFile(path.join(dir, 'data.bin'))).equals(bytes))
})

t.test('a file over 20 MB by its metadata is noted without calling getFile', async (t) => {
  const { emu, dir, download, logLines } = await setup(t)
  const size = Math.round(31.4 * MB)
  const media = mediaOf(messageOf(emu.sendDocument({ chatId: CHAT_ID, fileName: 'huge.iso', fileSize: size })))

  const file = only(await download(media))
  t.same(file, {
    kind: 'document',
    path: null,
    mime_type: 'application/octet-stream',
    file_name: 'huge.iso',
    size,
    note: "not downloaded: 31.4 MB is over the Bot API's 20 MB download limit",
  })
  t.equal(emu.callsOf('getFile').length, 0, 'getFile was not called')
  t.same(await listing(dir), [], 'nothing was written')
  t.notOk(logLines.some((line) => line['level'] === 50), 'an expected refusal is not an error')
})

t.test('getFile answering "file is too big" gives the same note', async (t) => {
  const { emu, download } = await setup(t)
  emu.addFile({ file_id: 'big', file_unique_id: 'u-big', bytes: Buffer.from('tiny'), file_size: MAX_DOWNLOAD_SIZE + 1 })
  const media = mediaOf(messageWith({ document: { file_id: 'big', file_unique_id: 'u-big', file_size: 1_000, file_name: 'big.zip' } }))

  const file = only(await download(media))
  t.equal(file.path, null)
  t.equal(file.note, "not downloaded: the file is over the Bot API's 20 MB download limit")
  t.equal(emu.callsOf('getFile').length, 1)
  t.equal(emu.callsOf('getFile')[0]?.description, 'Bad Request: file is too big', 'the refusal came from getFile')
  t.equal(emu.callsOf('downloadFile').length, 0)
})

t.test('a file server sending more than 20 MB is cut off and nothing is kept', async (t) => {
  const { emu, dir, download } = await setup(t)
  emu.addFile({ file_id: 'liar', file_unique_id: 'u-liar', bytes: Buffer.alloc(MAX_DOWNLOAD_SIZE + 1), file_size: 10 })
  const media: MediaRef[] = [{ kind: 'document', fileId: 'liar', fileUniqueId: 'u-liar', size: 10, mimeType: null, fileName: 'small.txt' }]

  const file = only(await download(media))
  t.equal(file.path, null)
  t.match(file.note, /over the Bot API's 20 MB download limit/)
  t.same(await listing(dir), [], 'neither the file nor its temporary remains')
})

t.test('a download that keeps failing gives a note, not a throw, and a warning', async (t) => {
  const { emu, dir, download, logLines } = await setup(t)
  const media = mediaOf(messageOf(emu.sendDocument({ chatId: CHAT_ID, fileName: 'a.txt' })))
  emu.injectFault('downloadFile', { kind: 'server_error' })

  const file = only(await download(media))
  t.equal(file.path, null)
  t.equal(file.note, 'not downloaded: the file server answered 500')
  t.equal(emu.callsOf('downloadFile').length, 3, 'retried twice before giving up')
  t.same(await listing(dir), [], 'no partial file')
  const warning = logLines.find((line) => line['msg'] === 'media download failed')
  t.match(warning, { level: 40, kind: 'document', reason: 'the file server answered 500' })
  t.notOk(JSON.stringify(logLines).includes(TOKEN), 'the token never reaches the log')
})

t.test('a file server error that passes is retried into a download', async (t) => {
  const { emu, download } = await setup(t)
  const bytes = randomBytes(1_000)
  const media = mediaOf(messageOf(emu.sendDocument({ chatId: CHAT_ID, bytes, fileName: 'b.bin' })))
  emu.injectFault('downloadFile', { kind: 'refuse' }, { times: 1 })

  const file = only(await download(media))
  t.ok(file.path !== null, 'downloaded on the second attempt')
  t.ok((await readFile(file.path ?? '')).equals(bytes))
  t.equal(emu.callsOf('downloadFile').length, 2)
})

t.test('getFile failing (server error, dropped connection) gives a note', async (t) => {
  const { emu, download } = await setup(t)
  const media = mediaOf(messageOf(emu.sendVoice({ chatId: CHAT_ID })))

  emu.injectFault('getFile', { kind: 'server_error' }, { times: 1 })
  t.equal(only(await download(media)).note, 'not downloaded: getFile failed: Internal Server Error')

  emu.injectFault('getFile', { kind: 'refuse' }, { times: 1 })
  t.match(only(await download(media)).note, /^not downloaded: getFile could not reach Telegram \(.+\)$/)

  t.ok(only(await download(media)).path !== null, 'the next try, with Telegram well again, downloads it')
})

t.test('a stalled download ends at the timeout with a note', async (t) => {
  const { emu, dir, download } = await setup(t)
  const media = mediaOf(messageOf(emu.sendPhoto({ chatId: CHAT_ID })))
  emu.injectFault('downloadFile', { kind: 'latency', ms: 10_000 })

  const startedAt = Date.now()
  const file = only(await download(media, { timeoutMs: 300 }))
  t.equal(file.note, 'not downloaded: it took longer than 0.3 s')
  t.ok(Date.now() - startedAt < 5_000, 'it did not wait out the stall')
  t.same(await listing(dir), [])
})

t.test("the caller's abort rejects with its reason and keeps nothing", async (t) => {
  const { emu, dir, download } = await setup(t)
  const media = mediaOf(messageOf(emu.sendPhoto({ chatId: CHAT_ID })))
  emu.injectFault('downloadFile', { kind: 'latency', ms: 10_000 })
  const abort = new AbortController()
  setTimeout(() => abort.abort(new Error('shutting down')), 200)

  await t.rejects(download(media, { signal: abort.signal }), { message: 'shutting down' })
  t.same(await listing(dir), [])
})

t.test('a text message has no media, and downloading none creates nothing', async (t) => {
  const { emu, dir, download } = await setup(t)
  t.same(mediaOf(messageOf(emu.sendText({ chatId: CHAT_ID, text: 'hello' }))), [])
  t.same(await download([]), [])
  await t.rejects(stat(dir), { code: 'ENOENT' }, 'the directory was not created')
})

t.test('removeMedia deletes a message’s media directory; a missing one is fine', async (t) => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'coordinator-media-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const dir = mediaDir(root, 77)
  t.equal(dir, path.join(root, 'media', '77'))
  for (const updateDir of [dir, mediaDir(root, 78)]) {
    await mkdir(updateDir, { recursive: true })
    await writeFile(path.join(updateDir, 'photo.jpg'), 'x')
  }

  await removeMedia(dir)
  await t.rejects(stat(dir), { code: 'ENOENT' })
  await t.resolves(removeMedia(dir), 'removing it again is fine')
  t.same(await readdir(path.join(root, 'media')), ['78'], 'other updates’ directories are untouched')
})
