import type { Update } from 'grammy/types'

/** An update kind, as named in allowed_updates. */
export type UpdateKind = Exclude<keyof Update, 'update_id'>

/**
 * The update kinds the service acts on, and so the allowed_updates it registers with Telegram
 * (`coordinator set-webhook`): Telegram then never sends, nor queues for a day, anything else.
 * Intake's classification should read this list too, so the two cannot drift apart.
 */
export const HANDLED_UPDATES: readonly UpdateKind[] = ['message']
