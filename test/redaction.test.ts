import t from 'tap'
import { SECRET, TOKEN, freePort, startStack } from './helpers/service.js'

t.test('the bot token never reaches the log, whichever Bot API call fails at the network level', async (t) => {
  // Nothing listens there: every call the service makes to the Bot API fails to connect.
  const closed = `http://127.0.0.1:${await freePort()}`
  const stack = await startStack({ env: { TELEGRAM_API_ROOT: closed, LOG_LEVEL: 'trace', REACTION_DONE: '👍' } })
  t.teardown(() => stack.close())
  const { emu, svc } = stack

  // The receipt reaction, typing, a progress status (send, then edit), the brain's reaction, the
  // reply, a service command's answer, and a photo's getFile.
  emu.sendText({ chatId: 801, text: 'progress=2:300 react=🔥 sleep=1' })
  emu.sendText({ chatId: 802, text: '/status' })
  emu.sendPhoto({ chatId: 803, caption: 'what is this?' })
  for (const chatId of [801, 802, 803]) {
    await svc.waitForLog((line) => line.msg === 'reply could not be delivered' && line['chat_id'] === chatId, 60_000)
  }
  await svc.waitForLog((line) => line.msg === 'receipt reaction failed')
  await svc.waitForLog((line) => /could not check the bot token/u.test(line.msg))

  const everything = [...stack.allLogs().map((line) => JSON.stringify(line)), ...svc.stderr].join('\n')
  const encoded = encodeURIComponent(TOKEN)
  t.notOk(everything.includes(TOKEN), 'the token is nowhere in the log')
  t.notOk(everything.includes(encoded), 'nor URL-encoded')
  t.notOk(everything.includes(SECRET), 'nor the webhook secret')
  t.ok(everything.includes('[redacted]'), 'where it would have been, the log says [redacted]')
  const failed = stack.allLogs().filter((line) => line.level >= 40 && 'err' in line)
  t.ok(failed.length >= 5, `the failures themselves are logged (${failed.length} lines with an error)`)
  t.ok(
    failed.some((line) => /bot\[redacted\]\//u.test(JSON.stringify(line))),
    'a failed request is still recognisable by its URL, token redacted',
  )
})
