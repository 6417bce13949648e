import t from 'tap'
import { spawn, type StdioOptions } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { DEMO_STEPS, nominalAt, type DemoStep } from '../src/demo/script.js'
import { CLI, ROOT } from './helpers/service.js'

const ECHO_BRAIN = path.join(ROOT, 'scripts/brains/echo')

interface Run {
  code: number | null
  stdout: string
  stderr: string
  /** What the child wrote to fd 3, when it was given a pipe there. */
  fd3: string
}

// The demo's state directories, to check it removes its own.
const demoDirs = (): string[] => fs.readdirSync(os.tmpdir()).filter((name) => name.startsWith('coordinator-demo-'))

// tap puts its process-info loader into NODE_OPTIONS of every child, whatever env the child is
// given, so it would reach the service and the brain; the echo brain (extensionless ESM) then
// fails to load. `env -u` drops it before node starts, so the demo runs as a user runs it.
function run(
  argv: string[],
  timeoutMs: number,
  options: { env?: NodeJS.ProcessEnv; stdin?: string; fd3?: boolean } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const stdio: StdioOptions = options.fd3 ? ['pipe', 'pipe', 'pipe', 'pipe'] : ['pipe', 'pipe', 'pipe']
    const child = spawn('env', ['-u', 'NODE_OPTIONS', ...argv], { stdio, cwd: os.tmpdir(), env: options.env ?? process.env })
    let stdout = ''
    let stderr = ''
    let fd3 = ''
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    const progress = child.stdio[3]
    if (progress && 'setEncoding' in progress) progress.setEncoding('utf8').on('data', (chunk: string) => (fd3 += chunk))
    child.stdin?.end(options.stdin ?? '')
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`${argv.join(' ')} ran past ${timeoutMs} ms; output so far:\n${stdout}\n${stderr}`))
    }, timeoutMs)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr, fd3 })
    })
  })
}

const runCli = (args: string[], timeoutMs: number): Promise<Run> => run([process.execPath, CLI, ...args], timeoutMs)

/** A step's number in the demo's tables: its place in the order the script sends them. */
function numberOf(id: string): number {
  const sorted = [...DEMO_STEPS].sort((a, b) => nominalAt(a) - nominalAt(b))
  return sorted.findIndex((step) => step.id === id) + 1
}

// sent, 👀 ms, brain ran, replied, end: what a timeline row shows for each kind of step.
function rowPattern(step: DemoStep): RegExp {
  const { expects } = step
  switch (expects.answer) {
    case 'brain':
      return new RegExp(`\\s\\d+\\.\\d\\s+\\d+\\s+\\d+\\.\\d → +\\d+\\.\\d\\s+\\d+\\.\\d\\s+${expects.reaction}$`, 'u')
    case 'none':
      return /\s\d+\.\d\s+\d+\s+\d+\.\d → +\d+\.\d\s+—\s+👀$/u
    case 'service':
      return /\s\d+\.\d\s+—\s+service\s+\d+\.\d\s+—$/u
  }
}

