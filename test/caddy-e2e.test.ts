// The deployment as a whole: a real Caddy with the project's Caddyfile in front of the real service,
// the emulator delivering to Caddy's address as Telegram would.
//
// caddy must be installed (.ci/run installs it); without it this test fails, unless
// COORDINATOR_SKIP_CADDY=1, which skips it.
import t, { type Test } from 'tap'
import { Api } from 'grammy'
import { caddyMissing, startCaddy, type RunningCaddy } from './helpers/caddy.js'
import { SECRET, TOKEN, eventually, readBrainLog, startStack, type Stack } from './helpers/service.js'

const WEBHOOK_PATH = '/telegram/webhook'
const skipCaddy = process.env['COORDINATOR_SKIP_CADDY'] === '1' ? 'COORDINATOR_SKIP_CADDY=1' : false
const caddyProblem = skipCaddy ? undefined : caddyMissing()
const CADDY_HELP = "install Debian's package (apt-get install caddy; .ci/run does), or set COORDINATOR_SKIP_CADDY=1 to skip"

/** Caddy in front of the stack's service, and the emulator's webhook pointed at Caddy. */
async function caddyInFront(t: Test, stack: Stack, telegramIpRanges: string): Promise<RunningCaddy> {
  const caddy = await startCaddy({ upstream: new URL(stack.svc.url).host, telegramIpRanges })
  t.teardown(caddy.stop)
  await new Api(TOKEN, { apiRoot: stack.emu.url }).setWebhook(`${caddy.url}${WEBHOOK_PATH}`, { secret_token: SECRET })
  return caddy
}

const acceptedUpdates = async (stack: Stack): Promise<number> => {
  const text = await (await fetch(`${stack.svc.url}/metrics`)).text()
  return Number(/^coordinator_updates_total\{outcome="accepted"\} (\d+)$/mu.exec(text)?.[1] ?? 0)
}

void t.test('Caddy in front of the service: webhooks through, everything else refused', { skip: skipCaddy }, async (t) => {
  if (caddyProblem !== undefined) {
    t.fail(`${caddyProblem}: ${CADDY_HELP}`)
    return
  }
  const stack = await startStack()
  t.teardown(() => stack.close())
  const { emu } = stack

  await t.test('a webhook delivered through Caddy reaches the service and gets its reply', async (t) => {
    const caddy = await caddyInFront(t, stack, '127.0.0.0/8')
    const update = emu.sendText({ chatId: 9001, text: 'through caddy' })
    const reply = await emu.waitFor((call) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === 9001, { timeoutMs: 15_000 })
    t.equal(reply.params['text'], `reply ${update.update_id} through caddy`)
    const delivery = emu.deliveries.find((attempt) => attempt.update_id === update.update_id)
    t.equal(delivery?.url, `${caddy.url}${WEBHOOK_PATH}`, "delivered to Caddy's address")
    t.equal(delivery?.status, 200)
    t.ok(emu.callsOf('setMessageReaction').some((call) => call.ok && call.params['chat_id'] === 9001), 'and 👀')
    const accepted = stack.svc.logs.find((line) => line.msg === 'message accepted' && line['update_id'] === update.update_id)
    t.ok(accepted, 'the service logged it')

    for (const target of ['/healthz', '/metrics', '/readyz', '/livez']) {
      const viaCaddy = await fetch(`${caddy.url}${target}`)
      t.equal(viaCaddy.status, 404, `GET ${target} through Caddy is refused`)
      t.equal(await viaCaddy.text(), '', 'with an empty body: nothing of the service shows')
      t.equal((await fetch(`${stack.svc.url}${target}`)).status, 200, `while the service itself answers ${target}`)
    }
    const getWebhook = await fetch(`${caddy.url}${WEBHOOK_PATH}`)
    t.equal(getWebhook.status, 404, 'GET on the webhook path is refused too')
  })

  await t.test('with TELEGRAM_IP_RANGES excluding loopback, a delivery is refused at Caddy', async (t) => {
    const caddy = await caddyInFront(t, stack, '149.154.160.0/20 91.108.4.0/22')
    const acceptedBefore = await acceptedUpdates(stack)
    const update = emu.sendText({ chatId: 9002, text: 'not from telegram' })
    const refused = await emu.waitForDelivery((attempt) => attempt.update_id === update.update_id, { timeoutMs: 10_000 })
    t.equal(refused.url, `${caddy.url}${WEBHOOK_PATH}`)
    t.equal(refused.status, 404, 'Caddy answers 404')
    t.equal(refused.error, 'Wrong response from the webhook: 404 Not Found', 'as getWebhookInfo would report it')
    // Give a wrongly forwarded request every chance to show up.
    await eventually(() => emu.deliveries.filter((attempt) => attempt.update_id === update.update_id).length >= 2, 10_000, 'a retry')
    t.equal(await acceptedUpdates(stack), acceptedBefore, 'the service accepted nothing')
    t.notOk(stack.svc.logs.some((line) => line['update_id'] === update.update_id), 'the service never saw the update')
    t.notOk(readBrainLog(stack.brainLog).some((event) => event['chat_id'] === 9002), 'no brain ran')
    t.notOk(emu.callsOf('sendMessage').some((call) => call.params['chat_id'] === 9002), 'no reply')
    t.equal(emu.webhookInfo.pending_update_count, 1, 'Telegram keeps the update')
    t.match(emu.webhookInfo.last_error_message, /404/u)
  })
})
