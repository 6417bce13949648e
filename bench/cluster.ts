// The Postgres mode (DATABASE_URL, `serve --role`), on a throwaway Postgres: one intake's 👀 latency
// and throughput, the delays the shared queue adds before a brain starts, and how brain throughput
// grows with worker hosts.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import autocannon, { type Result } from 'autocannon'
import { startEmulator, type BotApiEmulator } from '../src/emulator/index.js'
import { startTestPostgres, type TestPostgres } from '../test/helpers/postgres.js'
import { RATE_PER_S as ACK_RATE_PER_S, measured, sendSteadily, type Run } from './ack-latency.js'
import {
  HEADERS,
  SLOTS,
  TOKEN,
  WEBHOOK_PATH,
  cpuSecondsOf,
  delay,
  pointWebhookAt,
  registerChats,
  startEmulatorProcess,
  startService,
  tempDir,
  textUpdate,
  type LogLine,
  type RunningService,
} from './harness.js'
import { table, verdict, type Section, type TargetResult } from './report.js'
import { fmt, summarize, withMissing, type Summary } from './stats.js'

const ACK_TARGET_MS = 20
const THROUGHPUT_TARGET_PER_S = 1000
const START_TARGET_MS = 50
const NEXT_TARGET_MS = 100
const LINEAR_TARGET = 0.8
const WARM_UP_S = 1
const WARM_UP_CHAT_BASE = 500_000
// Intake throughput: autocannon's connections, over this many chats the emulator knows.
const CONNECTIONS = 10
const THROUGHPUT_CHATS = 1000
const THROUGHPUT_CHAT_BASE = 700_000
// Enqueue → brain started: one message a chat, this many a second, so a slot is always free.
const DISPATCH_RATE_PER_S = 20
const DISPATCH_CHAT_BASE = 100_000
// A chat's next message: chats (no more than a worker's slots, so none waits for a slot) with a queue each.
const CHAIN_CHATS = SLOTS
const CHAIN_LENGTH = 15
const CHAIN_CHAT_BASE = 200_000
// Holds each chat's first brain while the rest of its messages are stored, so each next one is waiting.
const CHAIN_HOLD_S = 1
// Scaling: 200 ms brains over many chats, so per-chat order never limits the hosts.
const BRAIN_S = 0.2
const SCALE_CHATS = 60
const SCALE_CHAT_BASE = 300_000
const SCALE_WORKERS = [1, 2, 3] as const
// Brains ending in this first part after every worker is up are not counted (JIT, first spawns).
const SCALE_SETTLE_S = 1
// CPU busier than this, over the machine's cores, counts as saturated.
const SATURATED = 0.9

export interface ClusterOptions {
  readonly durationS: number
}

export async function clusterBenchmark({ durationS }: ClusterOptions): Promise<Section> {
  process.stdout.write(`cluster: a throwaway Postgres; intake ${durationS} s at ${ACK_RATE_PER_S}/s and saturated; dispatch; 1–3 workers × ${SLOTS} slots\n`)
  const postgres = await startTestPostgres()
  if ('skip' in postgres) return notRun(postgres.skip)
  const dir = tempDir('cluster')
  const brain = writeRunBrain(dir)
  try {
    const ack = await ackRun(postgres, durationS)
    const throughput = await throughputRun(postgres, durationS)
    const dispatch = await dispatchRun(postgres, brain, durationS)
    const scaling: ScaleRun[] = []
    for (const workers of SCALE_WORKERS) scaling.push(await scaleRun(postgres, brain, workers, durationS))
    return report({ ack, throughput, dispatch, scaling, durationS })
  } finally {
    await postgres.close()
  }
}

/** A host of the Postgres mode, as `coordinator serve --role <role>`. */
function startRole(postgresUrl: string, apiRoot: string, role: 'intake' | 'worker', env: Record<string, string> = {}): Promise<RunningService> {
  return startService({ apiRoot, args: ['--role', role], readLog: env['LOG_LEVEL'] === 'info', env: { DATABASE_URL: postgresUrl, ...env } })
}

// ---------------------------------------------------------------------------------------------
// 1. One intake: 👀 latency at a steady rate, and throughput at saturation.

