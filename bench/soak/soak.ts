import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { Api } from 'grammy'
import type { Message } from 'grammy/types'
import { startEmulator, type BotApiEmulator, type RecordedCall } from '../../src/emulator/index.js'
import { ServiceProcess, type ServiceLogLine } from '../../src/demo/service.js'
import { percentile } from '../../src/percentile.js'
import { carriesEnv, fdsOf, processes, statusKb } from '../../test/helpers/proc.js'
import { ROOT } from '../../test/helpers/root.js'

// Resolved from the project's root, so the soak runs from any working directory.
const CLI_PATH = path.join(ROOT, 'dist/cli.js')
const TOKEN = '123456:SOAK-token'
const ACK_EMOJI = '👀'
const USAGE = 'usage: scripts/soak [--minutes N] [--rate M] [--fail F] [--chats C] [--slots S] [--long-brain]'

/** What the soak does when not told otherwise. */
export const SOAK_DEFAULTS = { minutes: 1, rate: 5, fail: 0.1, chats: 20, slots: 4 } as const
// The main service's limits: a hanging brain is stopped quickly, so failures stay cheap.
const BRAIN_TIMEOUT_S = 3
const KILL_GRACE_S = 1
// An answering brain sleeps this long (uniformly at random) before it replies.
const ANSWER_DELAY_S = { min: 0.05, max: 0.5 } as const
// Of the failing messages, this share hangs into the timeout; the rest exit 1.
const HANG_SHARE = 1 / 3
// The live criteria: a brain that runs this long on a service that allows it.
const LONG_BRAIN_S = 250
const LONG_BRAIN_TIMEOUT_S = 330
const LONG_BRAIN_FROM_MINUTES = 5
const ACK_WITHIN_MS = 1000
const ACK_PAIR_GAP_MS = 2000
const HEALTHZ_EVERY_MS = 1000
const HEALTHZ_FRESH_MS = 1000
const REPORT_EVERY_MS = 10_000
const TICK_MS = 20
// After the last message: how long the answers may take to arrive.
const DRAIN_MS = 60_000
// Back to where it started: after the soak, RSS may stay this much above its warmed-up level.
const RSS_SLACK_MB = 64
const SETTLE_MS = 15_000
const WARM_UP_MS = 5000
// The RSS trend is fitted to the status lines' readings from this point on, once caches and JIT settle.
const TREND_WARM_UP_MS = 60_000
const TREND_MIN_READINGS = 3
// A long soak is judged by whether RSS still rises in its second half, not by one reading at the
// end (which falls anywhere on the garbage collector's sawtooth): a leak keeps rising, a heap that
// settled does not. Shorter soaks keep the end-point check against RSS_SLACK_MB.
const LATE_TREND_MIN_READINGS = 10
const RSS_RISE_LIMIT_MB_PER_10_MIN = 5

export interface SoakOptions {
  readonly minutes: number
  /** Messages per second. */
  readonly rate: number
  /** Share of messages whose brain fails (exit 1, or a hang into the timeout). */
  readonly fail: number
  readonly chats: number
  readonly slots: number
  readonly longBrain: boolean
}

type Plan = 'answer' | 'fail' | 'hang'

/** A message the soak sent, and what became of it. */
interface Tracked {
  readonly plan: Plan
  readonly chatId: number
  readonly messageId: number
  readonly sentAt: number
  answers: string[]
  ackAt: number | undefined
}

// One brain for every soak message, written into the state directory: a shell script, so that its
// start-up costs little next to the service's. The message text says what it does.
const SOAK_BRAIN = `#!/bin/sh
# The soak's brain. The message text is "soak <n> answer <seconds>", "soak <n> fail", "soak <n> hang"
# or "soak <n> long <seconds>" (progress on fd 3 every 10 s).
IFS= read -r input || true
text=\${input#*\\"text\\":\\"}
text=\${text%%\\"*}
set -- $text
case $3 in
  answer)
    sleep "$4"
    echo "soak $2 answered"
    ;;
  fail)
    echo "soak $2 failing on purpose" >&2
    exit 1
    ;;
  hang) sleep 3600 ;;
  long)
    waited=0
    while [ "$waited" -lt "$4" ]; do
      sleep 10
      waited=$((waited + 10))
      printf '{"type":"progress","text":"long brain: %s s"}\\n' "$waited" >&3
    done
    echo "soak $2 long brain done after $4 s"
    ;;
  *) echo "soak brain: unknown message: $text" ;;
esac
`

