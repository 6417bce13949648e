import fs from 'node:fs'
import path from 'node:path'
import type { Message } from 'grammy/types'
import { pino } from 'pino'
import t from 'tap'
import { INBOX_HEADROOM_BYTES, MediaQuota } from '../src/telegram/media-quota.js'
import { startStack, tempDir } from './helpers/service.js'

const CHAT = 8880001
const KB = 1024

interface EnvelopeFile {
  path: string | null
  size: number | null
  note?: string
}

/** Sends a document whose caption asks the test brain for its envelope; resolves with the envelope's files. */
async function sendDocument(stack: Awaited<ReturnType<typeof startStack>>, bytes: number, name: string): Promise<{ updateId: number; files: EnvelopeFile[] }> {
  const update = stack.emu.sendDocument({ chatId: CHAT, bytes: Buffer.alloc(bytes, name), fileName: `${name}.bin`, caption: 'envelope' })
  const messageId = update.message?.message_id
  const reply = await stack.emu.waitFor(
    (call) =>
      call.method === 'sendMessage' &&
      call.ok &&
      call.params['chat_id'] === CHAT &&
      (call.params['reply_parameters'] as { message_id?: number } | undefined)?.message_id === messageId,
    { timeoutMs: 20_000 },
  )
  const text = (reply.result as Message).text ?? ''
  const envelope = JSON.parse(text.slice(text.indexOf('{'), text.lastIndexOf('}') + 1)) as { messages: { files: EnvelopeFile[] }[] }
  return { updateId: update.update_id, files: envelope.messages.at(-1)?.files ?? [] }
}

function mediaBytes(stateDir: string): number {
  const root = path.join(stateDir, 'media')
  if (!fs.existsSync(root)) return 0
  let total = 0
  for (const dir of fs.readdirSync(root)) for (const file of fs.readdirSync(path.join(root, dir))) total += fs.statSync(path.join(root, dir, file)).size
  return total
}

t.test('MEDIA_QUOTA_MB: the oldest finished media makes room; a file that cannot fit is not downloaded, and the brain is told', async (t) => {
  const stack = await startStack({ env: { MEDIA_QUOTA_MB: '1' } })
  t.teardown(() => stack.close())
  const mediaDirOf = (updateId: number): string => path.join(stack.stateDir, 'media', String(updateId))

  const first = await sendDocument(stack, 400 * KB, 'first')
  t.equal(first.files[0]?.size, 400 * KB, 'the first file is downloaded')
  const second = await sendDocument(stack, 400 * KB, 'second')
  t.equal(second.files[0]?.size, 400 * KB, 'the second one too (800 KiB of 1 MiB)')
  t.ok(fs.existsSync(mediaDirOf(first.updateId)), 'both are kept while they fit')

  const third = await sendDocument(stack, 400 * KB, 'third')
  t.equal(third.files[0]?.size, 400 * KB, 'the third one is downloaded')
  t.notOk(fs.existsSync(mediaDirOf(first.updateId)), "to make room, the oldest finished message's media was deleted")
  t.ok(fs.existsSync(mediaDirOf(second.updateId)), 'the next oldest is kept')
  t.ok(mediaBytes(stack.stateDir) <= 1024 * KB, `stored media stays under the quota (${mediaBytes(stack.stateDir)} bytes)`)

  const huge = await sendDocument(stack, 1100 * KB, 'huge')
  t.equal(huge.files[0]?.path, null, 'a file larger than the quota is not downloaded')
  t.match(huge.files[0]?.note, /^not downloaded: it is larger than the media quota \(MEDIA_QUOTA_MB=1\)$/u, 'its note says why')
  t.notOk(fs.existsSync(mediaDirOf(huge.updateId)), 'nothing of it is on disk')
  t.ok(mediaBytes(stack.stateDir) <= 1024 * KB, 'the quota holds')
  t.ok(stack.svc.logs.some((line) => line.msg === 'media of older messages deleted to stay under MEDIA_QUOTA_MB'), 'the pruning is logged')
})

t.test('a download that would leave the disk nearly full is refused, after pruning what it can', async (t) => {
  const root = path.join(tempDir('coordinator-quota-'), 'media')
  fs.mkdirSync(path.join(root, '1'), { recursive: true })
  fs.writeFileSync(path.join(root, '1', 'old.bin'), Buffer.alloc(10 * KB))
  fs.mkdirSync(path.join(root, '2'), { recursive: true })
  fs.writeFileSync(path.join(root, '2', 'running.bin'), Buffer.alloc(10 * KB))
  // A file system with just the headroom and 5 KiB left.
  let free = INBOX_HEADROOM_BYTES + 5 * KB
  const quota = new MediaQuota({ root, quotaBytes: 1024 * 1024 * KB, log: pino({ level: 'silent' }), freeBytes: async () => free })
  const release = quota.hold([2])

  const fits = await quota.admit(12 * KB, 0)
  t.ok('release' in fits, 'deleting the finished message (10 KiB) makes room for 12 KiB')
  t.notOk(fs.existsSync(path.join(root, '1')), 'the finished message\'s media went')
  t.ok(fs.existsSync(path.join(root, '2')), "the running turn's media stayed")
  if ('release' in fits) fits.release()

  free = INBOX_HEADROOM_BYTES + 5 * KB
  const refused = await quota.admit(50 * KB, 0)
  t.same(refused, { refused: 'not downloaded: the disk is nearly full' }, 'nothing left to delete: refused, the headroom for the inbox kept')
  release()
  const afterRelease = await quota.admit(12 * KB, 0)
  t.ok('release' in afterRelease, "once the turn is over, its media may go too (the test's fake disk gains what is deleted)")
})
