import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Api } from 'grammy'
import { isExecutable } from '../brain/preflight.js'
import { UsageError } from '../cli/usage.js'
import { ConfigError, DEFAULTS, type SandboxMode } from '../config.js'
import { BrainSandbox } from '../brain/sandbox.js'
import { DEFAULT_PATH } from '../brain/env.js'
import { startEmulator, type BotApiEmulator, type RecordedCall } from '../emulator/index.js'
import { renderSummary, renderTimeline, renderVerdicts, replyLine, sentLine, statusLine } from './render.js'
import { DEMO_CHATS, DEMO_STEPS, nominalAt, type DemoStep } from './script.js'
import { LOG_LEVEL_WARN, ServiceProcess, type ServiceExit, type ServiceLogLine } from './service.js'
import { actionAbout, buildTimeline, changeOf, judgeTimeline, type SentMessage, type Verdict } from './timeline.js'

// Resolved from this file (dist/demo/demo.js), so the demo runs from any working directory.
const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const CLI_PATH = path.join(PACKAGE_ROOT, 'dist/cli.js')
/** The bundled example brain the demo runs. */
export const ECHO_BRAIN = path.join(PACKAGE_ROOT, 'scripts/brains/echo')

/** ECHO_DELAY_S when --delay is not given. */
export const DEFAULT_DELAY_S = 2
// Below half a second the script's "still busy" moments drown in process start-up noise.
const DELAY_RANGE_S = { min: 0.5, max: 30 } as const
// The emulator accepts only this token; nothing reaches the real Telegram.
const DEMO_TOKEN = '123456:DEMO-token'
// The script's work ends soon after its last message (the /cancel); what has not happened this
// many delays plus the grace later is reported missing.
const REPLY_WAIT_DELAYS = 6
const REPLY_GRACE_MS = 15_000
const FAILURE_LOG_LINES = 15
// How often the script looks at the clock and at the emulator's record of calls.
const TICK_MS = 20
const USAGE = 'usage: coordinator demo [--delay S]'

interface DemoOptions {
  readonly delayS: number
}

interface ServiceSettings {
  readonly apiRoot: string
  readonly secret: string
  readonly stateDir: string
  readonly delayS: number
  readonly sandbox: SandboxMode
}

/**
 * `coordinator demo [--delay S]`: plays a scripted conversation in two chats against the Bot API
 * emulator and the real service (a child process running the echo brain, its state in a temporary
 * directory removed at the end), then prints a timeline. Needs no token and no network. Returns
 * 0 when every claim of the script held, 1 otherwise.
 */
