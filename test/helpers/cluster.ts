import type { Test } from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { Update } from 'grammy/types'
import { ServiceProcess } from '../../src/demo/service.js'
import { startEmulator, type BotApiEmulator, type RecordedCall } from '../../src/emulator/index.js'
import type { TestPostgres } from './postgres.js'
import { CLI, COMPILE_CACHE_ENV, ROOT, SANDBOX_ENV, SECRET, TOKEN, delay, tempDir } from './service.js'

// Intakes and workers on one Postgres, started as real processes, for the cluster tests (test/cluster*.test.ts).
export const BRAIN = path.join(ROOT, 'test/fixtures/cluster-brain.sh')
export const SLOTS = 2

export interface Run {
  readonly ev: 'start' | 'end'
  readonly updateId: number
  readonly chatId: number
  readonly worker: string
  readonly redelivered: boolean
  readonly at: number
}

export interface Cluster {
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

export async function startCluster(t: Test, pg: TestPostgres, { intakes = 2, workers = 3, env = {} as Record<string, string> } = {}): Promise<Cluster> {
  const databaseUrl = await pg.createDatabase()
  const emu = await startEmulator({ token: TOKEN, deliveryRetryMs: 200, deliveryRetryMaxMs: 1000 })
  const shared = tempDir('coordinator-cluster-')
  const runLog = path.join(shared, 'runs.log')
  fs.writeFileSync(runLog, '')
  const base = {
    ...SANDBOX_ENV,
    ...COMPILE_CACHE_ENV,
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
export function deliver(cluster: Cluster, update: Update, intake: ServiceProcess): Promise<void> {
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
export function maxOverlap(runs: readonly Run[], key: (run: Run) => string): Map<string, number> {
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
export function checkAnswered(t: Test, cluster: Cluster, sent: Map<number, number[]>, killedRuns: ReadonlySet<number> = new Set()): void {
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

/** Brains started and not yet ended. */
export function inFlight(runs: readonly Run[]): Run[] {
  const ended = new Set(runs.filter((run) => run.ev === 'end').map((run) => `${run.updateId}/${run.worker}`))
  return runs.filter((run) => run.ev === 'start' && !ended.has(`${run.updateId}/${run.worker}`))
}
