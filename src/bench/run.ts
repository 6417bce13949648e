// `npm run bench`: the intake benchmark. Starts the Bot API emulator and, per variant, one service
// process; fills every brain slot; then hammers POST /telegram/webhook with autocannon.
//   node dist/bench/run.js [--duration S]
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const CLI = path.join(ROOT, 'dist/cli.js')
const ESSENTIAL = path.join(ROOT, 'dist/bench/essential.js')
const BRAIN = path.join(ROOT, 'test/fixtures/brain.mjs')
const TOKEN = '123456:BENCH-token'
const SECRET = 'bench-secret_0123'
const WEBHOOK = '/telegram/webhook'
const CHATS = 1000
const CONNECTIONS = 10
const SLOTS = 4

const { values } = parseArgs({ options: { duration: { type: 'string', default: '10' } } })
const DURATION = Number(values.duration)
if (!(DURATION > 0)) throw new Error(`--duration must be a positive number of seconds; got ${values.duration}`)

const children: ChildProcess[] = []
const tempDirs: string[] = []

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

function start(args: string[], env: Record<string, string>): ChildProcess {
  // The service and its brains run without any loaders a parent passed through NODE_OPTIONS.
  const child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, ...args], {
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: os.tmpdir(), ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  const stderr: string[] = []
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => stderr.push(chunk))
  child.on('exit', (code, signal) => {
    if (!stopping.has(child) && code !== 0) process.stderr.write(`bench: ${args.join(' ')} exited (${code ?? signal}): ${stderr.join('')}\n`)
  })
  children.push(child)
  return child
}

const stopping = new Set<ChildProcess>()
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  stopping.add(child)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  // SIGTERM lets the service kill its brains' process groups (SHUTDOWN_GRACE_S=1); SIGKILL if it lingers.
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
  await exited
  clearTimeout(timer)
}

async function waitUntilUp(url: string, child: ChildProcess): Promise<void> {
  const until = Date.now() + 20_000
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`process for ${url} exited with ${child.exitCode}`)
    try {
      const response = await fetch(url)
      if (response.status < 500) return
    } catch {
      // not listening yet
    }
    await delay(50)
  }
  throw new Error(`${url} did not come up within 20 s`)
}

let nextUpdateId = 1
function update(chatId: number, text: string): string {
  const id = nextUpdateId++
  return JSON.stringify({
    update_id: id,
    message: {
      message_id: id,
      date: Math.floor(Date.now() / 1000),
      chat: { id: chatId, type: 'private', first_name: `u${chatId}` },
      from: { id: chatId, is_bot: false, first_name: `u${chatId}` },
      text,
    },
  })
}

const HEADERS = { 'content-type': 'application/json', 'x-telegram-bot-api-secret-token': SECRET }

async function reactionCount(emulator: string): Promise<number> {
  const response = await fetch(`${emulator}/_emulator/calls?method=setMessageReaction`)
  const body = (await response.json()) as { result: unknown[] }
  return body.result.length
}

async function waitForReactions(emulator: string, atLeast: number): Promise<number> {
  const until = Date.now() + 10_000
  for (;;) {
    const count = await reactionCount(emulator)
    if (count >= atLeast) return count
    if (Date.now() > until) throw new Error(`only ${count} setMessageReaction calls reached the emulator; wanted ${atLeast}`)
    await delay(50)
  }
}

interface Row {
  name: string
  rps: number
  p50: number
  p99: number
  non2xx: number
  errors: number
  reactions: number
}

async function measure(name: string, base: string, emulator: string, occupySlots: boolean): Promise<Row> {
  const before = await reactionCount(emulator)
  // Fill every brain slot, so the run below measures intake behind busy brains.
  const warm = SLOTS
  for (let i = 0; i < warm; i++) {
    const response = await fetch(`${base}${WEBHOOK}`, { method: 'POST', headers: HEADERS, body: update(900_000 + i, occupySlots ? 'sleep=60' : 'silent') })
    if (response.status !== 200) throw new Error(`${name}: warm-up update answered ${response.status}`)
  }
  await waitForReactions(emulator, before + warm)
  const result = await autocannon({
    url: base,
    connections: CONNECTIONS,
    duration: DURATION,
    requests: [
      {
        method: 'POST',
        path: WEBHOOK,
        headers: HEADERS,
        setupRequest: (request) => ({ ...request, body: update(1 + Math.floor(Math.random() * CHATS), 'silent') }),
      },
    ],
  })
  // Every accepted update should lead to one reaction; give the last ones a moment to land.
  await delay(1000)
  const reactions = (await reactionCount(emulator)) - before - warm
  return {
    name,
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
    reactions,
  }
}

async function serviceVariant(name: string, inbox: 'sqlite' | 'memory', emulator: string): Promise<Row> {
  const port = await freePort()
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coordinator-bench-'))
  tempDirs.push(stateDir)
  const child = start([CLI, 'serve'], {
    TELEGRAM_BOT_TOKEN: TOKEN,
    TELEGRAM_WEBHOOK_SECRET: SECRET,
    TELEGRAM_API_ROOT: emulator,
    ALLOW_ALL_CHATS: '1',
    BRAIN_COMMAND: BRAIN,
    MAX_CONCURRENT_BRAINS: String(SLOTS),
    STATE_DIR: stateDir,
    INBOX: inbox,
    PORT: String(port),
    LOG_LEVEL: 'warn',
    KILL_GRACE_S: '1',
    SHUTDOWN_GRACE_S: '1',
  })
  const base = `http://127.0.0.1:${port}`
  try {
    await waitUntilUp(`${base}/livez`, child)
    return await measure(name, base, emulator, true)
  } finally {
    await stop(child)
  }
}

