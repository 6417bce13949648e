// Telegram's rules for setWebhook, in a module with no imports so the CLI's help can quote them.

/** setWebhook's max_connections unless --max-connections says otherwise (Telegram's own default). */
export const DEFAULT_MAX_CONNECTIONS = 40
/** The range Telegram accepts for max_connections. */
export const MAX_CONNECTIONS_RANGE = { min: 1, max: 100 } as const
/** The only ports Telegram delivers webhooks to. */
export const TELEGRAM_WEBHOOK_PORTS: readonly number[] = [443, 80, 88, 8443]
