import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { pino } from 'pino'
import t from 'tap'
import { ChatLockTimeout, ChatLocks } from '../../../src/dispatch/chat-lock.js'
import { tempDir } from '../../helpers/service.js'

/** A logger that keeps its lines, so a test can read the warnings. */
function recordingLog() {
  const lines: { msg: string }[] = []
  const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line) as { msg: string }) })
  return { log, messages: () => lines.map((line) => line.msg) }
}

/** The pid of a process that has exited: a lock it left is provably abandoned. */
async function deadPid(): Promise<number> {
  const child = spawn('true')
  await new Promise((resolve) => child.once('exit', resolve))
  return child.pid as number
}

t.test('a second holder waits until the first releases, then gets the lock', async (t) => {
  const dir = tempDir()
  const { log } = recordingLog()
  const first = new ChatLocks(dir, log)
  const second = new ChatLocks(dir, log)
  const releaseFirst = await first.acquire(42, Date.now() + 5000, log)
  t.ok(fs.existsSync(path.join(dir, 'chat-42.lock')), 'the lock is LOCK_DIR/chat-<id>.lock')
  const asked = Date.now()
  let releasedAt = 0
  setTimeout(() => {
    releasedAt = Date.now()
    void releaseFirst()
  }, 400)
  const releaseSecond = await second.acquire(42, Date.now() + 10_000, log)
  const gotAt = Date.now()
  t.ok(releasedAt > 0 && gotAt >= releasedAt, `the second holder got it ${gotAt - releasedAt} ms after the release, not before`)
  t.ok(gotAt - asked < 2000, `and soon after it (retries every 250 ms): waited ${gotAt - asked} ms`)
  await releaseSecond()
  t.notOk(fs.existsSync(path.join(dir, 'chat-42.lock')), 'released: the lock directory is gone')
})

t.test('different chats never wait for each other', async (t) => {
  const dir = tempDir()
  const { log } = recordingLog()
  const locks = new ChatLocks(dir, log)
  const releaseOne = await locks.acquire(1, Date.now() + 5000, log)
  const asked = Date.now()
  const releaseTwo = await locks.acquire(2, Date.now() + 5000, log)
  t.ok(Date.now() - asked < 1000, `chat 2 locked at once (${Date.now() - asked} ms), not at chat 1's release`)
  await releaseOne()
  await releaseTwo()
})

t.test('a lock held past the deadline: ChatLockTimeout, thrown near the deadline', async (t) => {
  const dir = tempDir()
  const { log } = recordingLog()
  const holder = new ChatLocks(dir, log)
  const release = await holder.acquire(7, Date.now() + 5000, log)
  t.teardown(release)
  const asked = Date.now()
  const error = await new ChatLocks(dir, log).acquire(7, asked + 700, log).then(
    () => undefined,
    (thrown: unknown) => thrown,
  )
  const waited = Date.now() - asked
  t.type(error, ChatLockTimeout)
  t.match((error as Error).message, /another process held .*chat-7\.lock until the time budget ran out/u)
  t.ok(waited >= 400 && waited <= 1500, `gave up after ${waited} ms for a 700 ms deadline`)
})

t.test('a lock left by a dead process is taken over at once', async (t) => {
  const dir = tempDir()
  const { log, messages } = recordingLog()
  const lockfile = path.join(dir, 'chat-9.lock')
  fs.mkdirSync(lockfile, { recursive: true })
  fs.writeFileSync(path.join(lockfile, 'owner'), `${await deadPid()}\n`)
  const asked = Date.now()
  const release = await new ChatLocks(dir, log).acquire(9, Date.now() + 5000, log)
  const waited = Date.now() - asked
  t.ok(waited < 1500, `taken over in ${waited} ms, not after the 10 s staleness`)
  t.same(messages(), ['taking over a chat lock whose process is gone'])
  t.equal(fs.readFileSync(path.join(lockfile, 'owner'), 'utf8').trim(), String(process.pid), 'now ours')
  await release()
})

t.test('a lock whose owner still runs is not taken over', async (t) => {
  const dir = tempDir()
  const { log } = recordingLog()
  const owner = spawn('sleep', ['30'])
  t.teardown(() => void owner.kill('SIGKILL'))
  const lockfile = path.join(dir, 'chat-10.lock')
  fs.mkdirSync(lockfile, { recursive: true })
  fs.writeFileSync(path.join(lockfile, 'owner'), `${owner.pid}\n`)
  await t.rejects(new ChatLocks(dir, log).acquire(10, Date.now() + 600, log), ChatLockTimeout)
  t.ok(fs.existsSync(path.join(lockfile, 'owner')), "the live owner's lock is untouched")
})

t.test("a stale lock whose owner's pid was reused by another process is taken over once stale", async (t) => {
  const dir = tempDir()
  const { log, messages } = recordingLog()
  // A service killed outright left this lock; its pid now belongs to a process that runs.
  const reused = spawn('sleep', ['30'])
  t.teardown(() => void reused.kill('SIGKILL'))
  const lockfile = path.join(dir, 'chat-11.lock')
  fs.mkdirSync(lockfile, { recursive: true })
  fs.writeFileSync(path.join(lockfile, 'owner'), `${reused.pid}\n`)
  const longAgo = new Date(Date.now() - 60_000)
  fs.utimesSync(lockfile, longAgo, longAgo)
  const release = await new ChatLocks(dir, log).acquire(11, Date.now() + 5000, log)
  t.same(messages(), ['taking over a stale chat lock (its pid now belongs to another process)'])
  t.equal(fs.readFileSync(path.join(lockfile, 'owner'), 'utf8').trim(), String(process.pid), 'now ours')
  await release()
})

t.test('an unusable LOCK_DIR: one warning, then locks are no-ops', async (t) => {
  const dir = tempDir()
  const { log, messages } = recordingLog()
  const file = path.join(dir, 'a-file')
  fs.writeFileSync(file, '')
  const locks = new ChatLocks(path.join(file, 'locks'), log)
  t.equal(locks.prepare(), false, 'prepare says locks are off')
  const release = await locks.acquire(1, Date.now() + 1000, log)
  await locks.acquire(1, Date.now() + 1000, log)
  await release()
  t.equal(messages().filter((msg) => msg.startsWith('LOCK_DIR is not usable')).length, 1, 'warned once')
})
