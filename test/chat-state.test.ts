import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { execFileSync } from 'node:child_process'
import { gzipSync } from 'node:zlib'
import type { FastifyBaseLogger } from 'fastify'
import pg from 'pg'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import { Header } from 'tar'
import { ChatStateSync } from '../src/store/postgres/chat-state.js'
import { postgresOrSkip } from './helpers/postgres.js'
import { tempDir } from './helpers/service.js'

const CHAT = 4242
const MB = 1024 * 1024

interface Hosts {
  readonly pool: pg.Pool
  readonly logLines: Record<string, unknown>[]
  /** Two hosts of one chat: each its own ChatStateSync and its own chat directory. */
  readonly a: { sync: ChatStateSync; dir: string }
  readonly b: { sync: ChatStateSync; dir: string }
}

// One server for the file; each test has a database of its own.
const postgres = await postgresOrSkip(t)

async function hosts(t: Test, maxBytes = MB, maxEntries?: number): Promise<Hosts | undefined> {
  if (postgres === undefined) return undefined
  const pool = new pg.Pool({ connectionString: await postgres.createDatabase(), max: 4 })
  t.teardown(() => pool.end())
  const client = await pool.connect()
  try {
    await ChatStateSync.migrate(client)
    await ChatStateSync.migrate(client)
  } finally {
    client.release()
  }
  const logLines: Record<string, unknown>[] = []
  const log: FastifyBaseLogger = pino({ level: 'info' }, { write: (line: string) => void logLines.push(JSON.parse(line) as Record<string, unknown>) })
  const root = tempDir('chat-state-')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const host = (name: string) => ({ sync: new ChatStateSync({ pool, maxBytes, maxEntries, log }), dir: path.join(root, name, 'chats', String(CHAT)) })
  return { pool, logLines, a: host('a'), b: host('b') }
}

/** Every file (by content hash) and directory under `dir`, by relative path; symlinks and others by kind. */
function snapshot(dir: string): Record<string, string> {
  const tree: Record<string, string> = {}
  for (const name of fs.readdirSync(dir, { recursive: true }) as string[]) {
    const stats = fs.lstatSync(path.join(dir, name))
    tree[name] = stats.isFile()
      ? createHash('sha256').update(fs.readFileSync(path.join(dir, name))).digest('hex').slice(0, 16)
      : stats.isDirectory()
        ? 'dir'
        : 'other'
  }
  return tree
}

function write(dir: string, files: Record<string, string | Buffer>): void {
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true })
    fs.writeFileSync(path.join(dir, name), content)
  }
}

/** A gzipped tar made by hand, as a tampered row would hold it. */
function craftedArchive(entries: { path: string; type: 'File' | 'Directory' | 'SymbolicLink' | 'Link' | 'CharacterDevice'; data?: Buffer; size?: number; linkpath?: string }[]): Buffer {
  const blocks: Buffer[] = []
  for (const entry of entries) {
    const data = entry.data ?? Buffer.alloc(0)
    const header = new Header({ path: entry.path, type: entry.type, mode: 0o644, size: entry.size ?? data.length, mtime: new Date(), linkpath: entry.linkpath })
    header.encode()
    blocks.push(header.block as Buffer, data, Buffer.alloc((512 - (data.length % 512)) % 512))
  }
  blocks.push(Buffer.alloc(1024))
  return gzipSync(Buffer.concat(blocks))
}

async function tamper(pool: pg.Pool, archive: Buffer): Promise<void> {
  await pool.query('UPDATE coordinator.chat_state SET archive = $2, version = version + 1000 WHERE chat_id = $1', [CHAT, archive])
}

