// The old design, for the head-of-line benchmark: one synchronous long-polling loop that runs the
// brain inline. getUpdates → for each update: react 👀, run the brain (blocking), reply. Nothing
// else happens while a brain runs: no other chat is read, acknowledged or answered.
// Env: TELEGRAM_BOT_TOKEN, TELEGRAM_API_ROOT, BRAIN. Prints {"msg":"ready"} once polling.
import { Api } from 'grammy'
import { requiredEnv, runBrainBlocking } from './brain-call.js'

const api = new Api(requiredEnv('TELEGRAM_BOT_TOKEN'), { apiRoot: requiredEnv('TELEGRAM_API_ROOT') })
const brain = requiredEnv('BRAIN')
const POLL_TIMEOUT_S = 30

await api.deleteWebhook()
process.stdout.write(`${JSON.stringify({ level: 30, msg: 'ready', time: Date.now() })}\n`)
let offset = 0
for (;;) {
  const updates = await api.getUpdates({ offset, timeout: POLL_TIMEOUT_S })
  for (const update of updates) {
    offset = update.update_id + 1
    const message = update.message
    if (message?.text === undefined) continue
    await api.setMessageReaction(message.chat.id, message.message_id, [{ type: 'emoji', emoji: '👀' }])
    const reply = runBrainBlocking(brain, update)
    if (reply) await api.sendMessage(message.chat.id, reply, { reply_parameters: { message_id: message.message_id } })
  }
}
