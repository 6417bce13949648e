import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Api } from 'grammy'
import { ServiceProcess, type ServiceLogLine } from '../../src/demo/service.js'
import { startEmulator, type BotApiEmulator } from '../../src/emulator/index.js'
import { isAlive, liveGroupMembers } from './proc.js'
import { ROOT } from './root.js'

export { ROOT, isAlive, liveGroupMembers }
export const CLI = path.join(ROOT, 'dist/cli.js')
export const TEST_BRAIN = path.join(ROOT, 'test/fixtures/brain.mjs')
export const TOKEN = '123456:TEST-token'
export const SECRET = 'test-secret_0123'
/**
 * BRAIN_SANDBOX for the services the tests start: on (the default) unless COORDINATOR_TEST_SANDBOX=off,
 * so that the brain tests can be run both ways.
 */
export const SANDBOX_ENV: Record<string, string> = process.env['COORDINATOR_TEST_SANDBOX'] === 'off' ? { BRAIN_SANDBOX: 'off' } : {}

/**
 * NODE_COMPILE_CACHE for the services the tests start, when the test run has one (`npm test` sets
 * it): each service then loads its modules' compiled code instead of compiling them again.
 */
export const COMPILE_CACHE_ENV: Record<string, string> = process.env['NODE_COMPILE_CACHE'] ? { NODE_COMPILE_CACHE: process.env['NODE_COMPILE_CACHE'] } : {}

/** One line of the service's JSON log. */
export type LogLine = ServiceLogLine

export interface StackOptions {
  /** Extra service environment (overrides the defaults). */
  env?: Record<string, string>
  /** Reuse a state directory (for restarts). */
  stateDir?: string
  emulator?: BotApiEmulator
}

/** The emulator, a state directory, and the service process registered as the emulator's webhook. */
export interface Stack {
  emu: BotApiEmulator
  svc: ServiceProcess
  stateDir: string
  brainLog: string
  env: Record<string, string>
  /** Every log line of every service process this stack ran, oldest first. */
  allLogs(): LogLine[]
  /** Restarts the service on the same state (after it stopped or was killed). */
  restart(extraEnv?: Record<string, string>): Promise<ServiceProcess>
  close(): Promise<void>
}

export function tempDir(prefix = 'coordinator-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix))
}

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const emu = options.emulator ?? (await startEmulator({ token: TOKEN, deliveryRetryMs: 200 }))
  const stateDir = options.stateDir ?? tempDir()
  // The sandbox hides STATE_DIR from the brain: its log lives beside it, in BRAIN_CWD.
  const brainDir = `${stateDir}-brain`
  fs.mkdirSync(brainDir, { recursive: true })
  const brainLog = path.join(brainDir, 'brain.log')
  const env: Record<string, string> = {
    ...SANDBOX_ENV,
    ...COMPILE_CACHE_ENV,
    BRAIN_CWD: brainDir,
    TELEGRAM_BOT_TOKEN: TOKEN,
    TELEGRAM_WEBHOOK_SECRET: SECRET,
    TELEGRAM_API_ROOT: emu.url,
    ALLOW_ALL_CHATS: '1',
    BRAIN_COMMAND: TEST_BRAIN,
    BRAIN_ENV_ALLOW: 'BRAIN_LOG',
    BRAIN_LOG: brainLog,
    STATE_DIR: stateDir,
    LOCK_DIR: path.join(stateDir, 'locks'),
    PORT: '0',
    LOG_LEVEL: 'debug',
    KILL_GRACE_S: '1',
    SHUTDOWN_GRACE_S: '5',
    ...options.env,
  }
  const launch = async (extraEnv: Record<string, string> = {}): Promise<ServiceProcess> => {
    const svc = await ServiceProcess.start(CLI, { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: os.tmpdir(), ...env, ...extraEnv })
    try {
      await new Api(TOKEN, { apiRoot: emu.url }).setWebhook(`${svc.url}/telegram/webhook`, { secret_token: SECRET })
    } catch (error) {
      await svc.stop('SIGKILL')
      throw error
    }
    return svc
  }
  const previous: ServiceProcess[] = []
  let first: ServiceProcess
  try {
    first = await launch()
  } catch (error) {
    // An emulator left open would keep the test file running until tap's timeout.
    if (!options.emulator) await emu.close()
    throw error
  }
  const stack: Stack = {
    emu,
    svc: first,
    allLogs: () => [...previous, stack.svc].flatMap((svc) => svc.logs),
    stateDir,
    brainLog,
    env,
    async restart(extraEnv) {
      previous.push(stack.svc)
      stack.svc = await launch(extraEnv)
      return stack.svc
    },
    async close() {
      await stack.svc.stop('SIGKILL')
      if (!options.emulator) await emu.close()
    },
  }
  return stack
}

/** What a program run by {@link runProgram} left. */
export interface Run {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs a program without a shell and without blocking the event loop (the tests' servers must answer). */
export function runProgram(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, stdout, stderr }))
  })
}

/** The pid (and process group) of the first brain attempt the service started for an update. */
export function brainLeader(svc: ServiceProcess, updateId: number): number | undefined {
  return svc.logs.find((line) => line.msg === 'child started' && line['update_id'] === updateId)?.['pid'] as number | undefined
}

/** The brain log's JSON lines. */
export function readBrainLog(file: string): Record<string, unknown>[] {
  if (!fs.existsSync(file)) return []
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>)
}

export const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls until `check` returns a value other than undefined/false. */
export async function eventually<T>(check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const until = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined && value !== false) return value
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await delay(25)
  }
}

/** A port that was free a moment ago, for a service that must keep its address across restarts. */
export async function freePort(): Promise<number> {
  const net = await import('node:net')
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}