export async function runDemo(args: string[]): Promise<number> {
  const options = readOptions(args)
  if (options === 'help') {
    process.stdout.write(`${USAGE}\n  --delay S   seconds the echo brain takes per message (default ${DEFAULT_DELAY_S}; #slow takes 3×, #long 10×)\n`)
    return 0
  }
  const print = (line = ''): void => void process.stdout.write(`${line}\n`)
  const { delayS } = options

  print('coordinator demo: two chats talk to a bot served by this coordinator.')
  print(`Telegram is a local Bot API emulator (no token, no network); the brain is scripts/brains/echo,`)
  const times = (factor: number): string => `${Number((delayS * factor).toFixed(2))} s`
  print(`which answers after ${times(1)} (#slow: ${times(3)}, #long: ${times(10)}, #fail: exits 3) and reports its`)
  print('progress on the way, which the service shows as a status message.')
  print()

  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coordinator-demo-'))
  let emulator: BotApiEmulator | undefined
  let service: ServiceProcess | undefined
  let cleaning: Promise<void> | undefined
  const cleanUp = (): Promise<void> =>
    (cleaning ??= (async () => {
      await service?.stop()
      await emulator?.close()
      fs.rmSync(stateDir, { recursive: true, force: true })
    })())
  // Ctrl-C: stop the service (from a terminal it got the signal too), then remove the state directory.
  const onInterrupt = (): void => {
    process.stderr.write('\ndemo interrupted; stopping the service\n')
    void cleanUp().finally(() => process.exit(130))
  }
  process.once('SIGINT', onInterrupt)

  try {
    if (!isExecutable(ECHO_BRAIN)) throw new Error(`the example brain ${ECHO_BRAIN} is missing or not executable`)
    emulator = await startEmulator({ token: DEMO_TOKEN })
    const secret = randomBytes(16).toString('hex')
    const sandbox = sandboxFor(stateDir)
    print(sandbox.line)
    service = await ServiceProcess.start(CLI_PATH, serviceEnvironment({ apiRoot: emulator.url, secret, stateDir, delayS, sandbox: sandbox.mode }))
    await new Api(DEMO_TOKEN, { apiRoot: emulator.url }).setWebhook(`${service.url}${DEFAULTS.webhookPath}`, { secret_token: secret })
    print(`Service ready at ${service.url} (its log is read by the demo, not shown).`)
    print(`Its state directory: ${stateDir} (removed at the end).`)
    print()

    print('Conversation (seconds since the first message; → the user writes, ← the bot replies,')
    print('              … the bot\'s status message; "typing…" and reactions are in the checks)')
    const { origin, sent, unfinished, waitedS } = await play(emulator, service, delayS, print)
    if (!service.running) {
      const { code, signal } = await service.exited
      throw new Error(`the service stopped during the demo (${signal ?? `exit ${code}`}); its last log lines:\n${service.tail(FAILURE_LOG_LINES)}`)
    }
    // Stopping first drains the service and completes its log, which the timeline reads.
    const exit = await service.stop()
    const timeline = buildTimeline({ origin, sent, calls: emulator.calls, deliveries: emulator.deliveries, logs: service.logs })
    const { rows } = timeline
    const verdicts = [...judgeTimeline(timeline), judgeExit(exit), judgeServiceLog(service.logs)]

    print()
    print('Timeline (sent, brain ran, replied: seconds since the first message;')
    print('          👀 ms: from Telegram posting the update to the bot\'s 👀 reaction reaching Telegram;')
    print('          end: the reaction the message was left with)')
    for (const line of renderTimeline(rows)) print(line)
    print()
    print('Checks')
    for (const line of renderVerdicts(verdicts)) print(line)
    print()
    print(renderSummary(rows))

    const failed = verdicts.filter((verdict) => !verdict.ok).length
    if (failed === 0) return 0
    const unanswered =
      unfinished === 0 ? '' : ` ${unfinished} of ${DEMO_STEPS.length} messages were unsent or unfinished after ${waitedS.toFixed(1)} s.`
    process.stderr.write(
      `\ndemo failed: ${failed} check${failed === 1 ? '' : 's'} did not hold (✗ above).${unanswered} ` +
        `The service's last log lines:\n${service.tail(FAILURE_LOG_LINES)}\n`,
    )
    return 1
  } catch (error) {
    process.stderr.write(`demo failed: ${error instanceof Error ? error.message : String(error)}\n`)
    return 1
  } finally {
    process.off('SIGINT', onInterrupt)
    await cleanUp()
  }
}