t.test('coordinator demo --delay 1 plays the script and prints a timeline with 👀 latencies, the ⚠️ reply and a summary', async (t) => {
  const dirsBefore = demoDirs()
  const started = Date.now()
  // Run from another directory: the demo finds its brain from the package, not the cwd.
  const demo = await runCli(['demo', '--delay', '1'], 30_000)
  const elapsedS = (Date.now() - started) / 1000
  t.equal(demo.code, 0, `exit 0; stderr: ${demo.stderr}`)
  t.ok(elapsedS < 25, `took ${elapsedS.toFixed(1)} s`)

  const lines = demo.stdout.split('\n')
  const timelineAt = lines.findIndex((line) => line.startsWith('Timeline'))
  t.ok(timelineAt > 0, 'has a timeline section')
  const timeline = lines.slice(timelineAt)
  for (const step of DEMO_STEPS) {
    const row = timeline.find((line) => !line.includes('↳') && line.includes(step.text))
    t.ok(row, `a timeline row for "${step.text}"`)
    t.match(row ?? '', rowPattern(step), `"${step.text}" has the times and end reaction of a message answered by: ${step.expects.answer}`)
    const reply = step.expects.answer === 'none' ? `(no reply: cancelled by #${numberOf(step.expects.cancelledBy)} /cancel)` : step.expects.reply
    t.ok(timeline.some((line) => line.includes(`↳ ${reply}`)), `the reply to "${step.text}": ${reply}`)
  }
  t.match(demo.stdout, /↳ ⚠️ brain exited 3$/mu, 'the failing brain’s ⚠️ reply, in a group without its stderr')
  t.match(demo.stdout, /^Brains run (sandboxed \(bubblewrap, BRAIN_SANDBOX=on\)|unconfined \(BRAIN_SANDBOX=off\), as the sandbox cannot run here: )/mu, 'it says whether the brains run sandboxed')

  const conversation = lines.slice(0, timelineAt).join('\n')
  t.match(conversation, /… 🤔 thinking… \(1\/3\)$/mu, 'the conversation shows a status message')
  t.match(conversation, /… 🤔 thinking… \([23]\/3\) {2}\(edited\)$/mu, 'and its edits')
  t.match(conversation, /← 🧠 Working on your message for \d+ s\. · .*(Brains busy|queued)/mu, 'the /status answer, on one line')
  t.match(conversation, /← ⏹ Stopped the brain working on your message after \d+ s\.$/mu, 'the /cancel answer')

  const slow = numberOf('slow')
  const long = numberOf('long')
  const cancel = numberOf('cancel')
  const runs = DEMO_STEPS.filter((step) => step.expects.answer !== 'service').length
  const checks: Record<string, RegExp> = {
    typing: new RegExp(`^  ✓ every brain run showed "typing…" \\(\\d+ sendChatAction calls over ${runs} runs\\), and none came after a run ended$`, 'mu'),
    // At --delay 1 the #slow run takes 3 s, long enough for an edit (they come at most every 2 s).
    progress: new RegExp(
      `^  ✓ #${slow} \\(Ada\\) showed progress in one status message: sent at \\d+\\.\\d s, edited \\d+× in place, deleted at \\d+\\.\\d s, before its reply`,
      'mu',
    ),
    commands: /^ {2}✓ \/status and \/cancel were answered by the service within 1 s \(\d+ ms, \d+ ms\), with no 👀 and no brain run$/mu,
    cancel: new RegExp(
      `^  ✓ #${cancel} /cancel was answered in \\d+ ms, and #${long}'s brain was stopped and reaped \\d+ ms after it was sent; #${long} got no reply$`,
      'mu',
    ),
    reactions: new RegExp(`^  ✓ the final reactions replaced 👀 after each reply: 👍 on #1 #2 #3, 💔 on #4; #${long} \\(cancelled\\) kept its 👀$`, 'mu'),
  }
  for (const [name, pattern] of Object.entries(checks)) t.match(demo.stdout, pattern, `the ${name} check holds`)
  t.notMatch(demo.stdout, /✗/u, 'no failed check')

  const summary = new RegExp(
    `^${DEMO_STEPS.length} messages \\(2 commands\\), 👀 p50 \\d+ ms / max \\d+ ms, every reply delivered in order, 1 cancelled$`,
    'mu',
  )
  t.match(demo.stdout, summary, 'the summary line')
  t.notMatch(demo.stdout, /"level":|coordinator ready/u, 'no service log lines in the output')
  t.same(demoDirs().filter((name) => !dirsBefore.includes(name)), [], 'the state directory is removed')
})

t.test('coordinator demo rejects a bad --delay with exit 2 and says what it takes', async (t) => {
  const demo = await runCli(['demo', '--delay', 'fast'], 10_000)
  t.equal(demo.code, 2)
  t.match(demo.stderr, /--delay must be a number of seconds from 0\.5 to 30; got "fast"/u)
  t.equal(demo.stdout, '')
})

const envelope = JSON.stringify({ version: 1, text: 'hello #slow' })
const brainEnv = { PATH: process.env['PATH'] ?? '', ECHO_DELAY_S: '0.1' }

t.test('the echo brain run by hand, without fd 3, just echoes', async (t) => {
  // Node takes the free fd 3 for its own event loop: writing progress there would fail (EINVAL).
  const echo = await run([ECHO_BRAIN], 10_000, { env: brainEnv, stdin: envelope })
  t.equal(echo.code, 0, `exit 0; stderr: ${echo.stderr}`)
  t.equal(echo.stdout, 'echo: hello #slow\n')
  t.equal(echo.stderr, '')
})

t.test('the echo brain under the service reports its progress on fd 3', async (t) => {
  const echo = await run([ECHO_BRAIN], 10_000, { env: { ...brainEnv, COORDINATOR_UPDATE_ID: '1' }, stdin: envelope, fd3: true })
  t.equal(echo.code, 0, `exit 0; stderr: ${echo.stderr}`)
  t.equal(echo.stdout, 'echo: hello #slow\n')
  const events = echo.fd3.trim().split('\n').map((line) => JSON.parse(line) as unknown)
  t.same(events, [1, 2, 3].map((step) => ({ type: 'progress', text: `🤔 thinking… (${step}/3)` })))
})
