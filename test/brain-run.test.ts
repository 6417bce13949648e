import { createHash } from 'node:crypto'
import { getEventListeners } from 'node:events'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import Fastify from 'fastify'
import t, { type Test } from 'tap'
import { brainEnvironment, DEFAULT_PATH } from '../src/brain/env.js'
import { BrainCommandError, checkBrainCommand } from '../src/brain/preflight.js'
import { PIPE_DRAIN_MS, runBrain, STDERR_TAIL_BYTES, STDOUT_LIMIT_BYTES, type BrainAttempt, type BrainRunOptions } from '../src/brain/run.js'
import { processInfo, processes } from './helpers/proc.js'

// Real subprocesses on a noisy 2-core CI machine: deadlines short enough to keep the file quick,
// upper bounds loose enough never to flake.
const DEADLINE_MS = 800
const GRACE_MS = 400
const SLACK_MS = 4000

interface LogLine {
  level: number
  msg: string
  [field: string]: unknown
}
const WARN = 40

const logLines: LogLine[] = []
const app = Fastify({ logger: { level: 'debug', stream: { write: (line: string) => void logLines.push(JSON.parse(line) as LogLine) } } })
const log = app.log.child({ update_id: 1000, chat_id: 42 })

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'brain-run-test-'))
t.teardown(async () => {
  await app.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

function script(name: string, text: string, mode = 0o755): string {
  const file = path.join(dir, name)
  fs.writeFileSync(file, text)
  fs.chmodSync(file, mode)
  return file
}
const shBrain = (name: string, body: string): string => script(name, `#!/bin/sh\n${body}\n`)
const nodeBrain = (name: string, body: string): string => script(name, `#!${process.execPath}\n${body}\n`)

function run(argv: readonly [string, ...string[]], options: Partial<BrainRunOptions> = {}): Promise<BrainAttempt> {
  return runBrain({
    argv,
    cwd: dir,
    env: brainEnvironment(process.env, [], { COORDINATOR_ATTEMPT: '1' }),
    stdin: '',
    deadline: Date.now() + 10_000,
    killGraceMs: GRACE_MS,
    log,
    logFields: { chat_id: 42, update_id: 1000, attempt: 1 },
    ...options,
  })
}

/** Our own children, running or zombie: after every run there must be none. */
function childrenOfThisProcess(): number[] {
  return processes()
    .filter((p) => p.ppid === process.pid)
    .map((p) => p.pid)
}

const openFds = (): number => fs.readdirSync('/proc/self/fd').length

/** A killed grandchild re-parented to a PID 1 that never reaps stays a zombie: dead is enough. */
function assertNotRunning(t: Test, pid: number, what: string): void {
  const stat = processInfo(pid)
  t.ok(stat === undefined || stat.state === 'Z', `${what} (pid ${pid}) is not running`, { state: stat?.state })
  t.not(stat?.ppid, process.pid, `${what} is not a zombie child of the test`)
}

function readPid(file: string): number {
  const pid = Number(fs.readFileSync(file, 'utf8').trim())
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no pid in ${file}`)
  return pid
}

async function waitForFile(file: string, timeoutMs = SLACK_MS): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!(fs.existsSync(file) && fs.readFileSync(file, 'utf8').endsWith('\n'))) {
    if (Date.now() > until) throw new Error(`${file} never appeared`)
    await delay(20)
  }
}

let fdsAtStart = 0
let resourcesAtStart: string[] = []
// Processes that left our reach on purpose (setsid); killed once the leak checks have run.
const escapees: number[] = []
const killEscapees = (): void => {
  for (const pid of escapees.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // Already gone.
    }
  }
}
t.teardown(killEscapees)

t.test('a warm-up run opens what node keeps open for child processes', async (t) => {
  const attempt = await run([shBrain('warm-up', 'echo ready')])
  t.equal(attempt.stdout, 'ready')
  await delay(100)
  fdsAtStart = openFds()
  resourcesAtStart = process.getActiveResourcesInfo().sort()
})

t.test('exit codes are reported, stdout is the trimmed reply, both log lines are written', async (t) => {
  const brain = shBrain('exit-code', 'echo "  reply $1  "\nexit "$1"')
  for (const code of [0, 3, 75]) {
    logLines.length = 0
    const attempt = await run([brain, String(code)])
    t.equal(attempt.outcome, 'exited')
    t.equal(attempt.exitCode, code)
    t.equal(attempt.signal, null)
    t.equal(attempt.stdout, `reply ${code}`)
    t.equal(attempt.stdoutTruncated, false)
    t.type(attempt.pid, 'number')
    const started = logLines.find((line) => line.msg === 'child started')
    t.match(started, { child_pid: attempt.pid, chat_id: 42, update_id: 1000, attempt: 1, argv0: brain })
    const reaped = logLines.find((line) => line.msg === 'child reaped')
    t.match(reaped, { child_pid: attempt.pid, exit_code: code, signal: null, outcome: 'exited', duration_ms: Number })
  }
})

t.test('a hung brain is killed with its grandchild at the deadline', async (t) => {
  const pidFile = path.join(dir, 'hung.pid')
  const brain = shBrain('hung', 'sleep 300 &\necho $! > "$1"\nsleep 300')
  const deadline = Date.now() + DEADLINE_MS
  const attempt = await run([brain, pidFile], { deadline })
  t.equal(attempt.outcome, 'timed_out')
  t.equal(attempt.exitCode, null)
  t.equal(attempt.signal, 'SIGTERM')
  t.ok(Date.now() >= deadline, 'not before the deadline')
  t.ok(attempt.durationMs < DEADLINE_MS + SLACK_MS, `ended soon after the deadline (${attempt.durationMs} ms)`)
  assertNotRunning(t, readPid(pidFile), 'the grandchild')
})

t.test('a brain ignoring SIGTERM gets SIGKILL after the grace, and so does its grandchild', async (t) => {
  const pidFile = path.join(dir, 'stubborn.pid')
  const brain = shBrain('stubborn', "trap '' TERM\nsleep 300 &\necho $! > \"$1\"\nwhile :; do sleep 1; done")
  logLines.length = 0
  const attempt = await run([brain, pidFile], { deadline: Date.now() + DEADLINE_MS })
  t.equal(attempt.outcome, 'timed_out')
  t.equal(attempt.signal, 'SIGKILL')
  t.ok(attempt.durationMs >= DEADLINE_MS + GRACE_MS - 50, `waited out the grace (${attempt.durationMs} ms)`)
  t.ok(attempt.durationMs < DEADLINE_MS + GRACE_MS + SLACK_MS)
  t.ok(
    logLines.some((line) => line.level === WARN && /SIGKILL/u.test(line.msg)),
    'the escalation is logged at warn',
  )
  assertNotRunning(t, readPid(pidFile), 'the grandchild')
})

t.test('a brain that exits leaving a grandchild on its stdout finishes at its exit; the grandchild is killed', async (t) => {
  const pidFile = path.join(dir, 'leaver.pid')
  const brain = shBrain('leaver', 'sleep 300 &\necho $! > "$1"\necho done')
  const attempt = await run([brain, pidFile])
  t.equal(attempt.outcome, 'exited')
  t.equal(attempt.exitCode, 0)
  t.equal(attempt.stdout, 'done')
  t.ok(attempt.durationMs < SLACK_MS, `did not wait for the grandchild's stdout (${attempt.durationMs} ms)`)
  assertNotRunning(t, readPid(pidFile), 'the grandchild')
})

t.test('a leftover grandchild that ignores SIGTERM is SIGKILLed after the grace', async (t) => {
  const pidFile = path.join(dir, 'leaver-stubborn.pid')
  const brain = shBrain('leaver-stubborn', "(trap '' TERM; exec sleep 300) &\necho $! > \"$1\"\necho done")
  const attempt = await run([brain, pidFile])
  t.equal(attempt.outcome, 'exited')
  t.equal(attempt.exitCode, 0)
  t.equal(attempt.stdout, 'done')
  t.ok(attempt.durationMs >= GRACE_MS - 50, `waited out the grace (${attempt.durationMs} ms)`)
  assertNotRunning(t, readPid(pidFile), 'the grandchild')
})

t.test('a grandchild that escaped the group with stdout open delays the result by at most the drain', async (t) => {
  const pidFile = path.join(dir, 'escapee.pid')
  // The leader waits for the pid file, written only once the escapee has its own session.
  const brain = shBrain(
    'escapee',
    `setsid sh -c 'echo $$ > "$1"; exec sleep 30' sh "$1" &\nwhile [ ! -s "$1" ]; do sleep 0.05; done\necho done`,
  )
  const attempt = await run([brain, pidFile])
  escapees.push(readPid(pidFile))
  t.equal(attempt.outcome, 'exited')
  t.equal(attempt.stdout, 'done')
  t.ok(attempt.durationMs < PIPE_DRAIN_MS + SLACK_MS, `did not wait for the escaped grandchild (${attempt.durationMs} ms)`)
  t.ok(attempt.durationMs >= PIPE_DRAIN_MS - 50, `gave the pipes their drain time (${attempt.durationMs} ms)`)
})

t.test('a brain that closes stdout early is still waited for until it exits', async (t) => {
  const brain = shBrain('closes-stdout', 'echo early\nexec 1>&-\nsleep 1\nexit 4')
  const attempt = await run([brain])
  t.equal(attempt.outcome, 'exited')
  t.equal(attempt.exitCode, 4)
  t.equal(attempt.stdout, 'early')
  t.ok(attempt.durationMs >= 900, `ran its full second (${attempt.durationMs} ms)`)
})

t.test('a brain that ignores a large stdin is unaffected (EPIPE is harmless)', async (t) => {
  const stdin = 'x'.repeat(4 * 1024 * 1024)
  const quick = await run([shBrain('ignores-stdin', 'echo ignored')], { stdin })
  t.equal(quick.outcome, 'exited')
  t.equal(quick.stdout, 'ignored')
  const slow = await run([shBrain('ignores-stdin-slowly', 'sleep 0.3\necho still ignored')], { stdin })
  t.equal(slow.exitCode, 0)
  t.equal(slow.stdout, 'still ignored')
})

t.test('200 KiB of stdin reaches the brain intact', async (t) => {
  const brain = nodeBrain(
    'hash-stdin',
    `const chunks = []
process.stdin.on('data', (chunk) => chunks.push(chunk))
process.stdin.on('end', () => {
  const all = Buffer.concat(chunks)
  process.stdout.write(all.length + ' ' + require('node:crypto').createHash('sha256').update(all).digest('hex'))
})`,
  )
  const line = JSON.stringify({ text: 'привет, 🧠 — "quotes" \\ and\nnewlines' })
  const stdin = line.repeat(Math.ceil((200 * 1024) / line.length))
  const bytes = Buffer.from(stdin)
  const attempt = await run([brain], { stdin })
  t.equal(attempt.exitCode, 0)
  t.equal(attempt.stdout, `${bytes.length} ${createHash('sha256').update(bytes).digest('hex')}`)
})

t.test('stdout is capped at 1 MiB with a flag, stderr keeps only its last 8 KiB', async (t) => {
  const brain = nodeBrain(
    'flood',
    `process.stdout.write('x' + 'é'.repeat(1024 * 1024))
process.stderr.write('b'.repeat(100_000) + 'é'.repeat(5000) + 'END-OF-STDERR')`,
  )
  const attempt = await run([brain])
  t.equal(attempt.exitCode, 0)
  t.equal(attempt.stdoutTruncated, true)
  const stdoutBytes = Buffer.byteLength(attempt.stdout)
  t.ok(stdoutBytes <= STDOUT_LIMIT_BYTES && stdoutBytes >= STDOUT_LIMIT_BYTES - 1, `kept the first MiB (${stdoutBytes} bytes)`)
  t.ok(attempt.stdout.startsWith('xéé'))
  t.notMatch(attempt.stdout, /\uFFFD/u, 'no character cut in half')
  t.ok(attempt.stderrTail.endsWith('é'.repeat(10) + 'END-OF-STDERR'))
  t.notMatch(attempt.stderrTail, /b|\uFFFD/u, 'only the tail is kept')
  t.ok(Buffer.byteLength(attempt.stderrTail) <= STDERR_TAIL_BYTES)
  t.ok(Buffer.byteLength(attempt.stderrTail) >= STDERR_TAIL_BYTES - 3)
})

t.test('a missing command is a spawn_error, not a throw', async (t) => {
  const absolute = await run([path.join(dir, 'no-such-brain')])
  t.equal(absolute.outcome, 'spawn_error')
  t.equal(absolute.pid, undefined)
  t.match(absolute.error, /was not found/u)
  const bare = await run(['no-such-brain-on-path'])
  t.equal(bare.outcome, 'spawn_error')
  t.match(bare.error, /no-such-brain-on-path.*not found/u)
  const noCwd = await run([shBrain('fine', 'echo fine')], { cwd: path.join(dir, 'no-such-dir') })
  t.equal(noCwd.outcome, 'spawn_error')
  t.match(noCwd.error, /working directory .* does not exist/u)
})

t.test('a file without execute permission is a spawn_error that says chmod +x', async (t) => {
  const brain = script('not-executable', '#!/bin/sh\necho hi\n', 0o644)
  const attempt = await run([brain])
  t.equal(attempt.outcome, 'spawn_error')
  t.match(attempt.error, /chmod \+x/u)
})

t.test('an abort kills the brain and its grandchild: outcome cancelled', async (t) => {
  const pidFile = path.join(dir, 'cancel.pid')
  const brain = shBrain('cancel', 'sleep 300 &\necho $! > "$1"\nsleep 300')
  const cancel = new AbortController()
  const running = run([brain, pidFile], { signal: cancel.signal })
  await waitForFile(pidFile)
  cancel.abort()
  const attempt = await running
  t.equal(attempt.outcome, 'cancelled')
  t.equal(attempt.signal, 'SIGTERM')
  t.ok(attempt.durationMs < SLACK_MS)
  assertNotRunning(t, readPid(pidFile), 'the grandchild')

  const unused = new AbortController()
  await run([shBrain('quick', 'exit 0')], { signal: unused.signal })
  t.equal(getEventListeners(unused.signal, 'abort').length, 0, 'a finished run leaves no abort listener behind')

  const early = await run([brain, pidFile], { signal: AbortSignal.abort() })
  t.equal(early.outcome, 'cancelled', 'an already-aborted signal spawns nothing')
  t.equal(early.pid, undefined)
})

t.test('the brain sees only the allowed environment, never the bot secrets', async (t) => {
  const secrets = {
    TELEGRAM_BOT_TOKEN: '123:secret',
    TELEGRAM_WEBHOOK_SECRET: 'hook-secret',
    TELEGRAM_WEBHOOK_SECRET_PREVIOUS: 'old-hook-secret',
    NOTIFY_SOCKET: '/run/systemd/notify',
  }
  const added: Record<string, string> = { ...secrets, BRAIN_TEST_ALLOWED: 'yes', BRAIN_TEST_NOT_ALLOWED: 'no', LANG: 'C.UTF-8' }
  const saved = Object.keys(added).map((name) => [name, process.env[name]] as const)
  t.teardown(() => {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name]
      else process.env[name] = value
    }
  })
  // Set in the coordinator's own environment: the brain must not inherit them from there either.
  Object.assign(process.env, added)
  const env = brainEnvironment(process.env, ['BRAIN_TEST_ALLOWED', ...Object.keys(secrets)], {
    COORDINATOR_CHAT_ID: '42',
    COORDINATOR_UPDATE_ID: '1000',
  })
  const attempt = await run([shBrain('dump-env', 'env')], { env })
  const seen = new Map(attempt.stdout.split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]))
  for (const name of Object.keys(secrets)) t.notOk(seen.has(name), `${name} is not passed`)
  t.notMatch(attempt.stdout, /secret/u)
  t.notOk(seen.has('BRAIN_TEST_NOT_ALLOWED'))
  t.equal(seen.get('BRAIN_TEST_ALLOWED'), 'yes')
  t.equal(seen.get('LANG'), 'C.UTF-8')
  t.equal(seen.get('PATH'), process.env.PATH)
  t.equal(seen.get('COORDINATOR_CHAT_ID'), '42')
  t.equal(seen.get('COORDINATOR_UPDATE_ID'), '1000')
})