t.test('a chat directory pushed on one host is pulled whole on another', async (t) => {
  const h = await hosts(t)
  if (!h) return
  const longName = `deep/${'d'.repeat(80)}/${'f'.repeat(120)}.json`
  const files = {
    'claude-session.json': '{"session_id":"0b0e5d1e-5c4a-4b8e-9a43-1f3a4c2b9d10"}',
    '.claude/projects/x/session.jsonl': 'line\n'.repeat(1000),
    'blob.bin': randomBytes(200_000),
    [longName]: 'long path',
    'empty.txt': '',
  }
  write(h.a.dir, files)
  fs.mkdirSync(path.join(h.a.dir, 'empty-dir'))
  fs.chmodSync(path.join(h.a.dir, 'blob.bin'), 0o755)
  const mtime = new Date('2026-01-02T03:04:05Z')
  fs.utimesSync(path.join(h.a.dir, 'claude-session.json'), mtime, mtime)

  const pushed = await h.a.sync.push(CHAT, h.a.dir)
  t.match(pushed, { stored: true, bytes: Object.values(files).reduce((sum, content) => sum + Buffer.byteLength(content), 0) })
  await h.b.sync.pull(CHAT, h.b.dir)
  t.same(snapshot(h.b.dir), snapshot(h.a.dir), 'the same files, directories and contents')
  t.equal(fs.statSync(path.join(h.b.dir, 'blob.bin')).mode & 0o777, 0o755, 'the execute bit is kept')
  t.equal(fs.statSync(path.join(h.b.dir, 'claude-session.json')).mtime.getTime(), mtime.getTime(), 'modification times are kept')
  t.same(
    fs.readdirSync(path.dirname(h.b.dir)),
    [String(CHAT)],
    'no temporary directory is left beside it',
  )
})

t.test('a pull of a newer version replaces the directory: files deleted on the other host are gone', async (t) => {
  const h = await hosts(t)
  if (!h) return
  write(h.a.dir, { 'keep.txt': 'v1', 'old/notes.md': 'old', 'gone.txt': 'bye' })
  const first = await h.a.sync.push(CHAT, h.a.dir)
  await h.b.sync.pull(CHAT, h.b.dir)
  fs.rmSync(path.join(h.b.dir, 'gone.txt'))
  fs.rmSync(path.join(h.b.dir, 'old'), { recursive: true })
  write(h.b.dir, { 'keep.txt': 'v2', 'new.txt': 'hello' })
  const second = await h.b.sync.push(CHAT, h.b.dir)
  t.ok(second.stored && first.stored && second.version > first.version, 'each push is a newer version')

  await h.a.sync.pull(CHAT, h.a.dir)
  t.same(snapshot(h.a.dir), snapshot(h.b.dir))
  t.notOk(fs.existsSync(path.join(h.a.dir, 'gone.txt')), 'a file deleted elsewhere is gone')
  t.notOk(fs.existsSync(path.join(h.a.dir, 'old')), 'so is a directory')
  t.equal(fs.readFileSync(path.join(h.a.dir, 'keep.txt'), 'utf8'), 'v2')
})

t.test('a host that already has the newest version does not pull it again, unless its directory is gone', async (t) => {
  const h = await hosts(t)
  if (!h) return
  write(h.a.dir, { 'state.txt': 'stored' })
  await h.a.sync.push(CHAT, h.a.dir)
  await h.b.sync.pull(CHAT, h.b.dir)
  write(h.b.dir, { 'local.txt': 'only here' })
  await h.b.sync.pull(CHAT, h.b.dir)
  t.ok(fs.existsSync(path.join(h.b.dir, 'local.txt')), 'the same version: the directory is left alone')
  await h.a.sync.pull(CHAT, h.a.dir)
  t.same(Object.keys(snapshot(h.a.dir)), ['state.txt'], 'the pushing host has that version too')

  fs.rmSync(h.b.dir, { recursive: true })
  await h.b.sync.pull(CHAT, h.b.dir)
  t.same(Object.keys(snapshot(h.b.dir)), ['state.txt'], 'a missing directory is pulled regardless')

  const fresh = new ChatStateSync({ pool: h.pool, maxBytes: MB, log: pino({ level: 'silent' }) })
  write(h.b.dir, { 'local.txt': 'only here' })
  await fresh.pull(CHAT, h.b.dir)
  t.same(Object.keys(snapshot(h.b.dir)), ['state.txt'], 'a restarted host, which remembers nothing, pulls once')
})

t.test('a chat never stored leaves the directory as it is', async (t) => {
  const h = await hosts(t)
  if (!h) return
  write(h.b.dir, { 'from-before.txt': 'single-host state' })
  await h.b.sync.pull(CHAT, h.b.dir)
  t.same(Object.keys(snapshot(h.b.dir)), ['from-before.txt'])
  await h.a.sync.pull(CHAT, h.a.dir)
  t.notOk(fs.existsSync(h.a.dir), 'and creates none')
})

