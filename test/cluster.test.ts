import t, { type Test } from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { Update } from 'grammy/types'
import { ServiceProcess } from '../src/demo/service.js'
import { startEmulator, type BotApiEmulator, type RecordedCall } from '../src/emulator/index.js'
import { postgresOrSkip, type TestPostgres } from './helpers/postgres.js'
import { CLI, ROOT, SANDBOX_ENV, SECRET, TOKEN, delay, eventually, tempDir } from './helpers/service.js'
import { Api } from 'grammy'
import { caddyMissing, startCaddy } from './helpers/caddy.js'

// Two intakes and three workers on one Postgres: the Postgres mode's guarantees, live.
const BRAIN = path.join(ROOT, 'test/fixtures/cluster-brain.sh')
const SLOTS = 2

interface Run {
  readonly ev: 'start' | 'end'
  readonly updateId: number
  readonly chatId: number
  readonly worker: string
  readonly redelivered: boolean
  readonly at: number
}

interface Cluster {
  readonly emu: BotApiEmulator
  readonly intakes: ServiceProcess[]
  readonly workers: Map<string, ServiceProcess>
  readonly runLog: string
  startWorker(name: string): Promise<ServiceProcess>
  startIntake(): Promise<ServiceProcess>
  /** Posts an update to an intake's webhook; resolves with the HTTP status. */
  post(intake: ServiceProcess, update: Update): Promise<number>
  runs(): Run[]
  replies(): string[]
}

async function startCluster(t: Test, pg: TestPostgres, { intakes = 2, workers = 3, env = {} as Record<string, string> } = {}): Promise<Cluster> {
  const databaseUrl = await pg.createDatabase()
  const emu = await startEmulator({ token: TOKEN, deliveryRetryMs: 200, deliveryRetryMaxMs: 1000 })
  const shared = tempDir('coordinator-cluster-')
  const runLog = path.join(shared, 'runs.log')
  fs.writeFileSync(runLog, '')
  const base = {
    ...SANDBOX_ENV,
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    HOME: os.tmpdir(),
    TELEGRAM_BOT_TOKEN: TOKEN,
    TELEGRAM_WEBHOOK_SECRET: SECRET,
    TELEGRAM_API_ROOT: emu.url,
    ALLOW_ALL_CHATS: '1',
    DATABASE_URL: databaseUrl,
    BRAIN_COMMAND: BRAIN,
    BRAIN_CWD: shared,
    BRAIN_ENV_ALLOW: 'RUN_LOG,WORKER_NAME',
    RUN_LOG: runLog,
    MAX_CONCURRENT_BRAINS: String(SLOTS),
    PORT: '0',
    LOG_LEVEL: 'info',
    KILL_GRACE_S: '1',
    SHUTDOWN_GRACE_S: '3',
    ...env,
  }
  const processes: ServiceProcess[] = []
  const start = async (role: string, name: string): Promise<ServiceProcess> => {
    const stateDir = tempDir(`coordinator-${name}-`)
    const svc = await ServiceProcess.start(CLI, { ...base, STATE_DIR: stateDir, LOCK_DIR: path.join(stateDir, 'locks'), WORKER_NAME: name }, { args: ['--role', role], readyTimeoutMs: 30_000 })
    processes.push(svc)
    return svc
  }
  const cluster: Cluster = {
    emu,
    intakes: [],
    workers: new Map(),
    runLog,
    startWorker: async (name) => {
      const svc = await start('worker', name)
      cluster.workers.set(name, svc)
      return svc
    },
    startIntake: async () => {
      const svc = await start('intake', `intake${cluster.intakes.length + 1}`)
      cluster.intakes.push(svc)
      return svc
    },
    post: async (intake, update) => {
      const response = await fetch(`${intake.url}/telegram/webhook`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-telegram-bot-api-secret-token': SECRET },
        body: JSON.stringify(update),
      }).catch(() => undefined)
      await response?.arrayBuffer()
      return response?.status ?? 0
    },
    runs: () => readRuns(runLog),
    replies: () => replyTexts(emu.calls),
  }
  t.teardown(async () => {
    await Promise.all(processes.map((svc) => svc.stop('SIGKILL')))
    await emu.close()
    fs.rmSync(shared, { recursive: true, force: true })
  })
  for (let i = 0; i < intakes; i++) await cluster.startIntake()
  for (let i = 1; i <= workers; i++) await cluster.startWorker(`worker${i}`)
  return cluster
}

