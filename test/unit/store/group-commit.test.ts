import t, { type Test } from 'tap'
import path from 'node:path'
import Database from 'better-sqlite3'
import { GroupCommit } from '../../../src/store/group-commit.js'
import { InboxWriteError, type ToStore } from '../../../src/store/inbox.js'
import { INBOX_FILE, SqliteInbox } from '../../../src/store/sqlite.js'
import { newMessage } from '../../helpers/inbox-contract.js'
import { tempDir } from '../../helpers/service.js'

/** A real SQLite inbox, and the batches GroupCommit hands it (how many messages per transaction). */
function openInbox(t: Test): { inbox: SqliteInbox; dir: string; batches: number[]; commits: GroupCommit } {
  const dir = tempDir()
  const inbox = new SqliteInbox(dir)
  t.teardown(() => inbox.close())
  const batches: number[] = []
  const commits = new GroupCommit({
    acceptAll: (messages: readonly ToStore[]) => {
      batches.push(messages.length)
      return inbox.acceptAll(messages)
    },
  })
  return { inbox, dir, batches, commits }
}

/** What another process reading the file sees: only committed rows. */
function committedUpdateIds(dir: string): number[] {
  const reader = new Database(path.join(dir, INBOX_FILE), { readonly: true })
  try {
    return reader.prepare('SELECT update_id FROM messages ORDER BY seq').pluck().all() as number[]
  } finally {
    reader.close()
  }
}

void t.test('messages handed in during one turn are committed together, in order; each caller learns its own result', async (t) => {
  const { dir, batches, commits } = openInbox(t)
  const ids = Array.from({ length: 50 }, (_, i) => i + 1)
  const pending = [...ids.map((id) => commits.accept(newMessage(id, id % 7))), commits.accept(newMessage(3)), commits.accept(newMessage(51), 'answered')]
  t.same(committedUpdateIds(dir), [], 'nothing is committed before the turn ends')
  const results = await Promise.all(pending)
  t.same(batches, [52], 'one transaction')
  const seqs = results.slice(0, 50) as number[]
  t.ok(seqs.every((seq, i) => i === 0 || seq > (seqs[i - 1] as number)), 'sequence numbers in the order handed in')
  t.equal(results[50], 'duplicate', 'an update id handed in twice in one turn is a duplicate the second time')
  t.type(results[51], 'number')
  t.same(committedUpdateIds(dir), [...ids, 51], 'every row committed, once, in order')
})

void t.test('a caller hears of its row only once it is committed', async (t) => {
  const { dir, commits } = openInbox(t)
  const seen: number[][] = []
  await Promise.all([1, 2, 3].map((id) => commits.accept(newMessage(id)).then(() => seen.push(committedUpdateIds(dir)))))
  t.same(seen, [[1, 2, 3], [1, 2, 3], [1, 2, 3]])
})

void t.test('messages handed in on different turns go in separate transactions', async (t) => {
  const { batches, commits } = openInbox(t)
  const first = commits.accept(newMessage(1))
  await new Promise((resolve) => setImmediate(resolve))
  const second = [commits.accept(newMessage(2)), commits.accept(newMessage(3))]
  await Promise.all([first, ...second])
  t.same(batches, [1, 2])
})

void t.test('a commit that fails rejects every caller of its turn with InboxWriteError and stores none of them', async (t) => {
  const { inbox, dir, commits } = openInbox(t)
  await commits.accept(newMessage(1))
  const blocker = new Database(path.join(dir, INBOX_FILE))
  t.teardown(() => blocker.close())
  blocker.exec('BEGIN EXCLUSIVE')
  const outcomes = await Promise.allSettled([2, 3, 4, 5].map((id) => commits.accept(newMessage(id))))
  t.ok(outcomes.every((outcome) => outcome.status === 'rejected' && outcome.reason instanceof InboxWriteError), 'each rejected with InboxWriteError')
  t.equal(inbox.stats().writable, false, 'the inbox says it is not writable')
  blocker.exec('COMMIT')
  t.same(committedUpdateIds(dir), [1], 'none of them stored')
  const retried = await Promise.all([2, 3, 4, 5].map((id) => commits.accept(newMessage(id))))
  t.ok(retried.every((seq) => typeof seq === 'number'), 'the same messages are accepted once the inbox can be written')
  t.same(committedUpdateIds(dir), [1, 2, 3, 4, 5])
})
