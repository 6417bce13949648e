// What every benchmark shares: paths, the bot's credentials, child processes (the service, the
// emulator, the baselines) with their logs, ports, temporary directories and clean-up. The service
// runs through ServiceProcess, as in the demo, the tests and the soak; the other scripts through BenchChild.
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'
import { Api } from 'grammy'
import type { Chat, Message, User } from 'grammy/types'
import { LogReader, waitUntilAnswers, wallClockMs, type LogLine } from '../src/demo/child.js'
import { ServiceProcess } from '../src/demo/service.js'
import { cpuSecondsOf, statusKb } from '../test/helpers/proc.js'
import { ROOT } from '../test/helpers/root.js'
import { INBOX_FILE, SqliteInbox } from '../src/store/sqlite.js'

export { ROOT, cpuSecondsOf, wallClockMs }
export type { LogLine }
export const CLI = path.join(ROOT, 'dist/cli.js')
/** Where the benchmark's own compiled scripts are (build/bench): the probe, the baselines, … */
export const BENCH_BUILD = path.dirname(fileURLToPath(import.meta.url))
/** The scriptable test brain: `sleep=S`, `hang`, `silent`, … (see its header). */
export const TEST_BRAIN = path.join(ROOT, 'test/fixtures/brain.mjs')
export const TOKEN = '123456:BENCH-token'
export const SECRET = 'bench-secret_0123'
export const WEBHOOK_PATH = '/telegram/webhook'
export const SLOTS = 4
export const HEADERS = { 'content-type': 'application/json', 'x-telegram-bot-api-secret-token': SECRET } as const
const UP_TIMEOUT_MS = 20_000
const STOP_GRACE_MS = 10_000
const STDERR_KEPT_CHARS = 8_000

export const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

const tempDirs: string[] = []
export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `coordinator-bench-${prefix}-`))
  tempDirs.push(dir)
  return dir
}

/** Where `--cpu-prof` was asked to put the service processes' CPU profiles, if anywhere. */
let cpuProfileDir: string | undefined
export function profileServicesInto(dir: string): void {
  cpuProfileDir = path.resolve(dir)
  fs.mkdirSync(cpuProfileDir, { recursive: true })
}