/** Cores busy on average while measuring: the machine, this benchmark's processes, and everything else. */
interface Cores {
  readonly machine: number
  readonly intake: number
  readonly postgres: number | undefined
  readonly bench: number
}

type AckRun = Run & { readonly cores: Cores }

async function ackRun(postgres: TestPostgres, durationS: number): Promise<AckRun> {
  process.stdout.write(`cluster: 👀 at ${ACK_RATE_PER_S} updates/s for ${durationS} s, one intake\n`)
  // In this process, so that one clock times both the delivery and the reaction's arrival.
  const emulator = await startEmulator({ token: TOKEN })
  try {
    const databaseUrl = await postgres.createDatabase()
    const intake = await startRole(databaseUrl, emulator.url, 'intake')
    try {
      await pointWebhookAt(emulator.url, `${intake.url}${WEBHOOK_PATH}`)
      await sendSteadily(emulator, WARM_UP_S, WARM_UP_CHAT_BASE)
      await delay(500)
      const before = { machine: machineCpu(), intake: cpuSecondsOf(intake.child.pid), postgres: postgresCpuSeconds(databaseUrl), bench: process.cpuUsage() }
      const from = wallMs()
      const sent = await sendSteadily(emulator, durationS, 1)
      const seconds = (wallMs() - from) / 1000
      const postgresAfter = postgresCpuSeconds(databaseUrl)
      const bench = process.cpuUsage(before.bench)
      const cores: Cores = {
        machine: busyCores(before.machine, machineCpu()),
        intake: (cpuSecondsOf(intake.child.pid) - before.intake) / seconds,
        postgres: before.postgres === undefined || postgresAfter === undefined ? undefined : (postgresAfter - before.postgres) / seconds,
        bench: (bench.user + bench.system) / 1e6 / seconds,
      }
      await delay(1000)
      return { mode: 'api', ...measured(emulator, sent), health: summarize([]), cores }
    } finally {
      await intake.child.stop()
    }
  } finally {
    await emulator.close()
  }
}

interface Throughput {
  readonly rps: number
  readonly p99: number
  readonly non2xx: number
  readonly errors: number
  /** CPU cores busy, on average, while saturated. */
  readonly cores: { readonly intake: number; readonly postgres: number | undefined; readonly emulator: number; readonly machine: number }
}

async function throughputRun(postgres: TestPostgres, durationS: number): Promise<Throughput> {
  process.stdout.write(`cluster: one intake saturated for ${durationS} s, ${CONNECTIONS} connections\n`)
  const emulator = await startEmulatorProcess()
  try {
    await registerChats(emulator.url, Array.from({ length: THROUGHPUT_CHATS }, (_, i) => THROUGHPUT_CHAT_BASE + i))
    const databaseUrl = await postgres.createDatabase()
    const intake = await startRole(databaseUrl, emulator.url, 'intake')
    try {
      await hammer(intake.url, WARM_UP_S)
      const before = { intake: cpuSecondsOf(intake.child.pid), postgres: postgresCpuSeconds(databaseUrl), emulator: cpuSecondsOf(emulator.child.pid), machine: machineCpu() }
      const result = await hammer(intake.url, durationS)
      const busy = machineCpu()
      const postgresAfter = postgresCpuSeconds(databaseUrl)
      return {
        rps: result.requests.total / durationS,
        p99: result.latency.p99,
        non2xx: result.non2xx,
        errors: result.errors + result.timeouts,
        cores: {
          intake: (cpuSecondsOf(intake.child.pid) - before.intake) / durationS,
          postgres: before.postgres === undefined || postgresAfter === undefined ? undefined : (postgresAfter - before.postgres) / durationS,
          emulator: (cpuSecondsOf(emulator.child.pid) - before.emulator) / durationS,
          machine: busyCores(before.machine, busy),
        },
      }
    } finally {
      await intake.child.stop()
    }
  } finally {
    await emulator.child.stop()
  }
}

let nextUpdateId = 1

