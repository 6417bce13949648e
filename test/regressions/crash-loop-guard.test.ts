import t from 'tap'
import type { RecordedCall } from '../../src/emulator/index.js'
import { eventually, freePort, isAlive, readBrainLog, startStack } from '../helpers/service.js'

// The README's promise: "A message interrupted by three restarts in a row is failed rather than run
// a fourth time". Once the inbox failed a message only after a fourth run.
const RESTARTS = 3
const NOTICE = `⚠️ The service restarted ${RESTARTS} times while this message ran; it is not run again.`

const replyTo = (calls: readonly RecordedCall[], messageId: number): string[] =>
  calls
    .filter((call) => call.method === 'sendMessage' && call.ok)
    .filter((call) => (call.params['reply_parameters'] as { message_id?: number } | undefined)?.message_id === messageId)
    .map((call) => String(call.params['text']))

t.test('a message whose brain is killed with the service three times runs exactly three times, then fails with a notice', async (t) => {
  const port = String(await freePort())
  const stack = await startStack({ env: { PORT: port } })
  const brainPids = (): number[] => readBrainLog(stack.brainLog).filter((event) => event['ev'] === 'start').map((event) => event['pid'] as number)
  t.teardown(async () => {
    await stack.close()
    // The killed service could not stop its brains; they are ours to end.
    for (const pid of brainPids()) if (isAlive(pid)) process.kill(pid, 'SIGKILL')
  })
  const chatId = 7400
  const looping = stack.emu.sendText({ chatId, text: 'sleep=60 crashes the service' })
  const runsOf = (updateId: number) =>
    readBrainLog(stack.brainLog).filter((event) => event['ev'] === 'start' && event['update_id'] === updateId)

  for (let run = 1; run <= RESTARTS; run++) {
    await eventually(() => runsOf(looping.update_id).length === run, 20_000, `brain run ${run}`)
    await stack.svc.stop('SIGKILL')
    await stack.restart()
  }
  const loopingId = looping.message?.message_id as number
  await eventually(() => replyTo(stack.emu.calls, loopingId).includes(NOTICE), 20_000, 'the crash-loop notice')

  // The chat moves on: a later message's answer proves the failed one had its chance to run again.
  const later = stack.emu.sendText({ chatId, text: 'after the loop' })
  await eventually(() => replyTo(stack.emu.calls, later.message?.message_id as number).length === 1, 20_000, 'the later reply')

  const runs = runsOf(looping.update_id)
  t.equal(runs.length, RESTARTS, `the brain ran ${RESTARTS} times, not a fourth`)
  t.same(runs.map((event) => event['redelivered']), [false, true, true], 'the second and third runs were redeliveries')
  t.same(
    replyTo(stack.emu.calls, loopingId).filter((text) => text.startsWith('⚠️ The service restarted') && text !== NOTICE).length,
    RESTARTS - 1,
    'a redelivery note before each rerun',
  )
  t.equal(replyTo(stack.emu.calls, loopingId).filter((text) => text === NOTICE).length, 1, 'the notice, once, with the right count')
  const failed = stack.svc.logs.filter((line) => line['update_id'] === looping.update_id)
  t.notOk(failed.some((line) => line.msg === 'child started'), 'the last service never started its brain')
})