async function essentialVariant(emulator: string): Promise<Row> {
  const port = await freePort()
  const child = start([ESSENTIAL], { TELEGRAM_BOT_TOKEN: TOKEN, TELEGRAM_API_ROOT: emulator, TELEGRAM_WEBHOOK_SECRET: SECRET, PORT: String(port) })
  const base = `http://127.0.0.1:${port}`
  try {
    await waitUntilUp(`${base}/livez`, child)
    return await measure('essential (Fastify + grammY reaction)', base, emulator, false)
  } finally {
    await stop(child)
  }
}

function table(rows: Row[]): string {
  const head = ['variant', 'req/s', 'p50 ms', 'p99 ms', 'non-2xx', 'errors', '👀 calls']
  const lines = rows.map((r) => [r.name, r.rps.toFixed(0), r.p50.toFixed(1), r.p99.toFixed(1), String(r.non2xx), String(r.errors), String(r.reactions)])
  const all = [head, ...lines]
  const widths = head.map((_, i) => Math.max(...all.map((line) => (line[i] ?? '').length)))
  const fmt = (line: string[]): string => `| ${line.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join(' | ')} |`
  return [fmt(head), `|${widths.map((w, i) => (i === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`, ...lines.map(fmt)].join('\n')
}

async function main(): Promise<void> {
  const started = Date.now()
  const emulatorPort = await freePort()
  const emulator = `http://127.0.0.1:${emulatorPort}`
  const emu = start([CLI, 'emulator', '--port', String(emulatorPort), '--token', TOKEN], {})
  await waitUntilUp(`${emulator}/_emulator/webhook`, emu)

  process.stdout.write(`intake benchmark: ${DURATION} s per variant, ${CONNECTIONS} connections, ${CHATS} chats, ${SLOTS} brain slots busy\n`)
  const durable = await serviceVariant('durable (INBOX=sqlite)', 'sqlite', emulator)
  const memory = await serviceVariant('memory (INBOX=memory)', 'memory', emulator)
  const essential = await essentialVariant(emulator)
  const rows = [durable, memory, essential]

  const durableVsEssential = durable.rps / essential.rps
  const durableVsMemory = durable.rps / memory.rps
  const verdict = (ok: boolean): string => (ok ? 'met' : '**not met**')
  const ratios = [
    `- durable / essential throughput: **${durableVsEssential.toFixed(2)}** (target ≥ 0.5: ${verdict(durableVsEssential >= 0.5)})`,
    `- durable / memory throughput: **${durableVsMemory.toFixed(2)}**`,
    `- durable webhook p99: **${durable.p99.toFixed(1)} ms** (target ≤ 20 ms: ${verdict(durable.p99 <= 20)})`,
  ].join('\n')
  const text = table(rows)
  process.stdout.write(`\n${text}\n\n${ratios.replaceAll('**', '')}\n`)

  const cpus = os.cpus()
  const doc = `# Benchmarks

## Webhook intake

How many Telegram updates per second the service takes in — secret check, inbox write, 👀 reaction
fired, 200 answered — while every brain slot is busy, against the bare minimum of that work.

- **Machine:** ${cpus[0]?.model.trim() ?? 'unknown CPU'} × ${cpus.length}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${os.type()} ${os.release()}
- **Node:** ${process.version}
- **Date:** ${new Date().toISOString().slice(0, 10)}
- **Load:** autocannon, ${CONNECTIONS} connections, ${DURATION} s per variant, POST ${WEBHOOK} with a fresh
  update_id per request, text \`silent\`, spread over ${CHATS} chats; the ${SLOTS} brain slots
  (MAX_CONCURRENT_BRAINS=${SLOTS}) are first filled with \`sleep=60\` messages, so the updates queue.
- **Variants:** *durable* is \`coordinator serve\` with the SQLite inbox (the default); *memory* is the same
  with \`INBOX=memory\`; *essential* is a bare Fastify route (\`dist/bench/essential.js\`) that answers 200 and
  fires the same \`setMessageReaction\` through grammY. Each runs in its own process; the Bot API
  emulator (\`coordinator emulator\`) runs in another. Load generator, services and emulator share the machine.

${text}

"👀 calls" counts the setMessageReaction calls that reached the emulator during the run.

${ratios}

Re-run with \`npm run bench\` (\`npm run build && node dist/bench/run.js --duration S\` for a shorter run).
`
  fs.mkdirSync(path.join(ROOT, 'docs'), { recursive: true })
  fs.writeFileSync(path.join(ROOT, 'docs/BENCHMARKS.md'), doc)
  process.stdout.write(`\nwrote docs/BENCHMARKS.md (${((Date.now() - started) / 1000).toFixed(0)} s)\n`)
}

async function cleanup(): Promise<void> {
  await Promise.all(children.map(stop))
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true })
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
