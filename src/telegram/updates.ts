import type { Message, Update } from 'grammy/types'
import type { EditsMode } from '../config.js'

/** An update kind, as named in allowed_updates. */
export type UpdateKind = Exclude<keyof Update, 'update_id'>

/**
 * The update kinds the service acts on, and so the allowed_updates it registers with Telegram
 * (`coordinator set-webhook`): Telegram then never sends, nor queues for a day, anything else.
 * Edited messages are wanted only with EDITS=queue.
 */
export function handledUpdates(edits: EditsMode): UpdateKind[] {
  return edits === 'queue' ? ['message', 'edited_message'] : ['message']
}

/** The message an update carries (a new one, or an edit). */
export function messageOf(update: Update): Message | undefined {
  return update.message ?? update.edited_message
}

/** The album (media group) a stored update's message belongs to, if any. */
export function mediaGroupOf(updateJson: string): string | undefined {
  const id = messageOf(JSON.parse(updateJson) as Update)?.media_group_id
  return typeof id === 'string' && id !== '' ? id : undefined
}