t.test('brainEnvironment: a default PATH, and only COORDINATOR_ names from the coordinator', async (t) => {
  t.same(brainEnvironment({ HOME: '/home/brain', SHELL: '/bin/bash' }, [], {}), { HOME: '/home/brain', PATH: DEFAULT_PATH })
  t.same(brainEnvironment({ __proto__: 'x' } as NodeJS.ProcessEnv, ['__proto__'], {}).PATH, DEFAULT_PATH)
  t.throws(() => brainEnvironment({}, [], { CHAT_ID: '1' }), TypeError)
})

t.test('fd 3 progress lines become events; malformed ones are skipped with a warning', async (t) => {
  const brain = nodeBrain(
    'progress',
    `const fs = require('node:fs')
const write = (text) => fs.writeSync(3, text)
write('{"type":"a"}\\n')
write('not json\\n')
write('[1, 2]\\n')
write('\\n')
write('{"type":"' + 'y'.repeat(70 * 1024) + '"}\\n')
write('{"type":')
setTimeout(() => {
  write('"split"}\\n{"type":"b","n":1}\\n{"type":"throws"}\\n{"type":"last"}')
  process.stdout.write('reply')
}, 100)`,
  )
  const events: unknown[] = []
  logLines.length = 0
  const attempt = await run([brain], {
    onEvent: (event) => {
      events.push(event)
      if ((event as { type?: string }).type === 'throws') throw new Error('handler bug')
    },
  })
  t.equal(attempt.exitCode, 0)
  t.equal(attempt.stdout, 'reply')
  t.same(events, [{ type: 'a' }, { type: 'split' }, { type: 'b', n: 1 }, { type: 'throws' }, { type: 'last' }])
  const warnings = logLines.filter((line) => line.level === WARN).map((line) => line.msg)
  t.equal(warnings.length, 4, 'one warning per bad line, nothing else')
  t.match(warnings, [/not JSON/u, /not a JSON object/u, /longer than/u, /handler threw/u])
})

