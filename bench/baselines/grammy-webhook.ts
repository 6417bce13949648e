// The textbook webhook bot, for the head-of-line benchmark: grammY's webhookCallback on Fastify,
// whose handler reacts 👀, awaits the brain and replies before the webhook answers. Telegram holds
// back a chat's next update until then, so a chat waits on its own brain; other chats don't.
// Env: TELEGRAM_BOT_TOKEN, TELEGRAM_API_ROOT, TELEGRAM_WEBHOOK_SECRET, BRAIN, PORT, WEBHOOK_TIMEOUT_MS.
import Fastify from 'fastify'
import { Bot, webhookCallback } from 'grammy'
import { killBrains, requiredEnv, runBrainAwaited } from './brain-call.js'

const bot = new Bot(requiredEnv('TELEGRAM_BOT_TOKEN'), { client: { apiRoot: requiredEnv('TELEGRAM_API_ROOT') } })
const brain = requiredEnv('BRAIN')

bot.on('message:text', async (ctx) => {
  await ctx.react('👀')
  const reply = await runBrainAwaited(brain, ctx.update)
  if (reply) await ctx.reply(reply, { reply_parameters: { message_id: ctx.msg.message_id } })
})
bot.catch((error) => process.stderr.write(`grammy-webhook: ${String(error.error)}\n`))
await bot.init()

const app = Fastify({ logger: false })
// webhookCallback gives up after 10 s by default (onTimeout "throw": the webhook answers 500 and
// Telegram re-sends the update, so the brain runs again). Infinity makes it really wait;
// WEBHOOK_TIMEOUT_MS=10000 shows the default.
const timeoutMilliseconds = Number(process.env['WEBHOOK_TIMEOUT_MS'] ?? Number.POSITIVE_INFINITY)
app.post('/telegram/webhook', webhookCallback(bot, 'fastify', { secretToken: requiredEnv('TELEGRAM_WEBHOOK_SECRET'), timeoutMilliseconds }))
app.get('/livez', async () => ({ status: 'ok' }))
await app.listen({ host: '127.0.0.1', port: Number(requiredEnv('PORT')) })
const stop = (): void => {
  killBrains()
  void app.close().then(() => process.exit(0))
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