/** Node's flags for a process to profile, when the run asked for profiles: none otherwise. */
function profileFlags(): string[] {
  return cpuProfileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${cpuProfileDir}`]
}

/** Node flags every `coordinator serve` of this run starts with (`--node-flags`), e.g. V8 heap settings. */
let serviceNodeFlags: readonly string[] = []
// Environment variables every `coordinator serve` of this run gets (`--service-env`), e.g. MALLOC_ARENA_MAX.
let serviceExtraEnv: Readonly<Record<string, string>> = {}
export function startServicesWith(flags: readonly string[], env: Readonly<Record<string, string>> = {}): void {
  serviceNodeFlags = flags
  serviceExtraEnv = env
}

/** A child's whole environment: `env` over a PATH and a HOME, nothing else of the bench's (NODE_OPTIONS loaders included). */
function childEnv(env: Readonly<Record<string, string>>): Record<string, string> {
  return { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: os.tmpdir(), ...env }
}

export interface StartOptions {
  /** Extra arguments for node itself (before the script), e.g. --inspect. */
  readonly nodeArgs?: readonly string[]
  /** Parse stdout as JSON lines (a baseline's "ready", the probe's and the inspector's results). */
  readonly readLog?: boolean
  /** Profile this process's CPU when the run asked for it (--cpu-prof). */
  readonly profile?: boolean
}

const children = new Set<BenchChild>()
const services = new Set<ServiceProcess>()

/** A node script the bench started beside the service: the emulator, a baseline, the probe, the inspector. */
export class BenchChild {
  readonly name: string
  readonly process: ChildProcess
  readonly exited: Promise<void>
  readonly #log: LogReader | undefined
  #stderr = ''
  #stopping = false

  constructor(name: string, script: string, args: readonly string[], env: Record<string, string>, options: StartOptions = {}) {
    this.name = name
    const profile = options.profile === true ? profileFlags() : []
    this.process = spawn(process.execPath, [...profile, ...(options.nodeArgs ?? []), script, ...args], {
      env: childEnv(env),
      stdio: ['ignore', options.readLog ? 'pipe' : 'ignore', 'pipe'],
    })
    this.#log = options.readLog ? new LogReader(this.process.stdout as NonNullable<ChildProcess['stdout']>, { keep: true }) : undefined
    this.exited = new Promise((resolve) =>
      this.process.once('close', (code, signal) => {
        this.#log?.end(`it exited (${code ?? signal})`)
        resolve()
      }),
    )
    this.process.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stderr = (this.#stderr + chunk).slice(-STDERR_KEPT_CHARS)
    })
    this.process.once('exit', (code, signal) => {
      if (!this.#stopping && code !== 0) process.stderr.write(`bench: ${name} exited (${code ?? signal}):\n${this.#stderr}\n`)
    })
    children.add(this)
  }

  get pid(): number {
    const pid = this.process.pid
    if (pid === undefined) throw new Error(`${this.name} has no pid: it could not be started`)
    return pid
  }

  get alive(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null
  }

  get stderr(): string {
    return this.#stderr
  }

  /** The first log line (already read or still to come) that matches; rejects after timeoutMs or when it exits. */
  async waitForLog(match: (line: LogLine) => boolean, timeoutMs: number): Promise<LogLine> {
    if (this.#log === undefined) throw new Error(`${this.name} was started without readLog`)
    try {
      return await this.#log.waitFor(match, timeoutMs)
    } catch (error) {
      throw new Error(`${this.name}: no matching log line: ${(error as Error).message}; stderr:\n${this.#stderr}`, { cause: error })
    }
  }

  /** SIGTERM (the service drains; SHUTDOWN_GRACE_S is short in the bench), SIGKILL if it lingers. */
  async stop(): Promise<void> {
    this.#stopping = true
    if (this.alive) {
      this.process.kill('SIGTERM')
      const timer = setTimeout(() => this.process.kill('SIGKILL'), STOP_GRACE_MS)
      await this.exited
      clearTimeout(timer)
    }
    children.delete(this)
  }

  /** SIGKILL at once: a crash, or a process whose shutdown is of no interest. */
  async kill(): Promise<void> {
    this.#stopping = true
    if (this.alive) this.process.kill('SIGKILL')
    await this.exited
    children.delete(this)
  }
}

/** Polls `url` until it answers below 500; throws if the process exits or 20 s pass. */
export async function waitUntilUp(url: string, child: BenchChild): Promise<void> {
  try {
    await waitUntilAnswers(url, () => child.alive, UP_TIMEOUT_MS)
  } catch (error) {
    throw new Error(`${child.name}: ${(error as Error).message}:\n${child.stderr}`, { cause: error })
  }
}

export interface EmulatorProcess {
  readonly url: string
  readonly child: BenchChild
}

/** The Bot API emulator as its own process (`coordinator emulator`), for the heavy benchmarks. */
export async function startEmulatorProcess(): Promise<EmulatorProcess> {
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const child = new BenchChild('emulator', CLI, ['emulator', '--port', String(port), '--token', TOKEN], {})
  await waitUntilUp(`${url}/_emulator/webhook`, child)
  return { url, child }
}

export interface ServiceOptions {
  readonly apiRoot: string
  /** Environment beyond the bench defaults (INBOX, ACK_MODE, LOG_LEVEL, BRAIN_COMMAND, …). */
  readonly env?: Record<string, string>
  readonly stateDir?: string
  /** Node's own flags, after the run's --cpu-prof and --node-flags ones, e.g. --inspect. */
  readonly nodeArgs?: readonly string[]
  /** Keep its log lines (`child.logs`) for the benchmark to read; they are parsed either way. */
  readonly readLog?: boolean
  /** After `serve`, e.g. ['--role', 'worker'] in the Postgres mode. */
  readonly args?: readonly string[]
}

export interface RunningService {
  readonly url: string
  readonly child: ServiceProcess
  readonly stateDir: string
}