function readRuns(file: string): Run[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [ev, updateId, chatId, worker, redelivered, at] = line.split(' ')
      return { ev: ev as Run['ev'], updateId: Number(updateId), chatId: Number(chatId), worker: String(worker), redelivered: redelivered === '1', at: Number(at) }
    })
}

const replyTexts = (calls: readonly RecordedCall[]): string[] =>
  calls.filter((call) => call.method === 'sendMessage' && call.ok).map((call) => String(call.params['text']))

// Telegram sends a chat's updates in order: the next only once the last was answered 200.
const chains = new Map<number, Promise<void>>()

/** Posts after the chat's earlier updates were accepted, until an intake answers 200 (Telegram re-sends after a 503 the same way). */
function deliver(cluster: Cluster, update: Update, intake: ServiceProcess): Promise<void> {
  const chatId = update.message?.chat.id ?? 0
  const next = (chains.get(chatId) ?? Promise.resolve()).then(() => post(cluster, update, intake))
  chains.set(chatId, next)
  return next
}

async function post(cluster: Cluster, update: Update, intake: ServiceProcess): Promise<void> {
  for (let tries = 0; ; tries++) {
    const live = intake.running ? intake : cluster.intakes.find((other) => other.running)
    if (live !== undefined && (await cluster.post(live, update)) === 200) return
    if (tries > 600) throw new Error(`update ${update.update_id} never accepted`)
    await delay(100)
  }
}

/** The largest number of runs overlapping at any moment, per key. */
function maxOverlap(runs: readonly Run[], key: (run: Run) => string): Map<string, number> {
  const events = runs.filter((run) => run.ev === 'start' || run.ev === 'end').sort((a, b) => a.at - b.at || (a.ev === 'end' ? -1 : 1))
  const now = new Map<string, number>()
  const most = new Map<string, number>()
  for (const run of events) {
    const k = key(run)
    const value = (now.get(k) ?? 0) + (run.ev === 'start' ? 1 : -1)
    now.set(k, value)
    most.set(k, Math.max(most.get(k) ?? 0, value))
  }
  return most
}

/**
 * Every update's reply arrived once, and each chat's replies came in the order of its updates.
 * `killedRuns`: messages whose brain ran on a worker later SIGKILLed. A reply sent just before the
 * kill, and not yet recorded as sent, is sent again by the next host (at least once, as on one
 * host after a crash): those may arrive twice, and nothing else may.
 */
function checkAnswered(t: Test, cluster: Cluster, sent: Map<number, number[]>, killedRuns: ReadonlySet<number> = new Set()): void {
  const replies = cluster.replies().filter((text) => text.startsWith('reply '))
  const order = replies.map((text) => Number(text.split(' ')[1]))
  const counts = new Map<number, number>()
  for (const id of order) counts.set(id, (counts.get(id) ?? 0) + 1)
  const all = [...sent.values()].flat()
  t.same(all.filter((id) => (counts.get(id) ?? 0) === 0), [], `each of the ${all.length} messages answered`)
  const twice = all.filter((id) => (counts.get(id) ?? 0) > 1)
  t.same(twice.filter((id) => (counts.get(id) ?? 0) > 2 || !killedRuns.has(id)), [], `answered once, but for ${twice.length} whose host was killed around its reply`)
  const outOfOrder = [...sent.entries()].filter(([, ids]) => {
    const got = order.filter((id) => ids.includes(id))
    return got.some((id, i) => i > 0 && id < (got[i - 1] as number))
  })
  t.same(outOfOrder.map(([chat]) => chat), [], 'every chat answered in its order')
}

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

