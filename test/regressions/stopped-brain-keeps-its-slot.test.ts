import t from 'tap'
import { eventually, readBrainLog, startStack } from '../helpers/service.js'

// A cancelled brain that ignores SIGTERM lives on for KILL_GRACE_S. Its slot used to be freed at the
// cancel, so another chat's brain ran beside it: more brains than MAX_CONCURRENT_BRAINS.
t.test('a cancelled brain holds its slot until it is reaped: the next brain starts after, never beside it', async (t) => {
  const stack = await startStack({ env: { MAX_CONCURRENT_BRAINS: '1', KILL_GRACE_S: '2' } })
  t.teardown(() => stack.close())
  const { emu, svc } = stack
  const stubborn = emu.sendText({ chatId: 7601, text: 'ignore-term grandchild hang' })
  // The brain logs its grandchild once it ignores SIGTERM.
  await eventually(() => readBrainLog(stack.brainLog).some((event) => event['ev'] === 'grandchild'), 10_000, 'the brain to ignore SIGTERM')
  const waiting = emu.sendText({ chatId: 7602, text: 'waiting for the slot' })
  await emu.waitForDelivery((delivery) => delivery.update_id === waiting.update_id && delivery.status === 200, { timeoutMs: 10_000 })

  emu.sendText({ chatId: 7601, text: '/cancel' })
  const reaped = await svc.waitForLog((line) => line.msg === 'child reaped' && line['update_id'] === stubborn.update_id, 20_000)
  const started = await svc.waitForLog((line) => line.msg === 'child started' && line['update_id'] === waiting.update_id, 20_000)
  // The group's leader may be the sandbox (bwrap dies of the SIGTERM at once); the brain inside needed the SIGKILL.
  t.ok(
    svc.logs.some((line) => line.msg === 'brain process group outlived SIGTERM: sending SIGKILL' && line['pid'] === reaped['pid']),
    'the stubborn brain needed the SIGKILL after the grace',
  )
  t.ok((started['time'] as number) >= (reaped['time'] as number), `the waiting brain started ${(started['time'] as number) - (reaped['time'] as number)} ms after the cancelled one was reaped`)
  await emu.waitFor((call) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === 7602, { timeoutMs: 20_000 })
  t.pass('and answered')
})
