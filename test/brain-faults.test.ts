import t from 'tap'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import type { Message } from 'grammy/types'
import type { RecordedCall } from '../src/emulator/index.js'
import { carriesEnv, fdsOf, processes, type ProcessInfo } from './helpers/proc.js'
import { ROOT, delay, eventually, startStack, tempDir, type Stack } from './helpers/service.js'

const FAULT_BRAIN = path.join(ROOT, 'test/fixtures/fault-brain.sh')
// The fault brain reads its fault from the chat id: chat = fault × 1000 + lane (see fault-brain.sh).
const FAULTS = {
  crash: 1,
  hang: 2,
  floodExit: 3,
  flood: 4,
  closeStdout: 5,
  noStdin: 6,
  sleepers: 7,
  ignoreTerm: 8,
  read: 9,
} as const
type Fault = keyof typeof FAULTS
const chatFor = (fault: Fault, lane: number): number => FAULTS[fault] * 1000 + lane

// Short limits, so that every fault ends within seconds; long enough for fork-heavy brains on a
// loaded 2-core box (forking the 50 sleepers alone can take over a second there).
const TIMEOUT_S = 3
const GRACE_S = 0.5
const LIMITS = { BRAIN_TIMEOUT_S: String(TIMEOUT_S), KILL_GRACE_S: String(GRACE_S), MESSAGE_BUDGET_S: '5', MAX_CONCURRENT_BRAINS: '4' }
const TIMED_OUT = new RegExp(`^⚠️ timed out after ${TIMEOUT_S} s; the brain was stopped$`, 'u')

// What each fault's user is told.
const ANSWERS: Readonly<Record<Fault, RegExp>> = {
  crash: /^⚠️ brain exited 1: crashed at start$/u,
  hang: TIMED_OUT,
  floodExit: /^⚠️ brain exited 2: flooded$/u,
  flood: TIMED_OUT,
  closeStdout: TIMED_OUT,
  noStdin: /^answered without reading stdin$/u,
  sleepers: /^forked 50 sleepers$/u,
  ignoreTerm: TIMED_OUT,
  read: /^read \d+ bytes$/u,
}

/** A fault stack: the real service running fault-brain.sh, with a marker in every brain's environment. */
async function startFaultStack(): Promise<Stack & { marker: string }> {
  // Every process a brain starts inherits this, so a leftover can be told from another test's process.
  const marker = randomBytes(8).toString('hex')
  const stack = await startStack({
    env: { ...LIMITS, BRAIN_COMMAND: FAULT_BRAIN, BRAIN_ENV_ALLOW: 'FAULT_RUN', FAULT_RUN: marker, LOG_LEVEL: 'info' },
  })
  return Object.assign(stack, { marker })
}

const replyTo = (call: RecordedCall): number | undefined => (call.params['reply_parameters'] as { message_id?: number } | undefined)?.message_id
const sentText = (call: RecordedCall): string => (call.ok ? ((call.result as Message).text ?? '') : '')

/** Sends a message in `chat` and resolves with its one answer (text) and how long it took. */
async function ask(stack: Stack, chat: number, text = 'go'): Promise<{ text: string; ms: number; updateId: number; messageId: number }> {
  const sentAt = Date.now()
  const update = stack.emu.sendText({ chatId: chat, text })
  const messageId = update.message?.message_id as number
  const call = await stack.emu.waitFor(
    (call) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === chat && replyTo(call) === messageId,
    { timeoutMs: 30_000 },
  )
  return { text: sentText(call), ms: Date.now() - sentAt, updateId: update.update_id, messageId }
}

const carriesMarker = (pid: number, marker: string): boolean => carriesEnv(pid, `FAULT_RUN=${marker}`)

/**
 * What the brains left behind: live processes in a brain's process group (pgid = the brain's pid)
 * that carry this stack's marker (a process group id can be reused by another test's process), and
 * zombies the service has not reaped. A zombie of PID 1 is dead: this sandbox's init may never reap.
 */
function leftovers(brainPids: ReadonlySet<number>, servicePid: number, marker: string): { alive: ProcessInfo[]; zombies: ProcessInfo[] } {
  const all = processes()
  return {
    alive: all.filter((p) => p.state !== 'Z' && p.state !== 'X' && (brainPids.has(p.pgrp) || brainPids.has(p.pid)) && carriesMarker(p.pid, marker)),
    zombies: all.filter((p) => p.state === 'Z' && p.ppid === servicePid),
  }
}