/** The service under soak (the shared ServiceProcess), its log counted as it is read, not kept. */
class SoakService {
  /** Every brain's pid (its process group id), from `child started`. */
  readonly brainPids = new Set<number>()
  /** Attempts that timed out without a process: they waited for a slot past their deadline. */
  timedOutUnstarted = 0
  longBrainMs: number | undefined
  errors = 0
  #process: ServiceProcess | undefined

  /** Starts the service and resolves once it listens. */
  static async start(env: Record<string, string>): Promise<SoakService> {
    const service = new SoakService()
    service.#process = await ServiceProcess.start(CLI_PATH, env, { keepLogs: false, onLog: (line) => service.#take(line) })
    return service
  }

  get #running(): ServiceProcess {
    if (!this.#process) throw new Error('the soak service was not started')
    return this.#process
  }

  get pid(): number {
    return this.#running.pid
  }

  get url(): string {
    return this.#running.url
  }

  /** SIGTERM, then the exit code once it has drained. */
  async stop(): Promise<number | null> {
    return (await this.#running.stop()).code
  }

  #take(line: ServiceLogLine): void {
    const pid = typeof line['child_pid'] === 'number' ? line['child_pid'] : undefined
    if (line.level >= 50) this.errors++
    switch (line.msg) {
      case 'child started':
        if (pid !== undefined) this.brainPids.add(pid)
        break
      case 'child reaped':
        if (pid === undefined && line['outcome'] === 'timed_out') this.timedOutUnstarted++
        if (typeof line['duration_ms'] === 'number' && line['duration_ms'] > LONG_BRAIN_S * 900) this.longBrainMs = line['duration_ms']
        break
    }
  }
}

/** What /proc says about a process: resident memory, open fds (sockets apart), children. */
function processStats(pid: number): { rssMb: number; fds: number; sockets: number; otherFds: string[]; children: number } {
  let rssKb = 0
  try {
    rssKb = statusKb(pid, 'VmRSS')
  } catch {
    // the process is gone
  }
  const { sockets, others } = fdsOf(pid)
  const children = processes().filter((process) => process.ppid === pid).length
  return { rssMb: rssKb / 1024, fds: sockets + others.length, sockets, otherFds: others, children }
}

/**
 * Live processes a brain left behind (they carry the run's marker, which the service passes on to
 * its brains and so carries itself), and zombies of the service.
 */
function leftovers(servicePid: number, marker: string, services: readonly number[]): { alive: number[]; zombies: number[] } {
  const all = processes()
  const carries = (pid: number): boolean => carriesEnv(pid, `SOAK_RUN=${marker}`)
  return {
    alive: all.filter((p) => p.state !== 'Z' && p.state !== 'X' && !services.includes(p.pid) && carries(p.pid)).map((p) => p.pid),
    zombies: all.filter((p) => p.state === 'Z' && p.ppid === servicePid).map((p) => p.pid),
  }
}

/** The emulator and the service registered as its webhook. */
interface Stack {
  readonly emulator: BotApiEmulator
  readonly service: SoakService
}

async function startStack(stateDir: string, marker: string, limits: Record<string, string>): Promise<Stack> {
  const emulator = await startEmulator({ token: TOKEN, deliveryRetryMs: 200 })
  const secret = randomBytes(16).toString('hex')
  fs.mkdirSync(stateDir, { recursive: true })
  // Beside the state directory, not in it: a sandboxed brain never sees STATE_DIR.
  const brain = `${stateDir}-brain`
  fs.writeFileSync(brain, SOAK_BRAIN, { mode: 0o755 })
  const service = await SoakService.start({
    PATH: process.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: os.tmpdir(),
    TELEGRAM_BOT_TOKEN: TOKEN,
    TELEGRAM_WEBHOOK_SECRET: secret,
    TELEGRAM_API_ROOT: emulator.url,
    ALLOW_ALL_CHATS: '1',
    BRAIN_COMMAND: brain,
    BRAIN_ENV_ALLOW: 'SOAK_RUN',
    SOAK_RUN: marker,
    STATE_DIR: stateDir,
    PORT: '0',
    LOG_LEVEL: 'info',
    ...limits,
  })
  await new Api(TOKEN, { apiRoot: emulator.url }).setWebhook(`${service.url}/telegram/webhook`, { secret_token: secret })
  return { emulator, service }
}

