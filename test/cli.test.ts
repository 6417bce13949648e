// The operator's commands (set-webhook, webhook-info, delete-webhook, check, inbox, --help), run as real
// processes (`node dist/cli.js …`) with a controlled environment against a real Bot API emulator.
import t, { type Test } from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Api } from 'grammy'
import type { WebhookInfo } from 'grammy/types'
import { startEmulator, type BotApiEmulator } from '../src/emulator/index.js'
import { SqliteInbox } from '../src/store/sqlite.js'
import { freePort } from './helpers/caddy.js'
import { ServiceProcess } from '../src/demo/service.js'
import { CLI, SECRET, TEST_BRAIN, TOKEN, runProgram, type Run } from './helpers/service.js'
import { pino } from 'pino'
import { engineWakeUp, migrateEngine } from '../src/dispatch/engine.js'
import { createPool, PostgresStore } from '../src/store/postgres/store.js'
import { postgresOrSkip } from './helpers/postgres.js'

// Each test runs its own emulator (and service, where it needs one), so they run side by side.
t.jobs = 3

/** Runs the CLI with exactly `env` (plus PATH and HOME), without tap's loader in NODE_OPTIONS. */
function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return runProgram('env', ['-u', 'NODE_OPTIONS', process.execPath, CLI, ...args], {
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: os.tmpdir(), ...env },
  })
}

async function emulator(t: Test): Promise<BotApiEmulator> {
  const emu = await startEmulator({ token: TOKEN, deliveryRetryMs: 200 })
  t.teardown(() => emu.close())
  return emu
}

