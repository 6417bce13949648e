import path from 'node:path'
import t, { type Test } from 'tap'
import type { Message } from 'grammy/types'
import type { RecordedCall } from '../src/emulator/index.js'
import { ROOT, delay, eventually, startStack, type LogLine, type Stack } from './helpers/service.js'

// Pathological Markdown (marked is quadratic on some of it) must never make the service deaf: the
// event loop's longest stall stays under 100 ms, other chats keep getting their 👀 within a second,
// and every reply arrives, as plain text if formatting runs out of time.
const BOMB = path.join(ROOT, 'test/fixtures/markdown-bomb.mjs')
const KINDS = ['nested', 'starpairs', 'underscores', 'emphasis', 'stars', 'backticks', 'brackets', 'mixed'] as const
const STALL_LIMIT_MS = 100
const ACK_LIMIT_MS = 1000
const BIG_REPLY_LIMIT_MS = 10_000
const PROBE_CHAT = 7770999

const isDone = (chatId: number) => (call: RecordedCall): boolean =>
  call.method === 'setMessageReaction' && call.params['chat_id'] === chatId && JSON.stringify(call.params['reaction']).includes('👍')

interface Stall {
  wallMs: number
  /** What the loop's own thread ran meanwhile: the part of the stall that is the service's doing. */
  cpuMs: number
}

function stallsSince(stack: Stack, since: number): Stall[] {
  return stack.svc.logs
    .filter((line: LogLine) => line.msg === 'event loop stalled' && Number(line['time']) >= since)
    .map((line) => ({ wallMs: Number(line['stall_ms']), cpuMs: Number(line['cpu_ms']) }))
}

/**
 * Checks the stalls: the loop's own work never blocked it for STALL_LIMIT_MS (CPU time of its
 * thread during a stall). Wall-clock stalls are reported too; on a loaded machine they include
 * time spent waiting for a CPU, which no code of ours can remove.
 */
function checkStalls(t: Test, stalls: readonly Stall[], what: string): void {
  const longestWall = Math.max(0, ...stalls.map((stall) => stall.wallMs))
  const longestCpu = Math.max(0, ...stalls.map((stall) => stall.cpuMs))
  t.comment(`${what}: longest event-loop stall ${longestWall} ms wall-clock, the loop's own work in any stall at most ${longestCpu} ms (stalls ≥ 20 ms, wall/cpu: ${stalls.map((stall) => `${stall.wallMs}/${stall.cpuMs}`).join(' ')})`)
  t.ok(longestCpu < STALL_LIMIT_MS, `${what}: no stall of the loop's own making reached ${STALL_LIMIT_MS} ms (longest ${longestCpu} ms of CPU)`)
}



/** Sends a probe message every `everyMs` until stopped; resolves with each probe's 👀 delay. */
function probe(stack: Stack, everyMs: number): { stop: () => Promise<number[]> } {
  const sent: { messageId: number; at: number }[] = []
  let running = true
  const loop = (async () => {
    while (running) {
      sent.push({ at: Date.now(), messageId: stack.emu.sendText({ chatId: PROBE_CHAT, text: 'stars 0' }).message?.message_id ?? 0 })
      await delay(everyMs)
    }
  })()
  return {
    stop: async () => {
      running = false
      await loop
      await delay(ACK_LIMIT_MS * 2)
      return sent.map(({ messageId, at }) => {
        const ack = stack.emu.calls.find((call) => call.method === 'setMessageReaction' && call.params['chat_id'] === PROBE_CHAT && call.params['message_id'] === messageId)
        return ack === undefined ? Number.POSITIVE_INFINITY : ack.wallClockMs - at
      })
    },
  }
}

const stack = await startStack({ env: { BRAIN_COMMAND: BOMB, MAX_CONCURRENT_BRAINS: '4', BRAIN_TIMEOUT_S: '60', MESSAGE_BUDGET_S: '90' } })
t.teardown(() => stack.close())

