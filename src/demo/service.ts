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

/** pino's number for the warn level; error and fatal are above it. */
export const LOG_LEVEL_WARN = 40
const READY_TIMEOUT_MS = 20_000
const STDERR_KEPT_CHARS = 4000

/**
 * The real service, `node <cli> serve`, in a child process. Its log (JSON on a pipe) is parsed and
 * kept, never printed: the demo reads it for brain start and end times.
 */
export class ServiceProcess {
  readonly logs: ServiceLogLine[] = []
  readonly exited: Promise<ServiceExit>
  /** The address it listens on, from its `coordinator ready` line. */
  url = ''
  readonly #child: ChildProcess
  #stderr = ''
  #closed = false

  private constructor(cliPath: string, env: Readonly<Record<string, string>>) {
    this.#child = spawn(process.execPath, [cliPath, 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
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

  /** Starts the service and resolves once it listens; rejects with its stderr if it exits first. */
  static async start(cliPath: string, env: Readonly<Record<string, string>>): Promise<ServiceProcess> {
    const service = new ServiceProcess(cliPath, env)
    const ready = await service.#waitForLog((line) => line.msg === 'coordinator ready', READY_TIMEOUT_MS)
    if (ready === undefined) {
      const exit = service.#closed ? await service.exited : await service.stop()
      const why = service.#closed ? `exited (code ${exit.code}) before it was ready` : `was not ready within ${READY_TIMEOUT_MS / 1000} s`
      throw new Error(`the service ${why}:\n${service.tail(10)}`)
    }
    service.url = String(ready['url'])
    return service
  }

  /** False once the process has exited. */
  get running(): boolean {
    return !this.#closed
  }

  /** SIGTERM, then waits for the exit: the service drains (running brains finish) and exits 0. */
  async stop(): Promise<ServiceExit> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill('SIGTERM')
    return this.exited
  }

  /** The last `count` log lines and any stderr, for a failure report. */
  tail(count: number): string {
    const lines = this.logs.slice(-count).map((line) => JSON.stringify(line))
    return [...lines, this.#stderr.trim()].filter(Boolean).join('\n')
  }

  #parse(text: string): void {
    if (!text.trim()) return
    try {
      this.logs.push(JSON.parse(text) as ServiceLogLine)
    } catch {
      this.logs.push({ level: LOG_LEVEL_WARN, time: Date.now(), msg: text })
    }
  }

  // Polls the parsed lines: the log is small and this runs only until the service is ready.
  async #waitForLog(match: (line: ServiceLogLine) => boolean, timeoutMs: number): Promise<ServiceLogLine | undefined> {
    const until = Date.now() + timeoutMs
    while (Date.now() < until && !this.#closed) {
      const line = this.logs.find(match)
      if (line) return line
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    return this.logs.find(match)
  }
}