function readOptions(args: string[]): DemoOptions | 'help' {
  let values: { delay?: string; help?: boolean }
  try {
    values = parseArgs({ args, options: { delay: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }).values
  } catch (error) {
    throw new UsageError(`demo: ${(error as Error).message}; ${USAGE}`)
  }
  if (values.help) return 'help'
  if (values.delay === undefined) return { delayS: DEFAULT_DELAY_S }
  const delayS = Number(values.delay)
  if (!/^\d+(\.\d+)?$/u.test(values.delay) || delayS < DELAY_RANGE_S.min || delayS > DELAY_RANGE_S.max) {
    throw new UsageError(`demo --delay must be a number of seconds from ${DELAY_RANGE_S.min} to ${DELAY_RANGE_S.max}; got "${values.delay}"`)
  }
  return { delayS }
}

/**
 * The service's whole environment: nothing inherited but PATH and HOME, so a TELEGRAM_BOT_TOKEN or
 * BRAIN_COMMAND in the caller's environment cannot leak in.
 */
function serviceEnvironment({ apiRoot, secret, stateDir, delayS, sandbox }: ServiceSettings): Record<string, string> {
  return {
    PATH: demoPath(),
    HOME: os.homedir(),
    TELEGRAM_BOT_TOKEN: DEMO_TOKEN,
    TELEGRAM_WEBHOOK_SECRET: secret,
    TELEGRAM_API_ROOT: apiRoot,
    ALLOWED_CHAT_IDS: Object.values(DEMO_CHATS)
      .map((chat) => chat.id)
      .join(','),
    ALLOWED_USER_IDS: String(DEMO_CHATS.ada.id),
    BRAIN_COMMAND: shellQuote(ECHO_BRAIN),
    BRAIN_ENV_ALLOW: 'ECHO_DELAY_S',
    ECHO_DELAY_S: String(delayS),
    STATE_DIR: stateDir,
    LOCK_DIR: path.join(stateDir, 'locks'),
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    SHUTDOWN_GRACE_S: '5',
    BRAIN_SANDBOX: sandbox,
  }
}

// The echo brain is `#!/usr/bin/env node`: find the node running the demo first.
function demoPath(): string {
  return [path.dirname(process.execPath), process.env['PATH'] || DEFAULT_PATH].join(path.delimiter)
}

/**
 * The brains run sandboxed where bubblewrap works (as the service would refuse to start otherwise),
 * unconfined where it does not; the line says which, and why.
 */
function sandboxFor(stateDir: string): { mode: SandboxMode; line: string } {
  try {
    BrainSandbox.prepare({ mode: 'on', network: 'on', stateDir, brainCwd: undefined, command: ECHO_BRAIN }, { PATH: demoPath() })
    return { mode: 'on', line: "Brains run sandboxed (bubblewrap, BRAIN_SANDBOX=on): each sees its own chat's directory and no other." }
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    return { mode: 'off', line: `Brains run unconfined (BRAIN_SANDBOX=off), as the sandbox cannot run here: ${error.message}` }
  }
}

/**
 * Sends each step's message when its time comes and prints the bot's replies and status messages
 * as they arrive, until every message is finished as the script expects (see {@link isFinished}),
 * the wait for the rest runs out, or the service stops.
 */
async function play(
  emulator: BotApiEmulator,
  service: ServiceProcess,
  delayS: number,
  print: (line: string) => void,
): Promise<{ origin: number; sent: SentMessage[]; unfinished: number; waitedS: number }> {
  const due = [...DEMO_STEPS].sort((a, b) => nominalAt(a) - nominalAt(b))
  const delayMs = delayS * 1000
  const origin = Date.now()
  const waitUntil = origin + (Math.max(0, ...due.map(nominalAt)) + REPLY_WAIT_DELAYS) * delayMs + REPLY_GRACE_MS
  const seconds = (ms: number): number => (ms - origin) / 1000
  const sent: SentMessage[] = []
  const unfinished = new Set<SentMessage>()
  // The bot's status messages by chat and id, so an edit is shown against the message it is about.
  const statuses = new Map<string, { message: SentMessage; statusId: number }>()
  let callsSeen = 0

  for (;;) {
    for (const step of [...due]) {
      const dueAt = dueTime(step, origin, delayMs, sent, service.logs)
      if (dueAt === undefined || dueAt > Date.now()) continue
      due.splice(due.indexOf(step), 1)
      // Ada writes everywhere: in the group too, where only a listed sender (ALLOWED_USER_IDS) reaches the brain.
      const update = emulator.sendText({ chatId: DEMO_CHATS[step.chat].id, text: step.text, from: { id: DEMO_CHATS.ada.id, first_name: DEMO_CHATS.ada.name } })
      const messageId = update.message?.message_id
      if (messageId === undefined) throw new Error(`the emulator built update ${update.update_id} without a message`)
      const message = { step, updateId: update.update_id, messageId, sentAt: Date.now() }
      sent.push(message)
      unfinished.add(message)
      print(sentLine(seconds(message.sentAt), step))
    }
    const calls = emulator.calls
    for (const call of calls.slice(callsSeen)) {
      const line = liveLine(call, sent, statuses, seconds(call.wallClockMs))
      if (line !== undefined) print(line)
    }
    callsSeen = calls.length
    for (const message of unfinished) if (isFinished(message, calls, service.logs)) unfinished.delete(message)
    if (due.length === 0 && unfinished.size === 0) break
    if (Date.now() > waitUntil || !service.running) break // what is missing shows in the checks
    await sleep(TICK_MS)
  }
  return { origin, sent, unfinished: due.length + unfinished.size, waitedS: seconds(Date.now()) }
}

/** When a step is to be sent (Date.now() ms); undefined while the brain it waits for has not started. */
function dueTime(
  step: DemoStep,
  origin: number,
  delayMs: number,
  sent: readonly SentMessage[],
  logs: readonly ServiceLogLine[],
): number | undefined {
  if (step.sinceBrainOf === undefined) return origin + step.at * delayMs
  const since = sent.find((message) => message.step.id === step.sinceBrainOf)
  const started = since && logs.find((line) => line['update_id'] === since.updateId && line.msg === 'child started')
  return started ? started.time + step.at * delayMs : undefined
}

/** The conversation's line for a call, if the chat shows it: a reply, or a status message sent or edited. */
function liveLine(
  call: RecordedCall,
  sent: readonly SentMessage[],
  statuses: Map<string, { message: SentMessage; statusId: number }>,
  atS: number,
): string | undefined {
  if (call.method === 'editMessageText') {
    const status = statuses.get(`${String(call.params['chat_id'])}:${String(call.params['message_id'])}`)
    if (status === undefined) return undefined
    const change = changeOf(call, DEMO_CHATS[status.message.step.chat].id, status.statusId)
    return change?.kind === 'edit' ? statusLine(atS, status.message.step, change.text, true) : undefined
  }
  for (const message of sent) {
    const chatId = DEMO_CHATS[message.step.chat].id
    const action = actionAbout(call, chatId, message.messageId)
    if (action?.kind === 'reply') return replyLine(atS, message.step, action.text)
    if (action?.kind === 'status') {
      statuses.set(`${chatId}:${action.statusId}`, { message, statusId: action.statusId })
      return statusLine(atS, message.step, action.text, false)
    }
  }
  return undefined
}

/**
 * Whether all the script waits for has happened to a message: a brain's reply and the reaction
 * that replaces 👀 (whichever it is: the checks judge it), a command's answer, or, for a message
 * whose brain is to be cancelled, the end of that brain.
 */
function isFinished(message: SentMessage, calls: readonly RecordedCall[], logs: readonly ServiceLogLine[]): boolean {
  const { expects } = message.step
  if (expects.answer === 'none') return logs.some((line) => line['update_id'] === message.updateId && line.msg === 'child reaped')
  const actions = calls.map((call) => actionAbout(call, DEMO_CHATS[message.step.chat].id, message.messageId))
  const replied = actions.some((action) => action?.kind === 'reply')
  if (expects.answer === 'service') return replied
  return replied && actions.filter((action) => action?.kind === 'reaction').length >= 2
}

function judgeExit(exit: ServiceExit): Verdict {
  const how = exit.signal === null ? `exited ${exit.code}` : `was killed by ${exit.signal}`
  return { ok: exit.code === 0, text: `the service drained on SIGTERM and ${how}` }
}

// The script is ordinary traffic: a warning in the service's log means something is off.
function judgeServiceLog(logs: readonly ServiceLogLine[]): Verdict {
  const serious = logs.filter((line) => line.level >= LOG_LEVEL_WARN)
  if (serious.length === 0) {
    return { ok: true, text: `the service logged no warnings or errors (${logs.length} lines, read by the demo, not shown)` }
  }
  const shown = serious.slice(0, 3).map((line) => `"${line.msg}"`)
  return { ok: false, text: `the service logged ${serious.length} warnings or errors: ${shown.join(', ')}${serious.length > 3 ? ', …' : ''}` }
}

/** Quotes a word for BRAIN_COMMAND, which is split like a shell command line. */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))
}