t.test('a state over the byte cap is not stored: the previous version stays and a warning names the chat, size and cap', async (t) => {
  const h = await hosts(t, 100_000)
  if (!h) return
  write(h.a.dir, { 'small.txt': 'v1' })
  const first = await h.a.sync.push(CHAT, h.a.dir)
  write(h.a.dir, { 'big.bin': randomBytes(100_000) })
  const over = await h.a.sync.push(CHAT, h.a.dir)
  t.same(over, { stored: false, bytes: 100_002, reason: 'over the cap' })
  const warning = h.logLines.find((line) => line['level'] === 40 && line['chat_id'] === CHAT)
  t.match(warning, { bytes: 100_002, max_bytes: 100_000, msg: /chat 4242.*100002 bytes.*over the cap \(100000 bytes/ })

  await h.b.sync.pull(CHAT, h.b.dir)
  t.same(Object.keys(snapshot(h.b.dir)), ['small.txt'], 'the other host gets the previous version')
  const { rows } = await h.pool.query<{ version: string }>('SELECT version::text FROM coordinator.chat_state WHERE chat_id = $1', [CHAT])
  t.equal(Number(rows[0]?.version), first.stored ? first.version : -1)

  fs.rmSync(path.join(h.a.dir, 'big.bin'))
  t.match(await h.a.sync.push(CHAT, h.a.dir), { stored: true, bytes: 2 }, 'back under the cap, it is stored again')
})

t.test('a state with more entries than the cap is not stored', async (t) => {
  const h = await hosts(t, MB, 50)
  if (!h) return
  write(h.a.dir, Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`many/${i}.txt`, 'x'])))
  const over = await h.a.sync.push(CHAT, h.a.dir)
  t.match(over, { stored: false, reason: 'over the cap' })
  t.match(h.logLines.find((line) => line['level'] === 40), { chat_id: CHAT, max_entries: 50 })
  const { rowCount } = await h.pool.query('SELECT 1 FROM coordinator.chat_state')
  t.equal(rowCount, 0, 'nothing stored')
})

t.test('push leaves out symlinks, hard links, fifos and sockets, never following a link, and counts them', async (t) => {
  const h = await hosts(t)
  if (!h) return
  const outside = tempDir('chat-state-outside-')
  t.teardown(() => fs.rmSync(outside, { recursive: true, force: true }))
  fs.writeFileSync(path.join(outside, 'secret'), 'the host secret')
  write(h.a.dir, { 'honest.txt': 'kept', 'sub/also.txt': 'kept' })
  fs.symlinkSync('/etc/passwd', path.join(h.a.dir, 'passwd'))
  fs.symlinkSync('/etc', path.join(h.a.dir, 'etc'))
  fs.symlinkSync(outside, path.join(h.a.dir, 'sub', 'outside'))
  fs.linkSync(path.join(outside, 'secret'), path.join(h.a.dir, 'hardlinked-secret'))
  execFileSync('mkfifo', [path.join(h.a.dir, 'fifo')])
  const server = net.createServer().listen(path.join(h.a.dir, 'socket'))
  await new Promise((resolve) => server.once('listening', resolve))
  t.teardown(() => server.close())

  const pushed = await h.a.sync.push(CHAT, h.a.dir)
  t.match(pushed, { stored: true, bytes: 8 }, 'only the two honest files are counted')
  t.match(
    h.logLines.find((line) => line['skipped'] !== undefined),
    { chat_id: CHAT, skipped: 6, level: 40 },
    'what was left out is counted in the log',
  )
  await h.b.sync.pull(CHAT, h.b.dir)
  t.same(snapshot(h.b.dir), { 'honest.txt': snapshot(h.a.dir)['honest.txt'], sub: 'dir', 'sub/also.txt': snapshot(h.a.dir)['sub/also.txt'] })
  const { rows } = await h.pool.query<{ archive: Buffer }>('SELECT archive FROM coordinator.chat_state')
  const stored = execFileSync('tar', ['-tvz'], { input: rows[0]?.archive }).toString()
  t.notMatch(stored, /passwd|secret|root:/, 'neither the link nor what it points to is in the archive')
})