t.test('checkBrainCommand accepts real programs and refuses what would fail to run', async (t) => {
  const good = shBrain('good', 'echo good')
  t.same(checkBrainCommand(good, DEFAULT_PATH, '/'), { path: good })
  t.same(checkBrainCommand('./good', DEFAULT_PATH, dir), { path: good }, 'a relative name is resolved against cwd')
  t.same(checkBrainCommand('good', `/nonexistent:${dir}`, '/'), { path: good }, 'a bare name is found on PATH')
  t.equal(checkBrainCommand('sh', DEFAULT_PATH, dir).path.endsWith('/sh'), true, 'an ELF binary on PATH')

  const refused = (argv0: string, searchPath: string, pattern: RegExp, what: string): void => {
    t.throws(() => checkBrainCommand(argv0, searchPath, dir), { name: 'BrainCommandError', message: pattern }, what)
  }
  const noShebang = script('no-shebang', 'echo "runs under sh by accident"\n')
  refused(noShebang, DEFAULT_PATH, new RegExp(`^BRAIN_COMMAND: ${noShebang} is a script without a #! line; add e\\.g\\. #!/bin/sh as its first line$`, 'u'), 'no #! line')
  refused('no-such-brain', DEFAULT_PATH, /^BRAIN_COMMAND: "no-such-brain" was not found on PATH \(/u, 'missing on PATH')
  refused('./no-such-brain', DEFAULT_PATH, /does not exist/u, 'missing path')
  const notExecutable = script('not-executable-2', '#!/bin/sh\n', 0o644)
  refused(notExecutable, DEFAULT_PATH, /is not executable.*chmod \+x/u, 'not executable')
  refused('not-executable-2', dir, /found on PATH but .*chmod \+x/u, 'not executable on PATH')
  refused(dir, DEFAULT_PATH, /is a directory/u, 'a directory')
  refused(script('crlf', '#!/bin/sh\r\necho hi\r\n'), DEFAULT_PATH, /CRLF/u, 'CRLF line endings')
  refused(script('bom', '\uFEFF#!/bin/sh\necho hi\n'), DEFAULT_PATH, /byte-order mark/u, 'a BOM before #!')
  refused(script('bad-interpreter', '#!/no/such/interpreter\n'), DEFAULT_PATH, /\/no\/such\/interpreter, which does not exist/u, 'a missing interpreter')
  refused(script('empty', ''), DEFAULT_PATH, /is empty/u, 'an empty file')

  const error = (() => {
    try {
      checkBrainCommand('no-such-brain', DEFAULT_PATH, dir)
    } catch (caught) {
      return caught
    }
    return undefined
  })()
  t.ok(error instanceof BrainCommandError)
  t.equal((error as BrainCommandError).command, 'no-such-brain')
})

t.test('no child process, zombie or file descriptor is left behind', async (t) => {
  // Timers from the last runs are gone by now; give the event loop a moment for closes to land.
  await delay(100)
  t.same(childrenOfThisProcess(), [], 'no process has the test as its parent')
  t.equal(openFds(), fdsAtStart, 'as many open fds as after the warm-up run (the escapee still holds its pipe)')
  t.same(process.getActiveResourcesInfo().sort(), resourcesAtStart, 'no timer or handle left running')
  killEscapees()
})
