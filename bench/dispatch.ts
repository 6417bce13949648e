// Dispatch overhead: from a message's arrival to its brain's start, with a free slot, beside the
// cost of starting the same brain straight from a process that does nothing else.
import { spawn } from 'node:child_process'
import { performance } from 'node:perf_hooks'
import { startEmulator } from '../src/emulator/index.js'
import {
  TOKEN,
  WEBHOOK_PATH,
  delay,
  pointWebhookAt,
  readStamps,
  startService,
  tempDir,
  wallClockMs,
  writeStampBrain,
  type LogLine,
} from './harness.js'
import { table, type Section } from './report.js'
import { fmt, summarize, type Summary } from './stats.js'

const RATE_PER_S = 20
const WARM_UP = 20
const FLOOR_RUNS = 100

export interface DispatchOptions {
  readonly durationS: number
}

export async function dispatchBenchmark({ durationS }: DispatchOptions): Promise<Section> {
  const count = Math.max(20, Math.round(durationS * RATE_PER_S))
  process.stdout.write(`dispatch: ${count} messages at ${RATE_PER_S}/s, a free slot for each\n`)
  const dir = tempDir('dispatch')
  const stamp = writeStampBrain(dir)
  const emulator = await startEmulator({ token: TOKEN })
  try {
    const service = await startService({
      apiRoot: emulator.url,
      readLog: true,
      env: { LOG_LEVEL: 'info', ...stamp.env },
    })
    let measured: Sample
    try {
      await pointWebhookAt(emulator.url, `${service.url}${WEBHOOK_PATH}`)
      const send = async (n: number, firstChat: number): Promise<number[]> => {
        const updateIds: number[] = []
        const start = performance.now()
        for (let i = 0; i < n; i++) {
          const wait = start + (i * 1000) / RATE_PER_S - performance.now()
          if (wait > 1) await delay(wait)
          updateIds.push(emulator.sendText({ chatId: firstChat + i, text: 'go' }).update_id)
        }
        return updateIds
      }
      const waitForStarts = async (updateIds: readonly number[]): Promise<Map<number, number>> => {
        const until = Date.now() + 30_000
        for (;;) {
          const stamps = readStamps(stamp.log)
          if (updateIds.every((id) => stamps.has(id))) return stamps
          if (Date.now() > until) throw new Error(`dispatch: only ${updateIds.filter((id) => stamps.has(id)).length} of ${updateIds.length} brains started`)
          await delay(100)
        }
      }
      await waitForStarts(await send(WARM_UP, 100_000))
      const updateIds = await send(count, 1)
      const stamps = await waitForStarts(updateIds)
      await delay(500)
      measured = sample(updateIds, stamps, service.child.logs, emulator.deliveries)
    } finally {
      await service.child.stop()
    }
    const floor = await spawnFloor(stamp)
    return report(measured, floor, count)
  } finally {
    await emulator.close()
  }
}

interface Sample {
  /** 'message accepted' → 'child started', both the service's pino `time` (whole ms). */
  readonly logged: Summary
  /** Emulator starts the webhook POST → the brain's first instruction (wall clock, sub-ms). */
  readonly endToEnd: Summary
}

function sample(
  updateIds: readonly number[],
  stamps: ReadonlyMap<number, number>,
  logs: readonly LogLine[],
  deliveries: readonly { update_id: number; sentAt: number; attempt: number }[],
): Sample {
  const accepted = new Map<number, number>()
  const started = new Map<number, number>()
  for (const line of logs) {
    const updateId = line['update_id']
    if (typeof updateId !== 'number') continue
    if (line.msg === 'message accepted') accepted.set(updateId, line.time)
    if (line.msg === 'child started' && !started.has(updateId)) started.set(updateId, line.time)
  }
  const sentAt = new Map(deliveries.filter((d) => d.attempt === 1).map((d) => [d.update_id, performance.timeOrigin + d.sentAt]))
  const logged: number[] = []
  const endToEnd: number[] = []
  for (const id of updateIds) {
    const a = accepted.get(id)
    const s = started.get(id)
    if (a !== undefined && s !== undefined) logged.push(s - a)
    const posted = sentAt.get(id)
    const ran = stamps.get(id)
    if (posted !== undefined && ran !== undefined) endToEnd.push(ran - posted)
  }
  return { logged: summarize(logged), endToEnd: summarize(endToEnd) }
}

interface Floor {
  /** How long spawn() itself blocks the calling process (fork and exec happen inside it). */
  readonly call: Summary
  /** spawn() called → the brain's first instruction. */
  readonly toBrain: Summary
}

/** spawn() → the same brain's first instruction, from this process, as the service spawns it (own group, 4 pipes). */
async function spawnFloor(stamp: { brain: string; log: string }): Promise<Floor> {
  const calledAt = new Map<number, number>()
  const calls: number[] = []
  const first = 50_000_000
  for (let i = 0; i < FLOOR_RUNS; i++) {
    const updateId = first + i
    await new Promise<void>((resolve, reject) => {
      const before = wallClockMs()
      calledAt.set(updateId, before)
      const child = spawn(stamp.brain, [], {
        detached: true,
        stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
        env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', COORDINATOR_UPDATE_ID: String(updateId), BENCH_BRAIN_LOG: stamp.log },
      })
      calls.push(wallClockMs() - before)
      child.stdin?.on('error', () => {})
      child.stdin?.end('{}')
      child.once('error', reject)
      child.once('close', () => resolve())
    })
    await delay(1000 / RATE_PER_S)
  }
  const stamps = readStamps(stamp.log)
  const toBrain = [...calledAt].flatMap(([id, at]) => {
    const ran = stamps.get(id)
    return ran === undefined ? [] : [ran - at]
  })
  return { call: summarize(calls), toBrain: summarize(toBrain) }
}

function report(measured: Sample, floor: Floor, count: number): Section {
  const row = (what: string, s: Summary): string[] => [what, String(s.n), fmt(s.p50), fmt(s.p99), fmt(s.max)]
  const overhead = measured.endToEnd.p50 - floor.toBrain.p50
  return {
    title: 'Dispatch overhead',
    method: [
      `${count} messages at ${RATE_PER_S}/s, each in its own chat, so a brain slot is always free. The brain is a bash script whose first`,
      `act records $EPOCHREALTIME (no process of its own). Two views: the service's own log (\`message accepted\` → \`child started\`,`,
      `pino's whole-millisecond \`time\`), and end to end: the emulator (in the bench's process) starting the webhook POST → the`,
      `brain's first instruction. The floor is this process spawning the same script the way the service does (own group, 4 pipes).`,
    ].join('\n'),
    body: [
      table(
        ['interval', 'n', 'p50 ms', 'p99 ms', 'max ms'],
        [
          row('service log: message accepted → child started', measured.logged),
          row('webhook POST sent → brain running (end to end)', measured.endToEnd),
          row('floor: spawn() → brain running, nothing else', floor.toBrain),
          row('floor: the spawn() call itself (fork + exec, blocking)', floor.call),
        ],
      ),
      '',
      `End to end minus the floor, at the median: **${fmt(overhead)} ms** for the HTTP request, intake (inbox write, 👀 fired),`,
      `the chat queue, the slot, the chat lock, the inbox's \`running\` mark and the chat directory. \`child started\` is logged`,
      `when spawn() returns, so the log's interval includes the spawn() call (fork + exec), which blocks the event loop; the log's`,
      `\`time\` has whole-millisecond resolution.`,
    ].join('\n'),
    targets: [],
  }
}
