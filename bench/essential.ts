// The essential work of a webhook intake, and nothing else: parse the Update, fire the 👀
// reaction through grammY without waiting for it, answer 200. The benchmark's baseline.
// Env: PORT, TELEGRAM_BOT_TOKEN, TELEGRAM_API_ROOT, TELEGRAM_WEBHOOK_SECRET.
import Fastify from 'fastify'
import { Api } from 'grammy'

const env = (name: string): string => {
  const value = process.env[name]
  if (!value) throw new Error(`essential: ${name} is required`)
  return value
}

const api = new Api(env('TELEGRAM_BOT_TOKEN'), { apiRoot: env('TELEGRAM_API_ROOT') })
const secret = env('TELEGRAM_WEBHOOK_SECRET')
const app = Fastify({ logger: false })

interface Update {
  message?: { message_id: number; chat: { id: number } }
}

app.post('/telegram/webhook', async (request, reply) => {
  if (request.headers['x-telegram-bot-api-secret-token'] !== secret) return reply.code(401).send()
  const message = (request.body as Update).message
  if (message) {
    api.setMessageReaction(message.chat.id, message.message_id, [{ type: 'emoji', emoji: '👀' }]).catch(() => {})
  }
  return reply.code(200).send()
})
app.get('/livez', async () => ({ status: 'ok' }))

const url = await app.listen({ host: '127.0.0.1', port: Number(process.env['PORT'] ?? 0) })
process.stdout.write(`essential listening at ${url}\n`)
const stop = (): void => void app.close().then(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
