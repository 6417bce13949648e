import { parseArgs } from 'node:util'
import { UsageError } from './usage.js'
import { startEmulator, type EmulatorOptions, type ListenOptions } from '../emulator/emulator.js'

/** Where `coordinator emulator` listens when not told: next to a local Bot API server's usual port. */
export const DEFAULT_EMULATOR_HOST = '127.0.0.1'
export const DEFAULT_EMULATOR_PORT = 8081

const OPTIONS = {
  host: { type: 'string' },
  port: { type: 'string' },
  token: { type: 'string' },
  'bot-username': { type: 'string' },
  'delivery-retry-ms': { type: 'string' },
  'delivery-timeout-ms': { type: 'string' },
} as const

/**
 * `coordinator emulator [--host H] [--port P] [--token T]`: runs the Bot API emulator until SIGTERM
 * or SIGINT, printing one line with its URL. The token falls back to TELEGRAM_BOT_TOKEN.
 */
export async function runEmulatorCommand(args: string[]): Promise<void> {
  const options = readOptions(args)
  const emulator = await startEmulator(options)
  process.stdout.write(`emulator listening at ${emulator.url}\n`)
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGTERM', stop)
      process.off('SIGINT', stop)
      resolve()
    }
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
  })
  await emulator.close()
}

function readOptions(args: string[]): EmulatorOptions & ListenOptions {
  let values: { [K in keyof typeof OPTIONS]?: string }
  try {
    values = parseArgs({ args, options: OPTIONS, strict: true, allowPositionals: false }).values
  } catch (error) {
    throw new UsageError(`emulator: ${(error as Error).message}; usage: coordinator emulator [--host H] [--port P] [--token T]`)
  }
  const token = values.token ?? process.env['TELEGRAM_BOT_TOKEN']?.trim()
  if (!token) {
    throw new UsageError('emulator needs the bot token it will accept: pass --token 123456:ABC-def (or set TELEGRAM_BOT_TOKEN)')
  }
  const retryMs = optionalMs(values['delivery-retry-ms'], '--delivery-retry-ms')
  const timeoutMs = optionalMs(values['delivery-timeout-ms'], '--delivery-timeout-ms')
  return {
    token,
    host: values.host ?? DEFAULT_EMULATOR_HOST,
    port: readPort(values.port),
    ...(values['bot-username'] === undefined ? {} : { bot: { username: values['bot-username'] } }),
    ...(retryMs === undefined ? {} : { deliveryRetryMs: retryMs }),
    ...(timeoutMs === undefined ? {} : { deliveryTimeoutMs: timeoutMs }),
  }
}

function readPort(text: string | undefined): number {
  if (text === undefined) return DEFAULT_EMULATOR_PORT
  const port = Number(text)
  if (!/^\d+$/u.test(text) || port > 65_535) throw new UsageError(`emulator --port must be 0–65535 (0 picks a free port); got "${text}"`)
  return port
}

function optionalMs(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined
  const ms = Number(text)
  if (!/^\d+$/u.test(text) || ms <= 0) throw new UsageError(`emulator ${flag} must be a whole number of milliseconds > 0; got "${text}"`)
  return ms
}