t.test('a tampered row cannot make pull write outside the directory', async (t) => {
  const h = await hosts(t)
  if (!h) return
  const parent = path.dirname(h.b.dir)
  write(h.a.dir, { 'state.txt': 'good' })
  await h.a.sync.push(CHAT, h.a.dir)
  await h.b.sync.pull(CHAT, h.b.dir)
  const before = snapshot(h.b.dir)
  const absolute = path.join(tempDir('chat-state-absolute-'), 'pwned')

  const attacks: [string, Parameters<typeof craftedArchive>[0], RegExp][] = [
    ['a path climbing out with ..', [{ path: '../escape', type: 'File', data: Buffer.from('pwned') }], /not a path inside/],
    ['a path climbing out from a subdirectory', [{ path: 'a/../../escape', type: 'File', data: Buffer.from('pwned') }], /not a path inside/],
    ['an absolute path', [{ path: absolute, type: 'File', data: Buffer.from('pwned') }], /not a path inside/],
    [
      'a symlink entry, then a file through it',
      [
        { path: 'link', type: 'SymbolicLink', linkpath: parent },
        { path: 'link/escape', type: 'File', data: Buffer.from('pwned') },
      ],
      /is a SymbolicLink/,
    ],
    ['a hard link to a host file', [{ path: 'passwd', type: 'Link', linkpath: '/etc/passwd' }], /is a Link/],
    ['a device', [{ path: 'null', type: 'CharacterDevice' }], /is a CharacterDevice/],
    ['a name twice', [{ path: 'x', type: 'File', data: Buffer.from('1') }, { path: 'x', type: 'File', data: Buffer.from('2') }], /appears twice/],
    ['more bytes than the cap', [{ path: 'huge', type: 'File', data: Buffer.alloc(MB + 1) }], /more than 1048576 bytes/],
  ]
  for (const [name, entries, reason] of attacks) {
    await tamper(h.pool, craftedArchive(entries))
    await t.rejects(h.b.sync.pull(CHAT, h.b.dir), { name: 'ChatStateError', message: reason }, name)
    t.notOk(fs.existsSync(path.join(parent, 'escape')), `${name}: nothing written beside the directory`)
    t.notOk(fs.existsSync(absolute), `${name}: nothing written at the absolute path`)
    t.same(snapshot(h.b.dir), before, `${name}: the directory is left as it was`)
    t.same(fs.readdirSync(parent), [String(CHAT)], `${name}: no temporary directory left`)
  }

  // 64 MB of zeros gzip to 64 KB: a row small in the database, a flood once inflated, here as a
  // metadata record the tar parser would skip on its own.
  const header = new Header({ path: 'bomb', type: 'ExtendedHeader', size: 64 * MB, mode: 0o644, mtime: new Date() })
  header.encode()
  await tamper(h.pool, gzipSync(Buffer.concat([header.block as Buffer, Buffer.alloc(64 * MB), Buffer.alloc(1024)])))
  await t.rejects(h.b.sync.pull(CHAT, h.b.dir), { name: 'ChatStateError', message: /is a ExtendedHeader of 67108864 bytes/ }, 'a gzip bomb is refused')
  await tamper(h.pool, Buffer.from('not an archive at all'))
  await t.rejects(h.b.sync.pull(CHAT, h.b.dir), { name: 'ChatStateError', message: /not a gzipped tar/ }, 'so is garbage')
  t.same(snapshot(h.b.dir), before)
})

t.test('forget stores an empty state: every host empties its copy at its next pull', async (t) => {
  const h = await hosts(t)
  if (!h) return
  write(h.a.dir, { 'claude-session.json': '{}', 'notes/a.md': 'a' })
  await h.a.sync.push(CHAT, h.a.dir)
  await h.b.sync.pull(CHAT, h.b.dir)
  await h.a.sync.forget(CHAT)
  await h.a.sync.pull(CHAT, h.a.dir)
  await h.b.sync.pull(CHAT, h.b.dir)
  t.same(snapshot(h.a.dir), {}, 'the host that forgot')
  t.same(snapshot(h.b.dir), {}, 'the other host')
  write(h.b.dir, { 'claude-session.json': '{"new":true}' })
  t.match(await h.b.sync.push(CHAT, h.b.dir), { stored: true, bytes: 12 }, 'a new session is stored as usual')
  await h.a.sync.pull(CHAT, h.a.dir)
  t.same(Object.keys(snapshot(h.a.dir)), ['claude-session.json'])
})

