import t from 'tap'
import { Dispatcher, JobStopped, type Job, type WorkContext } from '../../../src/dispatch/dispatcher.js'
import { deferred, delay, settle, type Deferred } from '../../helpers/deferred.js'

let nextSeq = 1
const job = (chatId: number): Job => {
  const seq = nextSeq++
  return { seq, chatId, updateId: 1000 + seq, receivedAt: Date.now() }
}

/**
 * A dispatcher whose work takes a slot and holds it until the test releases the job: it records
 * what happened, in order, and how many slots were ever held at once.
 */
function gated(maxConcurrent: number) {
  const gates = new Map<number, Deferred<void>>()
  const gate = (seq: number): Deferred<void> => {
    let found = gates.get(seq)
    if (!found) {
      found = deferred()
      gates.set(seq, found)
    }
    return found
  }
  const events: string[] = []
  const contexts = new Map<number, WorkContext>()
  const outcomes = new Map<number, string>()
  let inSlots = 0
  let mostInSlots = 0
  const dispatcher = new Dispatcher({
    maxConcurrent,
    work: async (job, context) => {
      contexts.set(job.seq, context)
      events.push(`turn ${job.seq}`)
      try {
        await context.inSlot(async () => {
          mostInSlots = Math.max(mostInSlots, ++inSlots)
          events.push(`slot ${job.seq}`)
          try {
            await gate(job.seq).promise
          } finally {
            inSlots--
          }
        })
        outcomes.set(job.seq, 'ran')
      } catch (error) {
        outcomes.set(job.seq, error instanceof JobStopped ? `stopped before its slot (${error.reason})` : String(error))
      }
      events.push(`end ${job.seq}`)
    },
  })
  return {
    dispatcher,
    events,
    contexts,
    outcomes,
    release: (seq: number) => gate(seq).resolve(),
    mostInSlots: () => mostInSlots,
  }
}

t.test('a chat runs its jobs one at a time, in arrival order', async (t) => {
  const { dispatcher, events, release } = gated(4)
  const jobs = [job(1), job(1), job(1)]
  for (const each of jobs) dispatcher.enqueue(each)
  await settle()
  t.same(events, [`turn ${jobs[0]?.seq}`, `slot ${jobs[0]?.seq}`], 'only the first has its turn, though three slots are free')
  // Released out of order: the later ones still wait for the first.
  release(jobs[2]!.seq)
  release(jobs[1]!.seq)
  await settle()
  t.equal(events.length, 2, 'releasing later jobs does not let them overtake')
  release(jobs[0]!.seq)
  await delay(20)
  t.same(
    events,
    jobs.flatMap(({ seq }) => [`turn ${seq}`, `slot ${seq}`, `end ${seq}`]),
    'each job ends before the next one starts',
  )
})

t.test('never more than maxConcurrent brains at once, and each chat holds at most one slot', async (t) => {
  const { dispatcher, release, mostInSlots } = gated(3)
  const jobs = Array.from({ length: 24 }, (_, index) => job(100 + (index % 8)))
  for (const each of jobs) dispatcher.enqueue(each)
  await settle()
  t.equal(dispatcher.running, 3, 'three slots busy')
  t.equal(dispatcher.chats, 8, 'eight chats have work')
  t.equal(dispatcher.queued, 21, 'the other 21 wait: 5 of them for a slot, 16 behind their chat')
  const holders = dispatcher.runningJobs().map((running) => running.job.chatId)
  t.equal(new Set(holders).size, holders.length, 'three different chats hold the slots')
  // Release in waves until all are done, checking the cap at every step.
  for (const each of jobs) {
    release(each.seq)
    await settle()
    t.ok(dispatcher.running <= 3, `at most 3 running (${dispatcher.running})`)
    const chats = dispatcher.runningJobs().map((running) => running.job.chatId)
    if (new Set(chats).size !== chats.length) t.fail(`a chat held two slots: ${chats.join(',')}`)
  }
  await delay(20)
  t.equal(mostInSlots(), 3, 'the cap was reached and never exceeded')
  t.equal(dispatcher.running, 0)
  t.equal(dispatcher.queued, 0)
})

