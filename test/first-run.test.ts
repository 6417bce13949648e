// A first run that cannot go wrong: each setting that would start a service unable to work stops it
// with exit status 2 and one line naming the variable; a Telegram that cannot be reached does not.
import t, { type Test } from 'tap'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { startEmulator } from '../src/emulator/index.js'
import { SqliteInbox } from '../src/store/sqlite.js'
import { ServiceProcess } from '../src/demo/service.js'
import { CLI, COMPILE_CACHE_ENV, ROOT, SECRET, TEST_BRAIN, TOKEN, eventually, freePort, runProgram, type Run } from './helpers/service.js'

/** `env` with the PATH and HOME every run gets. */
const serviceEnv = (env: Record<string, string>): Record<string, string> => ({ PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: os.tmpdir(), ...COMPILE_CACHE_ENV, ...env })

function cli(args: string[], env: Record<string, string>): Promise<Run> {
  return runProgram('env', ['-u', 'NODE_OPTIONS', process.execPath, CLI, ...args], { env: serviceEnv(env) })
}

function tempDir(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coordinator-first-run-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function baseEnv(t: Test, apiRoot: string): Promise<Record<string, string>> {
  const dir = tempDir(t)
  return {
    TELEGRAM_BOT_TOKEN: TOKEN,
    TELEGRAM_WEBHOOK_SECRET: SECRET,
    TELEGRAM_API_ROOT: apiRoot,
    ALLOW_ALL_CHATS: '1',
    BRAIN_COMMAND: TEST_BRAIN,
    STATE_DIR: path.join(dir, 'state'),
    LOCK_DIR: path.join(dir, 'locks'),
    PORT: String(await freePort()),
  }
}

/** Exit 2, nothing on stdout but log lines, and exactly one line on stderr matching `line`. */
function assertOneLine(t: Test, run: Run, line: RegExp): void {
  t.equal(run.code, 2, `exit 2: ${run.stderr}`)
  t.match(run.stderr, line)
  t.equal(run.stderr.split('\n').filter(Boolean).length, 1, 'one line')
  t.notMatch(run.stderr, /\n\s+at /u, 'no stack trace')
}

t.test('a token Telegram refuses (401): exit 2 naming TELEGRAM_BOT_TOKEN, before anything listens', async (t) => {
  const emu = await startEmulator({ token: TOKEN })
  t.teardown(() => emu.close())
  const env = { ...(await baseEnv(t, emu.url)), TELEGRAM_BOT_TOKEN: '123456:revoked-token' }
  const run = await cli(['serve'], env)
  assertOneLine(t, run, /^coordinator: TELEGRAM_BOT_TOKEN was refused by Telegram: Telegram refused the bot token \(401: Unauthorized\); set TELEGRAM_BOT_TOKEN to the token @BotFather gave you\n$/u)
  t.notMatch(run.stderr + run.stdout, /revoked-token/u, 'the token is never printed')
  t.same(emu.callsOf('getMe').map((call) => call.status), [401])
})

t.test('Telegram unreachable at start: the service starts, /readyz is not ready until getMe answers', async (t) => {
  const port = await freePort()
  const apiRoot = `http://127.0.0.1:${port}`
  const svc = await ServiceProcess.start(CLI, serviceEnv({ ...(await baseEnv(t, apiRoot)), PORT: '0', LOG_LEVEL: 'info' }))
  t.teardown(() => svc.stop('SIGKILL'))
  const warning = await svc.waitForLog((line) => line.msg.startsWith('could not check the bot token with getMe'))
  t.match(warning['error'], /cannot reach the Telegram Bot API .*ECONNREFUSED/u)
  t.notMatch(JSON.stringify(svc.logs), /TEST-token/u, 'the token is not logged')
  const notReady = await fetch(`${svc.url}/readyz`)
  t.equal(notReady.status, 503)
  t.match(await notReady.json(), { status: 'not ready', checks: { bot_token_checked: false, brain_startable: true } })

  // Telegram comes back: a retry (1 s, 2 s, 4 s, …) gets through and the service becomes ready.
  const emu = await startEmulator({ token: TOKEN, port })
  t.teardown(() => emu.close())
  await eventually(async () => (await fetch(`${svc.url}/readyz`)).status === 200, 20_000, '/readyz to turn ready')
  await svc.waitForLog((line) => line.msg === 'bot token checked with getMe: Telegram answers')
  t.pass('ready once getMe answered')
})

t.test('with NODE_COMPILE_CACHE, the compiled code is written once the service is ready, not only at exit', async (t) => {
  const emu = await startEmulator({ token: TOKEN })
  t.teardown(() => emu.close())
  const cache = tempDir(t)
  const svc = await ServiceProcess.start(CLI, serviceEnv({ ...(await baseEnv(t, emu.url)), PORT: '0', LOG_LEVEL: 'info', NODE_COMPILE_CACHE: cache }))
  const files = (): number => fs.readdirSync(cache, { recursive: true }).length
  await eventually(() => files() > 20, 10_000, 'the compile cache to be written')
  // Killed, as a crash or an OOM kill would: what was written stays for the next start.
  await svc.stop('SIGKILL')
  t.ok(files() > 20, `${files()} entries in the cache while the service still ran`)
})

t.test('BRAIN_CWD missing or not a directory: exit 2 naming BRAIN_CWD', async (t) => {
  const emu = await startEmulator({ token: TOKEN })
  t.teardown(() => emu.close())
  const env = await baseEnv(t, emu.url)
  const missing = path.join(tempDir(t), 'no-such-dir')
  assertOneLine(t, await cli(['serve'], { ...env, BRAIN_CWD: missing }), new RegExp(`^coordinator: BRAIN_CWD ${missing} does not exist; create it or set BRAIN_CWD to the directory the brain works in\\n$`, 'u'))
  const file = path.join(tempDir(t), 'a-file')
  fs.writeFileSync(file, '')
  assertOneLine(t, await cli(['serve'], { ...env, BRAIN_CWD: file }), /^coordinator: BRAIN_CWD .* is not a directory; set BRAIN_CWD/u)
  t.equal(emu.callsOf('getMe').length, 0, 'stopped before asking Telegram')
})

t.test('PORT in use: exit 2 naming PORT', async (t) => {
  const emu = await startEmulator({ token: TOKEN })
  t.teardown(() => emu.close())
  const taken = net.createServer()
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
  t.teardown(() => taken.close())
  const port = (taken.address() as net.AddressInfo).port
  const run = await cli(['serve'], { ...(await baseEnv(t, emu.url)), PORT: String(port) })
  assertOneLine(t, run, new RegExp(`^coordinator: PORT ${port} is already in use on 127\\.0\\.0\\.1; stop what listens there or set PORT to a free port\\n$`, 'u'))
})

t.test('HOST that does not resolve: exit 2 naming HOST', async (t) => {
  const emu = await startEmulator({ token: TOKEN })
  t.teardown(() => emu.close())
  const run = await cli(['serve'], { ...(await baseEnv(t, emu.url)), HOST: 'no-such-host.invalid' })
  assertOneLine(t, run, /^coordinator: HOST "no-such-host\.invalid" does not resolve to an address; set HOST to an address such as 127\.0\.0\.1\n$/u)
})

t.test('MESSAGE_BUDGET_S below BRAIN_TIMEOUT_S: exit 2 naming MESSAGE_BUDGET_S', async (t) => {
  const env = await baseEnv(t, 'http://127.0.0.1:9')
  const run = await cli(['serve'], { ...env, BRAIN_TIMEOUT_S: '60', MESSAGE_BUDGET_S: '30' })
  assertOneLine(t, run, /^coordinator: MESSAGE_BUDGET_S must be at least BRAIN_TIMEOUT_S \(60 s\): it covers all attempts of a message; got 30 s\n$/u)
  // Only BRAIN_TIMEOUT_S raised past the default budget (180 s) is caught too.
  assertOneLine(t, await cli(['serve'], { ...env, BRAIN_TIMEOUT_S: '600' }), /^coordinator: MESSAGE_BUDGET_S must be at least BRAIN_TIMEOUT_S \(600 s\)/u)
})

t.test('check fails when the service is not answering, and passes the service line once it is', async (t) => {
  const emu = await startEmulator({ token: TOKEN })
  t.teardown(() => emu.close())
  const env = await baseEnv(t, emu.url)
  const down = await cli(['check'], env)
  t.equal(down.code, 1, down.stdout)
  t.match(down.stdout, new RegExp(`^✗ service: nothing answers at http://127\\.0\\.0\\.1:${env['PORT']}/readyz \\(ECONNREFUSED\\); start it`, 'mu'))
  t.notMatch(down.stdout, /all \d+ checks passed/u)

  const svc = await ServiceProcess.start(CLI, serviceEnv(env))
  t.teardown(() => svc.stop('SIGKILL'))
  const up = await cli(['check'], env)
  t.match(up.stdout, new RegExp(`^✓ service: answers at http://127\\.0\\.0\\.1:${env['PORT']}/readyz: ready$`, 'mu'))
})

t.test('inbox --chat takes a group chat id (negative)', async (t) => {
  const dir = tempDir(t)
  const inbox = new SqliteInbox(dir)
  const stored = (updateId: number, chatId: number): void => {
    inbox.accept({ updateId, chatId, messageId: 1, updateJson: '{}', receivedAt: Date.now() })
  }
  stored(1, -100777)
  stored(2, 5550001)
  inbox.close()
  for (const args of [['--chat', '-100777'], ['--chat=-100777']]) {
    const run = await cli(['inbox', ...args, '--json'], { STATE_DIR: dir })
    t.equal(run.code, 0, run.stderr)
    t.same((JSON.parse(run.stdout) as { chat_id: number }[]).map((message) => message.chat_id), [-100777], args.join(' '))
  }
})

/** The packages (under node_modules) a Node run of `args` loaded, by a resolve hook in that process. */
async function packagesLoaded(t: Test, args: string[], env: Record<string, string> = {}): Promise<{ run: Run; packages: string[] | undefined }> {
  const dir = tempDir(t)
  const hook = path.join(dir, 'hook.mjs')
  const list = path.join(dir, 'packages')
  fs.writeFileSync(
    hook,
    `import fs from 'node:fs'
import { registerHooks } from 'node:module'
const seen = new Set()
registerHooks({
  resolve(specifier, context, next) {
    const result = next(specifier, context)
    const match = /\\/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//u.exec(result.url)
    if (match) seen.add(match[1])
    return result
  },
})
process.on('exit', () => fs.writeFileSync(${JSON.stringify(list)}, [...seen].join('\\n')))
`,
  )
  const run = await runProgram('env', ['-u', 'NODE_OPTIONS', process.execPath, '--import', hook, ...args], { env: serviceEnv(env) })
  return { run, packages: fs.existsSync(list) ? fs.readFileSync(list, 'utf8').split('\n').filter(Boolean) : undefined }
}

t.test('a configuration that cannot work is told before the service loads; a single host never loads Postgres', async (t) => {
  const refused = await packagesLoaded(t, [CLI, 'serve'], { TELEGRAM_WEBHOOK_SECRET: SECRET, ALLOW_ALL_CHATS: '1', BRAIN_COMMAND: TEST_BRAIN })
  assertOneLine(t, refused.run, /^coordinator: TELEGRAM_BOT_TOKEN is required/u)
  t.ok(refused.packages, 'the hook wrote what the process loaded')
  t.same(
    refused.packages?.filter((name) => ['fastify', 'grammy', 'better-sqlite3', 'pino'].includes(name)),
    [],
    `none of the service's libraries loaded for it (loaded: ${refused.packages?.join(' ') || 'none'})`,
  )

  const load = (file: string): string[] => ['--input-type=module', '-e', `await import(${JSON.stringify(pathToFileURL(path.join(ROOT, file)).href)})`]
  const single = await packagesLoaded(t, load('dist/server.js'))
  t.equal(single.run.code, 0, single.run.stderr)
  t.ok(single.packages?.includes('fastify') && single.packages.includes('better-sqlite3'), 'the service itself loads fastify and SQLite')
  t.same(single.packages?.filter((name) => ['pg', 'graphile-worker'].includes(name)), [], "but neither Postgres' client nor the job engine")
  const cluster = await packagesLoaded(t, load('dist/cluster/service.js'))
  t.ok(cluster.packages?.includes('pg') && cluster.packages.includes('graphile-worker'), 'which the Postgres mode loads (the check sees them when they are loaded)')
})