t.test('workers SIGKILLed mid-brain, twice, and an intake: their chats resume elsewhere within 60 s, redelivered, nothing lost, in order', async (t) => {
  const pg = await postgresOrSkip(t)
  if (pg === undefined) return
  const cluster = await startCluster(t, pg)
  const chats = Array.from({ length: 12 }, (_, i) => 92_000 + i)
  const sent = new Map<number, number[]>(chats.map((chat) => [chat, []]))
  const posts: Promise<void>[] = []
  const send = (count: number, from: number): void => {
    for (let i = from; i < from + count; i++) {
      const chat = chats[i % chats.length] as number
      // Every fourth message runs 2 s, so that a kill finds brains running.
      const update = cluster.emu.sendText({ chatId: chat, text: i % 4 === 0 ? `m${i} sleep=2` : `m${i}` })
      sent.get(chat)?.push(update.update_id)
      posts.push(deliver(cluster, update, cluster.intakes[i % 2] as ServiceProcess))
    }
  }
  const kills: { worker: string; at: number; inFlight: number[] }[] = []
  const killBusiest = async (): Promise<void> => {
    const busy = await eventually(() => {
      const running = inFlight(cluster.runs())
      const [worker] = [...cluster.workers.keys()].filter((name) => cluster.workers.get(name)?.running && running.some((run) => run.worker === name))
      return worker
    }, 30_000, 'a worker running a brain')
    const svc = cluster.workers.get(busy) as ServiceProcess
    await svc.stop('SIGKILL')
    const at = Date.now()
    kills.push({ worker: busy, at, inFlight: inFlight(cluster.runs()).filter((run) => run.worker === busy).map((run) => run.updateId) })
  }
  send(60, 0)
  await killBusiest()
  await cluster.startWorker('worker4')
  send(60, 60)
  // An intake killed: what it answered 200 is stored; the rest goes to the other one.
  await (cluster.intakes[0] as ServiceProcess).stop('SIGKILL')
  await killBusiest()
  send(30, 120)
  await Promise.all(posts)
  await eventually(() => new Set(cluster.replies().filter((text) => text.startsWith('reply ')).map((text) => text.split(' ')[1])).size >= 150, 180_000, 'all 150 replies')
  await delay(1000)
  const runs = cluster.runs()
  const killedRuns = new Set(runs.filter((run) => kills.some((kill) => kill.worker === run.worker)).map((run) => run.updateId))
  checkAnswered(t, cluster, sent, killedRuns)
  for (const kill of kills) {
    t.ok(kill.inFlight.length > 0, `${kill.worker} was running brains when killed`)
    for (const updateId of kill.inFlight) {
      const again = runs.find((run) => run.ev === 'start' && run.updateId === updateId && run.worker !== kill.worker && run.at > kill.at)
      t.ok(again?.redelivered, `message ${updateId} ran again on ${again?.worker}, flagged redelivered`)
      t.ok(again !== undefined && again.at - kill.at <= 60_000, `within 60 s of the kill (${again ? again.at - kill.at : '—'} ms)`)
    }
  }
  // A killed worker's brains are not its supervisor's to stop any more (under systemd, KillMode
  // ends them with the unit); the checks below leave that worker's runs out.
  const killed = new Set(kills.map((kill) => kill.worker))
  const perChat = maxOverlap(runs.filter((run) => !killed.has(run.worker)), (run) => String(run.chatId))
  t.ok([...perChat.values()].every((most) => most === 1), 'never two brains of one chat at once on the live workers')
})