t.test('a slow chat does not block another: its turn outside a slot leaves the slot free', async (t) => {
  const outside = deferred()
  const ran: string[] = []
  const dispatcher = new Dispatcher({
    maxConcurrent: 1,
    work: async (job, { inSlot }) => {
      await inSlot(async () => {
        ran.push(`${job.chatId}`)
      })
      // Chat 1 then waits outside its slot (a retry's backoff, a reply being sent).
      if (job.chatId !== 1) return
      await outside.promise
      await inSlot(async () => {
        ran.push('1 again')
      })
    },
  })
  dispatcher.enqueue(job(1))
  dispatcher.enqueue(job(2))
  await delay(10)
  t.same(ran, ['1', '2'], 'chat 2 ran while chat 1 held only its turn')
  t.equal(dispatcher.chatStatus(1).running?.phase, 'waiting', 'chat 1 is waiting, not running')
  outside.resolve()
  await delay(10)
  t.same(ran, ['1', '2', '1 again'])
})

t.test('a turn is built only once a slot is free for it: waiting chats are plain records', async (t) => {
  const { dispatcher, events, release } = gated(1)
  const first = job(30)
  const waiting = [job(31), job(32), job(31)]
  dispatcher.enqueue(first)
  for (const each of waiting) dispatcher.enqueue(each)
  await settle()
  t.same(events, [`turn ${first.seq}`, `slot ${first.seq}`], 'no work started for the chats waiting for the slot')
  t.same(dispatcher.chatStatus(31), { running: { job: waiting[0], since: dispatcher.chatStatus(31).running?.since, runningSince: undefined, phase: 'waiting' }, queued: 1 })
  t.equal(dispatcher.queued, 3, 'three jobs wait')
  release(first.seq)
  await settle()
  t.ok(events.includes(`slot ${waiting[0]?.seq}`), 'the next chat in line starts when the slot frees')
  t.notOk(events.includes(`turn ${waiting[1]?.seq}`), 'and only that one')
  for (const each of waiting) release(each.seq)
  await delay(20)
  t.same(
    events.filter((event) => event.startsWith('turn')),
    [first, waiting[0], waiting[1], waiting[2]].map((each) => `turn ${each?.seq}`),
    'chats take the slot in the order they became ready; a chat rejoins the line behind the others',
  )
  t.equal(dispatcher.chats, 0)
})

t.test('a chat stopped while in line for a slot starts at once, already stopped, and leaves its place', async (t) => {
  const { dispatcher, outcomes, events, release } = gated(1)
  const holder = job(40)
  const inLine = job(41)
  const behind = job(41)
  const other = job(42)
  for (const each of [holder, inLine, behind, other]) dispatcher.enqueue(each)
  await settle()
  t.equal(dispatcher.stop(41, 'cancel'), inLine, 'the job in line is the one stopped')
  await settle()
  t.equal(outcomes.get(inLine.seq), 'stopped before its slot (cancel)', 'its work ran and saw the stop without a slot')
  t.notOk(events.includes(`slot ${inLine.seq}`))
  release(holder.seq)
  release(other.seq)
  release(behind.seq)
  await delay(20)
  const turns = events.filter((event) => event.startsWith('turn'))
  t.same(turns, [holder, inLine, other, behind].map((each) => `turn ${each.seq}`), 'the chat rejoined the line behind the chat that was waiting')
})

t.test('stop before the slot is granted: the brain never runs, inSlot rejects with JobStopped', async (t) => {
  const { dispatcher, outcomes, contexts, release } = gated(1)
  const holder = job(1)
  const waiter = job(2)
  dispatcher.enqueue(holder)
  dispatcher.enqueue(waiter)
  await settle()
  t.equal(dispatcher.chatStatus(2).running?.phase, 'waiting', 'the second chat waits for the only slot')
  t.equal(dispatcher.queued, 1, 'counted as queued while it waits for a slot')
  t.equal(dispatcher.stop(2, 'cancel'), waiter, 'stop returns the stopped job')
  await settle()
  t.equal(outcomes.get(waiter.seq), 'stopped before its slot (cancel)')
  t.equal(contexts.get(waiter.seq)?.signal.reason, 'cancel', 'its signal says why')
  t.equal(dispatcher.queued, 0, 'no longer waiting')
  t.equal(dispatcher.chatStatus(2).running, undefined, 'and the chat is idle')
  release(holder.seq)
  await delay(10)
  t.equal(outcomes.get(holder.seq), 'ran', 'the holder was unaffected')
})