/** `coordinator serve` in its own process, with the bench's defaults; resolves once it answers /livez. */
export async function startService(options: ServiceOptions): Promise<RunningService> {
  const port = await freePort()
  const stateDir = options.stateDir ?? tempDir('state')
  const url = `http://127.0.0.1:${port}`
  const env = childEnv({
    TELEGRAM_BOT_TOKEN: TOKEN,
    TELEGRAM_WEBHOOK_SECRET: SECRET,
    TELEGRAM_API_ROOT: options.apiRoot,
    ALLOW_ALL_CHATS: '1',
    BRAIN_COMMAND: TEST_BRAIN,
    MAX_CONCURRENT_BRAINS: String(SLOTS),
    STATE_DIR: stateDir,
    PORT: String(port),
    LOG_LEVEL: 'warn',
    KILL_GRACE_S: '1',
    SHUTDOWN_GRACE_S: '1',
    // `hang` brains must hold their slots for the whole run, however long filling the queues takes.
    BRAIN_TIMEOUT_S: '86400',
    MESSAGE_BUDGET_S: '86400',
    ...serviceExtraEnv,
    ...options.env,
  })
  const child = await ServiceProcess.start(CLI, env, {
    url,
    args: options.args ?? [],
    nodeArgs: [...profileFlags(), ...serviceNodeFlags, ...(options.nodeArgs ?? [])],
    keepLogs: options.readLog ?? false,
    readyTimeoutMs: UP_TIMEOUT_MS,
    killAfterMs: STOP_GRACE_MS,
  })
  services.add(child)
  void child.exited.then(({ code }) => {
    services.delete(child)
    // The bench stops it with signals (SIGTERM, then SIGKILL if it lingers): an exit status other than 0 is its own failure.
    if (code !== null && code !== 0) process.stderr.write(`bench: the service exited (${code}):\n${child.tail(10)}\n`)
  })
  return { url, child, stateDir }
}

/** Has the emulator deliver updates to `url` as Telegram would (per-chat order, 40 connections). */
export async function pointWebhookAt(apiRoot: string, url: string): Promise<void> {
  await new Api(TOKEN, { apiRoot }).setWebhook(url, { secret_token: SECRET })
}

/** Polls /healthz from its own process (see probe.ts); `result` resolves with the latencies, ms. */
/** What a /healthz poller saw: the latency of each check answered 200, and how many were not. */
export interface Probed {
  readonly latencies: number[]
  /** Checks that failed (an error, or any status but 200): reported beside the percentiles, never dropped. */
  readonly failures: number
}

export function probeHealth(serviceUrl: string, perS: number, durationS: number): { result: Promise<Probed> } {
  const probe = new BenchChild('healthz probe', path.join(BENCH_BUILD, 'probe.js'), [`${serviceUrl}/healthz`, String(perS), String(durationS)], {}, { readLog: true })
  return {
    result: probe
      .waitForLog((line) => line.msg === 'probe', durationS * 1000 + 10_000)
      .then((line) => ({ latencies: line['latencies'] as number[], failures: line['failures'] as number })),
  }
}

/** The part of /healthz the benchmarks wait on. */
export interface Health {
  readonly brains: { readonly running: number }
  readonly queue: { readonly pending: number; readonly chats: number }
}

export async function health(serviceUrl: string): Promise<Health> {
  const response = await fetch(`${serviceUrl}/healthz`)
  return (await response.json()) as Health
}

/** Polls /healthz until `done` holds; throws with the last report after `timeoutMs`. */
export async function waitForHealth(serviceUrl: string, done: (report: Health) => boolean, timeoutMs: number, what: string): Promise<Health> {
  const until = Date.now() + timeoutMs
  for (;;) {
    const report = await health(serviceUrl)
    if (done(report)) return report
    if (Date.now() > until) throw new Error(`service did not reach "${what}" within ${timeoutMs / 1000} s; /healthz says ${JSON.stringify(report)}`)
    await delay(50)
  }
}