function hammer(url: string, seconds: number): Promise<Result> {
  return autocannon({
    url,
    connections: CONNECTIONS,
    duration: seconds,
    requests: [
      {
        method: 'POST',
        path: WEBHOOK_PATH,
        headers: HEADERS,
        setupRequest: (request) => ({
          ...request,
          body: textUpdate(nextUpdateId++, THROUGHPUT_CHAT_BASE + Math.floor(Math.random() * THROUGHPUT_CHATS), 1, 'silent'),
        }),
      },
    ],
  })
}

// ---------------------------------------------------------------------------------------------
// 2. Through the shared queue: enqueue → brain started, and a chat's next message after a reply.

interface Dispatch {
  /** The intake's 'message accepted' (its pino time) → the brain's first instruction. */
  readonly start: Summary
  /** The emulator starts the webhook POST → the brain's first instruction. */
  readonly endToEnd: Summary
  /** The emulator receives a chat's reply → the brain of that chat's next message starts. */
  readonly next: Summary
  /** Next messages not yet stored when the previous reply arrived: left out of `next`. */
  readonly notQueued: number
}

async function dispatchRun(postgres: TestPostgres, brain: RunBrain, durationS: number): Promise<Dispatch> {
  const count = Math.max(20, Math.round(durationS * DISPATCH_RATE_PER_S))
  process.stdout.write(`cluster: ${count} messages at ${DISPATCH_RATE_PER_S}/s to an intake and a worker; then ${CHAIN_CHATS} chats × ${CHAIN_LENGTH}\n`)
  const emulator = await startEmulator({ token: TOKEN })
  const services: RunningService[] = []
  try {
    const databaseUrl = await postgres.createDatabase()
    const intake = await startRole(databaseUrl, emulator.url, 'intake', { LOG_LEVEL: 'info' })
    services.push(intake)
    services.push(await startRole(databaseUrl, emulator.url, 'worker', brain.env))
    await pointWebhookAt(emulator.url, `${intake.url}${WEBHOOK_PATH}`)
    const send = async (n: number, firstChat: number): Promise<number[]> => {
      const updateIds: number[] = []
      const start = performance.now()
      for (let i = 0; i < n; i++) {
        const wait = start + (i * 1000) / DISPATCH_RATE_PER_S - performance.now()
        if (wait > 1) await delay(wait)
        updateIds.push(emulator.sendText({ chatId: firstChat + i, text: 'go' }).update_id)
      }
      return updateIds
    }
    await waitForRuns(brain, await send(DISPATCH_RATE_PER_S, WARM_UP_CHAT_BASE), 'end')
    const updateIds = await send(count, DISPATCH_CHAT_BASE)
    const runs = await waitForRuns(brain, updateIds, 'start')
    const accepted = acceptedTimes(intake.child.logs)
    const sentAt = new Map(emulator.deliveries.filter((d) => d.attempt === 1).map((d) => [d.update_id, performance.timeOrigin + d.sentAt]))
    const starts: number[] = []
    const endToEnd: number[] = []
    for (const id of updateIds) {
      const started = runs.get(id)?.start
      const acceptedAt = accepted.get(id)
      const posted = sentAt.get(id)
      if (started !== undefined && acceptedAt !== undefined) starts.push(started - acceptedAt)
      if (started !== undefined && posted !== undefined) endToEnd.push(started - posted)
    }

    // Each chat's first message holds its brain a while; the rest queue behind it, and each runs once
    // the one before has replied.
    const chains = Array.from({ length: CHAIN_CHATS }, (_, c) =>
      Array.from({ length: CHAIN_LENGTH }, (_, k) => emulator.sendText({ chatId: CHAIN_CHAT_BASE + c, text: k === 0 ? `sleep=${CHAIN_HOLD_S}` : 'go' }).update_id),
    )
    const chainRuns = await waitForRuns(brain, chains.flat(), 'end')
    await delay(500)
    const replied = replyTimes(emulator)
    const acceptedNow = acceptedTimes(intake.child.logs)
    const gaps: number[] = []
    let notQueued = 0
    let missing = 0
    for (const chain of chains) {
      for (let k = 1; k < chain.length; k++) {
        const previousReply = replied.get(chain[k - 1] as number)
        const id = chain[k] as number
        const started = chainRuns.get(id)?.start
        const acceptedAt = acceptedNow.get(id)
        if (previousReply === undefined || started === undefined) missing++
        else if (acceptedAt === undefined || acceptedAt > previousReply) notQueued++
        else gaps.push(started - previousReply)
      }
    }
    return { start: summarize(starts, updateIds.length - starts.length), endToEnd: summarize(endToEnd), next: summarize(gaps, missing), notQueued }
  } finally {
    for (const service of services) await service.child.stop()
    await emulator.close()
  }
}