t.test("64 KiB of each kind of pathological Markdown: replies arrive, the loop's own work never blocks it 100 ms", async (t) => {
  const since = Date.now()
  const probes = probe(stack, 250)
  const chats = KINDS.map((kind, index) => {
    const chatId = 7770001 + index
    stack.emu.sendText({ chatId, text: `${kind} 64` })
    return { kind, chatId }
  })
  const fd3Chat = 7770100
  stack.emu.sendText({ chatId: fd3Chat, text: 'emphasis 1 fd3' })
  for (const { kind, chatId } of [...chats, { kind: 'fd3 message', chatId: fd3Chat }]) {
    await stack.emu.waitFor(isDone(chatId), { timeoutMs: 60_000 })
    const sent = stack.emu.calls.filter((call) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === chatId)
    t.ok(sent.length > 0, `${kind}: the reply arrived (${sent.length} message(s))`)
  }
  const fd3Messages = stack.emu.calls.filter((call) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === fd3Chat)
  t.ok(fd3Messages.length >= 2, `the fd-3 message (60 KiB) and the reply both arrived (${fd3Messages.length} messages)`)
  const acks = await probes.stop()
  checkStalls(t, stallsSince(stack, since), '64 KiB cases')
  t.ok(Math.max(...acks) < ACK_LIMIT_MS, `every probe acknowledged within ${ACK_LIMIT_MS} ms (slowest ${Math.max(...acks)} ms)`)
})

t.test('1 MiB of pathological Markdown: delivered within 10 s, as plain text if need be', async (t) => {
  const since = Date.now()
  const probes = probe(stack, 250)
  const cases = [
    { kind: 'nested', chatId: 7770201 },
    { kind: 'emphasis', chatId: 7770202 },
  ]
  const started = Date.now()
  for (const { kind, chatId } of cases) stack.emu.sendText({ chatId, text: `${kind} 1024` })
  for (const { kind, chatId } of cases) {
    const done = await stack.emu.waitFor(isDone(chatId), { timeoutMs: 60_000 })
    const ms = done.wallClockMs - started
    const sent = stack.emu.calls.filter((call) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === chatId)
    const chars = sent.reduce((sum, call) => sum + ((call.result as Message).text ?? '').length, 0)
    t.ok(ms < BIG_REPLY_LIMIT_MS, `${kind}: 1 MiB delivered in ${ms} ms (${sent.length} messages, ${chars} characters)`)
    t.ok(sent.every((call) => ((call.result as Message).text ?? '').length <= 4096), `${kind}: every part fits a message`)
  }
  const fallbacks = stack.svc.logs.filter((line) => /^reply not formatted/u.test(line.msg) && Number(line['time']) >= since)
  t.ok(fallbacks.filter((line) => line['reason'] === 'time_limit').length >= 2, 'both ran out of formatting time and went out as plain text')
  const acks = await probes.stop()
  checkStalls(t, stallsSince(stack, since), '1 MiB cases')
  t.ok(Math.max(...acks) < ACK_LIMIT_MS, `every probe acknowledged within ${ACK_LIMIT_MS} ms (slowest ${Math.max(...acks)} ms)`)
})

t.test('replies and brain messages go out without link previews (LINK_PREVIEWS defaults to off)', async (t) => {
  const sent = stack.emu.calls.filter((call) => call.method === 'sendMessage' && call.ok)
  t.ok(sent.length > 100, `${sent.length} messages sent`)
  t.ok(
    sent.every((call) => JSON.stringify(call.params['link_preview_options']) === '{"is_disabled":true}'),
    'every one with link_preview_options.is_disabled',
  )
})

t.test('LINK_PREVIEWS=on leaves previews to Telegram', async (t) => {
  const previews = await startStack({ env: { LINK_PREVIEWS: 'on' } })
  t.teardown(() => previews.close())
  previews.emu.sendText({ chatId: 7770300, text: 'see https://example.com' })
  const reply = await previews.emu.waitFor((call) => call.method === 'sendMessage' && call.ok, { timeoutMs: 15_000 })
  t.equal(reply.params['link_preview_options'], undefined, 'no link_preview_options')
  await eventually(() => true)
})
