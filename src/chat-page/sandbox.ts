import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Api } from 'grammy'
import { UsageError } from '../cli/usage.js'
import { DEFAULTS } from '../config.js'
import { DEFAULT_PATH } from '../brain/env.js'
import { startEmulator, type BotApiEmulator } from '../emulator/index.js'
import { shellQuote } from '../demo/demo.js'
import { ServiceProcess } from '../demo/service.js'
import { callEvent, logEvent } from './page-events.js'
import { PageServer, type SandboxChat } from './page-server.js'

// Resolved from this file (dist/chat-page/sandbox.js), so the sandbox runs from any working directory.
const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const CLI_PATH = path.join(PACKAGE_ROOT, 'dist/cli.js')
const STATIC_DIR = path.join(PACKAGE_ROOT, 'chat-page')
/** The brain when BRAIN_COMMAND is not set. */
export const SANDBOX_DEFAULT_BRAIN = path.join(PACKAGE_ROOT, 'scripts/brains/echo')
// The emulator accepts only this token; nothing reaches the real Telegram.
const SANDBOX_TOKEN = '123456:SANDBOX-token'
// How often new Bot API calls and log lines are turned into page events.
const FOLLOW_EVERY_MS = 40
const USAGE = 'usage: coordinator sandbox [--port P] [--state DIR]'

const ADA = { id: 1001, firstName: 'Ada', username: 'ada' }
const GRACE = { id: 1002, firstName: 'Grace', username: 'grace' }
const ALAN = { id: 1003, firstName: 'Alan', username: 'alan' }
/** The sandbox's chats: Ada's private chat with the bot, and a group where three people write. */
export const SANDBOX_CHATS: readonly SandboxChat[] = [
  { id: ADA.id, type: 'private', title: 'Ada', users: [ADA] },
  { id: -4001, type: 'group', title: 'Sandbox group', users: [ADA, GRACE, ALAN] },
]

/**
 * `coordinator sandbox [--port P] [--state DIR]`: the Bot API emulator, the real service (a child
 * process, with BRAIN_COMMAND from the environment or the echo brain) and a chat page on
 * 127.0.0.1, whose URL is the first line printed. Needs no token and no network. Runs until
 * SIGINT or SIGTERM; a temporary state directory is removed then.
 */
export async function runSandbox(args: string[]): Promise<number> {
  const options = readOptions(args)
  const stateDir = options.stateDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'coordinator-sandbox-'))
  const brain = process.env['BRAIN_COMMAND']?.trim() || SANDBOX_DEFAULT_BRAIN
  let emulator: BotApiEmulator | undefined
  let service: ServiceProcess | undefined
  let page: PageServer | undefined
  let follower: NodeJS.Timeout | undefined
  const cleanUp = async (): Promise<void> => {
    clearInterval(follower)
    await service?.stop()
    await page?.close()
    await emulator?.close()
    if (options.stateDir === undefined) fs.rmSync(stateDir, { recursive: true, force: true })
  }

  try {
    emulator = await startEmulator({ token: SANDBOX_TOKEN, bot: { username: 'sandbox_bot', firstName: 'Sandbox Bot' } })
    for (const chat of SANDBOX_CHATS) {
      emulator.addChat({ id: chat.id, type: chat.type, title: chat.title, firstName: chat.title, username: chat.users[0]?.username ?? 'user' })
    }
    const secret = randomBytes(16).toString('hex')
    service = await ServiceProcess.start(CLI_PATH, serviceEnvironment({ apiRoot: emulator.url, secret, stateDir, brain }))
    await new Api(SANDBOX_TOKEN, { apiRoot: emulator.url }).setWebhook(`${service.url}${DEFAULTS.webhookPath}`, { secret_token: secret })
    page = new PageServer({
      emulator,
      chats: SANDBOX_CHATS,
      staticDir: STATIC_DIR,
      about: { brain, state: stateDir, service: service.url },
    })
    const url = await page.listen(options.port)
    process.stdout.write(`${url}\n`)
    process.stdout.write(`chat page: open it in a browser. Brain: ${brain}. State: ${stateDir}${options.stateDir === undefined ? ' (removed at the end)' : ''}. Ctrl-C stops.\n`)

    const running = { emulator, service, page }
    let callsSeen = 0
    let logsSeen = 0
    follower = setInterval(() => {
      const { calls } = running.emulator
      for (; callsSeen < calls.length; callsSeen++) {
        const event = callEvent(calls[callsSeen] as (typeof calls)[number])
        if (event) running.page.publish(event)
      }
      const { logs } = running.service
      for (; logsSeen < logs.length; logsSeen++) {
        const event = logEvent(logs[logsSeen] as (typeof logs)[number])
        if (event) running.page.publish(event)
      }
    }, FOLLOW_EVERY_MS)

    const stopped = await new Promise<'signal' | 'service'>((resolve) => {
      process.once('SIGINT', () => resolve('signal'))
      process.once('SIGTERM', () => resolve('signal'))
      void running.service.exited.then(() => resolve('service'))
    })
    if (stopped === 'service') {
      const { code, signal } = await running.service.exited
      process.stderr.write(`sandbox: the service stopped (${signal ?? `exit ${code}`}); its last log lines:\n${running.service.tail(15)}\n`)
      return 1
    }
    return 0
  } catch (error) {
    process.stderr.write(`sandbox failed: ${error instanceof Error ? error.message : String(error)}\n`)
    return 1
  } finally {
    await cleanUp()
  }
}