const childrenOf = (pid: number): ProcessInfo[] => processes().filter((p) => p.ppid === pid)
const brainPidsOf = (stack: Stack): Set<number> =>
  new Set(stack.svc.logs.filter((line) => line.msg === 'child started').map((line) => line['child_pid'] as number))

async function healthz(stack: Stack): Promise<{ brains: { running: number }; queue: { pending: number } }> {
  const response = await fetch(`${stack.svc.url}/healthz`)
  return (await response.json()) as { brains: { running: number }; queue: { pending: number } }
}

t.test('each faulty brain is bounded, killed and answered, and leaves nothing behind', async (t) => {
  const stack = await startFaultStack()
  t.teardown(() => stack.close())
  const servicePid = stack.svc.pid

  // The service stays responsive while brains flood it: /livez is polled throughout.
  let livezMaxMs = 0
  let polling = true
  const poller = (async () => {
    while (polling) {
      const before = Date.now()
      await fetch(`${stack.svc.url}/livez`)
      livezMaxMs = Math.max(livezMaxMs, Date.now() - before)
      await delay(50)
    }
  })()

  // In waves of at most MAX_CONCURRENT_BRAINS, so each fault's timing is its own.
  const waves: Fault[][] = [
    ['crash', 'hang', 'floodExit', 'flood'],
    ['closeStdout', 'noStdin', 'sleepers', 'ignoreTerm'],
  ]
  const answers = new Map<Fault, { text: string; ms: number; updateId: number }>()
  for (const wave of waves) {
    const results = await Promise.all(wave.map((fault) => ask(stack, chatFor(fault, 1))))
    for (const [index, fault] of wave.entries()) answers.set(fault, results[index] as { text: string; ms: number; updateId: number })
  }
  polling = false
  await poller

  const reaped = (fault: Fault) =>
    stack.svc.logs.find((line) => line.msg === 'child reaped' && line['update_id'] === answers.get(fault)?.updateId)
  const maxKillMs = (TIMEOUT_S + GRACE_S) * 1000 + 4000
  for (const [fault, answer] of answers) {
    t.match(answer.text, ANSWERS[fault], `${fault}: the user is told (${JSON.stringify(answer.text.slice(0, 80))} after ${answer.ms} ms)`)
    if (ANSWERS[fault] === TIMED_OUT) {
      t.ok(answer.ms >= TIMEOUT_S * 1000 && answer.ms < maxKillMs, `${fault}: stopped at its limit (${answer.ms} ms)`)
      t.equal(reaped(fault)?.['outcome'], 'timed_out', `${fault}: reaped as timed out`)
    } else {
      t.ok(answer.ms < TIMEOUT_S * 1000, `${fault}: answered without waiting for the limit (${answer.ms} ms)`)
      t.equal(reaped(fault)?.['outcome'], 'exited', `${fault}: reaped as exited`)
    }
  }
  t.ok(livezMaxMs < 1000, `/livez answered within ${livezMaxMs} ms at worst while brains flooded and were killed`)

  t.equal(reaped('floodExit')?.['stdout_bytes'], 2_000_000, 'all 2 MB of a flood that ends were read (and dropped)')
  const flooded = Number(reaped('flood')?.['stdout_bytes'] ?? 0)
  // As much as the service drained in the time: the pipe holds the brain back, never the service.
  t.ok(flooded > 2_000_000, `an endless flood was drained until the kill: ${(flooded / 1e6).toFixed(0)} MB of stdout in ${TIMEOUT_S} s`)
  const ignoreTermPid = reaped('ignoreTerm')?.['child_pid']
  t.ok(
    stack.svc.logs.some((line) => line.msg === 'brain process group outlived SIGTERM: sending SIGKILL' && line['child_pid'] === ignoreTermPid),
    'the brain ignoring SIGTERM got SIGKILL after the grace',
  )
  const sleepersPid = reaped('sleepers')?.['child_pid']
  t.ok(
    stack.svc.logs.some((line) => line.msg === 'brain exited but left processes in its group: sending SIGTERM to them' && line['child_pid'] === sleepersPid),
    'the 50 sleepers left behind by an exiting brain were signalled',
  )

  const brainPids = brainPidsOf(stack)
  t.equal(brainPids.size, 8, 'eight brains ran')
  const left = await eventually(() => {
    const found = leftovers(brainPids, servicePid, stack.marker)
    return found.alive.length + found.zombies.length === 0 ? found : undefined
  }, 5000, 'every brain process group to be gone').catch(() => leftovers(brainPids, servicePid, stack.marker))
  t.same(left.alive, [], 'no process of any brain group is alive')
  t.same(left.zombies, [], 'no zombie of the service')
  t.same(childrenOf(servicePid), [], 'the service has no child left')
})