t.test('a /new during a turn wins: the turn\'s push finds the state changed since its pull and stores nothing', async (t) => {
  const h = await hosts(t)
  if (!h) return
  write(h.a.dir, { 'session.json': 'turn 1' })
  await h.a.sync.push(CHAT, h.a.dir)
  await h.b.sync.pull(CHAT, h.b.dir)
  // b's turn runs; meanwhile the chat says /new (from any host).
  await h.a.sync.forget(CHAT)
  write(h.b.dir, { 'session.json': 'turn 2' })
  t.match(await h.b.sync.push(CHAT, h.b.dir), { stored: false, reason: 'superseded' })
  await h.a.sync.pull(CHAT, h.a.dir)
  t.same(snapshot(h.a.dir), {}, 'the forgotten state is what the next turn finds')
  await h.b.sync.pull(CHAT, h.b.dir)
  t.same(snapshot(h.b.dir), {}, 'on the host whose push lost too')
  write(h.b.dir, { 'session.json': 'turn 3' })
  t.match(await h.b.sync.push(CHAT, h.b.dir), { stored: true }, 'and its next turn stores as usual')
})

t.test('a 5 MB directory: push and pull times, and the event loop keeps turning', async (t) => {
  const h = await hosts(t, 16 * MB)
  if (!h) return
  // Half random (incompressible), half text, in 100 files across 10 directories.
  for (let i = 0; i < 100; i++) write(h.a.dir, { [`d${i % 10}/f${i}`]: i % 2 === 0 ? randomBytes(50_000) : 'session line\n'.repeat(4000) })
  const delay = monitorEventLoopDelay({ resolution: 5 })
  delay.enable()
  let started = performance.now()
  const pushed = await h.a.sync.push(CHAT, h.a.dir)
  const pushMs = performance.now() - started
  started = performance.now()
  await h.b.sync.pull(CHAT, h.b.dir)
  const pullMs = performance.now() - started
  delay.disable()
  t.same(snapshot(h.b.dir), snapshot(h.a.dir))
  const { rows } = await h.pool.query<{ size: number }>('SELECT octet_length(archive) AS size FROM coordinator.chat_state')
  t.comment(
    `5 MB: push ${pushMs.toFixed(0)} ms, pull ${pullMs.toFixed(0)} ms, archive ${rows[0]?.size} bytes for ${pushed.bytes}, longest event-loop delay ${(delay.max / 1e6).toFixed(1)} ms`,
  )
  t.ok(pushMs < 10_000 && pullMs < 10_000, 'each well under 10 s, even on a loaded machine')
  t.ok(delay.max / 1e6 < 500, 'no long block of the event loop')
})

t.test('a tampered row that inflates past what the caps allow is refused before it is all read', async (t) => {
  const h = await hosts(t, MB, 100)
  if (!h) return
  write(h.a.dir, { 'state.txt': 'good' })
  await h.a.sync.push(CHAT, h.a.dir)
  // Small metadata records that never end in an entry: each within bounds, together 40 MB.
  const record = new Header({ path: 'meta', type: 'ExtendedHeader', size: 7 * 512, mode: 0o644, mtime: new Date() })
  record.encode()
  const blocks = Array.from({ length: 10_000 }, () => [record.block as Buffer, Buffer.alloc(7 * 512)]).flat()
  await h.pool.query('UPDATE coordinator.chat_state SET archive = $2, version = version + 1 WHERE chat_id = $1', [CHAT, gzipSync(Buffer.concat(blocks))])
  await t.rejects(h.b.sync.pull(CHAT, h.b.dir), { name: 'ChatStateError', message: /inflates past/ })
  t.notOk(fs.existsSync(h.b.dir), 'nothing was extracted')
})
