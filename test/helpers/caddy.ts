// Starts a real Caddy (the `caddy` on PATH) with the project's Caddyfile, for tests that go through
// the reverse proxy. Caddy gets a temporary HOME/XDG_DATA_HOME/XDG_CONFIG_HOME so it writes nothing
// outside the temp directory, its admin endpoint is off (the Caddyfile's own setting, which lets it
// run beside a system Caddy and beside other tests), and the site is plain http://127.0.0.1:<free port>.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { ROOT } from './root.js'

export const PROJECT_CADDYFILE = path.join(ROOT, 'Caddyfile')

/** The reason Caddy tests may not run, or undefined when `caddy` is on PATH and answers. */
export function caddyMissing(): string | undefined {
  const result = spawnSync('caddy', ['version'], { encoding: 'utf8' })
  if (result.error) return `caddy is not installed (${result.error.message})`
  if (result.status !== 0) return `\`caddy version\` exited ${result.status}: ${result.stderr}`
  return undefined
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const { port } = server.address() as net.AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

export interface CaddyOptions {
  /** host:port of the service behind Caddy (COORDINATOR_UPSTREAM). */
  upstream: string
  /** TELEGRAM_IP_RANGES; Caddy's default (Telegram's ranges) when undefined. */
  telegramIpRanges?: string
  /** WEBHOOK_PATH; the Caddyfile's default when undefined. */
  webhookPath?: string
  /** Another Caddyfile than the project's. */
  caddyfile?: string
  /** How long to wait for Caddy to answer; default 20 s. */
  startTimeoutMs?: number
}

export interface RunningCaddy {
  /** http://127.0.0.1:<port>, without a trailing slash. */
  readonly url: string
  readonly port: number
  /** What Caddy wrote to stdout and stderr so far (its log). */
  output(): string
  /** SIGTERM, then SIGKILL after 5 s; removes the temp directory. Safe to call twice. */
  stop(): Promise<void>
}

/** Starts Caddy and resolves once it answers HTTP on its port; rejects with Caddy's log if it can't. */
export async function startCaddy(options: CaddyOptions): Promise<RunningCaddy> {
  let lastError: unknown
  // A free port can be taken between freePort() and Caddy's bind: try a few.
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(options, await freePort())
    } catch (error) {
      lastError = error
      if (!/address already in use/u.test(String(error))) throw error
    }
  }
  throw lastError
}

async function startOnce(options: CaddyOptions, port: number): Promise<RunningCaddy> {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'coordinator-caddy-'))
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: home,
    XDG_DATA_HOME: path.join(home, 'data'),
    XDG_CONFIG_HOME: path.join(home, 'config'),
    COORDINATOR_SITE: `http://127.0.0.1:${port}`,
    COORDINATOR_UPSTREAM: options.upstream,
    ...(options.telegramIpRanges === undefined ? {} : { TELEGRAM_IP_RANGES: options.telegramIpRanges }),
    ...(options.webhookPath === undefined ? {} : { WEBHOOK_PATH: options.webhookPath }),
  }
  const child = spawn('caddy', ['run', '--config', options.caddyfile ?? PROJECT_CADDYFILE, '--adapter', 'caddyfile'], {
    cwd: home,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let log = ''
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (log += chunk))
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (log += chunk))
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()))
  let spawnError: Error | undefined
  child.once('error', (error) => (spawnError = error))

  let stopped = false
  const stop = async (): Promise<void> => {
    if (!stopped) {
      stopped = true
      await terminate(child, exited)
      fs.rmSync(home, { recursive: true, force: true })
    }
  }

  const deadline = Date.now() + (options.startTimeoutMs ?? 20_000)
  for (;;) {
    if (spawnError || child.exitCode !== null || child.signalCode !== null) {
      await stop()
      throw new Error(`caddy exited before answering: ${spawnError?.message ?? ''}\n${log}`)
    }
    if (await answers(port)) break
    if (Date.now() > deadline) {
      await stop()
      throw new Error(`caddy did not answer on 127.0.0.1:${port} in time\n${log}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return { url: `http://127.0.0.1:${port}`, port, output: () => log, stop }
}

/** Whether anything answers an HTTP request on the port (Caddy refuses GET / with a 404). */
function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const request = http.get({ host: '127.0.0.1', port, path: '/', timeout: 1000, agent: false }, (response) => {
      response.resume()
      resolve(true)
    })
    request.once('timeout', () => request.destroy())
    request.once('error', () => resolve(false))
  })
}

async function terminate(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
  await exited
  clearTimeout(timer)
}
