// The deployment files: Caddyfile (checked with the real caddy, and run in front of a stand-in
// upstream), the systemd units (systemd-analyze verify / security), and scripts/healthcheck.
//
// caddy and systemd-analyze must be installed (.ci/run installs them). Without caddy the Caddy
// tests fail, unless COORDINATOR_SKIP_CADDY=1, which skips them.
import t, { type Test } from 'tap'
import fs from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { caddyMissing, freePort, PROJECT_CADDYFILE, startCaddy } from './helpers/caddy.js'
import { ROOT } from './helpers/root.js'
import { runProgram, type Run } from './helpers/service.js'


function tempDir(t: Test, name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `coordinator-${name}-`))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

// ---------------------------------------------------------------------------------------------
// Caddy

const skipCaddy = process.env.COORDINATOR_SKIP_CADDY === '1' ? 'COORDINATOR_SKIP_CADDY=1' : false
const caddyProblem = skipCaddy ? undefined : caddyMissing()
const CADDY_HELP = 'install Debian\'s package (apt-get install caddy; .ci/run does), or set COORDINATOR_SKIP_CADDY=1 to skip'

/** The environment for caddy's own subcommands: a throwaway HOME so nothing is written elsewhere. */
function caddyEnv(t: Test, extra: Record<string, string>): NodeJS.ProcessEnv {
  const home = tempDir(t, 'caddy-home')
  return {
    PATH: process.env.PATH,
    HOME: home,
    XDG_DATA_HOME: path.join(home, 'data'),
    XDG_CONFIG_HOME: path.join(home, 'config'),
    ...extra,
  }
}

function caddyTest(name: string, fn: (t: Test) => Promise<void>): void {
  void t.test(name, { skip: skipCaddy }, async (t) => {
    if (caddyProblem !== undefined) {
      t.fail(`${caddyProblem}: ${CADDY_HELP}`)
      return
    }
    await fn(t)
  })
}

caddyTest('caddy fmt leaves the Caddyfile unchanged', async (t) => {
  const result = await runProgram('caddy', ['fmt', PROJECT_CADDYFILE], { env: caddyEnv(t, {}) })
  t.equal(result.code, 0, result.stderr)
  t.equal(result.stdout, fs.readFileSync(PROJECT_CADDYFILE, 'utf8'), 'run `caddy fmt --overwrite Caddyfile`')
})

caddyTest('caddy validate accepts the Caddyfile, with no warnings', async (t) => {
  const sites = ['bot.example.com', 'http://127.0.0.1:8443']
  for (const site of sites) {
    const result = await runProgram('caddy', ['validate', '--config', PROJECT_CADDYFILE, '--adapter', 'caddyfile'], {
      env: caddyEnv(t, { COORDINATOR_SITE: site }),
    })
    t.equal(result.code, 0, `COORDINATOR_SITE=${site}: ${result.stderr}`)
    t.match(result.stdout + result.stderr, /Valid configuration/u)
    t.notMatch(result.stderr, /"level":"(warn|error)"/u, `COORDINATOR_SITE=${site}: no warnings`)
  }
})

caddyTest('the Caddyfile refuses to load without COORDINATOR_SITE', async (t) => {
  const result = await runProgram('caddy', ['validate', '--config', PROJECT_CADDYFILE, '--adapter', 'caddyfile'], {
    env: caddyEnv(t, {}),
  })
  t.not(result.code, 0)
})

caddyTest('the Caddyfile defaults: Telegram ranges, 127.0.0.1:8787, 1 MiB bodies', async (t) => {
  const result = await runProgram('caddy', ['adapt', '--config', PROJECT_CADDYFILE, '--adapter', 'caddyfile'], {
    env: caddyEnv(t, { COORDINATOR_SITE: 'bot.example.com' }),
  })
  t.equal(result.code, 0, result.stderr)
  const json = result.stdout
  t.match(json, '"ranges":["149.154.160.0/20","91.108.4.0/22"]')
  t.match(json, '"dial":"127.0.0.1:8787"')
  t.match(json, '"max_size":1048576')
  t.match(json, '{http.request.uri} == \\"/telegram/webhook\\"')
  t.match(json, '"host":["bot.example.com"]')
  t.match(json, '"admin":{"disabled":true}', 'no admin API for a local process to rewrite the routes with')
})

interface Seen {
  method: string
  url: string
  headers: http.IncomingHttpHeaders
  body: Buffer
}