t.test('a brain that ignores stdin gets a 900 KiB envelope and still answers; one that reads it gets all of it', async (t) => {
  const stack = await startFaultStack()
  t.teardown(() => stack.close())
  const big = 'x'.repeat(900 * 1024)
  const answers = await Promise.all(
    (['noStdin', 'read'] as const).map(async (fault) => {
      const chat = chatFor(fault, 1)
      const update = stack.emu.pushUpdate({
        message: {
          message_id: 77,
          date: Math.floor(Date.now() / 1000),
          chat: { id: chat, type: 'private', first_name: 'Big' },
          from: { id: chat, is_bot: false, first_name: 'Big' },
          text: big,
        },
      })
      const call = await stack.emu.waitFor((call) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === chat, { timeoutMs: 15_000 })
      return { fault, text: sentText(call), updateId: update.update_id }
    }),
  )
  const [ignored, read] = answers
  t.equal(ignored?.text, 'answered without reading stdin')
  const bytes = Number(/^read (\d+) bytes$/u.exec(read?.text ?? '')?.[1])
  t.ok(bytes > big.length, `the reading brain got the whole envelope (${bytes} bytes)`)
  t.ok(
    stack.svc.logs.some((line) => line.msg === 'child reaped' && line['update_id'] === ignored?.updateId && line['outcome'] === 'exited'),
    'the brain that left its envelope unread counted as a normal exit',
  )
})

t.test('a brain that cannot be spawned gets the user a notice', async (t) => {
  const dir = tempDir('coordinator-unspawnable-')
  const brain = path.join(dir, 'brain')
  fs.writeFileSync(brain, '#!/bin/sh\necho fine\n', { mode: 0o755 })
  const stack = await startStack({ env: { ...LIMITS, BRAIN_COMMAND: brain } })
  t.teardown(() => stack.close())
  t.match((await ask(stack, 100)).text, /^fine$/u, 'it ran while it could')

  // Start-up checked it; what happens to it afterwards is the service's problem at spawn time.
  fs.chmodSync(brain, 0o644)
  const denied = await ask(stack, 100)
  t.match(denied.text, /^⚠️ brain could not start: .*permission denied/u, 'not executable: told at once')
  t.ok(denied.ms < 3000, `in ${denied.ms} ms`)

  fs.writeFileSync(brain, '#!/no/such/interpreter\n', { mode: 0o755 })
  fs.chmodSync(brain, 0o755)
  const missing = await ask(stack, 100)
  t.match(missing.text, /^⚠️ brain could not start: .*not found/u, 'a missing #! interpreter: told at once')

  const unstarted = stack.svc.logs.filter((line) => line.msg === 'child reaped' && line['outcome'] === 'spawn_error')
  t.equal(unstarted.length, 2, 'each failed spawn is logged as reaped, with no pid')
  t.same(childrenOf(stack.svc.pid), [], 'the service has no child left')
})

