import { execFileSync } from 'node:child_process'
import path from 'node:path'
import t from 'tap'
import { PAGE_CACHE_KIB } from '../../../src/store/sqlite.js'
import { tempDir } from '../../helpers/service.js'

// SQLite's page cache is malloc'd memory that glibc keeps once a backlog has filled it. The inbox
// bounds it: writing an inbox far bigger than the cache grows the process's native memory by about
// the cache, not by the 16 MB better-sqlite3 would allow. Measured in a process of its own (RssAnon
// from /proc, less what V8's heap grew by), so nothing else of the test runner counts.

const MESSAGES = 30_000
// ~1 KB a message: some 35 MB of pages, twice better-sqlite3's own cache.
const TEXT_BYTES = 1000
// What else such a loop leaves in malloc's arenas (V8's compiler, statement buffers): measured under 1 MB.
const SLACK_KIB = 4000

const child = (sqliteModule: string, dir: string): string => `
import fs from 'node:fs'
const { SqliteInbox } = await import(${JSON.stringify(sqliteModule)})
const anonKiB = () => Number(/RssAnon:\\s+(\\d+)/u.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1])
const inbox = new SqliteInbox(${JSON.stringify(dir)})
// As the service does at start; the cache is held to its size from then on.
inbox.recover(3, 0)
const updateJson = JSON.stringify({ text: 'x'.repeat(${TEXT_BYTES}) })
const accept = (updateId) => inbox.accept({ updateId, chatId: updateId % 3000, messageId: 1, threadId: null, updateJson, receivedAt: updateId })
for (let i = 1; i <= 1000; i++) accept(i)
gc()
const before = { anon: anonKiB(), heap: process.memoryUsage().heapTotal / 1024 }
for (let i = 1001; i <= ${MESSAGES}; i++) accept(i)
gc()
const after = { anon: anonKiB(), heap: process.memoryUsage().heapTotal / 1024 }
inbox.close()
process.stdout.write(JSON.stringify({ nativeKiB: after.anon - before.anon - (after.heap - before.heap), anonKiB: after.anon - before.anon }))
`

void t.test('a big inbox grows the process by its bounded page cache, not by its size', async (t) => {
  const sqliteModule = path.resolve(import.meta.dirname, '../../../src/store/sqlite.js')
  const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', child(sqliteModule, tempDir())], {
    // Nothing of the runner's NODE_OPTIONS (its loaders would count in the child's memory).
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' },
    encoding: 'utf8',
  })
  const { nativeKiB, anonKiB } = JSON.parse(out) as { nativeKiB: number; anonKiB: number }
  t.comment(`${MESSAGES} messages written: anonymous memory +${anonKiB} KiB, of which outside V8's heap ${Math.round(nativeKiB)} KiB`)
  t.ok(nativeKiB < PAGE_CACHE_KIB + SLACK_KIB, `native growth ${Math.round(nativeKiB)} KiB < ${PAGE_CACHE_KIB} KiB of cache + ${SLACK_KIB} KiB`)
})
