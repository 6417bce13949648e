// `npm run bench`: every benchmark of the issue, then docs/BENCHMARKS.md.
//   node build/bench/run.js [--only intake,ack,hol,memory,backlog,dispatch,recovery,cluster] [--duration S]
//     [--hol-brain-s S] [--memory-chats N] [--backlog N] [--node-flags="--flag …"] [--service-env="NAME=value …"]
//     [--cpu-prof DIR] [--out FILE]
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { ackBenchmark } from './ack-latency.js'
import { backlogBenchmark } from './backlog.js'
import { clusterBenchmark } from './cluster.js'
import { dispatchBenchmark } from './dispatch.js'
import { ROOT, cleanup, profileServicesInto, startServicesWith } from './harness.js'
import { headOfLineBenchmark } from './head-of-line.js'
import { intakeBenchmark } from './intake.js'
import { memoryBenchmark } from './memory.js'
import { recoveryBenchmark } from './recovery.js'
import { missedTargets, renderReport, targetTable, type Section } from './report.js'

const DEFAULT_DURATION_S = 10
const DEFAULT_HOL_BRAIN_S = 30
const DEFAULT_MEMORY_CHATS = 10_000
const DEFAULT_BACKLOG = 1_000_000
// Ten queued messages a chat, as in the memory benchmark.
const BACKLOG_PER_CHAT = 10
const REPORT = path.join(ROOT, 'docs/BENCHMARKS.md')

interface Settings {
  readonly durationS: number
  readonly holBrainS: number
  readonly memoryChats: number
  readonly backlog: number
}

// In the report's order.
const BENCHMARKS: Readonly<Record<string, (settings: Settings) => Promise<Section>>> = {
  intake: ({ durationS }) => intakeBenchmark({ durationS }),
  ack: ({ durationS }) => ackBenchmark({ durationS }),
  hol: ({ holBrainS }) => headOfLineBenchmark({ brainS: holBrainS }),
  memory: ({ memoryChats }) => memoryBenchmark({ chats: memoryChats }),
  backlog: ({ backlog, durationS }) => backlogBenchmark({ queued: backlog, chats: Math.max(1, Math.round(backlog / BACKLOG_PER_CHAT)), durationS }),
  dispatch: ({ durationS }) => dispatchBenchmark({ durationS }),
  recovery: () => recoveryBenchmark(),
  cluster: ({ durationS }) => clusterBenchmark({ durationS }),
}
const NAMES = Object.keys(BENCHMARKS)

function positive(flag: string, text: string): number {
  const value = Number(text)
  if (!(value > 0)) throw new TypeError(`${flag} must be a positive number; got "${text}"`)
  return value
}

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    duration: { type: 'string', default: String(DEFAULT_DURATION_S) },
    'hol-brain-s': { type: 'string', default: String(DEFAULT_HOL_BRAIN_S) },
    'memory-chats': { type: 'string', default: String(DEFAULT_MEMORY_CHATS) },
    backlog: { type: 'string', default: String(DEFAULT_BACKLOG) },
    'cpu-prof': { type: 'string' },
    'node-flags': { type: 'string' },
    'service-env': { type: 'string' },
    out: { type: 'string' },
  },
})
const only = values.only?.split(',').map((name) => name.trim()).filter(Boolean) ?? NAMES
const unknown = only.filter((name) => !NAMES.includes(name))
if (unknown.length > 0) throw new TypeError(`--only takes ${NAMES.join(', ')}; got "${unknown.join(', ')}"`)
const settings: Settings = {
  durationS: positive('--duration', values.duration),
  holBrainS: positive('--hol-brain-s', values['hol-brain-s']),
  memoryChats: Math.round(positive('--memory-chats', values['memory-chats'])),
  backlog: Math.round(positive('--backlog', values.backlog)),
}
if (values['cpu-prof']) profileServicesInto(values['cpu-prof'])
startServicesWith((values['node-flags'] ?? '').split(/\s+/u).filter(Boolean), serviceEnvOf(values['service-env'] ?? ''))
/** `--service-env="A=1 B=2"` as variables; a word without `=` is refused. */
function serviceEnvOf(text: string): Record<string, string> {
  const env: Record<string, string> = {}
  for (const word of text.split(/\s+/u).filter(Boolean)) {
    const at = word.indexOf('=')
    if (at < 1) throw new TypeError(`--service-env takes NAME=value words; got "${word}"`)
    env[word.slice(0, at)] = word.slice(at + 1)
  }
  return env
}

// A partial run must not overwrite the full report unless asked to.
const out = values.out ?? (values.only === undefined ? REPORT : undefined)

async function main(): Promise<void> {
  const started = Date.now()
  const loadBefore = os.loadavg()[0] ?? Number.NaN
  const sections: Section[] = []
  for (const name of NAMES.filter((n) => only.includes(n))) {
    const benchmark = BENCHMARKS[name] as (settings: Settings) => Promise<Section>
    const section = await benchmark(settings)
    process.stdout.write(`\n## ${section.title}\n\n${section.body}\n\n`)
    sections.push(section)
  }
  const elapsedS = (Date.now() - started) / 1000
  const command = ['npm run bench', ...(process.argv.length > 2 ? ['--', ...process.argv.slice(2)] : [])].join(' ')
  const document = renderReport({ sections, command, elapsedS, loadAverage: [loadBefore, os.loadavg()[0] ?? Number.NaN] })
  process.stdout.write(`## Targets\n\n${targetTable(sections)}\n${missedTargets(sections)}\n`)
  if (out) {
    fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true })
    fs.writeFileSync(out, document)
    process.stdout.write(`wrote ${path.relative(process.cwd(), path.resolve(out))} (${elapsedS.toFixed(0)} s)\n`)
  } else {
    process.stdout.write(`(${elapsedS.toFixed(0)} s; a partial run writes the report only with --out FILE)\n`)
  }
}

process.on('SIGINT', () => void cleanup().then(() => process.exit(130)))
process.on('SIGTERM', () => void cleanup().then(() => process.exit(143)))

try {
  await main()
} catch (error) {
  process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
  process.exitCode = 1
} finally {
  await cleanup()
}