t.test('500 faulty runs: fds, children and process groups return to where they were', async (t) => {
  const stack = await startFaultStack()
  t.teardown(() => stack.close())
  const servicePid = stack.svc.pid
  const slots = Number(LIMITS.MAX_CONCURRENT_BRAINS)
  const atStart = { fds: fdsOf(servicePid), children: childrenOf(servicePid).length }
  t.equal(atStart.children, 0, 'no child of the service at start')

  // Mostly the quick faults, so that 500 runs fit in about a minute on two cores; every fault is in the mix.
  const pattern: [Fault, number][] = [
    ['crash', 44],
    ['noStdin', 18],
    ['read', 16],
    ['floodExit', 14],
    ['sleepers', 4],
    ['hang', 1],
    ['ignoreTerm', 1],
    ['closeStdout', 1],
    ['flood', 1],
  ]
  const cycle = pattern.flatMap(([fault, count]) => Array.from({ length: count }, () => fault))
  // Interleaved rather than in blocks (7 is coprime with 100), so slow and quick faults run side by side.
  const runs = Array.from({ length: 500 }, (_, index) => cycle[(index * 7) % cycle.length] as Fault)

  // One lane per slot, one message in flight per lane: no message ever waits for a slot.
  const answered: { fault: Fault; text: string }[] = []
  const runLane = async (lane: number, share: readonly Fault[]): Promise<void> => {
    for (const fault of share) answered.push({ fault, text: (await ask(stack, chatFor(fault, lane))).text })
  }
  const started = Date.now()
  await Promise.all(Array.from({ length: slots }, (_, lane) => runLane(lane, runs.filter((_, index) => index % slots === lane))))
  const seconds = (Date.now() - started) / 1000
  t.equal(answered.length, runs.length, `${runs.length} runs answered in ${seconds.toFixed(1)} s`)

  const wrong = answered.filter(({ fault, text }) => !ANSWERS[fault].test(text))
  t.same(wrong.slice(0, 5), [], `every user got the answer for their fault (${wrong.length} did not)`)
  const perMessage = new Map<string, number>()
  for (const call of stack.emu.callsOf('sendMessage')) {
    if (!call.ok) continue
    const key = `${String(call.params['chat_id'])}/${String(replyTo(call))}`
    perMessage.set(key, (perMessage.get(key) ?? 0) + 1)
  }
  t.equal(perMessage.size, runs.length, 'every message was answered')
  t.same([...perMessage.values()].filter((count) => count !== 1), [], 'once: no answer doubled')

  let idle = false
  for (const until = Date.now() + 10_000; !idle && Date.now() < until; await delay(100)) {
    const report = await healthz(stack)
    idle = report.brains.running === 0 && report.queue.pending === 0
  }
  t.ok(idle, 'the service is idle: no brain running, nothing queued')
  const brainPids = brainPidsOf(stack)
  const reaped = stack.svc.logs.filter((line) => line.msg === 'child reaped' && line['child_pid'] !== undefined).length
  t.equal(brainPids.size, runs.length, `${brainPids.size} brains started`)
  t.equal(reaped, runs.length, 'and as many reaped')

  // The detector must see a leftover when there is one: a detached sleeper carrying the marker.
  const control = spawn('sleep', ['30'], { detached: true, stdio: 'ignore', env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', FAULT_RUN: stack.marker } })
  const controlPid = control.pid as number
  await eventually(() => carriesMarker(controlPid, stack.marker), 5000, 'the control sleeper to run')
  t.same(leftovers(new Set([controlPid]), servicePid, stack.marker).alive.map((p) => p.pid), [controlPid], 'control: a live process in a tracked group is found')
  control.kill('SIGKILL')

  // The emulator's webhook deliveries keep connections to the service alive; without it, only what
  // the service holds itself is left.
  await stack.emu.close()
  const snapshot = () => ({ ...leftovers(brainPids, servicePid, stack.marker), fds: fdsOf(servicePid), children: childrenOf(servicePid) })
  const settled = await eventually(
    () => {
      const now = snapshot()
      const clean = now.alive.length === 0 && now.zombies.length === 0 && now.children.length === 0
      return clean && now.fds.others.length === atStart.fds.others.length && now.fds.sockets <= atStart.fds.sockets ? now : undefined
    },
    15_000,
    'the service to be back at its baseline',
  ).catch(snapshot)
  t.same(settled.alive, [], 'no process of any of the brains’ groups is alive')
  t.same(settled.zombies, [], 'no zombie of the service')
  t.same(settled.children, [], 'no child of the service')
  t.same(settled.fds.others, atStart.fds.others, 'the same pipes, files and event fds as at start')
  t.ok(settled.fds.sockets <= atStart.fds.sockets, `no more sockets than at start: ${settled.fds.sockets} (at start ${atStart.fds.sockets})`)
})

// Regression: the attempt's deadline was set before the slot was granted, so time spent waiting for
// a slot was taken from BRAIN_TIMEOUT_S.
t.test('a message waiting for a brain slot still gets its whole BRAIN_TIMEOUT_S', async (t) => {
  const stack = await startStack({ env: { MAX_CONCURRENT_BRAINS: '1', BRAIN_TIMEOUT_S: '4', MESSAGE_BUDGET_S: '20', LOG_LEVEL: 'info' } })
  t.teardown(() => stack.close())
  // The first brain holds the only slot for over 3 s; the second needs about 2 s of its 4 s.
  const first = stack.emu.sendText({ chatId: 1, text: 'sleep=3' })
  await stack.svc.waitForLog((line) => line.msg === 'child started' && line['update_id'] === first.update_id)
  const second = stack.emu.sendText({ chatId: 2, text: 'sleep=1.5' })
  const call = await stack.emu.waitFor((call) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === 2, { timeoutMs: 15_000 })
  const reaped = await stack.svc.waitForLog((line) => line.msg === 'child reaped' && line['update_id'] === second.update_id)
  t.equal(sentText(call), `reply ${second.update_id} sleep=1.5`, `the second brain answers (it ran ${String(reaped['duration_ms'])} ms of its 4 s)`)
})