/** A stand-in for the service: records every complete request that reaches it and answers 200 "ok". */
async function standInUpstream(t: Test): Promise<{ address: string; seen: Seen[] }> {
  const seen: Seen[] = []
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      seen.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers, body: Buffer.concat(chunks) })
      response.end('ok')
    })
    request.on('error', () => {})
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { address: `127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
}

interface Answer {
  status: number
  body: string
}

/** Sends a request with `target` as the request-target, exactly as given (Node does not normalise it). */
function send(port: number, method: string, target: string, body?: Buffer | string, headers: http.OutgoingHttpHeaders = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const request = http.request({ host: '127.0.0.1', port, method, path: target, headers, agent: false }, (response) => {
      let text = ''
      response.setEncoding('utf8').on('data', (chunk: string) => (text += chunk))
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text }))
    })
    request.on('error', reject)
    request.end(body)
  })
}

const UPDATE = JSON.stringify({ update_id: 1, message: { message_id: 1, chat: { id: 42, type: 'private' }, text: 'hi' } })
const JSON_HEADERS = { 'content-type': 'application/json', 'x-telegram-bot-api-secret-token': 's3cret' }

caddyTest('a real Caddy passes only the webhook POST through to the service', async (t) => {
  const upstream = await standInUpstream(t)
  const caddy = await startCaddy({ upstream: upstream.address, telegramIpRanges: '127.0.0.0/8' })
  t.teardown(caddy.stop)

  // The webhook: reaches the service, with X-Forwarded-For set by Caddy, not by the client.
  const ok = await send(caddy.port, 'POST', '/telegram/webhook', UPDATE, { ...JSON_HEADERS, 'x-forwarded-for': '203.0.113.9' })
  t.same(ok, { status: 200, body: 'ok' })
  t.equal(upstream.seen.length, 1, 'the webhook POST reached the upstream')
  const [first] = upstream.seen
  t.equal(first?.method, 'POST')
  t.equal(first?.url, '/telegram/webhook')
  t.equal(first?.headers['x-forwarded-for'], '127.0.0.1', 'X-Forwarded-For is the peer address, the spoofed one dropped')
  t.equal(first?.headers['x-telegram-bot-api-secret-token'], 's3cret', 'the secret header is passed on')
  t.equal(first?.body.toString(), UPDATE)

  // Everything else is refused and never reaches the service.
  const refused: Array<[string, string]> = [
    ['GET', '/telegram/webhook'],
    ['HEAD', '/telegram/webhook'],
    ['PUT', '/telegram/webhook'],
    ['GET', '/'],
    ...['/healthz', '/livez', '/readyz', '/metrics'].flatMap((p): Array<[string, string]> => [['GET', p], ['POST', p]]),
    ...[
      '/telegram/webhook/../healthz',
      '/telegram/webhook/..%2fhealthz',
      '/telegram/webhook/%2e%2e/healthz',
      '/telegram/webhook%2f..%2f..%2fhealthz',
      '/healthz/../telegram/webhook',
      '/metrics/..%2ftelegram/webhook',
      '/%2e%2e/healthz',
      '//healthz',
      '//metrics',
      '//telegram/webhook',
      '/telegram//webhook',
      '/telegram/webhook/',
      '/telegram/webhook/.',
      '/telegram/webhook.',
      '/telegram/webhook%20',
      '/telegram/webhook%00',
      '/telegram/webhook;/healthz',
      '/telegram/webhook?/healthz',
      '/TELEGRAM/WEBHOOK',
      '/telegram/%77ebhook',
      '/telegram%2fwebhook',
      '/telegram/webhook/healthz',
      `http://127.0.0.1:${caddy.port}/healthz`,
    ].map((target): [string, string] => ['POST', target]),
  ]
  for (const [method, target] of refused) {
    const answer = await send(caddy.port, method, target, method === 'POST' || method === 'PUT' ? UPDATE : undefined, JSON_HEADERS)
    t.ok([400, 403, 404].includes(answer.status), `${method} ${target} is refused (${answer.status})`)
    t.equal(answer.body, '', `${method} ${target}: no body detail`)
  }
  t.equal(upstream.seen.length, 1, 'none of the refused requests reached the upstream')
  t.same(
    upstream.seen.map((s) => s.url),
    ['/telegram/webhook'],
  )

  // Body size: 1 MiB passes, anything larger never arrives whole.
  const mib = Buffer.alloc(1024 * 1024, 0x20)
  t.equal((await send(caddy.port, 'POST', '/telegram/webhook', mib, JSON_HEADERS)).status, 200, 'a 1 MiB body passes')
  const tooBig = await send(caddy.port, 'POST', '/telegram/webhook', Buffer.alloc(1024 * 1024 + 1, 0x20), JSON_HEADERS)
  t.ok(tooBig.status >= 400, `a body over 1 MiB is refused (${tooBig.status})`)
  t.notOk(
    upstream.seen.some((s) => s.body.length > 1024 * 1024),
    'no body over 1 MiB reached the upstream whole',
  )
})