/** update_id → when the intake logged 'message accepted' (the update and its wake-up job committed). */
function acceptedTimes(logs: readonly LogLine[]): Map<number, number> {
  const accepted = new Map<number, number>()
  for (const line of logs) {
    if (line.msg === 'message accepted' && typeof line['update_id'] === 'number') accepted.set(line['update_id'], line.time)
  }
  return accepted
}

/** update_id → wall-clock ms when the emulator received the brain's reply ("reply <update_id>"). */
function replyTimes(emulator: BotApiEmulator): Map<number, number> {
  const replied = new Map<number, number>()
  for (const call of emulator.callsOf('sendMessage')) {
    const match = /^reply (\d+)$/u.exec(String(call.params['text']))
    if (call.ok && match?.[1]) replied.set(Number(match[1]), performance.timeOrigin + call.at)
  }
  return replied
}

// ---------------------------------------------------------------------------------------------
// 3. Brain throughput with 1, 2, 3 workers.

interface ScaleRun {
  readonly workers: number
  readonly perS: number
  readonly windowS: number
  /** Brains still waiting when the window closed: the queue never ran dry. */
  readonly backlogLeft: boolean
  /** Cores busy on average over the window: the whole machine, the workers (with their brains), Postgres, the bench's process (intake's emulator). */
  readonly cores: Cores & { readonly workers: number }
  readonly loadAverage: number
}

async function scaleRun(postgres: TestPostgres, brain: RunBrain, workers: number, durationS: number): Promise<ScaleRun> {
  const ideal = (workers * SLOTS) / BRAIN_S
  // Enough for the settling time, the window, and a margin: the queue must not run dry in the window.
  const backlog = Math.ceil(ideal * (SCALE_SETTLE_S + durationS) * 1.5)
  process.stdout.write(`cluster: ${workers} worker(s) × ${SLOTS} slots, ${BRAIN_S * 1000} ms brains, ${backlog} messages over ${SCALE_CHATS} chats\n`)
  fs.writeFileSync(brain.log, '')
  const emulator = await startEmulator({ token: TOKEN })
  const services: RunningService[] = []
  try {
    const databaseUrl = await postgres.createDatabase()
    const intake = await startRole(databaseUrl, emulator.url, 'intake')
    services.push(intake)
    await pointWebhookAt(emulator.url, `${intake.url}${WEBHOOK_PATH}`)
    const ids = new Set<number>()
    for (let i = 0; i < backlog; i++) ids.add(emulator.sendText({ chatId: SCALE_CHAT_BASE + (i % SCALE_CHATS), text: `sleep=${BRAIN_S}` }).update_id)
    await waitFor(() => emulator.deliveries.filter((d) => ids.has(d.update_id) && d.status === 200).length === ids.size, 60_000, `${backlog} updates stored`)
    const started = await Promise.all(Array.from({ length: workers }, () => startRole(databaseUrl, emulator.url, 'worker', brain.env)))
    services.push(...started)
    await delay(SCALE_SETTLE_S * 1000)
    const from = wallMs()
    const before = {
      machine: machineCpu(),
      workers: started.map((worker) => cpuWithChildrenOf(worker.child.pid)),
      intake: cpuSecondsOf(intake.child.pid),
      postgres: postgresCpuSeconds(databaseUrl),
      bench: process.cpuUsage(),
    }
    await delay(durationS * 1000)
    const to = wallMs()
    const windowS = (to - from) / 1000
    const machine = busyCores(before.machine, machineCpu())
    const workerCores = started.reduce((sum, worker, i) => sum + cpuWithChildrenOf(worker.child.pid) - (before.workers[i] as number), 0) / windowS
    const postgresAfter = postgresCpuSeconds(databaseUrl)
    const bench = process.cpuUsage(before.bench)
    const cores = {
      machine,
      workers: workerCores,
      intake: (cpuSecondsOf(intake.child.pid) - before.intake) / windowS,
      postgres: before.postgres === undefined || postgresAfter === undefined ? undefined : (postgresAfter - before.postgres) / windowS,
      bench: (bench.user + bench.system) / 1e6 / windowS,
    }
    const loadAverage = os.loadavg()[0] ?? Number.NaN
    const runs = readRuns(brain.log)
    let ended = 0
    let startedLater = 0
    for (const run of runs.values()) {
      if (run.end !== undefined && run.end >= from && run.end < to) ended++
      if (run.start !== undefined && run.start >= to) startedLater++
    }
    const left = backlog - runs.size
    return { workers, perS: ended / windowS, windowS, backlogLeft: left > 0 || startedLater > 0, cores, loadAverage }
  } finally {
    // Workers first, so none is left waiting on a database that went away.
    for (const service of services.reverse()) await service.child.stop()
    await emulator.close()
  }
}

