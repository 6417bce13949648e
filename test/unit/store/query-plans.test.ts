import t from 'tap'
import Database from 'better-sqlite3'
import { SqliteInbox } from '../../../src/store/sqlite.js'
import { tempDir } from '../../helpers/service.js'

// With a million messages queued, one statement that reads the whole table holds the event loop
// for hundreds of milliseconds. Every statement the service runs while it serves (intake, turns,
// /status, maintenance every 2 s, pruning) must find its rows through an index. Recovery at start
// reads what it must once, and is left out.

t.test('no statement the running service makes scans the whole messages table', async (t) => {
  const statements: string[] = []
  const dir = tempDir()
  const inbox = new SqliteInbox(dir, { onStatement: (sql) => statements.push(sql) })
  t.teardown(() => inbox.close())
  inbox.recover(3, Date.now())
  statements.length = 0

  const base = { chatId: 7, messageId: 1, threadId: null, updateJson: '{}', receivedAt: Date.now() }
  const seq = inbox.accept({ ...base, updateId: 1 }) as number
  inbox.acceptAnswered({ ...base, updateId: 2 }, 'answered')
  inbox.get(seq)
  inbox.countQueuedInChat(7, seq)
  inbox.queuedInChat(7)
  inbox.markRunning(seq, 1, Date.now())
  inbox.requeue([seq])
  inbox.finish(seq, { state: 'failed', exitCode: 1, exitSignal: null, stderrTail: '', reply: 'hi' }, Date.now())
  inbox.setReplyState(seq, 'sent')
  inbox.cancelQueued(7, Date.now())
  inbox.retry(seq)
  inbox.takeRequeued()
  inbox.probeWritable()
  inbox.stats()
  inbox.prune(Date.now(), 500)

  const reader = new Database(inbox.file, { readonly: true })
  t.teardown(() => reader.close())
  const planned = statements.filter((sql) => /\bmessages\b/u.test(sql))
  t.ok(planned.length >= 12, `the statements were seen (${planned.length})`)
  for (const sql of new Set(planned)) {
    const plan = reader.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as { detail: string }[]
    const scans = plan.filter((step) => /^SCAN messages$/u.test(step.detail))
    t.same(scans, [], `${sql.replace(/\s+/gu, ' ').slice(0, 90)}: ${plan.map((step) => step.detail).join('; ')}`)
  }
})
