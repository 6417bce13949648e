import type { Test } from 'tap'
import { crashLoopNotice, type Inbox, type NewMessage, type Outcome } from '../../src/store/inbox.js'

/** What the contract needs to know about an implementation. */
export interface InboxUnderTest {
  readonly inbox: Inbox
  readonly kind: 'sqlite' | 'memory'
  /** Whether `retry` (the CLI's `inbox retry`, from another process) is possible. */
  readonly retries: boolean
}

const T0 = 1_764_000_000_000

export const newMessage = (updateId: number, chatId = 1, receivedAt = T0 + updateId): NewMessage => ({
  updateId,
  chatId,
  messageId: updateId + 100,
  updateJson: JSON.stringify({ update_id: updateId }),
  receivedAt,
})

const outcome = (state: Outcome['state'], reply = ''): Outcome => ({ state, exitCode: state === 'done' ? 0 : 1, exitSignal: null, stderrTail: 'tail', reply })

function accepted(inbox: Inbox, message: NewMessage): number {
  const seq = inbox.accept(message)
  if (seq === 'duplicate') throw new Error(`update ${message.updateId} was a duplicate`)
  return seq
}

/**
 * The behaviour every Inbox shares, run against each implementation: a fresh inbox per test from
 * `open`, closed after it.
 */