caddyTest('a real Caddy refuses the webhook POST from outside TELEGRAM_IP_RANGES', async (t) => {
  const upstream = await standInUpstream(t)
  const caddy = await startCaddy({ upstream: upstream.address, telegramIpRanges: '149.154.160.0/20 91.108.4.0/22' })
  t.teardown(caddy.stop)
  const answer = await send(caddy.port, 'POST', '/telegram/webhook', UPDATE, JSON_HEADERS)
  t.ok([403, 404].includes(answer.status), `refused (${answer.status})`)
  t.equal(answer.body, '')
  // X-Forwarded-For is no way around the address check.
  const spoofed = await send(caddy.port, 'POST', '/telegram/webhook', UPDATE, { ...JSON_HEADERS, 'x-forwarded-for': '149.154.167.99' })
  t.ok([403, 404].includes(spoofed.status), `refused with a spoofed X-Forwarded-For (${spoofed.status})`)
  t.equal(upstream.seen.length, 0, 'nothing reached the upstream')
})

caddyTest('a real Caddy follows WEBHOOK_PATH', async (t) => {
  const upstream = await standInUpstream(t)
  const caddy = await startCaddy({ upstream: upstream.address, telegramIpRanges: '127.0.0.1/32', webhookPath: '/hook/a-b_c' })
  t.teardown(caddy.stop)
  t.equal((await send(caddy.port, 'POST', '/telegram/webhook', UPDATE, JSON_HEADERS)).status, 404)
  t.equal((await send(caddy.port, 'POST', '/hook/a-b_c', UPDATE, JSON_HEADERS)).status, 200)
  t.same(
    upstream.seen.map((s) => s.url),
    ['/hook/a-b_c'],
  )
})

// ---------------------------------------------------------------------------------------------
// systemd units

const UNITS = ['coordinator.service', 'coordinator-healthcheck.service', 'coordinator-healthcheck.timer']
const INSTALL_PREFIX = '/opt/coordinator/'

/** The unit's assignments, comments and blank lines left out: key -> values in order. */
function parseUnit(text: string): Map<string, string[]> {
  const entries = new Map<string, string[]>()
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z]+)=(.*)$/u.exec(line.trim())
    if (!match) continue
    const [, key = '', value = ''] = match
    entries.set(key, [...(entries.get(key) ?? []), value])
  }
  return entries
}

/**
 * Copies the units into a temp dir for systemd-analyze, which checks that every ExecStart= program
 * exists and is executable. The only rewrite: ExecStart='s install prefix /opt/coordinator/ is
 * re-rooted under the temp dir, where dist/cli.js is a stand-in (the build may not exist) and
 * scripts/healthcheck is the real script. Nothing else in the units is changed.
 */
