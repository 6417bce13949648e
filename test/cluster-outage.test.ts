import t from 'tap'
import os from 'node:os'
import path from 'node:path'
import { ServiceProcess } from '../src/demo/service.js'
import { postgresOrSkip } from './helpers/postgres.js'
import { CLI, SANDBOX_ENV, SECRET, TOKEN, delay, eventually, tempDir } from './helpers/service.js'
import { BRAIN, deliver, inFlight, startCluster } from './helpers/cluster.js'

// Postgres itself stopped, at start and under load: hosts wait, answer 503, and lose nothing.

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