/** Follows the emulator's record of calls: which message got which answers, and when its 👀 came. */
class Tracker {
  readonly messages = new Map<string, Tracked>()
  #cursor = 0
  readonly #emulator: BotApiEmulator

  constructor(emulator: BotApiEmulator) {
    this.#emulator = emulator
  }

  send(chatId: number, plan: Plan, text: string): Tracked {
    const update = this.#emulator.sendText({ chatId, text })
    const tracked: Tracked = { plan, chatId, messageId: update.message?.message_id as number, sentAt: Date.now(), answers: [], ackAt: undefined }
    this.messages.set(key(chatId, tracked.messageId), tracked)
    return tracked
  }

  /** Reads the calls recorded since the last look. */
  update(): void {
    const calls = this.#emulator.calls
    for (; this.#cursor < calls.length; this.#cursor++) {
      const call = calls[this.#cursor] as RecordedCall
      if (!call.ok) continue
      const chatId = Number(call.params['chat_id'])
      if (call.method === 'sendMessage') {
        const replyTo = (call.params['reply_parameters'] as { message_id?: number } | undefined)?.message_id
        const tracked = replyTo === undefined ? undefined : this.messages.get(key(chatId, replyTo))
        // Status messages (progress) are not answers; they are deleted when the run ends.
        if (tracked && !String((call.result as Message).text).startsWith('long brain:')) tracked.answers.push((call.result as Message).text ?? '')
      } else if (call.method === 'setMessageReaction') {
        const tracked = this.messages.get(key(chatId, Number(call.params['message_id'])))
        const emoji = (call.params['reaction'] as { emoji?: string }[] | undefined)?.[0]?.emoji
        if (tracked && emoji === ACK_EMOJI && tracked.ackAt === undefined) tracked.ackAt = call.wallClockMs
      }
    }
  }

  get answered(): number {
    let count = 0
    for (const tracked of this.messages.values()) if (tracked.answers.length > 0) count++
    return count
  }
}

const key = (chatId: number, messageId: number): string => `${chatId}/${messageId}`

/** The answer a plan should get; anything else is wrong. */
function expectedAnswer(plan: Plan, text: string): boolean {
  switch (plan) {
    case 'answer':
      return /^soak \d+ answered$/u.test(text)
    case 'fail':
      return /^⚠️ brain exited 1: soak \d+ failing on purpose$/u.test(text)
    case 'hang':
      return text === `⚠️ timed out after ${BRAIN_TIMEOUT_S} s; the brain was stopped`
  }
}

/** Polls a service's /healthz once a second; keeps the worst latency and whether it ever failed. */
class HealthWatch {
  maxMs = 0
  maxLoopDelayMs = 0
  failures = 0
  polls = 0
  #stopped = false
  readonly #done: Promise<void>

  constructor(url: string) {
    this.#done = (async () => {
      while (!this.#stopped) {
        const started = Date.now()
        try {
          const response = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5000) })
          const report = (await response.json()) as { status?: string; event_loop_delay_ms?: number }
          if (response.status !== 200 || report.status !== 'ok') this.failures++
          this.maxLoopDelayMs = Math.max(this.maxLoopDelayMs, report.event_loop_delay_ms ?? 0)
        } catch {
          this.failures++
        }
        const ms = Date.now() - started
        this.maxMs = Math.max(this.maxMs, ms)
        this.polls++
        await delay(Math.max(0, HEALTHZ_EVERY_MS - ms))
      }
    })()
  }

  async stop(): Promise<void> {
    this.#stopped = true
    await this.#done
  }

  get fresh(): boolean {
    return this.failures === 0 && this.maxMs < HEALTHZ_FRESH_MS
  }
}

/** Two messages ACK_PAIR_GAP_MS apart in their own chat; resolves with each one's 👀 latency (ms). */
async function ackPair(tracker: Tracker, chatId: number): Promise<(number | undefined)[]> {
  const first = tracker.send(chatId, 'answer', 'soak 0 answer 0.1')
  await delay(ACK_PAIR_GAP_MS)
  const second = tracker.send(chatId, 'answer', 'soak 0 answer 0.1')
  await delay(ACK_WITHIN_MS + 2000)
  tracker.update()
  return [first, second].map((tracked) => (tracked.ackAt === undefined ? undefined : tracked.ackAt - tracked.sentAt))
}

