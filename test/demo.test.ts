import t from 'tap'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import { DEMO_STEPS } from '../src/demo/script.js'
import { CLI } from './helpers/service.js'

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

// The demo's state directories, to check it removes its own.
const demoDirs = (): string[] => fs.readdirSync(os.tmpdir()).filter((name) => name.startsWith('coordinator-demo-'))

// tap puts its process-info loader into NODE_OPTIONS of every child, whatever env the child is
// given, so it would reach the service and the brain; the echo brain (extensionless ESM) then
// fails to load. `env -u` drops it before node starts, so the demo runs as a user runs it.
function runCli(args: string[], timeoutMs: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd: os.tmpdir() })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`coordinator ${args.join(' ')} ran past ${timeoutMs} ms; output so far:\n${stdout}\n${stderr}`))
    }, timeoutMs)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

t.test('coordinator demo --delay 1 plays the script and prints a timeline with 👀 latencies, the ⚠️ reply and a summary', async (t) => {
  const dirsBefore = demoDirs()
  const started = Date.now()
  // Run from another directory: the demo finds its brain from the package, not the cwd.
  const run = await runCli(['demo', '--delay', '1'], 30_000)
  const elapsedS = (Date.now() - started) / 1000
  t.equal(run.code, 0, `exit 0; stderr: ${run.stderr}`)
  t.ok(elapsedS < 25, `took ${elapsedS.toFixed(1)} s`)

  const lines = run.stdout.split('\n')
  const timelineAt = lines.findIndex((line) => line.startsWith('Timeline'))
  t.ok(timelineAt > 0, 'has a timeline section')
  const timeline = lines.slice(timelineAt)
  for (const step of DEMO_STEPS) {
    // A timeline row: the text, when it was sent, then the 👀 latency in ms.
    const row = timeline.find((line) => line.includes(step.text))
    t.ok(row, `a timeline row for "${step.text}"`)
    t.match(row ?? '', /\s\d+\.\d\s+\d+\s+\d+\.\d → +\d+\.\d\s+\d+\.\d$/u, `"${step.text}" has sent, 👀 ms, brain and reply times`)
    t.ok(timeline.some((line) => line.includes(`↳ ${step.reply}`)), `the reply to "${step.text}"`)
  }
  t.match(run.stdout, /↳ ⚠️ brain exited 3: the message asked the echo brain to fail/u, 'the failing brain’s ⚠️ reply')
  t.notMatch(run.stdout, /✗/u, 'no failed check')
  const summary = new RegExp(`^${DEMO_STEPS.length} messages, 👀 p50 \\d+ ms / max \\d+ ms, every reply delivered in order$`, 'mu')
  t.match(run.stdout, summary, 'the summary line')
  t.notMatch(run.stdout, /"level":|coordinator ready/u, 'no service log lines in the output')
  t.same(demoDirs().filter((name) => !dirsBefore.includes(name)), [], 'the state directory is removed')
})

t.test('coordinator demo rejects a bad --delay with exit 2 and says what it takes', async (t) => {
  const run = await runCli(['demo', '--delay', 'fast'], 10_000)
  t.equal(run.code, 2)
  t.match(run.stderr, /--delay must be a number of seconds from 0\.5 to 30; got "fast"/u)
  t.equal(run.stdout, '')
})