/** A private chat's text message, as Telegram describes it. */
export function textMessage(chatId: number, messageId: number, text: string): Message.TextMessage & { chat: Chat.PrivateChat; from: User } {
  return {
    message_id: messageId,
    date: Math.floor(Date.now() / 1000),
    chat: { id: chatId, type: 'private', first_name: `u${chatId}` },
    from: { id: chatId, is_bot: false, first_name: `u${chatId}` },
    text,
  }
}

/** A raw Telegram Update with a text message, as the webhook receives it. */
export function textUpdate(updateId: number, chatId: number, messageId: number, text: string): string {
  return JSON.stringify({ update_id: updateId, message: textMessage(chatId, messageId, text) })
}

/**
 * Makes message 1 of each chat known to an emulator in another process, so that the service's
 * reactions to it (and replies) succeed: Telegram, and the emulator, refuse to react to a message
 * they never saw. The bench's updates then all carry message_id 1; the service keys on update_id.
 */
export async function registerChats(emulatorUrl: string, chatIds: readonly number[]): Promise<void> {
  const CONCURRENCY = 16
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < chatIds.length) {
      const chatId = chatIds[next++] as number
      const response = await fetch(`${emulatorUrl}/_emulator/updates`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ message: textMessage(chatId, 1, 'hello') }),
      })
      if (!response.ok) throw new Error(`registering chat ${chatId} with the emulator failed: ${response.status} ${await response.text()}`)
      await response.arrayBuffer().catch(() => undefined)
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
}

/** A process's resident memory in MB (10⁶ bytes), from /proc/<pid>/status. */
export interface Memory {
  readonly rssMB: number
  /** VmHWM: the highest RSS so far. */
  readonly peakMB: number
  /** RssAnon: heap, stacks, malloc; the rest of RSS is mapped files (code, libraries) and shared memory. */
  readonly anonMB: number
}

export function memoryOf(pid: number): Memory {
  const megabytes = (field: string): number => (statusKb(pid, field) * 1024) / 1e6
  return { rssMB: megabytes('VmRSS'), peakMB: megabytes('VmHWM'), anonMB: megabytes('RssAnon') }
}

/** A process's anonymous resident memory by who maps it, MB, from the layout of /proc/<pid>/smaps. */
export interface AnonymousMemory {
  /** glibc malloc's main arena (`[heap]`, grown with brk): the main thread's malloc, SQLite's page cache among it. */
  readonly mainArenaMB: number
  /** glibc's arenas for other threads (V8's compiler and GC workers, libuv's pool): 64 MiB-aligned reservations. */
  readonly threadArenasMB: number
  /** The rest: V8's heap and code pages, thread stacks, buffers mmap'd on their own. */
  readonly otherMB: number
}

// glibc reserves each heap of a thread's arena as 64 MiB aligned on 64 MiB (HEAP_MAX_SIZE on 64-bit):
// the part in use read-write, the rest PROT_NONE up to the next boundary.
const ARENA_HEAP_BYTES = 64n * 1024n * 1024n

export function anonymousOf(pid: number): AnonymousMemory {
  interface Mapping {
    readonly start: bigint
    readonly end: bigint
    readonly perms: string
    readonly name: string
    rssKB: number
  }
  const mappings: Mapping[] = []
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/u.exec(line)
    if (head) mappings.push({ start: BigInt(`0x${head[1]}`), end: BigInt(`0x${head[2]}`), perms: head[3] as string, name: head[4] ?? '', rssKB: 0 })
    const rss = /^Rss:\s+(\d+) kB/u.exec(line)
    const last = mappings.at(-1)
    if (rss && last) last.rssKB = Number(rss[1])
  }
  let main = 0
  let threads = 0
  let other = 0
  for (const [i, m] of mappings.entries()) {
    const next = mappings[i + 1]
    const boundary = m.start + ARENA_HEAP_BYTES
    const arenaHeap =
      m.name === '' &&
      m.perms === 'rw-p' &&
      m.start % ARENA_HEAP_BYTES === 0n &&
      (m.end === boundary || (next !== undefined && next.start === m.end && next.end === boundary && next.perms === '---p' && next.name === ''))
    if (m.name === '[heap]') main += m.rssKB
    else if (arenaHeap) threads += m.rssKB
    else if (m.name === '' || m.name === '[stack]' || m.name.startsWith('[anon:')) other += m.rssKB
  }
  const megabytes = (kB: number): number => (kB * 1024) / 1e6
  return { mainArenaMB: megabytes(main), threadArenasMB: megabytes(threads), otherMB: megabytes(other) }
}