export function inboxContract(t: Test, open: () => InboxUnderTest): void {
  const each = (name: string, body: (t: Test, under: InboxUnderTest) => void | Promise<void>): void => {
    void t.test(name, async (t) => {
      const under = open()
      t.teardown(() => under.inbox.close())
      await body(t, under)
    })
  }

  each('accept stores a queued message and returns increasing sequence numbers', (t, { inbox }) => {
    const first = accepted(inbox, newMessage(1))
    const second = accepted(inbox, newMessage(2))
    t.ok(second > first, `${second} after ${first}`)
    t.same(inbox.get(first), {
      ...newMessage(1),
      seq: first,
      threadId: null,
      state: 'queued',
      attempts: 0,
      interruptions: 0,
      startedAt: null,
      finishedAt: null,
      exitCode: null,
      exitSignal: null,
      stderrTail: null,
      reply: null,
      replyState: 'none',
    })
    t.equal(inbox.get(second + 1000), undefined, 'an unknown sequence number')
  })

  each("a message keeps its forum topic, for the reply; outside topics it has none", (t, { inbox }) => {
    const inTopic = accepted(inbox, { ...newMessage(1), threadId: 77 })
    const answered = inbox.acceptAnswered({ ...newMessage(2), threadId: 78 }, 'answer') as number
    const plain = accepted(inbox, newMessage(3))
    t.same([inTopic, answered, plain].map((seq) => inbox.get(seq)?.threadId), [77, 78, null])
    t.same(inbox.queuedInChat(1).map((message) => message.threadId), [77, null])
  })

  each('an update id seen before is a duplicate, whichever way it was stored', (t, { inbox }) => {
    accepted(inbox, newMessage(1))
    t.equal(inbox.accept(newMessage(1)), 'duplicate')
    t.equal(inbox.acceptAnswered(newMessage(1), 'answer'), 'duplicate')
    t.not(inbox.acceptAnswered(newMessage(2), 'answer'), 'duplicate')
    t.equal(inbox.accept(newMessage(2)), 'duplicate')
    t.equal(inbox.list({}).length, 2, 'nothing stored twice')
  })

  each('acceptAll stores several messages in order, each as accept or acceptAnswered would, duplicates too', (t, { inbox }) => {
    accepted(inbox, newMessage(1))
    const results = inbox.acceptAll([
      { message: newMessage(2) },
      { message: newMessage(1) },
      { message: newMessage(3), reply: 'answered' },
      { message: newMessage(2) },
      { message: newMessage(4, 2) },
    ])
    const [second, seenBefore, answered, twice, other] = results
    t.same([seenBefore, twice], ['duplicate', 'duplicate'], 'an update id stored before, or earlier in the same call, is a duplicate')
    t.ok((second as number) < (answered as number) && (answered as number) < (other as number), `in order: ${results.join(', ')}`)
    t.match(inbox.get(answered as number), { state: 'done', reply: 'answered', replyState: 'pending' })
    t.same(inbox.queuedInChat(1).map((message) => message.updateId), [1, 2])
    t.same(inbox.acceptAll([{ message: newMessage(5) }]).length, 1, 'one message alone')
    t.same(inbox.acceptAll([]), [], 'none')
  })

  each('acceptAnswered stores a finished message whose reply is still to send', (t, { inbox }) => {
    const seq = inbox.acceptAnswered(newMessage(5), 'Sorry, I can\'t handle stickers') as number
    t.match(inbox.get(seq), { state: 'done', reply: 'Sorry, I can\'t handle stickers', replyState: 'pending', finishedAt: newMessage(5).receivedAt })
    t.same(inbox.queuedInChat(1), [], 'not queued for a brain')
  })

  each('markRunning records the attempt; the first start time stays', (t, { inbox }) => {
    const seq = accepted(inbox, newMessage(1))
    inbox.markRunning(seq, 1, T0 + 10)
    t.match(inbox.get(seq), { state: 'running', attempts: 1, startedAt: T0 + 10 })
    inbox.markRunning(seq, 2, T0 + 20)
    t.match(inbox.get(seq), { state: 'running', attempts: 2, startedAt: T0 + 10 })
  })

  each('finish records the outcome; a reply is pending until sent, no reply is none', (t, { inbox }) => {
    const answered = accepted(inbox, newMessage(1))
    const silent = accepted(inbox, newMessage(2))
    inbox.finish(answered, outcome('done', 'the answer'), T0 + 50)
    inbox.finish(silent, outcome('failed'), T0 + 60)
    t.match(inbox.get(answered), { state: 'done', finishedAt: T0 + 50, exitCode: 0, exitSignal: null, stderrTail: 'tail', reply: 'the answer', replyState: 'pending' })
    t.match(inbox.get(silent), { state: 'failed', exitCode: 1, reply: '', replyState: 'none' })
    for (const state of ['sent', 'failed', 'pending'] as const) {
      inbox.setReplyState(answered, state)
      t.equal(inbox.get(answered)?.replyState, state)
    }
  })

  each("queuedInChat: one chat's queued messages, oldest first", (t, { inbox }) => {
    const a1 = accepted(inbox, newMessage(1, 10))
    accepted(inbox, newMessage(2, 20))
    const a2 = accepted(inbox, newMessage(3, 10))
    const a3 = accepted(inbox, newMessage(4, 10))
    inbox.markRunning(a1, 1, T0)
    t.same(inbox.queuedInChat(10).map((message) => message.seq), [a2, a3])
    t.same(inbox.queuedInChat(30), [])
    t.equal(inbox.countQueuedInChat(10), 2, 'counted without reading the rows')
    t.equal(inbox.countQueuedInChat(10, a2), 1, 'leaving out the one whose turn it is')
    t.equal(inbox.countQueuedInChat(30), 0)
  })

  each('requeue puts running messages back without counting an interruption; others are untouched', (t, { inbox }) => {
    const running = accepted(inbox, newMessage(1))
    const done = accepted(inbox, newMessage(2))
    inbox.markRunning(running, 1, T0)
    inbox.finish(done, outcome('done', 'x'), T0)
    inbox.requeue([running, done])
    t.match(inbox.get(running), { state: 'queued', interruptions: 0, attempts: 1 })
    t.match(inbox.get(done), { state: 'done' })
  })

  each("cancelQueued sets a chat's queued messages aside, returning them", (t, { inbox }) => {
    const running = accepted(inbox, newMessage(1))
    const queued = [accepted(inbox, newMessage(2)), accepted(inbox, newMessage(3))]
    const otherChat = accepted(inbox, newMessage(4, 2))
    inbox.markRunning(running, 1, T0)
    t.same(inbox.cancelQueued(1, T0 + 99).sort((a, b) => a - b), queued)
    for (const seq of queued) t.match(inbox.get(seq), { state: 'cancelled', finishedAt: T0 + 99 })
    t.match(inbox.get(running), { state: 'running' }, 'the running one is the dispatcher\'s to stop')
    t.match(inbox.get(otherChat), { state: 'queued' })
    t.same(inbox.cancelQueued(1, T0), [], 'nothing left to cancel')
  })

  each('recover: interrupted messages go back in the queue, counted; unsent replies are found', (t, { inbox }) => {
    const interrupted = accepted(inbox, newMessage(1))
    const waiting = accepted(inbox, newMessage(2))
    const unsent = accepted(inbox, newMessage(3))
    const sent = accepted(inbox, newMessage(4))
    inbox.markRunning(interrupted, 1, T0)
    inbox.finish(unsent, outcome('done', 'computed before the crash'), T0)
    inbox.finish(sent, outcome('done', 'delivered'), T0)
    inbox.setReplyState(sent, 'sent')
    const recovery = inbox.recover(3, T0 + 1000)
    t.same(recovery.unfinished.map((message) => [message.seq, inbox.get(message.seq)?.state, message.interruptions]), [
      [interrupted, 'queued', 1],
      [waiting, 'queued', 0],
    ])
    t.same(Object.keys(recovery.unfinished[0] ?? {}).sort(), ['chatId', 'interruptions', 'receivedAt', 'seq', 'updateId'], 'recovered as scheduling records, not whole rows')
    t.same(recovery.undeliveredReplies.map((message) => message.seq), [unsent])
  })

  each('recover: the crash-loop guard fails a message whose brain a restart interrupted 3 times', (t, { inbox }) => {
    const looping = accepted(inbox, newMessage(1))
    for (let run = 1; run <= 2; run++) {
      inbox.markRunning(looping, run, T0 + run)
      const recovery = inbox.recover(3, T0 + run * 10)
      t.match(recovery.unfinished, [{ seq: looping, interruptions: run }], `interrupted run ${run}: runs again`)
      t.equal(inbox.get(looping)?.state, 'queued')
    }
    inbox.markRunning(looping, 3, T0 + 3)
    const recovery = inbox.recover(3, T0 + 30)
    t.same(recovery.unfinished, [], 'not run a fourth time')
    t.same(recovery.undeliveredReplies.map((message) => message.seq), [looping], 'its notice is a reply to send')
    t.match(inbox.get(looping), { state: 'failed', interruptions: 3, finishedAt: T0 + 30, replyState: 'pending', reply: crashLoopNotice(3) })
    t.equal(crashLoopNotice(3), '⚠️ The service restarted 3 times while this message ran; it is not run again.')
  })

  each('recover counts only runs: a queued message survives any number of restarts', (t, { inbox }) => {
    const queued = accepted(inbox, newMessage(1))
    for (let restart = 0; restart < 5; restart++) inbox.recover(3, T0 + restart)
    t.match(inbox.get(queued), { state: 'queued', interruptions: 0 })
  })

  each('retry puts a finished message back for the running service to take once (or is refused)', (t, { inbox, retries }) => {
    const failed = accepted(inbox, newMessage(1))
    inbox.markRunning(failed, 2, T0)
    inbox.finish(failed, outcome('failed', '⚠️ brain exited 1'), T0 + 5)
    if (!retries) {
      t.throws(() => inbox.retry(failed), RangeError, 'this inbox cannot be retried from outside')
      t.same(inbox.takeRequeued(), [])
      return
    }
    t.match(inbox.retry(failed), { seq: failed, state: 'queued', attempts: 0, interruptions: 0, startedAt: null, finishedAt: null, reply: null, replyState: 'none' })
    t.same(inbox.takeRequeued().map((message) => message.seq), [failed])
    t.same(inbox.takeRequeued(), [], 'taken once')
    t.throws(() => inbox.retry(failed), { name: 'RangeError', message: `message ${failed} is queued; only failed, timed_out or cancelled messages can be retried` })
    t.throws(() => inbox.retry(failed + 1000), RangeError, 'an unknown message')
  })

  each('list filters by chat and state, and keeps the last `limit` in arrival order', (t, { inbox }) => {
    const seqs = [1, 2, 3, 4, 5].map((id) => accepted(inbox, newMessage(id, id % 2)))
    inbox.finish(seqs[0] as number, outcome('done'), T0)
    t.same(inbox.list({}).map((message) => message.seq), seqs)
    t.same(inbox.list({ chatId: 1 }).map((message) => message.seq), [seqs[0], seqs[2], seqs[4]])
    t.same(inbox.list({ state: 'done' }).map((message) => message.seq), [seqs[0]])
    t.same(inbox.list({ chatId: 1, state: 'queued' }).map((message) => message.seq), [seqs[2], seqs[4]])
    t.same(inbox.list({ limit: 2 }).map((message) => message.seq), seqs.slice(-2))
  })

  each('prune deletes finished messages older than the cut, never unsent replies or unfinished work', (t, { inbox }) => {
    const old = T0
    const oldDone = accepted(inbox, newMessage(1))
    const oldUnsent = accepted(inbox, newMessage(2))
    const oldCancelled = accepted(inbox, newMessage(3))
    const recent = accepted(inbox, newMessage(4))
    const stillQueued = accepted(inbox, newMessage(5, 2))
    const stillRunning = accepted(inbox, newMessage(6, 3))
    inbox.finish(oldDone, outcome('done', 'sent long ago'), old)
    inbox.setReplyState(oldDone, 'sent')
    inbox.finish(oldUnsent, outcome('done', 'never sent'), old)
    inbox.finish(recent, outcome('done'), old + 10_000)
    inbox.cancelQueued(1, old)
    inbox.markRunning(stillRunning, 1, old)
    const first = inbox.prune(old + 5000, 1)
    t.equal(first.length, 1, 'at most `limit` a call')
    const rest = inbox.prune(old + 5000, 100)
    t.same([...first, ...rest].sort((a, b) => a - b), [1, 3], 'the update ids of the old done and the old cancelled message')
    t.same(inbox.prune(old + 5000, 100), [], 'nothing more')
    t.same(inbox.list({}).map((message) => message.seq), [oldUnsent, recent, stillQueued, stillRunning])
    t.equal(inbox.get(oldCancelled), undefined)
    t.not(inbox.accept(newMessage(1)), 'duplicate', 'a pruned update id is forgotten')
  })

  each('stats: the kind, writable, and the oldest queued message', (t, { inbox, kind }) => {
    t.match(inbox.stats(), { kind, writable: true, oldestQueuedAt: null, lastWriteError: null })
    const first = accepted(inbox, newMessage(1, 1, T0 + 500))
    accepted(inbox, newMessage(2, 1, T0 + 700))
    t.equal(inbox.stats().oldestQueuedAt, T0 + 500)
    inbox.markRunning(first, 1, T0)
    t.equal(inbox.stats().oldestQueuedAt, T0 + 700, 'a running message is no longer queued')
    t.equal(inbox.probeWritable(), true)
  })
}