// ---------------------------------------------------------------------------------------------
// The brain, and what it records.

interface RunBrain {
  readonly log: string
  readonly env: Record<string, string>
}

/**
 * Writes a brain that records its start and end (wall clock, µs, from bash's $EPOCHREALTIME: no
 * process of its own), sleeps `sleep=S` seconds when the message says so, and replies
 * "reply <update_id>". The worker must pass BENCH_BRAIN_LOG through (BRAIN_ENV_ALLOW).
 */
function writeRunBrain(dir: string): RunBrain {
  const brain = path.join(dir, 'run-brain')
  fs.writeFileSync(
    brain,
    [
      '#!/bin/bash',
      'printf \'start %s %s\\n\' "$COORDINATOR_UPDATE_ID" "$EPOCHREALTIME" >> "$BENCH_BRAIN_LOG"',
      'input=$(cat)',
      'case $input in *sleep=*) s=${input#*sleep=}; sleep "${s%%[!0-9.]*}" ;; esac',
      'printf \'end %s %s\\n\' "$COORDINATOR_UPDATE_ID" "$EPOCHREALTIME" >> "$BENCH_BRAIN_LOG"',
      'echo "reply $COORDINATOR_UPDATE_ID"',
      '',
    ].join('\n'),
    { mode: 0o755 },
  )
  const log = path.join(dir, 'runs.log')
  fs.writeFileSync(log, '')
  // The brain's working directory is the one place outside its chat that a sandboxed brain may write.
  return {
    log,
    env: { BRAIN_COMMAND: brain, BRAIN_CWD: dir, BRAIN_ENV_ALLOW: 'BENCH_BRAIN_LOG', BENCH_BRAIN_LOG: log, MAX_CONCURRENT_BRAINS: String(SLOTS) },
  }
}

interface BrainRun {
  start?: number
  end?: number
}

/** The brain's log: update_id → wall-clock ms of its start and end. */
function readRuns(log: string): Map<number, BrainRun> {
  const runs = new Map<number, BrainRun>()
  for (const line of fs.readFileSync(log, 'utf8').split('\n')) {
    const [event, updateId, seconds] = line.trim().split(' ')
    if ((event !== 'start' && event !== 'end') || !updateId || !seconds) continue
    const run = runs.get(Number(updateId)) ?? {}
    // The first start counts: a redelivered message would start again.
    if (run[event] === undefined) run[event] = Number(seconds.replace(',', '.')) * 1000
    runs.set(Number(updateId), run)
  }
  return runs
}

async function waitForRuns(brain: RunBrain, updateIds: readonly number[], event: 'start' | 'end'): Promise<Map<number, BrainRun>> {
  let runs = new Map<number, BrainRun>()
  await waitFor(
    () => {
      runs = readRuns(brain.log)
      return updateIds.every((id) => runs.get(id)?.[event] !== undefined)
    },
    60_000,
    `${updateIds.length} brains to ${event}`,
  )
  return runs
}

async function waitFor(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!done()) {
    if (Date.now() > until) throw new Error(`cluster: no ${what} within ${timeoutMs / 1000} s`)
    await delay(50)
  }
}

// ---------------------------------------------------------------------------------------------
// CPU: the machine's, and Postgres's.

const wallMs = (): number => performance.timeOrigin + performance.now()

