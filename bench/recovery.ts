// Recovery: a restart that finds 100,000 queued messages in the inbox, until its first brain starts,
// beside the same restart with one queued message.
import { startEmulator } from '../src/emulator/index.js'
import { TOKEN, fillInbox, startService, tempDir, textMessage, writeStampBrain, type LogLine } from './harness.js'
import { table, verdict, type Section } from './report.js'
import { fmt, median } from './stats.js'

const QUEUED = 100_000
const PER_CHAT = 10
const RUNS = 3
const TARGET_MS = 2000

interface Restart {
  readonly queued: number
  /** From spawning the process, ms (wall clock; the service's pino `time` is whole ms). */
  readonly listening: number
  readonly recovered: number | undefined
  readonly ready: number
  readonly firstBrain: number
}

export async function recoveryBenchmark(): Promise<Section> {
  process.stdout.write(`recovery: restart with ${QUEUED} queued (and with 1), ${RUNS} runs each\n`)
  const emulator = await startEmulator({ token: TOKEN })
  try {
    const chats = QUEUED / PER_CHAT
    for (let chatId = 1; chatId <= chats; chatId++) emulator.pushUpdate({ message: textMessage(chatId, 1, 'hello') })
    const restarts: Restart[] = []
    for (let run = 0; run < RUNS; run++) {
      for (const queued of [1, QUEUED]) restarts.push(await restart(emulator.url, queued))
    }
    return report(restarts)
  } finally {
    await emulator.close()
  }
}

async function restart(apiRoot: string, queued: number): Promise<Restart> {
  const stateDir = tempDir('recovery')
  // Outside the state directory, which a sandboxed brain never sees.
  const stamp = writeStampBrain(tempDir('recovery-brain'))
  fillInbox(stateDir, queued, Math.max(1, queued / PER_CHAT), 'go')

  const service = await startService({
    apiRoot,
    stateDir,
    readLog: true,
    env: { LOG_LEVEL: 'info', ...stamp.env },
  })
  try {
    const since = (line: LogLine | undefined): number | undefined => (line === undefined ? undefined : line.time - service.child.spawnedAtWallMs)
    const first = await service.child.waitForLog((line) => line.msg === 'child started', 30_000)
    const find = (match: (line: LogLine) => boolean): LogLine | undefined => service.child.logs.find(match)
    const listening = since(find((line) => line.msg.startsWith('Server listening')))
    const ready = since(find((line) => line.msg === 'coordinator ready'))
    return {
      queued,
      listening: listening ?? Number.NaN,
      recovered: since(find((line) => line.msg === 'inbox recovered')),
      ready: ready ?? Number.NaN,
      firstBrain: since(first) ?? Number.NaN,
    }
  } finally {
    await service.child.stop()
  }
}

function report(restarts: readonly Restart[]): Section {
  const of = (queued: number): Restart[] => restarts.filter((r) => r.queued === queued)
  const medianOf = (rs: readonly Restart[], pick: (r: Restart) => number | undefined): number =>
    median(rs.map(pick).filter((v): v is number => v !== undefined && Number.isFinite(v)))
  const row = (queued: number): string[] => {
    const rs = of(queued)
    return [
      String(queued),
      fmt(medianOf(rs, (r) => r.listening), 0),
      fmt(medianOf(rs, (r) => r.recovered), 0),
      fmt(medianOf(rs, (r) => r.ready), 0),
      fmt(medianOf(rs, (r) => r.firstBrain), 0),
      fmt(medianOf(rs, (r) => r.firstBrain - r.ready), 0),
      rs.map((r) => fmt(r.firstBrain, 0)).join(', '),
    ]
  }
  const full = medianOf(of(QUEUED), (r) => r.firstBrain)
  const floor = medianOf(of(1), (r) => r.firstBrain)
  return {
    title: 'Recovery',
    method: [
      `The inbox is filled with ${QUEUED} queued messages (${QUEUED / PER_CHAT} chats × ${PER_CHAT}) in the service's own schema, as a stopped`,
      `service leaves them; then \`coordinator serve\` starts on it. Times are from spawning the process to its log lines (pino \`time\`),`,
      `medians of ${RUNS} runs, beside the same start with 1 queued message. The brain is the bash stamp script.`,
    ].join('\n'),
    body: [
      table(['queued', 'listening ms', 'inbox recovered ms', 'coordinator ready ms', 'first child started ms', 'ready → first brain ms', 'runs (first brain)'], [row(1), row(QUEUED)]),
      '',
      `- ${QUEUED} queued → first brain: **${fmt(full, 0)} ms** from spawn (target ≤ ${TARGET_MS} ms: ${verdict(full <= TARGET_MS)}); the cost of the ${QUEUED} is ${fmt(full - floor, 0)} ms over a start with 1.`,
    ].join('\n'),
    targets: [{ target: `recovery: ${QUEUED} queued → first brain ≤ ${TARGET_MS} ms (from process spawn)`, measured: `${fmt(full, 0)} ms (with 1 queued: ${fmt(floor, 0)} ms)`, met: full <= TARGET_MS }],
  }
}
