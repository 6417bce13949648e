import fs from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import type { Api } from 'grammy'
import type { UserFromGetMe, WebhookInfo } from 'grammy/types'
import { ConfigError, loadConfig, type Config } from '../config.js'
import { BrainCommandError, checkBrainCommand } from '../brain/preflight.js'
import { BrainSandbox } from '../brain/sandbox.js'
import { INBOX_FILE, SqliteInbox } from '../store/sqlite.js'
import { createPool } from '../store/postgres/store.js'
import { handledUpdates } from '../telegram/updates.js'
import { commandApi, describeTelegramFailure, isBadToken } from './telegram-api.js'
import { UsageError } from './usage.js'
import { ago, when } from './webhook.js'

/** What one check found: `ok` undefined means it could not be run (an earlier check failed). */
interface Finding {
  readonly ok: boolean | undefined
  readonly what: string
  /** What was found and, on failure, what to do about it. */
  readonly detail: string
}

const MARKS = { pass: '✓', fail: '✗', skipped: '-' } as const
// A delivery error this recent, with updates waiting, means Telegram cannot reach the service now.
const RECENT_DELIVERY_ERROR_MS = 10 * 60_000

/**
 * `coordinator check [--url URL]`: checks, with the service's environment, everything the service
 * needs: its configuration, the brain, its directories, the bot token and the webhook. Prints one
 * line per check (✓ or ✗, what, and the fix) and returns 1 if any failed. A configuration that
 * does not load throws ConfigError (one line, exit 2) before anything else is checked.
 */
export async function checkCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, strict: true, allowPositionals: false, options: { url: { type: 'string' } } })
  const expectedUrl = values.url === undefined ? undefined : canonicalUrl(values.url)
  const config = loadConfig()

  let failed = 0
  let count = 0
  const report = (finding: Finding): void => {
    const mark = finding.ok === undefined ? MARKS.skipped : finding.ok ? MARKS.pass : MARKS.fail
    if (finding.ok === false) failed++
    if (finding.ok !== undefined) count++
    process.stdout.write(`${mark} ${finding.what}: ${finding.detail}\n`)
  }

  report({ ok: true, what: 'configuration', detail: describeConfig(config) })
  report(checkBrain(config))
  report(checkSandbox(config))
  report(checkStateDir(config))
  if (config.databaseUrl !== undefined) report(await checkDatabase(config.databaseUrl))
  report(checkLockDir(config))
  report(await checkService(config))
  const api = commandApi(config)
  const { finding, bot } = await checkToken(api, config)
  report(finding)
  if (bot === undefined) {
    report({ ok: undefined, what: 'webhook', detail: 'not checked, as getMe failed' })
  } else {
    for (const webhookFinding of await checkWebhook(api, config, expectedUrl)) report(webhookFinding)
  }

  process.stdout.write(failed === 0 ? `all ${count} checks passed\n` : `${failed} of ${count} checks failed\n`)
  return failed === 0 ? 0 : 1
}

function describeConfig(config: Config): string {
  const chats = config.allowedChats === 'all' ? 'any chat (ALLOW_ALL_CHATS=1)' : `${config.allowedChats.size} allowed chat(s)`
  const users = config.allowedUsers.size === 0 ? '' : ` and ${config.allowedUsers.size} allowed user(s)`
  return `valid; ${chats}${users}, ${config.maxConcurrentBrains} brain slot(s), inbox ${config.databaseUrl === undefined ? config.inbox : 'postgres'}, listening on ${config.host}:${config.port}${config.webhookPath}`
}

function checkBrain(config: Config): Finding {
  const what = 'brain'
  let program: string
  try {
    // As the service checks at start: the coordinator's PATH, names resolved against the brain's cwd.
    program = checkBrainCommand(config.brain.argv[0], process.env['PATH'], config.brain.cwd ?? config.stateDir).path
  } catch (error) {
    if (error instanceof BrainCommandError) return { ok: false, what, detail: error.message }
    throw error
  }
  // The service creates the chat directories (the default brain cwd) itself, but not a BRAIN_CWD.
  if (config.brain.cwd !== undefined && !isDirectory(config.brain.cwd)) {
    return { ok: false, what, detail: `BRAIN_CWD ${config.brain.cwd} is not a directory; create it or fix BRAIN_CWD` }
  }
  return { ok: true, what, detail: `${program} is executable (runs in ${config.brain.cwd ?? "each chat's directory"})` }
}

