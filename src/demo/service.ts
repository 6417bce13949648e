import { spawn, type ChildProcess } from 'node:child_process'

/** One line of the service's JSON log (pino): `time` is Date.now() ms in the service. */
export interface ServiceLogLine {
  readonly level: number
  readonly time: number
  readonly msg: string
  readonly [field: string]: unknown
}

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
}

/** pino's number for the warn level; error and fatal are above it. */
export const LOG_LEVEL_WARN = 40
const READY_TIMEOUT_MS = 20_000
const STDERR_KEPT_CHARS = 8000

interface LogWaiter {
  readonly match: (line: ServiceLogLine) => boolean
  readonly resolve: (line: ServiceLogLine) => void
}

/**
 * The real service, `node <cli> serve`, in a child process, for the demo, the tests and the
 * soak. Its log (JSON on a pipe) is parsed, never printed. The environment is exactly `env`:
 * nothing of the parent's (NODE_OPTIONS loaders included) leaks in.
 */
export class ServiceProcess {
  readonly logs: ServiceLogLine[] = []
  readonly exited: Promise<ServiceExit>
  /** The address it listens on, from its `coordinator ready` line. */
  url = ''
  readonly #child: ChildProcess
  readonly #options: ServiceStartOptions
  #waiters = new Set<LogWaiter>()
  #stderr = ''
  #closed = false

  private constructor(cliPath: string, env: Readonly<Record<string, string>>, options: ServiceStartOptions) {
    this.#options = options
    // A test runner may add its loaders to every child's NODE_OPTIONS, whatever `env` says (tap
    // does); `env -u` drops them, then execs node, so the pid stays the service's.
    this.#child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, cliPath, 'serve', ...(options.args ?? [])], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    // 'close', not 'exit': by then its pipes are drained, so the log is complete.
    this.exited = new Promise((resolve) =>
      this.#child.once('close', (code, signal) => {
        this.#closed = true
        resolve({ code, signal })
      }),
    )
    let partial = ''
    this.#child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) this.#parse(line)
    })
    this.#child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stderr = (this.#stderr + chunk).slice(-STDERR_KEPT_CHARS)
    })
  }

  /** Starts the service and resolves once it listens; rejects with its log and stderr if it exits first. */
  static async start(cliPath: string, env: Readonly<Record<string, string>>, options: ServiceStartOptions = {}): Promise<ServiceProcess> {
    const service = new ServiceProcess(cliPath, env, options)
    const timeoutMs = options.readyTimeoutMs ?? READY_TIMEOUT_MS
    try {
      const ready = await service.waitForLog((line) => line.msg === 'coordinator ready', timeoutMs)
      service.url = String(ready['url'])
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

  /** The first log line (already read or still to come) that matches; rejects after `timeoutMs` or when the service exits. */
  waitForLog(match: (line: ServiceLogLine) => boolean, timeoutMs = 15_000): Promise<ServiceLogLine> {
    const seen = this.logs.find(match)
    if (seen) return Promise.resolve(seen)
    return new Promise((resolve, reject) => {
      const fail = (why: string): void => {
        this.#waiters.delete(waiter)
        clearTimeout(timer)
        reject(new Error(`no matching log line: ${why}; last lines:\n${this.tail(15)}`))
      }
      const waiter: LogWaiter = {
        match,
        resolve: (line) => {
          clearTimeout(timer)
          resolve(line)
        },
      }
      const timer = setTimeout(() => fail(`none within ${timeoutMs} ms`), timeoutMs)
      this.#waiters.add(waiter)
      void this.exited.then(({ code, signal }) => {
        if (this.#waiters.has(waiter)) fail(`the service exited (${code ?? signal})`)
      })
    })
  }

  /** Sends `signal` (SIGTERM: the service drains, running brains finish, and exits 0) and waits for the exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<ServiceExit> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill(signal)
    return this.exited
  }

  /** The last `count` log lines and any stderr, for a failure report. */
  tail(count: number): string {
    const lines = this.logs.slice(-count).map((line) => JSON.stringify(line))
    return [...lines, this.#stderr.trim()].filter(Boolean).join('\n')
  }

  #parse(text: string): void {
    if (!text.trim()) return
    let line: ServiceLogLine
    try {
      line = JSON.parse(text) as ServiceLogLine
    } catch {
      // Anything but a JSON line is unexpected output: it counts as a warning.
      line = { level: LOG_LEVEL_WARN, time: Date.now(), msg: text }
    }
    if (this.#options.keepLogs !== false) this.logs.push(line)
    this.#options.onLog?.(line)
    for (const waiter of this.#waiters) {
      if (!waiter.match(line)) continue
      this.#waiters.delete(waiter)
      waiter.resolve(line)
    }
  }
}
