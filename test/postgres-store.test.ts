import { pino } from 'pino'
import t, { type Test } from 'tap'
import { engineWakeUp, migrateEngine } from '../src/dispatch/engine.js'
import { crashLoopNotice, InboxWriteError, MAX_INTERRUPTIONS, type NewMessage } from '../src/store/inbox.js'
import { createPool, PostgresStore } from '../src/store/postgres/store.js'
import { postgresOrSkip } from './helpers/postgres.js'

// The Postgres store on a real server: what intake and the workers rely on.
const postgres = await postgresOrSkip(t)
const silent = pino({ level: 'silent' })

async function store(t: Test): Promise<PostgresStore | undefined> {
  if (postgres === undefined) return undefined
  const pool = createPool(await postgres.createDatabase(), 4, 'store test')
  pool.on('error', () => undefined)
  t.teardown(() => pool.end())
  await migrateEngine(pool, silent)
  // Twice, as two hosts starting at once would.
  await Promise.all([PostgresStore.migrate(pool), PostgresStore.migrate(pool)])
  return new PostgresStore(pool, engineWakeUp, 'host-a')
}

const message = (updateId: number, chatId = 10): NewMessage => ({
  updateId,
  chatId,
  messageId: updateId,
  updateJson: JSON.stringify({ update_id: updateId, message: { message_id: updateId, text: `m${updateId}` } }),
  receivedAt: 1_000 + updateId,
})

async function wakeUps(s: PostgresStore, chatId: number): Promise<number> {
  const { rows } = await s.pool.query<{ count: number }>('SELECT count(*)::int AS count FROM graphile_worker.jobs WHERE queue_name = $1', [`chat:${chatId}`])
  return (rows[0] as { count: number }).count
}

t.test('a message and its wake-up are stored together; a re-sent update is a duplicate and wakes nobody', async (t) => {
  const s = await store(t)
  if (s === undefined) return
  const seq = await s.accept(message(5))
  t.type(seq, 'number')
  t.equal(await s.accept(message(5)), 'duplicate')
  t.equal(await s.acceptAnswered(message(5), 'hi'), 'duplicate', 'a duplicate, even as a command')
  t.equal(await wakeUps(s, 10), 1, 'one wake-up job, in the chat\'s queue')
  await s.accept(message(7))
  t.equal(await wakeUps(s, 10), 1, 'a second message finds the chat\'s wake-up waiting, and adds none')
  t.equal((await s.get(seq as number))?.state, 'queued')
  const answered = await s.acceptAnswered(message(6), 'answered')
  t.match(await s.get(answered as number), { state: 'done', reply: 'answered', replyState: 'pending' })
  t.equal(await wakeUps(s, 10), 1, 'an answered message needs no brain')
})

t.test("a chat's head is its oldest open message in update_id order, whichever was stored first", async (t) => {
  const s = await store(t)
  if (s === undefined) return
  await s.accept(message(22))
  await s.accept(message(21))
  await s.accept(message(30, 11))
  t.equal((await s.takeHead(10, MAX_INTERRUPTIONS, 0))?.message.updateId, 21)
  t.same((await s.queuedInChat(10)).map((queued) => queued.updateId), [21, 22])
  t.equal((await s.takeHead(12, MAX_INTERRUPTIONS, 0)), undefined, 'a chat with nothing open has no head')
})

t.test('the crash-loop guard: a message interrupted three times is failed with the notice, never run a fourth time', async (t) => {
  const s = await store(t)
  if (s === undefined) return
  const seq = (await s.accept(message(40))) as number
  const runs: number[] = []
  for (let run = 1; run <= MAX_INTERRUPTIONS + 1; run++) {
    const head = await s.takeHead(10, MAX_INTERRUPTIONS, 5_000)
    if (head === undefined || head.message.state !== 'queued') break
    runs.push(run)
    // The brain starts, and its host dies: the message is left running.
    await s.markRunning(seq, run, 1_000 * run)
  }
  t.same(runs, [1, 2, 3], 'its brain ran three times')
  const failed = await s.get(seq)
  t.match(failed, { state: 'failed', interruptions: 3, replyState: 'pending', reply: crashLoopNotice(3), finishedAt: 5_000 })
  t.equal((await s.takeHead(10, MAX_INTERRUPTIONS, 6_000))?.message.seq, seq, 'its notice is the next thing the chat gets')
})

t.test('/cancel all, retry and pruning', async (t) => {
  const s = await store(t)
  if (s === undefined) return
  const first = (await s.accept(message(50))) as number
  await s.accept(message(51))
  t.same((await s.cancelQueued(10, 2_000)).length, 2)
  t.same(await s.queuedInChat(10), [])
  // The chat's wake-up ran (and found nothing): the chat has none now.
  await s.pool.query('SELECT graphile_worker.complete_jobs(array(SELECT id FROM graphile_worker.jobs))')
  t.equal(await wakeUps(s, 10), 0)
  const retried = await s.retry(first)
  t.match(retried, { state: 'queued', attempts: 0, reply: null })
  t.equal(await wakeUps(s, 10), 1, 'a retried message wakes its chat up again')
  await t.rejects(s.retry(first), /is queued; only failed, timed_out or cancelled/u)
  await t.rejects(s.retry(999), /no message with id 999/u)
  t.same(await s.prune(10_000, 10), [51], 'only the finished message older than the cut is pruned')
  t.same((await s.list({ chatId: 10 })).map((listed) => listed.updateId), [50])
})

t.test('an unreachable database: intake gets InboxWriteError (its webhook answers 503) and the store says it is not writable', async (t) => {
  if (postgres === undefined) return
  const pool = createPool('postgresql://nobody@%2Fnonexistent-socket-dir/none', 1, 'store test')
  t.teardown(() => pool.end())
  const s = new PostgresStore(pool, engineWakeUp, 'host-a')
  await t.rejects(s.accept(message(60)), InboxWriteError)
  t.equal(await s.probeWritable(), false)
  t.equal(s.writable, false)
})