/** Whether brains will run in the sandbox; off passes (it is allowed) but says what it costs. */
function checkSandbox(config: Config): Finding {
  const what = 'sandbox'
  if (config.brain.sandbox === 'off') {
    return {
      ok: true,
      what,
      detail: "warning: BRAIN_SANDBOX=off: brains run unconfined and can read the bot token, the inbox and every chat; remove it to sandbox them",
    }
  }
  try {
    BrainSandbox.prepare({ mode: 'on', network: config.brain.network, stateDir: config.stateDir, brainCwd: config.brain.cwd, command: config.brain.argv[0] })
  } catch (error) {
    if (error instanceof ConfigError) return { ok: false, what, detail: error.message }
    throw error
  }
  return { ok: true, what, detail: `bubblewrap works; brains run sandboxed${config.brain.network === 'off' ? ', without network (BRAIN_NETWORK=off)' : ''}` }
}

function checkStateDir(config: Config): Finding {
  const what = 'STATE_DIR'
  const dir = config.stateDir
  const verdict = inspectDirectory(dir, 'STATE_DIR')
  if (!verdict.ok) return { ok: false, what, detail: verdict.detail }
  const where = verdict.detail
  if (config.inbox === 'memory') return { ok: true, what, detail: `${where} (INBOX=memory: no inbox on disk)` }
  if (config.databaseUrl !== undefined) return { ok: true, what, detail: `${where} (messages are in Postgres: DATABASE_URL)` }
  const file = path.join(dir, INBOX_FILE)
  // Creating the inbox here could leave it owned by whoever ran the check; the service creates it.
  if (!fs.existsSync(file)) return { ok: true, what, detail: `${where}; no inbox yet (the service creates ${INBOX_FILE} at start)` }
  let inbox: SqliteInbox
  try {
    inbox = new SqliteInbox(dir)
  } catch (error) {
    return { ok: false, what, detail: `the inbox ${file} does not open (${(error as Error).message}); check its owner and permissions, or move it aside` }
  }
  try {
    if (!inbox.probeWritable()) {
      return { ok: false, what, detail: `the inbox ${file} is not writable (${inbox.stats().lastWriteError ?? 'unknown error'}); check its owner and free disk space` }
    }
    const { sizeBytes, oldestQueuedAt } = inbox.stats()
    const queued = oldestQueuedAt === null ? 'nothing queued' : `oldest queued message received ${ago(Date.now() - oldestQueuedAt)}`
    return { ok: true, what, detail: `${where}; inbox ${file} opens and is writable (${Math.ceil(sizeBytes / 1024)} KiB, ${queued})` }
  } finally {
    inbox.close()
  }
}

/** DATABASE_URL: the server answers, and the service's user may create its schemas (or they exist). */
async function checkDatabase(databaseUrl: string): Promise<Finding> {
  const what = 'DATABASE_URL'
  const pool = createPool(databaseUrl, 1, 'coordinator check')
  try {
    const { rows } = await pool.query<{ version: string; can_create: boolean; has_schema: boolean }>(
      `SELECT split_part(current_setting('server_version'), ' ', 1) AS version,
              has_database_privilege(current_database(), 'CREATE') AS can_create,
              to_regclass('coordinator.messages') IS NOT NULL AS has_schema`,
    )
    const row = rows[0] as { version: string; can_create: boolean; has_schema: boolean }
    if (!row.has_schema && !row.can_create) {
      return { ok: false, what, detail: `Postgres ${row.version} answers, but this user may not create the service's schemas; make it the database's owner (createdb -O)` }
    }
    if (!row.has_schema) return { ok: true, what, detail: `Postgres ${row.version} answers; no schema yet (the service creates it at start)` }
    const queued = await pool.query<{ queued: number }>(`SELECT count(*)::int AS queued FROM coordinator.messages WHERE state = 'queued'`)
    return { ok: true, what, detail: `Postgres ${row.version} answers; ${queued.rows[0]?.queued ?? 0} message(s) queued` }
  } catch (error) {
    return { ok: false, what, detail: `Postgres cannot be reached or refused the login (${(error as Error).message}); check the address, the password and that it runs` }
  } finally {
    await pool.end().catch(() => undefined)
  }
}