function readOptions(args: string[]): { port: number; stateDir: string | undefined } {
  let values: { port?: string; state?: string }
  try {
    values = parseArgs({ args, options: { port: { type: 'string' }, state: { type: 'string' } }, strict: true }).values
  } catch (error) {
    throw new UsageError(`sandbox: ${(error as Error).message}; ${USAGE}`)
  }
  const port = values.port === undefined ? 0 : Number(values.port)
  if (values.port !== undefined && (!/^\d+$/u.test(values.port) || port > 65_535)) {
    throw new UsageError(`sandbox --port must be 0–65535 (0 picks a free port); got "${values.port}"`)
  }
  return { port, stateDir: values.state === undefined ? undefined : path.resolve(values.state) }
}

/**
 * The service's environment: the caller's (so BRAIN_COMMAND, BRAIN_ENV_ALLOW and what it names,
 * the limits and BUSY_MODE apply) with the sandbox's own Telegram, chats, state and address.
 */
function serviceEnvironment(settings: { apiRoot: string; secret: string; stateDir: string; brain: string }): Record<string, string> {
  const inherited = Object.fromEntries(Object.entries(process.env).filter((entry): entry is [string, string] => entry[1] !== undefined))
  const echo = settings.brain === SANDBOX_DEFAULT_BRAIN
  const level = process.env['LOG_LEVEL']
  return {
    ...inherited,
    // The echo brain is `#!/usr/bin/env node`: find the node running the sandbox first.
    PATH: [path.dirname(process.execPath), process.env['PATH'] || DEFAULT_PATH].join(path.delimiter),
    TELEGRAM_BOT_TOKEN: SANDBOX_TOKEN,
    TELEGRAM_WEBHOOK_SECRET: settings.secret,
    TELEGRAM_API_ROOT: settings.apiRoot,
    ALLOWED_CHAT_IDS: SANDBOX_CHATS.map((chat) => chat.id).join(','),
    ALLOWED_USER_IDS: [...new Set(SANDBOX_CHATS.flatMap((chat) => chat.users.map((user) => user.id)))].join(','),
    ALLOW_ALL_CHATS: '0',
    BRAIN_COMMAND: echo ? shellQuote(settings.brain) : settings.brain,
    ...(echo ? { BRAIN_ENV_ALLOW: 'ECHO_DELAY_S', ECHO_DELAY_S: process.env['ECHO_DELAY_S'] ?? '1' } : {}),
    STATE_DIR: settings.stateDir,
    LOCK_DIR: path.join(settings.stateDir, 'locks'),
    HOST: '127.0.0.1',
    PORT: '0',
    // The page's timeline is made of the info lines.
    LOG_LEVEL: level === 'debug' || level === 'trace' ? level : 'info',
    SHUTDOWN_GRACE_S: '5',
  }
}