function tempDir(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coordinator-cli-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** What set-webhook, webhook-info and delete-webhook read. */
const telegramEnv = (emu: BotApiEmulator): Record<string, string> => ({
  TELEGRAM_BOT_TOKEN: TOKEN,
  TELEGRAM_WEBHOOK_SECRET: SECRET,
  TELEGRAM_API_ROOT: emu.url,
})

/** A whole service configuration that works: the test brain, state and locks in a temp directory. */
const serviceEnv = async (t: Test, emu: BotApiEmulator): Promise<Record<string, string>> => {
  const dir = tempDir(t)
  return {
    ...telegramEnv(emu),
    PORT: String(await freePort()),
    ALLOW_ALL_CHATS: '1',
    BRAIN_COMMAND: TEST_BRAIN,
    STATE_DIR: path.join(dir, 'state'),
    LOCK_DIR: path.join(dir, 'locks'),
  }
}

/** allowed_updates as the emulator recorded it: grammY sends it as JSON, so it may arrive as a string. */
const listParam = (value: unknown): unknown => (typeof value === 'string' ? JSON.parse(value) : value)

/** A webhook address where nothing listens: every delivery fails with "Connection refused". */
const deadWebhook = async (): Promise<string> => `http://127.0.0.1:${await freePort()}/telegram/webhook`

t.test('set-webhook registers the URL with the secret, allowed_updates, max_connections and drop_pending_updates', async (t) => {
  const emu = await emulator(t)
  const url = await deadWebhook()

  const run = await cli(['set-webhook', '--url', url, '--allow-http', '--max-connections', '7', '--drop-pending'], telegramEnv(emu))
  t.equal(run.code, 0, run.stderr)
  t.equal(run.stdout.split('\n').filter(Boolean).length, 1, 'one line on success')
  t.match(run.stdout, `webhook set: ${url}`)
  t.match(run.stdout, /pending updates dropped/u)
  const [call] = emu.callsOf('setWebhook')
  t.ok(call?.ok, 'the emulator accepted setWebhook')
  t.equal(call?.params['url'], url)
  t.equal(call?.params['secret_token'], SECRET, 'secret_token is TELEGRAM_WEBHOOK_SECRET')
  t.same(listParam(call?.params['allowed_updates']), ['message'], 'allowed_updates: what the service handles')
  t.equal(Number(call?.params['max_connections']), 7)
  t.equal(call?.params['drop_pending_updates'], true)
  t.same(emu.webhookInfo.allowed_updates, ['message'])
  t.equal(emu.webhookInfo.max_connections, 7)

  const defaults = await cli(['set-webhook', '--url', url, '--allow-http'], telegramEnv(emu))
  t.equal(defaults.code, 0, defaults.stderr)
  const second = emu.callsOf('setWebhook')[1]
  t.equal(Number(second?.params['max_connections']), 40, 'max_connections defaults to 40')
  t.equal(second?.params['drop_pending_updates'], false, 'pending updates are kept unless --drop-pending')
  t.match(defaults.stdout, /pending updates kept/u)
})

t.test('set-webhook refuses a URL Telegram would not deliver to, and bad options, with one line and exit 2', async (t) => {
  const emu = await emulator(t)
  const refused: [string[], RegExp][] = [
    [['--url', 'http://bot.example.com/telegram/webhook'], /--url must start with https:\/\/.*--allow-http/u],
    [['--url', 'https://bot.example.com:8787/telegram/webhook'], /port 443, 80, 88 or 8443.*got 8787/u],
    [['--url', 'bot.example.com/telegram/webhook'], /--url must be an absolute URL/u],
    [[], /set-webhook needs --url/u],
    [['--url', 'https://bot.example.com/telegram/webhook', '--max-connections', '0'], /--max-connections must be a whole number from 1 to 100; got "0"/u],
    [['--url', 'https://bot.example.com/telegram/webhook', '--max-connections', '101'], /got "101"/u],
    [['--url', 'https://bot.example.com/telegram/webhook', '--max-conections', '5'], /set-webhook: Unknown option '--max-conections'; see coordinator set-webhook --help/u],
  ]
  for (const [args, message] of refused) {
    const run = await cli(['set-webhook', ...args], telegramEnv(emu))
    t.equal(run.code, 2, `${args.join(' ')}: exit 2`)
    t.match(run.stderr, message)
    t.equal(run.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line`)
    t.equal(run.stdout, '')
  }
  t.same(emu.callsOf('setWebhook'), [], 'nothing reached Telegram')

  const https = await cli(['set-webhook', '--url', 'https://bot.example.com:8443/telegram/webhook'], telegramEnv(emu))
  t.equal(https.code, 0, `an https URL on 8443 is accepted: ${https.stderr}`)
})

t.test('webhook-info shows the last delivery error after a failing delivery, readable and as JSON', async (t) => {
  const emu = await emulator(t)
  const url = await deadWebhook()
  await new Api(TOKEN, { apiRoot: emu.url }).setWebhook(url, { allowed_updates: ['message'], max_connections: 12 })
  emu.sendText({ chatId: 4242, text: 'hello' })
  const failed = await emu.waitForDelivery((attempt) => attempt.error !== undefined, { timeoutMs: 10_000 })
  t.equal(failed.error, 'Connection refused')

  const run = await cli(['webhook-info'], telegramEnv(emu))
  t.equal(run.code, 0, run.stderr)
  const fields = new Map(run.stdout.trimEnd().split('\n').map((line) => {
    const [name, ...rest] = line.split(':')
    return [name, rest.join(':').trim()] as const
  }))
  t.equal(fields.get('url'), url)
  t.equal(fields.get('pending updates'), '1')
  t.match(fields.get('last error'), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+ s ago\): Connection refused$/u, 'ISO date, how long ago, the message')
  t.equal(fields.get('max connections'), '12')
  t.equal(fields.get('allowed updates'), 'message')
  t.notOk(fields.has('IP address'), 'no ip_address: the emulator reports none')

  // The emulator keeps retrying the dead URL, so the error's date may move on while the CLI runs.
  const errorSince = emu.webhookInfo.last_error_date ?? 0
  const json = await cli(['webhook-info', '--json'], telegramEnv(emu))
  t.equal(json.code, 0, json.stderr)
  const printed = JSON.parse(json.stdout) as WebhookInfo
  const now = emu.webhookInfo
  t.same({ ...printed, last_error_date: 0 }, { ...now, last_error_date: 0 }, '--json prints getWebhookInfo as it is')
  t.ok(
    (printed.last_error_date ?? 0) >= errorSince && (printed.last_error_date ?? 0) <= (now.last_error_date ?? 0),
    'with the last error as of its call',
  )
})

t.test('delete-webhook removes the webhook, and drops pending updates when asked', async (t) => {
  const emu = await emulator(t)
  await new Api(TOKEN, { apiRoot: emu.url }).setWebhook(await deadWebhook())
  emu.sendText({ chatId: 4242, text: 'held' })
  await emu.waitForDelivery((attempt) => attempt.error !== undefined, { timeoutMs: 10_000 })
  t.equal(emu.webhookInfo.pending_update_count, 1)

  const run = await cli(['delete-webhook', '--drop-pending'], telegramEnv(emu))
  t.equal(run.code, 0, run.stderr)
  t.match(run.stdout, /^webhook deleted \(pending updates dropped\)\n$/u)
  t.equal(emu.callsOf('deleteWebhook')[0]?.params['drop_pending_updates'], true)
  t.equal(emu.webhookInfo.url, '')
  t.equal(emu.webhookInfo.pending_update_count, 0)

  const info = await cli(['webhook-info'], telegramEnv(emu))
  t.match(info.stdout, /^url: +none \(no webhook is set/mu)
})

t.test('Telegram unreachable or refusing the token: one line, exit 1, no stack trace, no token', async (t) => {
  const closed = `http://127.0.0.1:${await freePort()}`
  const env = { TELEGRAM_BOT_TOKEN: TOKEN, TELEGRAM_WEBHOOK_SECRET: SECRET, TELEGRAM_API_ROOT: closed }
  for (const args of [['webhook-info'], ['delete-webhook'], ['set-webhook', '--url', 'https://bot.example.com/telegram/webhook']]) {
    const run = await cli(args, env)
    t.equal(run.code, 1, `${args[0]}: exit 1`)
    t.equal(run.stderr, `coordinator: cannot reach the Telegram Bot API at ${closed} (connect ECONNREFUSED ${closed.slice('http://'.length)}); check the network and TELEGRAM_API_ROOT\n`)
    t.equal(run.stdout, '')
  }

  const emu = await emulator(t)
  const wrongToken = await cli(['webhook-info'], { ...telegramEnv(emu), TELEGRAM_BOT_TOKEN: '123456:wrong-token' })
  t.equal(wrongToken.code, 1)
  t.equal(wrongToken.stderr, 'coordinator: Telegram refused the bot token (401: Unauthorized); set TELEGRAM_BOT_TOKEN to the token @BotFather gave you\n')
  t.notMatch(wrongToken.stderr, /wrong-token/u)

  const noSecret = await cli(['webhook-info'], { TELEGRAM_BOT_TOKEN: TOKEN, TELEGRAM_API_ROOT: emu.url })
  t.equal(noSecret.code, 2, 'a configuration error exits 2')
  t.match(noSecret.stderr, /^coordinator: TELEGRAM_WEBHOOK_SECRET is required/u)
})

/** check's lines by what they check: "✓ brain: …" → ['brain', { ok: true, text }]. */
function checkLines(stdout: string): Map<string, { mark: string; text: string }> {
  const lines = new Map<string, { mark: string; text: string }>()
  for (const line of stdout.split('\n')) {
    const match = /^([✓✗-]) ([^:]+): (.*)$/u.exec(line)
    if (match) lines.set(match[2] as string, { mark: match[1] as string, text: match[3] as string })
  }
  return lines
}

t.test('check passes against a good setup, one ✓ line per check', async (t) => {
  const emu = await emulator(t)
  const url = await deadWebhook()
  await new Api(TOKEN, { apiRoot: emu.url }).setWebhook(url, { allowed_updates: ['message'] })
  const env = await serviceEnv(t, emu)
  // The service runs from its own state directory, so that check sees none until it created one.
  const svc = await ServiceProcess.start(CLI, { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: os.tmpdir(), ...env, STATE_DIR: tempDir(t), LOCK_DIR: tempDir(t) })
  t.teardown(() => svc.stop('SIGKILL'))

  const run = await cli(['check', '--url', url], env)
  t.equal(run.code, 0, run.stdout + run.stderr)
  const lines = checkLines(run.stdout)
  t.same([...lines.keys()], ['configuration', 'brain', 'sandbox', 'STATE_DIR', 'LOCK_DIR', 'service', 'bot token', 'webhook', 'webhook deliveries'])
  t.ok([...lines.values()].every((line) => line.mark === '✓'), run.stdout)
  t.match(lines.get('bot token')?.text, /@emulated_bot/u)
  t.match(lines.get('brain')?.text, `${TEST_BRAIN} is executable`)
  t.match(lines.get('webhook')?.text, `set to ${url}`)
  t.match(lines.get('sandbox')?.text, /^bubblewrap works; brains run sandboxed$/u)
  t.match(run.stdout, /all 9 checks passed\n$/u)
  t.notOk(fs.existsSync(env['STATE_DIR'] as string), 'check creates no directories (the service does)')

  // Under systemd (docs/DEPLOY.md's `coord`), LOCK_DIR defaults into a RuntimeDirectory= that
  // exists only while the service runs.
  const runtime = path.join(tempDir(t), 'run', 'coordinator')
  const systemdEnv: Record<string, string> = { ...env, RUNTIME_DIRECTORY: runtime }
  delete systemdEnv['LOCK_DIR']
  const underSystemd = await cli(['check'], systemdEnv)
  t.equal(underSystemd.code, 0, underSystemd.stdout)
  t.match(checkLines(underSystemd.stdout).get('LOCK_DIR')?.text, `${runtime}/locks does not exist yet; systemd creates ${runtime} when the service starts`)

  // An existing inbox is opened and probed.
  new SqliteInbox(env['STATE_DIR'] as string).close()
  const withInbox = await cli(['check'], env)
  t.equal(withInbox.code, 0, withInbox.stdout)
  t.match(checkLines(withInbox.stdout).get('STATE_DIR')?.text, /inbox .*inbox\.sqlite opens and is writable \(\d+ KiB, nothing queued\)/u)
})

t.test('check fails with the right ✗ lines: no webhook, webhook elsewhere, failing deliveries, wrong token, brain not executable', async (t) => {
  const emu = await emulator(t)
  const env = await serviceEnv(t, emu)

  const noWebhook = await cli(['check'], env)
  t.equal(noWebhook.code, 1)
  const noWebhookLines = checkLines(noWebhook.stdout)
  t.equal(noWebhookLines.get('webhook')?.mark, '✗')
  t.match(noWebhookLines.get('webhook')?.text, /none is set.*run coordinator set-webhook --url https:\/\/<your domain>\/telegram\/webhook/u)
  t.equal(noWebhookLines.get('bot token')?.mark, '✓')
  t.equal(noWebhookLines.get('service')?.mark, '✗', 'no service runs')
  t.match(noWebhook.stdout, /2 of 8 checks failed\n$/u)

  await new Api(TOKEN, { apiRoot: emu.url }).setWebhook('https://elsewhere.example.com/telegram/webhook')
  const elsewhere = await cli(['check', '--url', 'https://bot.example.com/telegram/webhook'], env)
  t.equal(elsewhere.code, 1)
  t.match(checkLines(elsewhere.stdout).get('webhook'), {
    mark: '✗',
    text: /set to https:\/\/elsewhere\.example\.com\/telegram\/webhook, not https:\/\/bot\.example\.com\/telegram\/webhook/u,
  })
  await new Api(TOKEN, { apiRoot: emu.url }).setWebhook('https://bot.example.com/hook')
  const wrongPath = await cli(['check'], env)
  t.match(checkLines(wrongPath.stdout).get('webhook'), { mark: '✗', text: /has the path \/hook, but the service listens on WEBHOOK_PATH \/telegram\/webhook/u })

  await new Api(TOKEN, { apiRoot: emu.url }).setWebhook(await deadWebhook())
  const update = emu.sendText({ chatId: 4242, text: 'undeliverable' })
  await emu.waitForDelivery((attempt) => attempt.update_id === update.update_id && attempt.error !== undefined, { timeoutMs: 10_000 })
  const failing = await cli(['check'], env)
  t.equal(failing.code, 1)
  const failingLines = checkLines(failing.stdout)
  t.equal(failingLines.get('webhook')?.mark, '✓')
  t.match(failingLines.get('webhook deliveries'), { mark: '✗', text: /^1 update\(s\) pending; last error .* \(\d+ s ago\): Connection refused; make sure the service runs/u })

  const wrongToken = await cli(['check'], { ...env, TELEGRAM_BOT_TOKEN: '123456:wrong-token' })
  t.equal(wrongToken.code, 1)
  const wrongTokenLines = checkLines(wrongToken.stdout)
  t.match(wrongTokenLines.get('bot token'), { mark: '✗', text: /Telegram refused the bot token \(401: Unauthorized\); set TELEGRAM_BOT_TOKEN/u })
  t.equal(wrongTokenLines.get('webhook')?.mark, '-', 'the webhook is not checked without a working token')
  t.notMatch(wrongToken.stdout, /wrong-token/u, 'the token is never printed')

  const brain = path.join(tempDir(t), 'brain.mjs')
  fs.copyFileSync(TEST_BRAIN, brain)
  fs.chmodSync(brain, 0o644)
  const notExecutable = await cli(['check'], { ...env, BRAIN_COMMAND: brain })
  t.equal(notExecutable.code, 1)
  const brainLine = checkLines(notExecutable.stdout).get('brain')
  t.equal(brainLine?.mark, '✗')
  t.match(brainLine?.text, `${brain} is not executable by this user; run chmod +x ${brain}`)

  const unconfined = await cli(['check'], { ...env, BRAIN_SANDBOX: 'off' })
  t.match(checkLines(unconfined.stdout).get('sandbox'), { mark: '✓', text: /^warning: BRAIN_SANDBOX=off: brains run unconfined and can read the bot token/u }, 'BRAIN_SANDBOX=off is allowed, with a warning')

  const file = path.join(tempDir(t), 'not-a-directory')
  fs.writeFileSync(file, '')
  const lockFile = await cli(['check'], { ...env, LOCK_DIR: file })
  t.equal(lockFile.code, 1)
  t.match(checkLines(lockFile.stdout).get('LOCK_DIR'), { mark: '✗', text: `${file} is not a directory; set LOCK_DIR to a directory` })

  const unreachable = await cli(['check'], { ...env, TELEGRAM_API_ROOT: `http://127.0.0.1:${await freePort()}` })
  t.equal(unreachable.code, 1)
  t.match(checkLines(unreachable.stdout).get('Telegram reachable'), { mark: '✗', text: /cannot reach the Telegram Bot API .*ECONNREFUSED/u })
  t.equal(unreachable.stderr, '', 'no stack trace')
})

t.test('check: a configuration that does not load is one line and exit 2', async (t) => {
  const emu = await emulator(t)
  const env = await serviceEnv(t, emu)
  delete env['BRAIN_COMMAND']
  const run = await cli(['check'], env)
  t.equal(run.code, 2)
  t.equal(run.stdout, '')
  t.match(run.stderr, /^coordinator: BRAIN_COMMAND is required: [^\n]*\n$/u)
  t.same(emu.calls, [], 'Telegram is not asked')
})

t.test('--help lists every command; <command> --help prints its usage; unknown commands exit 2', async (t) => {
  const help = await cli(['--help'])
  t.equal(help.code, 0)
  for (const command of ['serve', 'check', 'set-webhook', 'webhook-info', 'delete-webhook', 'inbox', 'demo', 'emulator']) {
    t.match(help.stdout, new RegExp(`^  ${command}\\b`, 'mu'), `lists ${command}`)
  }

  const bare = await cli([])
  t.equal(bare.code, 1, 'no command: the help, and exit 1')
  t.equal(bare.stdout, help.stdout)

  const usage = await cli(['set-webhook', '--help'])
  t.equal(usage.code, 0)
  t.match(usage.stdout, /^Usage: coordinator set-webhook --url https:\/\/… \[--drop-pending\] \[--max-connections N\]\n/u)
  t.match(usage.stdout, /--max-connections N +parallel connections Telegram may open, 1–100 \(default 40\)/u)
  t.match(usage.stdout, /--allow-http/u)
  for (const command of ['check', 'webhook-info', 'delete-webhook', 'serve', 'inbox']) {
    const run = await cli([command, '-h'])
    t.equal(run.code, 0, `${command} -h`)
    t.match(run.stdout, new RegExp(`^Usage: coordinator ${command}\\b`, 'u'))
  }
  t.equal((await cli(['help', 'check'])).stdout, (await cli(['check', '--help'])).stdout, 'help <command> is <command> --help')

  const unknown = await cli(['frobnicate'])
  t.equal(unknown.code, 2)
  t.equal(unknown.stderr, 'coordinator: unknown command "frobnicate"; run coordinator --help for the list\n')

  const version = await cli(['--version'])
  t.match(version.stdout, /^\d+\.\d+\.\d+\n$/u)
})

t.test('Postgres mode: check reports the database; inbox lists the shared store and inbox retry wakes the chat up', async (t) => {
  const pg = await postgresOrSkip(t)
  if (pg === undefined) return
  const emu = await emulator(t)
  const databaseUrl = await pg.createDatabase()
  const env = { ...(await serviceEnv(t, emu)), DATABASE_URL: databaseUrl }
  const before = await cli(['check'], env)
  t.match(checkLines(before.stdout).get('DATABASE_URL'), { mark: '✓', text: /^Postgres \d+\.\d+ answers; no schema yet \(the service creates it at start\)$/u })
  t.match(checkLines(before.stdout).get('STATE_DIR')?.text, /\(messages are in Postgres: DATABASE_URL\)$/u)

  const pool = createPool(databaseUrl, 2, 'cli test')
  pool.on('error', () => undefined)
  t.teardown(() => pool.end())
  await migrateEngine(pool, pino({ level: 'silent' }))
  await PostgresStore.migrate(pool)
  const store = new PostgresStore(pool, engineWakeUp, 'cli-test')
  const update = { update_id: 71, message: { message_id: 9, date: 0, chat: { id: 4100, type: 'private' }, text: 'hello there' } }
  const seq = (await store.accept({ updateId: 71, chatId: 4100, messageId: 9, updateJson: JSON.stringify(update), receivedAt: Date.now() })) as number
  await store.finish(seq, { state: 'failed', exitCode: 1, exitSignal: null, stderrTail: 'boom', reply: '⚠️ failed' }, Date.now())
  await pool.query('SELECT graphile_worker.complete_jobs(array(SELECT id FROM graphile_worker.jobs))')

  const after = await cli(['check'], env)
  t.match(checkLines(after.stdout).get('DATABASE_URL'), { mark: '✓', text: /answers; 0 message\(s\) queued$/u })
  const listed = await cli(['inbox', '--json'], env)
  t.equal(listed.code, 0, listed.stderr)
  t.match(JSON.parse(listed.stdout), [{ id: seq, update_id: 71, chat_id: 4100, state: 'failed', text: 'hello there' }], 'the shared store, as JSON')
  const retried = await cli(['inbox', 'retry', String(seq)], env)
  t.equal(retried.code, 0, retried.stderr)
  t.equal(retried.stdout, `message ${seq} re-queued (chat 4100)\n`)
  const { rows } = await pool.query<{ count: number }>(`SELECT count(*)::int AS count FROM graphile_worker.jobs WHERE queue_name = 'chat:4100'`)
  t.equal(rows[0]?.count, 1, 'its chat is woken up in the same statement')
  const again = await cli(['inbox', 'retry', String(seq)], env)
  t.equal(again.code, 2, 'a queued message cannot be retried')
  t.match(again.stderr, /is queued; only failed, timed_out or cancelled messages can be retried/u)

  const down = await cli(['inbox'], { ...env, DATABASE_URL: databaseUrl.replace(/\/t_[0-9a-f]+$/u, '/no_such_database') })
  t.equal(down.code, 1, 'a store that cannot be read: exit 1')
  t.match(down.stderr, /^coordinator: the Postgres store in DATABASE_URL cannot be read: database "no_such_database" does not exist\n$/u)
  const refused = await cli(['check'], { ...env, DATABASE_URL: databaseUrl.replace(/\/t_[0-9a-f]+$/u, '/no_such_database') })
  t.match(checkLines(refused.stdout).get('DATABASE_URL'), { mark: '✗', text: /cannot be reached or refused the login/u })
})