t.test('stop after the slot is granted: the signal aborts the running brain; a second stop finds nothing', async (t) => {
  const aborted = deferred<unknown>()
  const dispatcher = new Dispatcher({
    maxConcurrent: 2,
    work: async (_job, { inSlot, signal }) => {
      await inSlot(
        () =>
          new Promise<void>((resolve) => {
            signal.addEventListener('abort', () => {
              aborted.resolve(signal.reason)
              resolve()
            })
          }),
      )
    },
  })
  const running = job(5)
  dispatcher.enqueue(running)
  await settle()
  t.equal(dispatcher.chatStatus(5).running?.phase, 'running')
  t.equal(dispatcher.stop(5, 'interrupt'), running)
  t.equal(await aborted.promise, 'interrupt', 'the brain saw the reason')
  t.equal(dispatcher.stop(5, 'cancel'), undefined, 'already stopped')
  await delay(10)
  t.equal(dispatcher.chats, 0, 'the lane is gone once the job ended')
  t.equal(dispatcher.stop(5, 'cancel'), undefined, 'nothing to stop in an idle chat')
})

t.test('a stopped brain keeps its slot until it has ended: no other brain starts while it dies', async (t) => {
  const events: string[] = []
  const dispatcher = new Dispatcher({
    maxConcurrent: 1,
    work: async (job, { inSlot, signal }) => {
      const result = await inSlot(
        () =>
          new Promise<string>((resolve) => {
            events.push(`brain ${job.chatId} started`)
            // Killing a process group takes time (SIGTERM, then SIGKILL after the grace).
            signal.addEventListener('abort', () => setTimeout(() => {
              events.push(`brain ${job.chatId} gone`)
              resolve('cancelled')
            }, 100))
            if (job.chatId === 2) resolve('answered')
          }),
      )
      events.push(`chat ${job.chatId}: ${result}`)
    },
  })
  dispatcher.enqueue(job(1))
  dispatcher.enqueue(job(2))
  await settle()
  dispatcher.stop(1, 'cancel')
  await delay(50)
  t.same(events, ['brain 1 started'], 'the other chat still waits while the stopped brain dies')
  t.equal(dispatcher.running, 1, 'the slot is still taken')
  await delay(150)
  t.ok(events.indexOf('brain 2 started') > events.indexOf('brain 1 gone'), `the next brain started after the stopped one was gone: ${events.join(', ')}`)
  t.ok(events.includes('chat 1: cancelled') && events.includes('chat 2: answered'), 'both jobs ended')
})

t.test('settle() makes stop a no-op: a decided outcome is delivered, not cancelled', async (t) => {
  const { dispatcher, contexts, outcomes, release } = gated(1)
  const replying = job(7)
  dispatcher.enqueue(replying)
  await settle()
  const context = contexts.get(replying.seq)!
  context.settle()
  t.equal(dispatcher.chatStatus(7).running?.phase, 'replying')
  t.equal(dispatcher.stop(7, 'cancel'), undefined, 'stop refuses')
  t.notOk(context.signal.aborted, 'the signal is untouched')
  release(replying.seq)
  await delay(10)
  t.equal(outcomes.get(replying.seq), 'ran')
})

t.test('a job whose work throws does not stop its chat', async (t) => {
  const ran: number[] = []
  const dispatcher = new Dispatcher({
    maxConcurrent: 1,
    work: async (job) => {
      ran.push(job.seq)
      if (ran.length === 1) throw new Error('work failed')
    },
  })
  const jobs = [job(9), job(9)]
  for (const each of jobs) dispatcher.enqueue(each)
  await delay(10)
  t.same(ran, jobs.map(({ seq }) => seq))
  t.equal(dispatcher.chats, 0)
})