/**
 * The least-squares slope of RSS over time, in MB per 10 minutes: a service that leaks shows a steady
 * rise here long before it would cross any fixed limit. Undefined with too few readings.
 */
export function rssTrendPer10Min(readings: readonly { readonly atMs: number; readonly rssMb: number }[]): number | undefined {
  if (readings.length < TREND_MIN_READINGS) return undefined
  const n = readings.length
  const meanT = readings.reduce((sum, r) => sum + r.atMs, 0) / n
  const meanR = readings.reduce((sum, r) => sum + r.rssMb, 0) / n
  let covariance = 0
  let variance = 0
  for (const r of readings) {
    covariance += (r.atMs - meanT) * (r.rssMb - meanR)
    variance += (r.atMs - meanT) ** 2
  }
  return variance === 0 ? undefined : (covariance / variance) * 600_000
}

/** The soak's memory verdict: no rise in the second half of a long soak, else back near the warm level. */
export function rssCheck(
  readings: readonly { readonly atMs: number; readonly rssMb: number }[],
  durationMs: number,
  settledMb: number,
  warmMb: number,
  maxMb: number,
): [string, boolean] {
  const late = readings.filter((reading) => reading.atMs >= Math.max(TREND_WARM_UP_MS, durationMs / 2) && reading.atMs <= durationMs)
  const lateTrend = late.length >= LATE_TREND_MIN_READINGS ? rssTrendPer10Min(late) : undefined
  if (lateTrend !== undefined) {
    return [
      `RSS not rising in the second half: ${lateTrend >= 0 ? '+' : ''}${lateTrend.toFixed(1)} MB per 10 min over ${late.length} readings ` +
        `(at most ${RSS_RISE_LIMIT_MB_PER_10_MIN}; warm ${warmMb.toFixed(0)} MB, max ${maxMb.toFixed(0)} MB, at the end ${settledMb.toFixed(0)} MB)`,
      lateTrend <= RSS_RISE_LIMIT_MB_PER_10_MIN,
    ]
  }
  return [`RSS near its warmed-up level: ${settledMb.toFixed(0)} MB (warm ${warmMb.toFixed(0)} MB, max ${maxMb.toFixed(0)} MB)`, settledMb <= warmMb + RSS_SLACK_MB]
}

/** {@link percentile}, 0 when nothing was measured yet. */
const percentileOrZero = (values: readonly number[], p: number): number => percentile(values, p) ?? 0