function stageUnits(t: Test): string {
  const dir = tempDir(t, 'units')
  const prefix = path.join(dir, 'opt', 'coordinator') + '/'
  fs.mkdirSync(path.join(prefix, 'dist'), { recursive: true })
  fs.mkdirSync(path.join(prefix, 'scripts'), { recursive: true })
  fs.writeFileSync(path.join(prefix, 'dist', 'cli.js'), '#!/bin/sh\nexit 0\n', { mode: 0o755 })
  fs.copyFileSync(path.join(ROOT, 'scripts', 'healthcheck'), path.join(prefix, 'scripts', 'healthcheck'))
  fs.chmodSync(path.join(prefix, 'scripts', 'healthcheck'), 0o755)
  for (const unit of UNITS) {
    const text = fs.readFileSync(path.join(ROOT, 'systemd', unit), 'utf8')
    const staged = text.replace(/^(ExecStart=[-@:+!]*)\/opt\/coordinator\//gmu, `$1${prefix}`)
    fs.writeFileSync(path.join(dir, unit), staged, { mode: 0o644 })
  }
  return dir
}

void t.test('systemd units', async (t) => {
  const version = await runProgram('systemd-analyze', ['--version']).catch((error: Error) => error)
  if (version instanceof Error || version.code !== 0) {
    t.fail(`systemd-analyze is not available (Debian package "systemd"; .ci/run installs it): ${String(version instanceof Error ? version.message : version.stderr)}`)
    return
  }
  const env = { PATH: process.env.PATH, SYSTEMD_LOG_COLOR: '0', SYSTEMD_PAGER: '', LANG: 'C.UTF-8' }

  await t.test('systemd-analyze verify passes without a single warning', async (t) => {
    const dir = stageUnits(t)
    const result = await runProgram('systemd-analyze', ['verify', ...UNITS.map((unit) => path.join(dir, unit))], { env, cwd: dir })
    t.equal(result.code, 0, result.stderr)
    t.equal(result.stderr.trim(), '', 'no warnings on stderr')
    for (const unit of UNITS) {
      const original = fs.readFileSync(path.join(ROOT, 'systemd', unit), 'utf8').split('\n')
      const staged = fs.readFileSync(path.join(dir, unit), 'utf8').split('\n')
      const changed = original.filter((line, i) => line !== staged[i])
      t.ok(changed.every((line) => line.startsWith(`ExecStart=${INSTALL_PREFIX}`)), `${unit}: only ExecStart= was re-rooted`)
    }
  })

  await t.test('systemd-analyze security rates coordinator.service\'s exposure at most 2.5 (with the brain sandbox allowed)', async (t) => {
    const dir = stageUnits(t)
    const result = await runProgram('systemd-analyze', ['security', '--offline=true', path.join(dir, 'coordinator.service')], { env, cwd: dir })
    const match = /Overall exposure level for coordinator\.service: ([\d.]+)/u.exec(result.stdout + result.stderr)
    t.ok(match, `an exposure level is printed: ${result.stdout.slice(-300)}${result.stderr}`)
    t.ok(Number(match?.[1]) <= 2.5, `exposure ${match?.[1]} <= 2.5`)
  })

  await t.test('coordinator.service keeps the choices the service depends on', async (t) => {
    const unit = parseUnit(fs.readFileSync(path.join(ROOT, 'systemd', 'coordinator.service'), 'utf8'))
    const one = (key: string): string | undefined => unit.get(key)?.at(-1)
    t.equal(one('Type'), 'exec')
    t.equal(one('User'), 'coordinator')
    t.equal(one('Group'), 'coordinator')
    t.equal(one('EnvironmentFile'), '/etc/coordinator/coordinator.env')
    t.ok(unit.get('Environment')?.includes('HOME=/var/lib/coordinator'))
    t.equal(one('ExecStart'), '/opt/coordinator/dist/cli.js serve')
    t.equal(one('StateDirectory'), 'coordinator')
    t.equal(one('RuntimeDirectory'), 'coordinator')
    t.equal(one('KillMode'), 'mixed', 'SIGTERM to the main process only, so it can drain')
    t.same(one('RestrictNamespaces')?.split(' ').sort(), ['ipc', 'mnt', 'net', 'pid', 'user'], 'the namespaces bubblewrap creates, and no more')
    t.match(one('SystemCallFilter'), / @mount$/u, 'bubblewrap may build the sandbox\'s file system')
    t.equal(one('ProtectKernelTunables'), undefined, 'nothing covers parts of /proc: the kernel would refuse the sandbox its own /proc')
    t.equal(one('ProtectKernelLogs'), undefined)
    t.ok(Number(one('TimeoutStopSec')) > 30 + 5, 'TimeoutStopSec exceeds SHUTDOWN_GRACE_S + KILL_GRACE_S')
    t.equal(one('Restart'), 'on-failure')
    t.equal(one('PrivateTmp'), 'yes')
    t.equal(one('NoNewPrivileges'), 'yes')
    t.equal(one('ProtectSystem'), 'strict')
    t.equal(one('CapabilityBoundingSet'), '')
    t.notOk(unit.has('MemoryDenyWriteExecute'), 'no MemoryDenyWriteExecute: it breaks V8\'s JIT')
  })
})

// ---------------------------------------------------------------------------------------------
// scripts/healthcheck

const HEALTHCHECK = path.join(ROOT, 'scripts', 'healthcheck')

void t.test('scripts/healthcheck restarts the unit after N consecutive failures', async (t) => {
  const dir = tempDir(t, 'healthcheck')
  const bin = path.join(dir, 'bin')
  const calls = path.join(dir, 'systemctl.calls')
  const stateFile = path.join(dir, 'state', 'failures')
  fs.mkdirSync(bin)
  // A fake systemctl, first on PATH: records its arguments; `is-active` answers $FAKE_ACTIVE_RC.
  fs.writeFileSync(
    path.join(bin, 'systemctl'),
    `#!/bin/sh\nprintf '%s\\n' "$*" >> '${calls}'\nif [ "$1" = is-active ]; then exit "\${FAKE_ACTIVE_RC:-0}"; fi\nexit 0\n`,
    { mode: 0o755 },
  )

  let status = 200
  const server = http.createServer((request, response) => {
    response.statusCode = request.url === '/healthz' ? status : 404
    response.end(status === 200 ? '{"status":"ok"}' : '{"status":"unhealthy"}')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/healthz`

  const probe = async (extra: NodeJS.ProcessEnv = {}): Promise<Run> => {
    const result = await runProgram(HEALTHCHECK, [url, '3', 'coordinator.service'], {
      env: { PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`, HEALTHCHECK_STATE_FILE: stateFile, ...extra },
    })
    t.equal(result.code, 0, `healthcheck exits 0: ${result.stderr}`)
    return result
  }
  const restarts = (): string[] =>
    (fs.existsSync(calls) ? fs.readFileSync(calls, 'utf8').split('\n') : []).filter((line) => line.startsWith('restart'))
  const count = (): string => (fs.existsSync(stateFile) ? fs.readFileSync(stateFile, 'utf8').trim() : '0')

  await probe()
  t.same(restarts(), [], 'healthy: no restart')
  t.equal(count(), '0')

  status = 503
  await probe()
  await probe()
  t.equal(count(), '2', 'two failures counted')
  t.same(restarts(), [], 'below the threshold: no restart')

  status = 200
  const recovered = await probe()
  t.equal(count(), '0', 'a success resets the count')
  t.match(recovered.stderr, /healthy again/u)

  status = 503
  await probe()
  await probe()
  t.same(restarts(), [], 'a success in between: two failures again are not enough')
  const third = await probe()
  t.same(restarts(), ['restart coordinator.service'], 'the third consecutive failure restarts the unit')
  t.match(third.stderr, /restarting coordinator\.service/u)
  t.equal(count(), '0', 'the count starts over after a restart')

  // A connection refused counts as a failure too.
  const closed = `http://127.0.0.1:${await freePort()}/healthz` // nothing listens there
  for (let i = 0; i < 3; i++) {
    const result = await runProgram(HEALTHCHECK, [closed, '3', 'other.service'], {
      env: { PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`, HEALTHCHECK_STATE_FILE: stateFile + '.other' },
    })
    t.equal(result.code, 0, result.stderr)
  }
  t.same(restarts().slice(-1), ['restart other.service'], 'an unreachable service is restarted too')

  // A unit that is not active (stopped by an operator, or stopping) is left alone.
  const before = restarts().length
  for (let i = 0; i < 4; i++) await probe({ FAKE_ACTIVE_RC: '3' })
  t.equal(restarts().length, before, 'an inactive unit is never restarted')
  t.equal(count(), '0')
})

void t.test('scripts/healthcheck takes its settings from the environment, and refuses a bad threshold', async (t) => {
  const dir = tempDir(t, 'healthcheck-env')
  const bin = path.join(dir, 'bin')
  const calls = path.join(dir, 'systemctl.calls')
  fs.mkdirSync(bin)
  fs.writeFileSync(path.join(bin, 'systemctl'), `#!/bin/sh\nprintf '%s\\n' "$*" >> '${calls}'\nexit 0\n`, { mode: 0o755 })
  const env = {
    PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    HEALTHCHECK_URL: `http://127.0.0.1:${await freePort()}/healthz`, // nothing listens there
    HEALTHCHECK_THRESHOLD: '1',
    HEALTHCHECK_UNIT: 'x.service',
    RUNTIME_DIRECTORY: dir,
  }
  const result = await runProgram(HEALTHCHECK, [], { env })
  t.equal(result.code, 0, result.stderr)
  t.match(fs.readFileSync(calls, 'utf8'), /^restart x\.service$/mu, 'threshold 1: the first failure restarts')
  t.ok(fs.existsSync(path.join(dir, 'failures')), 'the count lives in $RUNTIME_DIRECTORY/failures')

  for (const bad of ['0', 'three', '-1']) {
    const refused = await runProgram(HEALTHCHECK, [], { env: { ...env, HEALTHCHECK_THRESHOLD: bad } })
    t.equal(refused.code, 2, `THRESHOLD=${bad} is refused`)
  }
})
