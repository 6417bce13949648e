import t from 'tap'
import { SqliteInbox } from '../src/store/sqlite.js'
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