/** /proc/stat's first line: the machine's busy and total CPU time so far, in ticks. */
interface MachineCpu {
  readonly busy: number
  readonly total: number
}

function machineCpu(): MachineCpu {
  const [, ...fields] = (fs.readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/u)
  // user nice system idle iowait irq softirq steal (guest time is already in user).
  const ticks = fields.slice(0, 8).map(Number)
  const total = ticks.reduce((sum, tick) => sum + tick, 0)
  return { busy: total - (ticks[3] ?? 0) - (ticks[4] ?? 0), total }
}

/** Cores busy on average between two readings: busy share × the machine's cores. */
function busyCores(before: MachineCpu, after: MachineCpu): number {
  return ((after.busy - before.busy) / Math.max(1, after.total - before.total)) * os.cpus().length
}

// /proc/<pid>/stat counts CPU time in clock ticks (USER_HZ, 100 on Linux).
const TICKS_PER_S = 100

/** A process's CPU seconds with those of its children it has reaped (a worker's brains, a postmaster's backends). */
function cpuWithChildrenOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / TICKS_PER_S
}

/**
 * CPU seconds of the Postgres server behind `databaseUrl` (the postmaster, its live processes, and
 * those it reaped), when it is a throwaway cluster whose directory is the URL's socket host;
 * undefined for a server given from outside.
 */
function postgresCpuSeconds(databaseUrl: string): number | undefined {
  let postmaster: number
  try {
    const dir = decodeURIComponent(new URL(databaseUrl).host)
    postmaster = Number(fs.readFileSync(path.join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0])
  } catch {
    return undefined
  }
  let seconds = cpuWithChildrenOf(postmaster)
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/u.test(entry)) continue
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(fields[1]) === postmaster) seconds += cpuSecondsOf(Number(entry))
    } catch {
      // gone meanwhile
    }
  }
  return seconds
}

// ---------------------------------------------------------------------------------------------
// The report.

interface Results {
  readonly ack: AckRun
  readonly throughput: Throughput
  readonly dispatch: Dispatch
  readonly scaling: readonly ScaleRun[]
  readonly durationS: number
}

const cores = (value: number | undefined): string => (value === undefined ? '–' : fmt(value, 2))

/** Cores busy with what this benchmark did not start: the machine's other work while it measured. */
const othersOf = ({ machine, intake, postgres, bench, workers = 0 }: Cores & { readonly workers?: number }): number =>
  Math.max(0, machine - workers - intake - (postgres ?? 0) - bench)

/** CPU µs per update, from cores busy and updates per second. */
const perUpdate = (busy: number | undefined, rps: number): string => (busy === undefined ? '–' : fmt((busy * 1e6) / rps, 0))

