import type { Message } from 'grammy/types'
import t from 'tap'
import type { RecordedCall } from '../src/emulator/index.js'
import { delay, eventually, startStack } from './helpers/service.js'

// The README's numbers, each against the real service and the emulator. The tests mostly wait
// (the retry one for half a minute), each on its own stack, so they run side by side.
t.jobs = 4

const inChat = (chatId: number) => (call: RecordedCall) => call.params['chat_id'] === chatId
const sentText = (call: RecordedCall): string => (call.ok ? ((call.result as Message).text ?? '') : '')

t.test('a run sends at most 20 message events; the rest are skipped with one warning', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const { emu } = stack
  const flood = emu.sendText({ chatId: 7501, text: 'messages=25' })
  await emu.waitFor((call) => inChat(7501)(call) && sentText(call).startsWith('reply '), { timeoutMs: 20_000 })
  const notes = emu.callsOf('sendMessage').filter(inChat(7501)).map(sentText).filter((text) => text.startsWith('note '))
  t.same(notes, Array.from({ length: 20 }, (_, index) => `note ${index + 1} of 25`), 'the first 20, in order')
  const warnings = stack.svc.logs.filter((line) => line.msg === 'brain sent too many message events; skipping the rest of this run')
  t.equal(warnings.length, 1, 'one warning for the five skipped')
  t.match(warnings[0], { update_id: flood.update_id, limit: 20 })

  // The limit is per run: the next run may send its own 20.
  emu.sendText({ chatId: 7501, text: 'messages=20 again' })
  await eventually(() => emu.callsOf('sendMessage').filter(inChat(7501)).map(sentText).filter((text) => text.endsWith('of 20')).length === 20, 20_000, "the second run's 20 notes")
  await emu.waitFor((call) => inChat(7501)(call) && /^reply \d+ messages=20 again$/u.test(sentText(call)), { timeoutMs: 20_000 })
  t.equal(stack.svc.logs.filter((line) => line.msg.startsWith('brain sent too many message events')).length, 1, 'exactly 20 is within the limit')
})

t.test('typing… is renewed every 4 s while a brain runs, and stops with it', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const { emu } = stack
  emu.sendText({ chatId: 7502, text: 'sleep=13' })
  await emu.waitFor((call) => inChat(7502)(call) && sentText(call).startsWith('reply '), { timeoutMs: 30_000 })
  const typing = emu.callsOf('sendChatAction').filter(inChat(7502))
  // At 0, 4, 8 and 12 s of a run of 13 s and a little more; a loaded machine may end it before the last.
  t.ok(typing.length >= 3 && typing.length <= 4, `typing shown ${typing.length} times during a 13 s run`)
  for (let i = 1; i < typing.length; i++) {
    const gap = (typing[i] as RecordedCall).at - (typing[i - 1] as RecordedCall).at
    t.ok(gap >= 3500 && gap <= 4900, `renewal ${i} came ${Math.round(gap)} ms after the one before`)
  }
  t.match(typing[0]?.params, { action: 'typing' })

  // Another run longer than the renewal period proves the service's timers kept firing after the first run ended.
  emu.sendText({ chatId: 7503, text: 'sleep=5' })
  await emu.waitFor((call) => inChat(7503)(call) && sentText(call).startsWith('reply '), { timeoutMs: 30_000 })
  t.equal(emu.callsOf('sendChatAction').filter(inChat(7503)).length, 2, 'the later run was renewed once')
  t.equal(emu.callsOf('sendChatAction').filter(inChat(7502)).length, typing.length, 'no typing in the first chat once its run had ended')
})

t.test('exit 75 is retried after 1 s, 2 s, 4 s, 8 s, then every 15 s at most', async (t) => {
  const stack = await startStack({ env: { BRAIN_TIMEOUT_S: '60', MESSAGE_BUDGET_S: '60' } })
  t.teardown(() => stack.close())
  const { emu } = stack
  const update = emu.sendText({ chatId: 7504, text: 'tempfail=5' })
  await emu.waitFor((call) => inChat(7504)(call) && sentText(call).startsWith(`reply ${update.update_id}`), { timeoutMs: 60_000 })
  const retries = stack.svc.logs.filter((line) => line.msg === 'brain asked for a retry (exit 75)')
  t.same(retries.map((line) => line['backoff_ms']), [1000, 2000, 4000, 8000, 15_000], 'the backoff doubles up to its 15 s cap')
  const starts = stack.svc.logs.filter((line) => line.msg === 'child started' && line['update_id'] === update.update_id).map((line) => line['time'] as number)
  t.equal(starts.length, 6, 'six attempts')
  for (const [index, backoff] of [1000, 2000, 4000, 8000, 15_000].entries()) {
    const gap = (starts[index + 1] as number) - (starts[index] as number)
    // An attempt's own run (a node start-up) comes on top of the wait.
    t.ok(gap >= backoff && gap <= backoff + 2500, `attempt ${index + 2} started ${gap} ms after attempt ${index + 1} (backoff ${backoff} ms)`)
  }
})

t.test('/healthz is degraded while the event loop lags over 1 s (p99 over the last 10 s), and recovers', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const health = async (): Promise<{ status: number; body: { status: string; event_loop_delay_ms: number } }> => {
    const response = await fetch(`${stack.svc.url}/healthz`)
    return { status: response.status, body: (await response.json()) as { status: string; event_loop_delay_ms: number } }
  }
  // Stopping the process stalls its event loop as a blocking call would, without changing the
  // service. Stalls again and again, so they are more than 1% of the delay samples (one every 10 ms).
  const lag = async (ms: number, times: number): Promise<void> => {
    for (let i = 0; i < times; i++) {
      process.kill(stack.svc.pid, 'SIGSTOP')
      await delay(ms)
      process.kill(stack.svc.pid, 'SIGCONT')
      await delay(30)
    }
  }
  await lag(500, 5)
  const short = await health()
  t.ok(short.body.event_loop_delay_ms >= 300 && short.body.event_loop_delay_ms < 1000, `0.5 s stalls: p99 ${short.body.event_loop_delay_ms} ms`)
  t.match(short, { status: 200, body: { status: 'ok' } }, 'a lag under 1 s is no degradation')

  await lag(1500, 5)
  const long = await health()
  t.ok(long.body.event_loop_delay_ms > 1000, `1.5 s stalls: p99 ${long.body.event_loop_delay_ms} ms`)
  t.match(long, { status: 503, body: { status: 'degraded' } })
  t.equal((await fetch(`${stack.svc.url}/livez`)).status, 200, 'livez answers all the same')

  const lagEnded = Date.now()
  let recoveredAfter: number | undefined
  for (const until = Date.now() + 30_000; Date.now() < until; await delay(250)) {
    if ((await health()).status === 200) {
      recoveredAfter = Date.now() - lagEnded
      break
    }
  }
  t.ok(recoveredAfter !== undefined, `ok again ${recoveredAfter} ms after the lag ended`)
})
