import t from 'tap'
import type { ServiceProcess } from '../src/demo/service.js'
import { postgresOrSkip } from './helpers/postgres.js'
import { delay, eventually } from './helpers/service.js'
import { SLOTS, checkAnswered, deliver, inFlight, maxOverlap, startCluster } from './helpers/cluster.js'

// Two intakes and three workers on one Postgres: the Postgres mode's guarantees, live.

t.test('two intakes, three workers: 600 messages over 30 chats, all answered once, in order, one brain per chat', async (t) => {
  const pg = await postgresOrSkip(t)
  if (pg === undefined) return
  const cluster = await startCluster(t, pg)
  const chats = Array.from({ length: 30 }, (_, i) => 91_000 + i)
  const sent = new Map<number, number[]>(chats.map((chat) => [chat, []]))
  const posts: Promise<void>[] = []
  let duplicates = 0
  for (let i = 0; i < 600; i++) {
    const chat = chats[i % chats.length] as number
    const update = cluster.emu.sendText({ chatId: chat, text: `m${i}` })
    sent.get(chat)?.push(update.update_id)
    const [first, second] = Math.random() < 0.5 ? cluster.intakes : [...cluster.intakes].reverse()
    posts.push(deliver(cluster, update, first as ServiceProcess))
    // One in ten also reaches the other intake, as a Telegram re-send after a lost answer would.
    if (i % 10 === 3) {
      duplicates++
      posts.push(deliver(cluster, update, second as ServiceProcess))
    }
    if (i % 30 === 29) await delay(20)
  }
  await Promise.all(posts)
  const total = 600
  await eventually(() => cluster.replies().filter((text) => text.startsWith('reply ')).length >= total, 180_000, 'all 600 replies')
  await delay(1000)
  checkAnswered(t, cluster, sent)
  const runs = cluster.runs()
  const starts = runs.filter((run) => run.ev === 'start')
  t.equal(starts.length, total, `each message's brain ran once (${duplicates} sent to both intakes)`)
  const perChat = maxOverlap(runs, (run) => String(run.chatId))
  t.ok([...perChat.values()].every((most) => most === 1), 'never two brains of one chat at once')
  const perWorker = maxOverlap(runs, (run) => run.worker)
  t.ok([...perWorker.values()].every((most) => most <= SLOTS), `at most ${SLOTS} brains per worker at any moment: ${JSON.stringify(Object.fromEntries(perWorker))}`)
  t.equal(perWorker.size, 3, 'every worker took part')
})

t.test('/cancel sent to an intake stops a brain running on a worker within 1 s', async (t) => {
  const pg = await postgresOrSkip(t)
  if (pg === undefined) return
  const cluster = await startCluster(t, pg, { intakes: 1, workers: 1 })
  const [intake] = cluster.intakes as [ServiceProcess]
  const worker = cluster.workers.get('worker1') as ServiceProcess
  const long = cluster.emu.sendText({ chatId: 94_001, text: 'long sleep=30' })
  await deliver(cluster, long, intake)
  await eventually(() => inFlight(cluster.runs()).some((run) => run.updateId === long.update_id), 20_000, 'the long brain running')
  const cancel = cluster.emu.sendText({ chatId: 94_001, text: '/cancel' })
  const postedAt = Date.now()
  t.equal(await cluster.post(intake, cancel), 200, 'the intake takes /cancel')
  const stopped = await worker.waitForLog((line) => line.msg === 'brain stopped by a message to another host', 10_000)
  t.ok(stopped.time - postedAt <= 1000, `the worker stopped the brain ${stopped.time - postedAt} ms after /cancel reached the intake`)
  await eventually(() => cluster.replies().some((text) => text.startsWith('⏹ Stopped the brain')), 10_000, 'the /cancel answer')
  await delay(2000)
  t.notOk(cluster.runs().some((run) => run.ev === 'end' && run.updateId === long.update_id), 'the brain never finished its sleep')
  t.notOk(cluster.replies().includes(`reply ${long.update_id}`), 'and sent no reply')
})