function report({ ack, throughput, dispatch, scaling, durationS }: Results): Section {
  const one = scaling.find((run) => run.workers === 1)
  const linearOf = (run: ScaleRun): number => (one === undefined ? Number.NaN : run.perS / (run.workers * one.perS))
  const machineCores = os.cpus().length
  const scaleRows = scaling.map((run) => [
    String(run.workers),
    String(run.workers * SLOTS),
    fmt(run.perS, 1),
    fmt((run.workers * SLOTS) / BRAIN_S, 0),
    fmt(run.perS / ((run.workers * SLOTS) / BRAIN_S), 2),
    fmt(linearOf(run), 2),
    `${cores(run.cores.machine)} of ${machineCores}`,
    cores(run.cores.workers),
    cores(run.cores.postgres),
    cores(run.cores.intake),
    cores(run.cores.bench),
    cores(othersOf(run.cores)),
    fmt(run.loadAverage, 2),
    run.backlogLeft ? 'yes' : '**no**',
  ])
  const scaleTargets: TargetResult[] = scaling
    .filter((run) => run.workers > 1)
    .map((run) => {
      const ratio = linearOf(run)
      const saturated = run.cores.machine / machineCores >= SATURATED
      return {
        target: `brain throughput, ${run.workers} workers × ${SLOTS} slots, ${BRAIN_S * 1000} ms brains ≥ ${LINEAR_TARGET} × linear`,
        measured: `${fmt(ratio, 2)} (${fmt(run.perS, 1)} vs ${run.workers} × ${fmt(one?.perS ?? Number.NaN, 1)} messages/s)`,
        met: ratio >= LINEAR_TARGET && run.backlogLeft,
        whenMissed:
          `In this run the machine's CPU was ${fmt((100 * run.cores.machine) / machineCores, 0)}% busy over its ${machineCores} cores during the window ` +
          `(${saturated ? 'saturated' : 'not saturated'}): workers with their brains ${cores(run.cores.workers)} cores, Postgres ${cores(run.cores.postgres)}, ` +
          `intake ${cores(run.cores.intake)}, the bench's process (emulator) ${cores(run.cores.bench)}, other processes ${cores(othersOf(run.cores))}; ` +
          `1-minute load average ${fmt(run.loadAverage, 2)}. ` +
          `One worker used ${cores(one?.cores.workers)} cores for ${fmt(one?.perS ?? Number.NaN, 1)} messages/s.` +
          (run.backlogLeft ? '' : ' The queue ran dry before the window closed.'),
      }
    })
  const targets: TargetResult[] = [
    {
      target: `👀 p99 ≤ ${ACK_TARGET_MS} ms at ${ACK_RATE_PER_S} updates/s, one intake (Postgres mode)`,
      measured: withMissing(ack.ack, ack.ack.p99),
      met: ack.ack.p99 <= ACK_TARGET_MS && ack.ack.missing === 0,
      whenMissed:
        `In this run: 👀 p50 ${fmt(ack.ack.p50)} ms, max ${fmt(ack.ack.max)} ms; webhook answer p99 ${withMissing(ack.answer, ack.answer.p99)}; ` +
        `cores busy meanwhile: intake ${cores(ack.cores.intake)}, Postgres ${cores(ack.cores.postgres)}, the bench's process (emulator) ${cores(ack.cores.bench)}, ` +
        `other processes ${cores(othersOf(ack.cores))}, the whole machine ${cores(ack.cores.machine)} of ${machineCores}.`,
    },
    {
      target: `one intake ≥ ${THROUGHPUT_TARGET_PER_S} updates/s (Postgres mode)`,
      measured: `${fmt(throughput.rps, 0)} updates/s (${throughput.non2xx} non-2xx, ${throughput.errors} errors)`,
      met: throughput.rps >= THROUGHPUT_TARGET_PER_S && throughput.non2xx === 0 && throughput.errors === 0,
      whenMissed:
        `In this run, while saturated, the machine's ${machineCores} cores were ${fmt((100 * throughput.cores.machine) / machineCores, 0)}% busy: ` +
        `intake ${cores(throughput.cores.intake)} cores, Postgres ${cores(throughput.cores.postgres)}, emulator ${cores(throughput.cores.emulator)}, the rest autocannon and others; ` +
        `CPU per update: intake ${perUpdate(throughput.cores.intake, throughput.rps)} µs, Postgres ${perUpdate(throughput.cores.postgres, throughput.rps)} µs.`,
    },
    {
      target: `enqueue → brain started p50 ≤ ${START_TARGET_MS} ms`,
      measured: withMissing(dispatch.start, dispatch.start.p50),
      met: dispatch.start.p50 <= START_TARGET_MS && dispatch.start.missing === 0,
      whenMissed: `In this run: p99 ${fmt(dispatch.start.p99)} ms; webhook POST → brain started p50 ${fmt(dispatch.endToEnd.p50)} ms.`,
    },
    {
      target: `a chat's next message starts ≤ ${NEXT_TARGET_MS} ms (p50) after the previous reply`,
      measured: withMissing(dispatch.next, dispatch.next.p50),
      met: dispatch.next.p50 <= NEXT_TARGET_MS && dispatch.next.missing === 0,
      whenMissed: `In this run: p99 ${fmt(dispatch.next.p99)} ms over ${dispatch.next.n} pairs.`,
    },
    ...scaleTargets,
  ]
  return {
    title: 'Postgres mode (serve --role)',
    method: [
      `A throwaway Postgres (initdb in a temporary directory, a unix socket, fsync off: test/helpers/postgres.ts), a fresh database per part,`,
      `and \`coordinator serve --role intake|worker\` processes on it. **👀**: the emulator in the bench's process delivers ${ACK_RATE_PER_S} updates/s`,
      `for ${durationS} s to one intake (no worker), timed as in the 👀 latency benchmark. **Throughput**: autocannon, ${CONNECTIONS} connections, ${durationS} s`,
      `against one intake, the emulator in its own process. **Dispatch**: an intake and one worker (${SLOTS} slots); a brain that stamps its`,
      `first instruction ($EPOCHREALTIME) and replies at once; ${DISPATCH_RATE_PER_S} messages/s, one per chat, timed from the intake's`,
      `"message accepted" log line (the update and its wake-up job committed); then ${CHAIN_CHATS} chats × ${CHAIN_LENGTH} messages, each first one held`,
      `${CHAIN_HOLD_S} s, timed from the emulator's receipt of a reply to the start of that chat's next brain. **Scaling**: a backlog over ${SCALE_CHATS} chats`,
      `stored through the intake, then 1, 2 or 3 workers × ${SLOTS} slots started on it, ${BRAIN_S * 1000} ms brains; the brains that end in a ${durationS} s window`,
      `(after ${SCALE_SETTLE_S} s of settling) are counted. Everything shares this machine's ${machineCores} cores.`,
    ].join('\n'),
    body: [
      table(
        ['measure', 'n', 'p50 ms', 'p99 ms', 'max ms', 'missing'],
        (
          [
            ['👀 (webhook POST → setMessageReaction)', ack.ack],
            ['webhook answer', ack.answer],
            ['enqueue → brain started', dispatch.start],
            ['webhook POST → brain started', dispatch.endToEnd],
            ['reply → next message of the chat started', dispatch.next],
          ] as const
        ).map(([name, s]) => [name, String(s.n), fmt(s.p50), fmt(s.p99), fmt(s.max), String(s.missing)]),
      ),
      '',
      `During the 👀 run, cores busy: intake ${cores(ack.cores.intake)}, Postgres ${cores(ack.cores.postgres)}, the bench's process (emulator) ${cores(ack.cores.bench)},`,
      `other processes ${cores(othersOf(ack.cores))}, the whole machine ${cores(ack.cores.machine)} of ${machineCores}.`,
      '',
      `Intake saturated: **${fmt(throughput.rps, 0)} updates/s**, p99 ${fmt(throughput.p99, 1)} ms, ${throughput.non2xx} non-2xx, ${throughput.errors} errors;`,
      `cores busy meanwhile: intake ${cores(throughput.cores.intake)}, Postgres ${cores(throughput.cores.postgres)}, emulator ${cores(throughput.cores.emulator)},`,
      `the whole machine ${cores(throughput.cores.machine)} of ${machineCores}; CPU per update: intake ${perUpdate(throughput.cores.intake, throughput.rps)} µs,`,
      `Postgres ${perUpdate(throughput.cores.postgres, throughput.rps)} µs.` +
        (dispatch.notQueued > 0 ? ` ${dispatch.notQueued} next messages were not yet stored when the previous reply came and are left out.` : ''),
      '',
      table(
        ['workers', 'slots', 'messages/s', 'ideal/s', '÷ ideal', '÷ linear', 'machine cores busy', 'workers + brains', 'Postgres', 'intake', 'bench (emulator)', 'other processes', 'load avg', 'backlog left'],
        scaleRows,
      ),
      '',
      `"ideal" is slots ÷ ${BRAIN_S} s; "linear" is the number of workers × one worker's measured rate. Cores busy: CPU seconds per second`,
      `over the window (/proc/stat for the machine; /proc/<pid>/stat with reaped children for the processes).`,
      '',
      ...targets.map((t) => `- ${t.target}: **${t.measured}** (${verdict(t.met)})`),
    ].join('\n'),
    targets,
  }
}

function notRun(why: string): Section {
  return {
    title: 'Postgres mode (serve --role)',
    method: 'Needs a Postgres server: a throwaway cluster from Debian\'s postgresql package, or COORDINATOR_TEST_DATABASE_URL.',
    body: `Not run: ${why}.`,
    targets: [{ target: 'Postgres mode targets (intake, dispatch, scaling)', measured: `not run: ${why}`, met: false }],
  }
}