t.test('Postgres stopped for 10 s: intakes answer 503, workers stop their brains and resume, nothing lost', async (t) => {
  const pg = await postgresOrSkip(t, { outages: true })
  if (pg === undefined) return
  const cluster = await startCluster(t, pg, { intakes: 1, workers: 2 })
  const [intake] = cluster.intakes as [ServiceProcess]
  const chats = [93_001, 93_002, 93_003, 93_004]
  const sent = new Map<number, number[]>(chats.map((chat) => [chat, []]))
  const posts: Promise<void>[] = []
  for (let i = 0; i < 24; i++) {
    const chat = chats[i % chats.length] as number
    const update = cluster.emu.sendText({ chatId: chat, text: i < 4 ? `m${i} sleep=15` : `m${i}` })
    sent.get(chat)?.push(update.update_id)
    posts.push(deliver(cluster, update, intake))
  }
  await Promise.all(posts)
  await eventually(() => inFlight(cluster.runs()).length >= 2, 20_000, 'long brains running')
  t.equal((await fetch(`${intake.url}/readyz`)).status, 200, 'the intake is ready while Postgres runs')
  await pg.stop()
  const stoppedAt = Date.now()
  const during = cluster.emu.sendText({ chatId: 93_001, text: 'during the outage' })
  sent.get(93_001)?.push(during.update_id)
  t.equal(await cluster.post(intake, during), 503, 'intake answers 503 while Postgres is down')
  t.equal((await fetch(`${intake.url}/readyz`)).status, 503, '/readyz says not ready: its database write fails')
  t.equal((await fetch(`${intake.url}/healthz`)).status, 503, '/healthz says degraded')
  // A worker that cannot reach the database stops its brains before another may take its chats.
  for (const worker of cluster.workers.values()) {
    await worker.waitForLog((line) => /stopping this host's brains/u.test(line.msg), 15_000)
  }
  t.pass('both workers stopped their brains')
  await delay(Math.max(0, 10_000 - (Date.now() - stoppedAt)))
  await pg.start()
  await deliver(cluster, during, intake)
  const unanswered = (): number[] => {
    const replied = new Set(cluster.replies().map((text) => text.split(' ').slice(0, 2).join(' ')))
    return [...sent.values()].flat().filter((id) => !replied.has(`reply ${id}`))
  }
  await eventually(() => unanswered().length === 0, 120_000, 'every message answered after the outage').catch((error: unknown) => {
    t.comment(`unanswered: ${unanswered().join(' ')}`)
    for (const [name, worker] of cluster.workers) t.comment(`${name}:\n${worker.tail(30)}`)
    throw error
  })
  t.pass('every message answered after the outage')
  const redelivered = cluster.runs().filter((run) => run.ev === 'start' && run.redelivered)
  t.ok(redelivered.length >= 2, `the stopped brains ran again, flagged redelivered (${redelivered.length})`)
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

/** Brains started and not yet ended. */
function inFlight(runs: readonly Run[]): Run[] {
  const ended = new Set(runs.filter((run) => run.ev === 'end').map((run) => `${run.updateId}/${run.worker}`))
  return runs.filter((run) => run.ev === 'start' && !ended.has(`${run.updateId}/${run.worker}`))
}

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


t.test('at start: a database that does not exist exits 2 naming DATABASE_URL; one not reachable yet is waited for', async (t) => {
  const pg = await postgresOrSkip(t, { outages: true })
  if (pg === undefined) return
  const cluster = await startCluster(t, pg, { intakes: 0, workers: 0 })
  const databaseUrl = await pg.createDatabase()
  const env = (url: string, name: string): Record<string, string> => {
    const stateDir = tempDir(`coordinator-${name}-`)
    return {
      ...SANDBOX_ENV,
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      HOME: os.tmpdir(),
      TELEGRAM_BOT_TOKEN: TOKEN,
      TELEGRAM_WEBHOOK_SECRET: SECRET,
      TELEGRAM_API_ROOT: cluster.emu.url,
      ALLOW_ALL_CHATS: '1',
      DATABASE_URL: url,
      BRAIN_COMMAND: BRAIN,
      BRAIN_CWD: path.dirname(cluster.runLog),
      BRAIN_ENV_ALLOW: 'RUN_LOG,WORKER_NAME',
      RUN_LOG: cluster.runLog,
      WORKER_NAME: name,
      STATE_DIR: stateDir,
      LOCK_DIR: path.join(stateDir, 'locks'),
      PORT: '0',
      LOG_LEVEL: 'info',
    }
  }
  const missing = databaseUrl.replace(/\/t_[0-9a-f]+$/u, '/no_such_database')
  const refused = await ServiceProcess.start(CLI, env(missing, 'missing'), { args: ['--role', 'all'] }).then(
    () => undefined,
    (error: unknown) => (error as Error).message,
  )
  t.match(refused, /exited \(code 2\)/u, 'a database that does not exist: exit 2')
  t.match(refused, /DATABASE_URL could not be used: .*no_such_database.* does not exist/u, 'one line naming DATABASE_URL and why')

  await pg.stop()
  const svc = await ServiceProcess.start(CLI, env(databaseUrl, 'waiting'), { args: ['--role', 'all'] })
  t.teardown(() => svc.stop('SIGKILL'))
  t.equal((await fetch(`${svc.url}/readyz`)).status, 503, 'it listens, not ready, while Postgres is down')
  const update = cluster.emu.sendText({ chatId: 97_001, text: 'hello' })
  t.equal(await cluster.post(svc, update), 503, 'and answers the webhook 503: Telegram keeps the update')
  await pg.start()
  await svc.waitForLog((line) => line.msg === 'Postgres reached; the host is up', 20_000)
  await eventually(async () => (await fetch(`${svc.url}/readyz`)).status === 200, 10_000, 'ready once Postgres is up')
  t.equal(await cluster.post(svc, update), 200, 'the re-sent update is taken')
  await eventually(() => cluster.replies().find((text) => text.startsWith(`reply ${update.update_id} `)), 20_000, 'its reply')
  t.pass('and answered')
})

t.test('Caddy in front of two intakes (COORDINATOR_UPSTREAM lists both): one killed, every update still answered once', async (t) => {
  const pg = await postgresOrSkip(t)
  if (pg === undefined) return
  const missing = caddyMissing()
  if (missing !== undefined) {
    t.fail(`${missing}: install Debian's caddy (.ci/run does)`)
    return
  }
  const cluster = await startCluster(t, pg, { intakes: 2, workers: 1 })
  const caddy = await startCaddy({ upstream: cluster.intakes.map((svc) => new URL(svc.url).host).join(' '), telegramIpRanges: '127.0.0.0/8' })
  t.teardown(caddy.stop)
  await new Api(TOKEN, { apiRoot: cluster.emu.url }).setWebhook(`${caddy.url}/telegram/webhook`, { secret_token: SECRET })
  const ids: number[] = []
  const send = (count: number): void => {
    for (let i = 0; i < count; i++) ids.push(cluster.emu.sendText({ chatId: 98_000 + (ids.length % 4), text: `m${ids.length}` }).update_id)
  }
  const answered = (): number => new Set(cluster.replies().filter((text) => text.startsWith('reply ')).map((text) => text.split(' ')[1])).size
  send(20)
  await eventually(() => answered() >= 20, 60_000, 'the first 20 answered')
  const accepted = (svc: ServiceProcess): number => svc.logs.filter((line) => line.msg === 'message accepted').length
  t.ok(cluster.intakes.every((svc) => accepted(svc) > 0), `Caddy spread them over both intakes (${cluster.intakes.map(accepted).join(' and ')})`)
  await (cluster.intakes[0] as ServiceProcess).stop('SIGKILL')
  send(20)
  await eventually(() => answered() >= 40, 60_000, 'all 40 answered')
  const replies = cluster.replies().filter((text) => text.startsWith('reply '))
  t.equal(replies.length, 40, 'each once')
  t.ok(cluster.emu.deliveries.some((attempt) => attempt.status !== 200), 'a delivery that reached the dead intake failed, and Telegram sent it again')
})