function checkLockDir(config: Config): Finding {
  const what = 'LOCK_DIR'
  const verdict = inspectDirectory(config.lockDir, 'LOCK_DIR')
  return verdict.ok ? { ok: true, what, detail: verdict.detail } : { ok: false, what, detail: `${verdict.detail} (the service would run without per-chat locks)` }
}

// The service answers /readyz at once; a second is plenty even on a loaded machine.
const SERVICE_TIMEOUT_MS = 3000

/** Whether the service itself answers on HOST:PORT, and whether it says it is ready. */
async function checkService(config: Config): Promise<Finding> {
  const what = 'service'
  // A wildcard address is reached on loopback.
  const host = config.host === '0.0.0.0' ? '127.0.0.1' : config.host === '::' ? '::1' : config.host
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${config.port}/readyz`
  let response: Response
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(SERVICE_TIMEOUT_MS) })
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).name
    return { ok: false, what, detail: `nothing answers at ${url} (${cause}); start it (systemctl start coordinator) or check HOST and PORT` }
  }
  const body = (await response.json().catch(() => ({}))) as { checks?: Record<string, boolean> }
  if (response.ok) return { ok: true, what, detail: `answers at ${url}: ready` }
  const failing = Object.entries(body.checks ?? {}).filter(([, ok]) => !ok).map(([name]) => name)
  return { ok: false, what, detail: `answers at ${url} but is not ready (${failing.join(', ') || `HTTP ${response.status}`}); see its log` }
}

async function checkToken(api: Api, config: Config): Promise<{ finding: Finding; bot?: UserFromGetMe }> {
  const what = 'bot token'
  try {
    const bot = await api.getMe()
    return { finding: { ok: true, what, detail: `valid for @${bot.username} (id ${bot.id}) at ${config.apiRoot}` }, bot }
  } catch (error) {
    const detail = describeTelegramFailure(error, config)
    return { finding: { ok: false, what: isBadToken(error) ? what : 'Telegram reachable', detail } }
  }
}

async function checkWebhook(api: Api, config: Config, expectedUrl: string | undefined): Promise<Finding[]> {
  const what = 'webhook'
  let info: WebhookInfo
  try {
    info = await api.getWebhookInfo()
  } catch (error) {
    return [{ ok: false, what, detail: describeTelegramFailure(error, config) }]
  }
  const setIt = `run coordinator set-webhook --url ${expectedUrl ?? `https://<your domain>${config.webhookPath}`}`
  const url = info.url ?? ''
  if (url === '') return [{ ok: false, what, detail: `none is set, so Telegram delivers nothing; ${setIt}` }]
  const registered = parseUrl(url)
  if (expectedUrl !== undefined && registered?.href !== expectedUrl) {
    return [{ ok: false, what, detail: `set to ${url}, not ${expectedUrl}; ${setIt}` }]
  }
  if (registered?.pathname !== config.webhookPath) {
    return [{ ok: false, what, detail: `${url} has the path ${registered?.pathname ?? '?'}, but the service listens on WEBHOOK_PATH ${config.webhookPath}; ${setIt}` }]
  }
  const allowed = info.allowed_updates
  const missing = allowed === undefined || allowed.length === 0 ? [] : handledUpdates(config.edits).filter((kind) => !allowed.includes(kind))
  if (missing.length > 0) {
    return [{ ok: false, what, detail: `${url} does not receive ${missing.join(', ')} updates (allowed_updates: ${allowed?.join(', ')}); ${setIt}` }]
  }
  return [{ ok: true, what, detail: `set to ${url}` }, checkDeliveries(info, Date.now())]
}

function checkDeliveries(info: WebhookInfo, now: number): Finding {
  const what = 'webhook deliveries'
  const pending = `${info.pending_update_count} update(s) pending`
  if (info.last_error_date === undefined) return { ok: true, what, detail: `${pending}, no delivery error reported` }
  const lastError = `last error ${when(info.last_error_date, now)}: ${info.last_error_message ?? '(no message)'}`
  // Telegram keeps the last error after deliveries recover; only a recent one with a backlog is a failure.
  const failing = info.pending_update_count > 0 && now - info.last_error_date * 1000 < RECENT_DELIVERY_ERROR_MS
  if (failing) {
    return { ok: false, what, detail: `${pending}; ${lastError}; make sure the service runs and the URL reaches it (coordinator webhook-info shows more)` }
  }
  return { ok: true, what, detail: `${pending}; ${lastError}` }
}

/**
 * Whether this user can use `dir`, and what was found. Nothing is left behind: a missing directory
 * is not created (one made by root would lock the service out); it passes when systemd will create
 * it (under $STATE_DIRECTORY or $RUNTIME_DIRECTORY, as the `coord` wrapper of docs/DEPLOY.md sets
 * them) or its nearest existing parent is writable. An existing one gets a probe file, removed at once.
 */
function inspectDirectory(dir: string, variable: string): { ok: boolean; detail: string } {
  let stat: fs.Stats
  try {
    stat = fs.statSync(dir)
  } catch {
    const managed = systemdDirectories().find((root) => dir === root || dir.startsWith(`${root}${path.sep}`))
    if (managed !== undefined && !fs.existsSync(managed)) {
      return { ok: true, detail: `${dir} does not exist yet; systemd creates ${managed} when the service starts` }
    }
    const parent = nearestExisting(path.dirname(dir))
    if (isWritable(parent)) return { ok: true, detail: `${dir} does not exist yet; the service will create it` }
    return { ok: false, detail: `${dir} does not exist and ${parent} is not writable by this user; create it for the service's user or set ${variable}` }
  }
  if (!stat.isDirectory()) return { ok: false, detail: `${dir} is not a directory; set ${variable} to a directory` }
  const probe = path.join(dir, `.coordinator-check-${process.pid}`)
  try {
    fs.writeFileSync(probe, '', { flag: 'wx' })
    fs.rmSync(probe, { force: true })
    return { ok: true, detail: `${dir} is writable` }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error)
    return { ok: false, detail: `${dir} is not writable by this user (${code}); give the service's user write access or set ${variable}` }
  }
}

/** The directories systemd creates for the unit (StateDirectory=, RuntimeDirectory=), when run under it. */
function systemdDirectories(): string[] {
  return ['STATE_DIRECTORY', 'RUNTIME_DIRECTORY']
    .map((name) => process.env[name]?.split(':')[0]?.trim())
    .filter((dir): dir is string => dir !== undefined && path.isAbsolute(dir))
}

function nearestExisting(dir: string): string {
  let current = dir
  while (!fs.existsSync(current) && path.dirname(current) !== current) current = path.dirname(current)
  return current
}

function isWritable(dir: string): boolean {
  try {
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK)
    return true
  } catch {
    return false
  }
}

function isDirectory(dir: string): boolean {
  try {
    return fs.statSync(dir).isDirectory()
  } catch {
    return false
  }
}

function canonicalUrl(text: string): string {
  const url = parseUrl(text)
  if (url === undefined) throw new UsageError(`--url must be an absolute URL such as https://bot.example.com/telegram/webhook; got "${text}"`)
  return url.href
}

function parseUrl(text: string): URL | undefined {
  try {
    return new URL(text)
  } catch {
    return undefined
  }
}