t.test('/healthz, /readyz and /metrics of an intake and a worker report every host', async (t) => {
  const pg = await postgresOrSkip(t)
  if (pg === undefined) return
  const cluster = await startCluster(t, pg, { intakes: 1, workers: 2 })
  const [intake] = cluster.intakes as [ServiceProcess]
  const worker = cluster.workers.get('worker1') as ServiceProcess
  const long = cluster.emu.sendText({ chatId: 96_001, text: 'long sleep=30' })
  await deliver(cluster, long, intake)
  await cluster.post(intake, cluster.emu.sendText({ chatId: 96_001, text: 'queued behind it' }))
  await eventually(() => inFlight(cluster.runs()).length === 1, 20_000, 'the long brain running')
  const health = async (svc: ServiceProcess): Promise<Record<string, unknown>> => (await (await fetch(`${svc.url}/healthz`)).json()) as Record<string, unknown>
  // Every host reads the shared queue at most every 2 s.
  const seen = await eventually(async () => {
    const report = await health(intake)
    return (report['queue'] as { running: number }).running === 1 && report
  }, 10_000, "the intake's /healthz to show the running brain")
  t.match(seen, {
    status: 'ok',
    role: 'intake',
    brains: { running: 0, limit: 0 },
    queue: { pending: 1, running: 1 },
    workers: { live: 2, slots: 2 * SLOTS, dead: 0, jobs_held_by_dead: 0 },
    store: { kind: 'postgres', writable: true },
  }, "the intake's /healthz: the shared queue, both workers and their slots")
  const running = cluster.runs().find((run) => run.ev === 'start')?.worker
  const runner = cluster.workers.get(running ?? '') as ServiceProcess
  t.match(await health(runner), { role: 'worker', brains: { running: 1, limit: SLOTS } }, 'the worker running it counts its brain')
  t.equal((await fetch(`${worker.url}/readyz`)).status, 200, 'a worker is ready (its database write works)')
  const metrics = await eventually(async () => {
    const text = await (await fetch(`${intake.url}/metrics`)).text()
    return /^coordinator_messages_queued 1$/mu.test(text) && text
  }, 10_000, '/metrics to show the shared queue')
  t.match(metrics, /^coordinator_workers_live 2$/mu, '/metrics: live workers')
  t.match(metrics, /^coordinator_worker_slots_live 4$/mu, 'their slots')
  t.match(metrics, /^coordinator_messages_queued 1$/mu, 'the shared queue')
  t.equal(await cluster.post(cluster.workers.get('worker2') as ServiceProcess, cluster.emu.sendText({ chatId: 96_002, text: 'to a worker' })), 503, 'a worker-only host refuses the webhook (503: Telegram re-sends it to an intake)')
})

t.test("a chat's directory follows it from one worker host to the next", async (t) => {
  const pg = await postgresOrSkip(t)
  if (pg === undefined) return
  const cluster = await startCluster(t, pg, { intakes: 1, workers: 1 })
  const [intake] = cluster.intakes as [ServiceProcess]
  const chat = 95_001
  const replyOf = async (text: string): Promise<string> => {
    const update = cluster.emu.sendText({ chatId: chat, text })
    await deliver(cluster, update, intake)
    return eventually(() => cluster.replies().find((reply) => reply.startsWith(`reply ${update.update_id} `)), 30_000, `the reply to ${text}`)
  }
  t.match(await replyOf('one'), / turns=1$/u, 'worker1 ran the first turn')
  // worker1 leaves; worker2, a host with an empty STATE_DIR of its own, takes the chat.
  await (cluster.workers.get('worker1') as ServiceProcess).stop('SIGTERM')
  await cluster.startWorker('worker2')
  t.match(await replyOf('two'), / turns=2$/u, "worker2 found the chat's directory as worker1 left it")
  await cluster.startWorker('worker3')
  await (cluster.workers.get('worker2') as ServiceProcess).stop('SIGTERM')
  t.match(await replyOf('three'), / turns=3$/u, 'and so did worker3')
  t.same([...new Set(cluster.runs().filter((run) => run.ev === 'start').map((run) => run.worker))], ['worker1', 'worker2', 'worker3'], 'one turn on each host')
  const forget = cluster.emu.sendText({ chatId: chat, text: '/new' })
  await deliver(cluster, forget, intake)
  await eventually(() => cluster.replies().some((reply) => reply.startsWith('🆕')), 10_000, 'the /new answer')
  t.match(await replyOf('four'), / turns=1$/u, '/new forgot it on every host')
})
