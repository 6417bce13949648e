import path from 'node:path'
import Database from 'better-sqlite3'
import t from 'tap'
import { INBOX_FILE, SqliteInbox } from '../src/store/sqlite.js'
import { tempDir } from './helpers/service.js'

const message = (updateId: number, receivedAt: number) => ({
  updateId,
  chatId: 1,
  messageId: updateId,
  updateJson: JSON.stringify({ update_id: updateId }),
  receivedAt,
})

t.test('pruning deletes old finished messages in batches and keeps everything else', async (t) => {
  const inbox = new SqliteInbox(tempDir())
  t.teardown(() => inbox.close())
  const old = Date.now() - 100 * 3600_000
  for (let id = 1; id <= 1200; id++) {
    const seq = inbox.accept(message(id, old)) as number
    inbox.finish(seq, { state: 'done', exitCode: 0, exitSignal: null, stderrTail: '', reply: '' }, old)
  }
  const queued = inbox.accept(message(5000, old)) as number
  const unsent = inbox.accept(message(5001, old)) as number
  inbox.finish(unsent, { state: 'done', exitCode: 0, exitSignal: null, stderrTail: '', reply: 'not sent yet' }, old)
  const recent = inbox.accept(message(5002, Date.now())) as number
  inbox.finish(recent, { state: 'done', exitCode: 0, exitSignal: null, stderrTail: '', reply: '' }, Date.now())

  const cutoff = Date.now() - 72 * 3600_000
  t.same(
    [inbox.prune(cutoff, 500), inbox.prune(cutoff, 500), inbox.prune(cutoff, 500), inbox.prune(cutoff, 500)].map((ids) => ids.length),
    [500, 500, 200, 0],
  )
  t.equal(inbox.get(queued)?.state, 'queued', 'a queued message stays')
  t.equal(inbox.get(unsent)?.replyState, 'pending', 'a reply not yet sent stays')
  t.ok(inbox.get(recent), 'a recent message stays, so its update_id is still deduplicated')
  t.equal(inbox.accept(message(5002, Date.now())), 'duplicate')
  t.not(inbox.accept(message(1, Date.now())), 'duplicate', 'a pruned update_id is forgotten')
})

t.test("a message's forum topic is stored with it, for its reply", async (t) => {
  const inbox = new SqliteInbox(tempDir())
  t.teardown(() => inbox.close())
  const inTopic = inbox.accept({ ...message(1, Date.now()), threadId: 77 }) as number
  const answered = inbox.acceptAnswered({ ...message(2, Date.now()), threadId: 78 }, 'an answer') as number
  const plain = inbox.accept(message(3, Date.now())) as number
  t.equal(inbox.get(inTopic)?.threadId, 77)
  t.equal(inbox.get(answered)?.threadId, 78)
  t.equal(inbox.get(plain)?.threadId, null)
})

t.test('an inbox written before topics were stored gets them from its stored updates on opening', async (t) => {
  const dir = tempDir()
  const old = new Database(path.join(dir, INBOX_FILE))
  old.exec(`CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, update_id INTEGER NOT NULL UNIQUE, chat_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL, update_json TEXT NOT NULL, state TEXT NOT NULL, received_at INTEGER NOT NULL,
    started_at INTEGER, finished_at INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    interruptions INTEGER NOT NULL DEFAULT 0, exit_code INTEGER, exit_signal TEXT, stderr_tail TEXT, reply TEXT,
    reply_state TEXT NOT NULL DEFAULT 'none', requeued INTEGER NOT NULL DEFAULT 0)`)
  const insert = old.prepare(`INSERT INTO messages (update_id, chat_id, message_id, update_json, state, received_at) VALUES (?, -100, ?, ?, 'queued', 0)`)
  const topic = (id: number, kind: string, fields: Record<string, unknown>) =>
    insert.run(id, id, JSON.stringify({ update_id: id, [kind]: { message_id: id, chat: { id: -100 }, ...fields } }))
  topic(1, 'message', { is_topic_message: true, message_thread_id: 77 })
  topic(2, 'edited_message', { is_topic_message: true, message_thread_id: 78 })
  // A reply in a group's thread that is not a forum topic carries a thread id too; it is not a topic.
  topic(3, 'message', { message_thread_id: 79 })
  topic(4, 'message', {})
  old.close()

  const inbox = new SqliteInbox(dir)
  t.teardown(() => inbox.close())
  t.same(inbox.list({}).map((stored) => stored.threadId), [77, 78, null, null])
  t.equal(inbox.accept({ ...message(5, Date.now()), threadId: 80 }), 5, 'the migrated inbox takes new messages')
  t.equal(inbox.get(5)?.threadId, 80)
})
