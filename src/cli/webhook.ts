import { parseArgs } from 'node:util'
import type { WebhookInfo } from 'grammy/types'
import { loadEditsMode, loadTelegramSettings } from '../config.js'
import { handledUpdates } from '../telegram/updates.js'
import { callTelegram, commandApi } from './telegram-api.js'
import { UsageError } from './usage.js'
import { DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS_RANGE, TELEGRAM_WEBHOOK_PORTS } from './webhook-settings.js'

// Telegram's default when a webhook was set without allowed_updates.
const DEFAULT_ALLOWED_UPDATES = 'all but chat_member, message_reaction, message_reaction_count (Telegram\'s default)'

/**
 * `coordinator set-webhook --url https://… [--drop-pending] [--max-connections N] [--allow-http]`:
 * registers the webhook with the secret from TELEGRAM_WEBHOOK_SECRET and allowed_updates set to
 * what the service handles (edited messages with EDITS=queue), so Telegram neither sends nor holds
 * anything else.
 */
export async function setWebhookCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      url: { type: 'string' },
      'drop-pending': { type: 'boolean', default: false },
      'max-connections': { type: 'string' },
      'allow-http': { type: 'boolean', default: false },
    },
  })
  if (values.url === undefined) {
    throw new UsageError('set-webhook needs --url, the public address Telegram should post to, e.g. --url https://bot.example.com/telegram/webhook')
  }
  const url = webhookUrl(values.url, values['allow-http'])
  const maxConnections = maxConnectionsOf(values['max-connections'])
  const settings = loadTelegramSettings()
  const updates = handledUpdates(loadEditsMode())
  const dropPending = values['drop-pending']
  await callTelegram(settings, () =>
    commandApi(settings).setWebhook(url, {
      secret_token: settings.webhookSecret,
      allowed_updates: updates,
      max_connections: maxConnections,
      drop_pending_updates: dropPending,
    }),
  )
  process.stdout.write(
    `webhook set: ${url} (updates: ${updates.join(', ')}; up to ${maxConnections} connections; ` +
      `${dropPending ? 'pending updates dropped' : 'pending updates kept'})\n`,
  )
  return 0
}

/** `coordinator webhook-info [--json]`: what Telegram knows about the webhook, readable. */
export async function webhookInfoCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, strict: true, allowPositionals: false, options: { json: { type: 'boolean', default: false } } })
  const settings = loadTelegramSettings()
  const info = await callTelegram(settings, () => commandApi(settings).getWebhookInfo())
  process.stdout.write(values.json ? `${JSON.stringify(info, null, 2)}\n` : formatWebhookInfo(info, Date.now()))
  return 0
}

/** `coordinator delete-webhook [--drop-pending]`: back to no webhook (Telegram then holds updates for getUpdates). */
export async function deleteWebhookCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: { 'drop-pending': { type: 'boolean', default: false } },
  })
  const settings = loadTelegramSettings()
  const dropPending = values['drop-pending']
  await callTelegram(settings, () => commandApi(settings).deleteWebhook({ drop_pending_updates: dropPending }))
  process.stdout.write(
    `webhook deleted (${dropPending ? 'pending updates dropped' : 'Telegram keeps pending updates for the next webhook'})\n`,
  )
  return 0
}

/** getWebhookInfo as aligned "name: value" lines; times as UTC ISO and how long ago. */
export function formatWebhookInfo(info: WebhookInfo, now: number): string {
  const url = info.url ?? ''
  const rows: [string, string][] = [
    ['url', url === '' ? 'none (no webhook is set; register one with coordinator set-webhook --url https://…)' : url],
    ['pending updates', String(info.pending_update_count)],
    ['last error', info.last_error_date === undefined ? 'none' : `${when(info.last_error_date, now)}: ${info.last_error_message ?? '(no message)'}`],
  ]
  if (info.last_synchronization_error_date !== undefined) {
    rows.push(['last sync error', when(info.last_synchronization_error_date, now)])
  }
  if (url !== '') {
    rows.push(['max connections', info.max_connections === undefined ? 'not reported' : String(info.max_connections)])
    rows.push(['allowed updates', info.allowed_updates === undefined || info.allowed_updates.length === 0 ? DEFAULT_ALLOWED_UPDATES : info.allowed_updates.join(', ')])
  }
  if (info.ip_address !== undefined) rows.push(['IP address', info.ip_address])
  if (info.has_custom_certificate) rows.push(['certificate', 'custom (self-signed, uploaded with setWebhook)'])
  const width = Math.max(...rows.map(([name]) => name.length)) + 1
  return rows.map(([name, value]) => `${`${name}:`.padEnd(width)} ${value}\n`).join('')
}

/** A Telegram date (Unix seconds) as "2025-01-02T03:04:05Z (12 min ago)". */
export function when(unixSeconds: number, now: number): string {
  const iso = new Date(unixSeconds * 1000).toISOString().replace('.000Z', 'Z')
  return `${iso} (${ago(now - unixSeconds * 1000)})`
}

/** A duration in the past, roughly: "42 s ago", "12 min ago", "5 h ago", "3 days ago". */
export function ago(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000))
  if (seconds < 60) return `${seconds} s ago`
  const minutes = Math.round(seconds / 60)
  if (minutes < 120) return `${minutes} min ago`
  const hours = Math.round(minutes / 60)
  if (hours < 48) return `${hours} h ago`
  return `${Math.round(hours / 24)} days ago`
}

/** The --url, refused unless Telegram would deliver to it: https on 443, 80, 88 or 8443. */
function webhookUrl(text: string, allowHttp: boolean): string {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new UsageError(`--url must be an absolute URL such as https://bot.example.com/telegram/webhook; got "${text}"`)
  }
  if (allowHttp) {
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new UsageError(`--url must be an http(s) URL; got "${text}"`)
    return url.href
  }
  if (url.protocol !== 'https:') {
    throw new UsageError(`--url must start with https:// (Telegram delivers webhooks over TLS only; --allow-http is for the emulator); got "${text}"`)
  }
  const port = url.port === '' ? 443 : Number(url.port)
  if (!TELEGRAM_WEBHOOK_PORTS.includes(port)) {
    const ports = `${TELEGRAM_WEBHOOK_PORTS.slice(0, -1).join(', ')} or ${TELEGRAM_WEBHOOK_PORTS.at(-1)}`
    throw new UsageError(`--url must use port ${ports} (the only ones Telegram delivers to; --allow-http lifts this); got ${port}`)
  }
  return url.href
}

function maxConnectionsOf(text: string | undefined): number {
  if (text === undefined) return DEFAULT_MAX_CONNECTIONS
  const value = Number(text)
  const { min, max } = MAX_CONNECTIONS_RANGE
  if (!/^\d+$/u.test(text) || value < min || value > max) {
    throw new UsageError(`--max-connections must be a whole number from ${min} to ${max}; got "${text}"`)
  }
  return value
}