t.test('lanes exist only while a chat has work; chatStatus counts what is queued behind the current job', async (t) => {
  const { dispatcher, release } = gated(2)
  t.same(dispatcher.chatStatus(3), { running: undefined, queued: 0 }, 'an unknown chat is idle')
  const jobs = [job(3), job(3), job(3)]
  for (const each of jobs) dispatcher.enqueue(each)
  await settle()
  const status = dispatcher.chatStatus(3)
  t.equal(status.running?.job, jobs[0])
  t.equal(status.queued, 2)
  t.equal(dispatcher.chats, 1)
  t.ok((status.running?.runningSince ?? 0) >= (status.running?.since ?? Infinity), 'the brain started after the turn began')
  for (const each of jobs) release(each.seq)
  await delay(20)
  t.equal(dispatcher.chats, 0, 'the lane is dropped when idle')
  t.same(dispatcher.chatStatus(3), { running: undefined, queued: 0 })
})

t.test('runningJobs lists the jobs in a slot, oldest brain first', async (t) => {
  const { dispatcher, release } = gated(3)
  const first = job(11)
  dispatcher.enqueue(first)
  await delay(5)
  const second = job(12)
  dispatcher.enqueue(second)
  await settle()
  t.same(
    dispatcher.runningJobs().map((running) => running.job),
    [first, second],
  )
  release(first.seq)
  release(second.seq)
  await delay(10)
  t.same(dispatcher.runningJobs(), [])
})

t.test('drain: a job waiting for a slot never starts; a running one gets the grace and finishes', async (t) => {
  const { dispatcher, outcomes, release } = gated(1)
  const running = job(20)
  const waiting = job(21)
  const behind = job(20)
  for (const each of [running, waiting, behind]) dispatcher.enqueue(each)
  await settle()
  const started = Date.now()
  const drained = dispatcher.drain(5000, 1000)
  t.ok(dispatcher.stopping)
  await settle()
  t.notOk(outcomes.has(waiting.seq), 'the waiting job never starts: the inbox keeps it')
  setTimeout(() => release(running.seq), 100)
  await drained
  const took = Date.now() - started
  t.ok(took >= 90 && took < 2000, `drain returned when the running job finished (${took} ms), not after the 5 s grace`)
  t.equal(outcomes.get(running.seq), 'ran', 'the running job finished normally')
  await delay(20)
  t.notOk(outcomes.has(behind.seq), 'the job queued behind it never started: the inbox keeps it')
  dispatcher.enqueue(job(22))
  await delay(20)
  t.equal(dispatcher.running, 0, 'nothing starts while stopping')
})

t.test('drain: after the grace, running jobs are stopped with reason shutdown and waited for', async (t) => {
  const reasons: unknown[] = []
  const dispatcher = new Dispatcher({
    maxConcurrent: 2,
    work: async (_job, { inSlot, signal }) => {
      await inSlot(
        () =>
          new Promise<void>((resolve) => {
            // A brain that takes 50 ms to wind down once told to stop.
            signal.addEventListener('abort', () => setTimeout(() => {
              reasons.push(signal.reason)
              resolve()
            }, 50))
          }),
      )
    },
  })
  dispatcher.enqueue(job(30))
  dispatcher.enqueue(job(31))
  await settle()
  const started = Date.now()
  await dispatcher.drain(200, 2000)
  const took = Date.now() - started
  t.same(reasons, ['shutdown', 'shutdown'], 'both brains were told to stop')
  t.ok(took >= 240 && took < 1500, `drain took the 200 ms grace plus the 50 ms wind-down (${took} ms)`)
})

t.test('drain gives up on work that never ends after afterStopMs', async (t) => {
  const dispatcher = new Dispatcher({ maxConcurrent: 1, work: (_job, { inSlot }) => inSlot(() => new Promise<void>(() => {})) })
  dispatcher.enqueue(job(40))
  await settle()
  const started = Date.now()
  await dispatcher.drain(50, 100)
  const took = Date.now() - started
  t.ok(took >= 140 && took < 1000, `gave up after grace + afterStop (${took} ms)`)
})

t.test('maxConcurrent must be a whole number of at least 1, quoted when wrong', async (t) => {
  for (const bad of [0, -1, 1.5, Number.NaN]) {
    t.throws(() => new Dispatcher({ maxConcurrent: bad, work: async () => {} }), {
      name: 'TypeError',
      message: `maxConcurrent must be a whole number of at least 1; got ${bad}`,
    })
  }
})
