import { spawn, type ChildProcess } from 'node:child_process'
import { LogReader, waitUntilAnswers, wallClockMs, type LogLine } from './child.js'

export { LOG_LEVEL_WARN } from './child.js'

/** One line of the service's JSON log (pino). */
export type ServiceLogLine = LogLine

export interface ServiceExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface ServiceStartOptions {
  /** Called with every log line as it is read (the soak counts lines this way). */
  readonly onLog?: (line: ServiceLogLine) => void
  /** Keep every line in `logs` (the default); a long run that only counts turns this off. */
  readonly keepLogs?: boolean
  readonly readyTimeoutMs?: number
  /** After `serve`, e.g. ['--role', 'worker']. */
  readonly args?: readonly string[]
  /** Node's own flags, before the CLI path: e.g. --cpu-prof, --inspect, V8 heap settings. */
  readonly nodeArgs?: readonly string[]
  /**
   * Where it will listen, when the caller chose its PORT: start() then waits until its /livez
   * answers rather than for the `coordinator ready` line, which a LOG_LEVEL above info never prints.
   */
  readonly url?: string
  /** stop() follows its signal with SIGKILL if the process is still there this long after. */
  readonly killAfterMs?: number
}

const READY_TIMEOUT_MS = 20_000
const STDERR_KEPT_CHARS = 8000

/**
 * The real service, `node <cli> serve`, in a child process, for the demo, the tests, the soak and
 * the benchmarks. Its log (JSON on a pipe) is parsed, never printed. The environment is exactly
 * `env`: nothing of the parent's (NODE_OPTIONS loaders included) leaks in.
 */
export class ServiceProcess {
  readonly exited: Promise<ServiceExit>
  /** Wall clock (ms, sub-ms resolution) just before the spawn, to compare with its log's `time`. */
  readonly spawnedAtWallMs: number
  /** The address it listens on: `url` as given, or from its `coordinator ready` line. */
  url = ''
  readonly #child: ChildProcess
  readonly #options: ServiceStartOptions
  readonly #log: LogReader
  #stderr = ''
  #closed = false

  private constructor(cliPath: string, env: Readonly<Record<string, string>>, options: ServiceStartOptions) {
    this.#options = options
    this.spawnedAtWallMs = wallClockMs()
    // A test runner may add its loaders to every child's NODE_OPTIONS, whatever `env` says (tap
    // does); `env -u` drops them, then execs node, so the pid stays the service's.
    const argv = ['-u', 'NODE_OPTIONS', process.execPath, ...(options.nodeArgs ?? []), cliPath, 'serve', ...(options.args ?? [])]
    this.#child = spawn('env', argv, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    this.#log = new LogReader(this.#child.stdout as NonNullable<ChildProcess['stdout']>, { keep: options.keepLogs !== false, onLine: options.onLog })
    // 'close', not 'exit': by then its pipes are drained, so the log is complete.
    this.exited = new Promise((resolve) =>
      this.#child.once('close', (code, signal) => {
        this.#closed = true
        this.#log.end(`the service exited (${code ?? signal})`)
        resolve({ code, signal })
      }),
    )
    this.#child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stderr = (this.#stderr + chunk).slice(-STDERR_KEPT_CHARS)
    })
  }

  /** Starts the service and resolves once it listens; rejects with its log and stderr if it exits first. */
  static async start(cliPath: string, env: Readonly<Record<string, string>>, options: ServiceStartOptions = {}): Promise<ServiceProcess> {
    const service = new ServiceProcess(cliPath, env, options)
    const timeoutMs = options.readyTimeoutMs ?? READY_TIMEOUT_MS
    try {
      if (options.url === undefined) {
        const ready = await service.waitForLog((line) => line.msg === 'coordinator ready', timeoutMs)
        service.url = String(ready['url'])
      } else {
        await waitUntilAnswers(`${options.url}/livez`, () => service.running, timeoutMs)
        service.url = options.url
      }
    } catch {
      const why = service.#closed ? `exited (code ${(await service.exited).code}) before it was ready` : `was not ready within ${timeoutMs / 1000} s`
      if (!service.#closed) await service.stop('SIGKILL')
      throw new Error(`the service ${why}:\n${service.tail(10)}`)
    }
    return service
  }

  /** The process id (also its process group's: brains run in groups of their own). */
  get pid(): number {
    return this.#child.pid as number
  }

  /** False once the process has exited. */
  get running(): boolean {
    return !this.#closed
  }

  /** The end of its stderr. */
  get stderr(): string {
    return this.#stderr
  }

  /** Its log lines so far (none if `keepLogs` is off). */
  get logs(): readonly ServiceLogLine[] {
    return this.#log.lines
  }

  /** The first log line (already read or still to come) that matches; rejects after `timeoutMs` or when the service exits. */
  async waitForLog(match: (line: ServiceLogLine) => boolean, timeoutMs = 15_000): Promise<ServiceLogLine> {
    try {
      return await this.#log.waitFor(match, timeoutMs)
    } catch (error) {
      throw new Error(`no matching log line: ${(error as Error).message}; last lines:\n${this.tail(15)}`, { cause: error })
    }
  }

  /** Sends `signal` (SIGTERM: the service drains, running brains finish, and exits 0) and waits for the exit; SIGKILL after `killAfterMs`, if set. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<ServiceExit> {
    if (this.#closed || this.#child.exitCode !== null || this.#child.signalCode !== null) return this.exited
    this.#child.kill(signal)
    const { killAfterMs } = this.#options
    if (killAfterMs === undefined || signal === 'SIGKILL') return this.exited
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), killAfterMs)
    try {
      return await this.exited
    } finally {
      clearTimeout(timer)
    }
  }

  /** The last `count` log lines and any stderr, for a failure report. */
  tail(count: number): string {
    const lines = this.logs.slice(-count).map((line) => JSON.stringify(line))
    return [...lines, this.#stderr.trim()].filter(Boolean).join('\n')
  }
}