/** Stops every child still running (gracefully, so services reap their brains) and removes the temporary directories. */
export async function cleanup(): Promise<void> {
  await Promise.all([...[...children].map((child) => child.stop()), ...[...services].map((service) => service.stop())])
  for (const dir of tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true })
}

/**
 * Writes a brain that records, as its very first act, which update it runs and when (wall clock,
 * µs, from bash's $EPOCHREALTIME: no process of its own), then exits without a reply. Returns its
 * path; the service must pass BENCH_BRAIN_LOG through (BRAIN_ENV_ALLOW).
 */
export function writeStampBrain(dir: string): { brain: string; log: string; env: Record<string, string> } {
  const brain = path.join(dir, 'stamp-brain')
  fs.writeFileSync(brain, '#!/bin/bash\nprintf \'%s %s\\n\' "$COORDINATOR_UPDATE_ID" "$EPOCHREALTIME" >> "$BENCH_BRAIN_LOG"\n', { mode: 0o755 })
  const log = path.join(dir, 'brain-starts.log')
  // The brain's working directory is the one place outside its chat that a sandboxed brain may write.
  return { brain, log, env: { BRAIN_COMMAND: brain, BRAIN_CWD: dir, BRAIN_ENV_ALLOW: 'BENCH_BRAIN_LOG', BENCH_BRAIN_LOG: log } }
}

/** The stamp brain's log: update_id → wall-clock ms when that brain started. */
export function readStamps(log: string): Map<number, number> {
  const stamps = new Map<number, number>()
  if (!fs.existsSync(log)) return stamps
  for (const line of fs.readFileSync(log, 'utf8').split('\n')) {
    const [updateId, seconds] = line.trim().split(' ')
    if (updateId && seconds) stamps.set(Number(updateId), Number(seconds.replace(',', '.')) * 1000)
  }
  return stamps
}

/**
 * Leaves `total` queued messages in STATE_DIR's inbox, as a stopped service leaves them, over
 * `chats` chats in turn (update ids from 1, text `text`). The schema is the service's own
 * (SqliteInbox creates it); the rows go in one transaction, so a million take seconds, not minutes.
 */
export function fillInbox(stateDir: string, total: number, chats: number, text: string): void {
  new SqliteInbox(stateDir).close()
  const db = new Database(path.join(stateDir, INBOX_FILE))
  const insert = db.prepare(
    `INSERT INTO messages (update_id, chat_id, message_id, update_json, state, received_at) VALUES (?, ?, 1, ?, 'queued', ?)`,
  )
  const now = Date.now()
  db.transaction(() => {
    for (let i = 0; i < total; i++) {
      const chatId = 1 + (i % chats)
      insert.run(i + 1, chatId, JSON.stringify({ update_id: i + 1, message: textMessage(chatId, 1, text) }), now)
    }
  })()
  db.close()
}

/** The ws:// URL a service started with --inspect printed. */
export async function inspectorUrlOf(child: ServiceProcess): Promise<string> {
  const until = Date.now() + 10_000
  for (;;) {
    const match = /ws:\/\/\S+/u.exec(child.stderr)
    if (match) return match[0]
    if (Date.now() > until) throw new Error(`the service printed no inspector URL; stderr:\n${child.stderr}`)
    await delay(50)
  }
}

/** bench/inspector.ts on a service started with --inspect: a forced GC, or with `args` a CPU profile. */
export function startInspector(inspectorUrl: string, args: readonly string[] = []): BenchChild {
  return new BenchChild('inspector', path.join(BENCH_BUILD, 'inspector.js'), [inspectorUrl, ...args], {}, { readLog: true })
}