const webhookTimes = (emulator: BotApiEmulator): number[] => emulator.deliveries.map((attempt) => attempt.answeredAt - attempt.sentAt)

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Parses the soak's arguments; throws a TypeError quoting a bad value. */
export function readSoakOptions(args: string[]): SoakOptions | 'help' {
  const { values } = parseArgs({
    args,
    options: {
      minutes: { type: 'string' },
      rate: { type: 'string' },
      fail: { type: 'string' },
      chats: { type: 'string' },
      slots: { type: 'string' },
      'long-brain': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return 'help'
  const number = (name: string, raw: string | undefined, fallback: number, check: (value: number) => boolean, what: string): number => {
    if (raw === undefined) return fallback
    const value = Number(raw)
    if (raw.trim() === '' || !Number.isFinite(value) || !check(value)) throw new TypeError(`--${name} must be ${what}; got "${raw}"`)
    return value
  }
  const minutes = number('minutes', values.minutes, SOAK_DEFAULTS.minutes, (v) => v > 0, 'a positive number of minutes')
  return {
    minutes,
    rate: number('rate', values.rate, SOAK_DEFAULTS.rate, (v) => v > 0 && v <= 200, 'messages per second, above 0 and at most 200'),
    fail: number('fail', values.fail, SOAK_DEFAULTS.fail, (v) => v >= 0 && v <= 1, 'a share between 0 and 1'),
    chats: number('chats', values.chats, SOAK_DEFAULTS.chats, (v) => Number.isInteger(v) && v >= 1, 'a whole number of chats, at least 1'),
    slots: number('slots', values.slots, SOAK_DEFAULTS.slots, (v) => Number.isInteger(v) && v >= 1, 'a whole number of brain slots, at least 1'),
    longBrain: values['long-brain'] === true || minutes >= LONG_BRAIN_FROM_MINUTES,
  }
}

/**
 * `scripts/soak`: the Bot API emulator and the real service (a soak brain that mostly answers after
 * a short random delay, and fails or hangs for a share of messages) under a steady stream of
 * messages. Prints a status line every 10 s and a summary; returns 0 when every message got its
 * answer exactly once and the service's memory, fds and children came back near where they began.
 */
export async function runSoak(args: string[]): Promise<number> {
  let options: SoakOptions | 'help'
  try {
    options = readSoakOptions(args)
  } catch (error) {
    process.stderr.write(`soak: ${(error as Error).message}\n${USAGE}\n`)
    return 2
  }
  if (options === 'help') {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  if (!fs.existsSync(CLI_PATH)) {
    process.stderr.write(`soak: ${CLI_PATH} is missing; run npm run build first\n`)
    return 2
  }
  const print = (line = ''): void => void process.stdout.write(`${line}\n`)
  const { minutes, rate, fail, chats, slots, longBrain } = options
  const marker = randomBytes(8).toString('hex')
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'coordinator-soak-'))
  const stacks: Stack[] = []
  const cleanUp = async (): Promise<void> => {
    for (const stack of stacks) {
      await stack.service.stop()
      await stack.emulator.close()
    }
    fs.rmSync(root, { recursive: true, force: true })
  }
  const onSignal = (): void => void cleanUp().then(() => process.exit(130))
  process.once('SIGINT', onSignal)

  try {
    print(
      `soak: ${minutes} min at ${rate} msg/s over ${chats} chats, ${Math.round(fail * 100)}% failing ` +
        `(exit 1, or a hang into the ${BRAIN_TIMEOUT_S} s timeout), ${slots} brain slots${longBrain ? ', with a long brain' : ''}`,
    )
    const main = await startStack(path.join(root, 'main'), marker, {
      MAX_CONCURRENT_BRAINS: String(slots),
      BRAIN_TIMEOUT_S: String(BRAIN_TIMEOUT_S),
      MESSAGE_BUDGET_S: String(BRAIN_TIMEOUT_S),
      KILL_GRACE_S: String(KILL_GRACE_S),
    })
    stacks.push(main)
    const atStart = processStats(main.service.pid)
    const tracker = new Tracker(main.emulator)
    const health = new HealthWatch(main.service.url)

    // The live criteria run on a second service whose limit lets a brain run for minutes.
    let live: { stack: Stack; tracker: Tracker; health: HealthWatch; long: Tracked } | undefined
    if (longBrain) {
      const stack = await startStack(path.join(root, 'live'), marker, {
        BRAIN_TIMEOUT_S: String(LONG_BRAIN_TIMEOUT_S),
        MESSAGE_BUDGET_S: String(LONG_BRAIN_TIMEOUT_S),
      })
      stacks.push(stack)
      const liveTracker = new Tracker(stack.emulator)
      live = { stack, tracker: liveTracker, health: new HealthWatch(stack.service.url), long: liveTracker.send(1, 'answer', `soak 0 long ${LONG_BRAIN_S}`) }
    }

    const startedAt = Date.now()
    const durationMs = minutes * 60_000
    let sent = 0
    let nextReport = REPORT_EVERY_MS
    let rssWarm: number | undefined
    let rssMax = 0
    const acks: Promise<{ where: string; latencies: (number | undefined)[] }>[] = []
    let ackPairSent = false
    const ackChat = chats + 1

    // Every status line's RSS, for the trend.
    const rssReadings: { atMs: number; rssMb: number }[] = []
    const report = (): void => {
      tracker.update()
      // The long brain's tracker is read here too, so the status line and the verdict see its answer.
      live?.tracker.update()
      const stats = processStats(main.service.pid)
      rssMax = Math.max(rssMax, stats.rssMb)
      rssReadings.push({ atMs: Date.now() - startedAt, rssMb: stats.rssMb })
      const answered = tracker.answered
      const seconds = Math.round((Date.now() - startedAt) / 1000)
      print(
        `${String(seconds).padStart(5)} s  sent ${String(tracker.messages.size).padStart(5)}  replied ${String(answered).padStart(5)}  pending ${String(tracker.messages.size - answered).padStart(4)}  ` +
          `rss ${stats.rssMb.toFixed(0)} MB  fds ${stats.fds}  children ${stats.children}  webhook p99 ${percentileOrZero(webhookTimes(main.emulator), 99).toFixed(1)} ms` +
          (live ? `  long brain ${live.long.answers.length > 0 ? 'done' : 'running'}` : ''),
      )
    }

    while (Date.now() - startedAt < durationMs) {
      const elapsed = Date.now() - startedAt
      const due = Math.floor((elapsed / 1000) * rate)
      for (; sent < due; sent++) {
        const roll = Math.random()
        const plan: Plan = roll < fail * HANG_SHARE ? 'hang' : roll < fail ? 'fail' : 'answer'
        const seconds = ANSWER_DELAY_S.min + Math.random() * (ANSWER_DELAY_S.max - ANSWER_DELAY_S.min)
        const text = plan === 'answer' ? `soak ${sent + 1} answer ${seconds.toFixed(2)}` : `soak ${sent + 1} ${plan}`
        tracker.send((sent % chats) + 1, plan, text)
      }
      if (!ackPairSent && elapsed >= Math.min(20_000, durationMs / 2)) {
        ackPairSent = true
        acks.push(ackPair(tracker, ackChat).then((latencies) => ({ where: 'under the soak', latencies })))
        if (live) acks.push(ackPair(live.tracker, 2).then((latencies) => ({ where: 'beside the long brain', latencies })))
      }
      if (rssWarm === undefined && elapsed >= WARM_UP_MS) rssWarm = processStats(main.service.pid).rssMb
      if (elapsed >= nextReport) {
        report()
        nextReport += REPORT_EVERY_MS
      }
      await delay(TICK_MS)
    }

    print(`soak: sending stopped after ${sent} messages; waiting for the last answers`)
    const drainUntil = Date.now() + DRAIN_MS
    while (Date.now() < drainUntil) {
      tracker.update()
      if (tracker.answered === tracker.messages.size) break
      if (Date.now() - startedAt >= nextReport) {
        report()
        nextReport += REPORT_EVERY_MS
      }
      await delay(200)
    }
    const ackPairs = await Promise.all(acks)
    const ackLatencies = ackPairs.flatMap((pair) => pair.latencies)
    const shownAcks = ackPairs
      .map(({ where, latencies }) => `${where}: ${latencies.map((ms) => (ms === undefined ? 'none' : `${ms} ms`)).join(', ')}`)
      .join('; ')
    if (live) {
      print(`soak: waiting for the long brain (${LONG_BRAIN_S} s)`)
      const until = live.long.sentAt + (LONG_BRAIN_TIMEOUT_S + 30) * 1000
      while (Date.now() < until && live.long.answers.length === 0) {
        live.tracker.update()
        if (Date.now() - startedAt >= nextReport) {
          report()
          nextReport += REPORT_EVERY_MS
        }
        await delay(500)
      }
      // The wait above is skipped when the soak outlasted the long brain's deadline: read it anyway.
      live.tracker.update()
    }
    report()
    await health.stop()
    await live?.health.stop()

    // Idle, then without the emulator (its keep-alive webhook connections gone): back at the start?
    await main.emulator.close()
    let settled = processStats(main.service.pid)
    const servicePids = stacks.map((stack) => stack.service.pid)
    let left = leftovers(main.service.pid, marker, servicePids)
    const settleUntil = Date.now() + SETTLE_MS
    while (Date.now() < settleUntil) {
      settled = processStats(main.service.pid)
      left = leftovers(main.service.pid, marker, servicePids)
      const back = settled.children === 0 && settled.otherFds.join() === atStart.otherFds.join() && settled.sockets <= atStart.sockets
      if (back && left.alive.length === 0 && left.zombies.length === 0) break
      await delay(250)
    }
    const liveLeft = live ? leftovers(live.stack.service.pid, marker, servicePids) : { alive: [], zombies: [] }

    const all = [...tracker.messages.values()]
    const lost = all.filter((tracked) => tracked.answers.length === 0)
    const doubled = all.filter((tracked) => tracked.answers.length > 1)
    const wrong = all.filter((tracked) => tracked.answers.length === 1 && !expectedAnswer(tracked.plan, tracked.answers[0] as string))
    const byPlan = (plan: Plan): number => all.filter((tracked) => tracked.plan === plan).length
    const times = webhookTimes(main.emulator)
    const rssBase = rssWarm ?? atStart.rssMb
    const checks: [string, boolean][] = [
      [`every message answered (${all.length - lost.length} of ${all.length})`, lost.length === 0],
      [`no answer doubled (${doubled.length} doubled)`, doubled.length === 0],
      [`each answer the one its brain was told to give (${wrong.length} other)`, wrong.length === 0],
      [
        `fds back: ${settled.fds} (${settled.sockets} sockets) against ${atStart.fds} (${atStart.sockets} sockets) at start`,
        settled.otherFds.join() === atStart.otherFds.join() && settled.sockets <= atStart.sockets,
      ],
      [`no child of the service left (${settled.children})`, settled.children === 0],
      [`no brain process left (${left.alive.length + liveLeft.alive.length} alive, ${left.zombies.length + liveLeft.zombies.length} zombies of the service)`, left.alive.length + left.zombies.length + liveLeft.alive.length + liveLeft.zombies.length === 0],
      rssCheck(rssReadings, durationMs, settled.rssMb, rssBase, rssMax),
      [`/healthz fresh every second (worst ${health.maxMs} ms over ${health.polls} polls, ${health.failures} not ok)`, health.fresh],
      [`two messages ${ACK_PAIR_GAP_MS / 1000} s apart got 👀 within ${ACK_WITHIN_MS} ms (${shownAcks})`, ackLatencies.every((ms) => ms !== undefined && ms < ACK_WITHIN_MS)],
    ]
    if (live) {
      const longMs = live.stack.service.longBrainMs
      checks.push(
        [`a brain ran ${longMs === undefined ? 'not long enough' : `${(longMs / 1000).toFixed(0)} s`} and answered`, longMs !== undefined && live.long.answers.length === 1],
        [`its service's /healthz stayed fresh meanwhile (worst ${live.health.maxMs} ms over ${live.health.polls} polls, ${live.health.failures} not ok)`, live.health.fresh],
      )
    }

    print()
    print('summary')
    print(`  sent ${all.length}: ${byPlan('answer')} to answer, ${byPlan('fail')} to fail (exit 1), ${byPlan('hang')} to hang into the timeout`)
    print(`  answers: ${all.length - lost.length - wrong.length} as expected, ${wrong.length} other, ${lost.length} lost, ${doubled.length} doubled`)
    if (main.service.timedOutUnstarted > 0) {
      print(`  ${main.service.timedOutUnstarted} attempts timed out before their brain started (they waited for a brain slot past their deadline)`)
    }
    for (const tracked of wrong.slice(0, 5)) print(`    ${tracked.plan} in chat ${tracked.chatId} got ${JSON.stringify(tracked.answers[0])}`)
    // What a lost message was, and how far it got: enough to find it in the service's log.
    for (const tracked of lost.slice(0, 5)) {
      print(`    lost: ${tracked.plan} in chat ${tracked.chatId}, message ${tracked.messageId}, sent ${((tracked.sentAt - startedAt) / 1000).toFixed(1)} s in, 👀 ${tracked.ackAt === undefined ? 'never' : 'set'}`)
    }
    print(`  webhook: ${times.length} deliveries, p50 ${percentileOrZero(times, 50).toFixed(1)} ms, p99 ${percentileOrZero(times, 99).toFixed(1)} ms, max ${percentileOrZero(times, 100).toFixed(1)} ms`)
    print(`  event loop delay (p99 over 10 s, worst seen on /healthz): ${health.maxLoopDelayMs.toFixed(1)} ms; service errors logged: ${main.service.errors}`)
    print(`  brains started: ${main.service.brainPids.size}`)
    const trendReadings = rssReadings.filter((reading) => reading.atMs >= TREND_WARM_UP_MS && reading.atMs <= durationMs)
    const trend = rssTrendPer10Min(trendReadings)
    print(
      trend === undefined
        ? `  RSS trend: too few readings after the ${TREND_WARM_UP_MS / 1000} s warm-up to fit one (run longer)`
        : `  RSS trend after the ${TREND_WARM_UP_MS / 1000} s warm-up: ${trend >= 0 ? '+' : ''}${trend.toFixed(1)} MB per 10 min ` +
            `(${trendReadings.length} readings, ${(trendReadings[0]?.rssMb ?? 0).toFixed(0)} → ${(trendReadings.at(-1)?.rssMb ?? 0).toFixed(0)} MB)`,
    )
    for (const [what, ok] of checks) print(`  ${ok ? 'ok ' : 'NOT'} ${what}`)
    const code = await main.service.stop()
    const allOk = checks.every(([, ok]) => ok)
    print(`soak: ${allOk ? 'passed' : 'FAILED'} (service exited ${code})`)
    return allOk && code === 0 ? 0 : 1
  } finally {
    process.off('SIGINT', onSignal)
    await cleanUp()
  }
}
