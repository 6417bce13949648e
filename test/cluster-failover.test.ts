import t from 'tap'
import type { ServiceProcess } from '../src/demo/service.js'
import { Api } from 'grammy'
import { postgresOrSkip } from './helpers/postgres.js'
import { SECRET, TOKEN, delay, eventually } from './helpers/service.js'
import { checkAnswered, deliver, inFlight, maxOverlap, startCluster } from './helpers/cluster.js'
import { caddyMissing, startCaddy } from './helpers/caddy.js'

// Hosts SIGKILLed while the cluster works: their chats resume elsewhere, nothing lost, in order.

t.test('workers SIGKILLed mid-brain, twice, and an intake: their chats resume elsewhere within 60 s, redelivered, nothing lost, in order', async (t) => {
  const pg = await postgresOrSkip(t)
  if (pg === undefined) return
  const cluster = await startCluster(t, pg)
  const chats = Array.from({ length: 12 }, (_, i) => 92_000 + i)
  const sent = new Map<number, number[]>(chats.map((chat) => [chat, []]))
  const posts: Promise<void>[] = []
  const long = new Set<number>()
  const send = (count: number, from: number): void => {
    for (let i = from; i < from + count; i++) {
      const chat = chats[i % chats.length] as number
      // Every fourth message runs 2 s, so that a kill finds brains running.
      const update = cluster.emu.sendText({ chatId: chat, text: i % 4 === 0 ? `m${i} sleep=2` : `m${i}` })
      if (i % 4 === 0) long.add(update.update_id)
      sent.get(chat)?.push(update.update_id)
      posts.push(deliver(cluster, update, cluster.intakes[i % 2] as ServiceProcess))
    }
  }
  const kills: { worker: string; at: number; inFlight: number[] }[] = []
  const killBusiest = async (): Promise<void> => {
    // A worker running a 2 s brain that started under a second ago: it is still running when the kill lands.
    const busy = await eventually(() => {
      const running = inFlight(cluster.runs()).filter((run) => long.has(run.updateId) && Date.now() - run.at < 1000)
      const [worker] = [...cluster.workers.keys()].filter((name) => cluster.workers.get(name)?.running && running.some((run) => run.worker === name))
      return worker
    }, 30_000, 'a worker running a long brain')
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
