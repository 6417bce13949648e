import type { Chat } from 'grammy/types'

/**
 * Fields that make a message a service message (Bot API 10.1): Telegram's notes about the chat
 * itself (joins, pins, topics, video chats, migrations, shared chats, payments, gifts…). Telegram
 * delivers them to bots even in privacy mode, so in a group every join or pin would otherwise
 * reach the brain or get a "can't handle" answer. They are ignored without a word.
 */
export const SERVICE_MESSAGE_FIELDS: readonly string[] = [
  'new_chat_members',
  'left_chat_member',
  'chat_owner_left',
  'chat_owner_changed',
  'new_chat_title',
  'new_chat_photo',
  'delete_chat_photo',
  'group_chat_created',
  'supergroup_chat_created',
  'channel_chat_created',
  'message_auto_delete_timer_changed',
  'migrate_to_chat_id',
  'migrate_from_chat_id',
  'pinned_message',
  'successful_payment',
  'refunded_payment',
  'users_shared',
  'chat_shared',
  'gift',
  'unique_gift',
  'gift_upgrade_sent',
  'connected_website',
  'write_access_allowed',
  'passport_data',
  'proximity_alert_triggered',
  'boost_added',
  'chat_background_set',
  'checklist_tasks_done',
  'checklist_tasks_added',
  'direct_message_price_changed',
  'forum_topic_created',
  'forum_topic_edited',
  'forum_topic_closed',
  'forum_topic_reopened',
  'general_forum_topic_hidden',
  'general_forum_topic_unhidden',
  'giveaway_created',
  'giveaway_winners',
  'giveaway_completed',
  'managed_bot_created',
  'paid_message_price_changed',
  'poll_option_added',
  'poll_option_deleted',
  'suggested_post_approved',
  'suggested_post_approval_failed',
  'suggested_post_declined',
  'suggested_post_paid',
  'suggested_post_refunded',
  'video_chat_scheduled',
  'video_chat_started',
  'video_chat_ended',
  'video_chat_participants_invited',
  'web_app_data',
]

/**
 * Kinds of message content the service can't hand to a brain: the sender gets a short "can't
 * handle". A GIF is not among them when it comes as Telegram sends it, with its file in `document`
 * too: the brain then gets that file. Only an animation without it is refused.
 */
export const UNSUPPORTED_KINDS = [
  'sticker',
  'location',
  'venue',
  'contact',
  'poll',
  'dice',
  'story',
  'game',
  'checklist',
  'paid_media',
  'invoice',
  'giveaway',
  'animation',
] as const

/**
 * Drops every object key whose value is null, at any depth. Some senders (old Bot API libraries,
 * bridges) write absent optional fields as null; Telegram's contract is that they are absent.
 * Called only on bodies already checked to nest at most a few dozen levels. A value without a null
 * (every update Telegram itself sends) is returned as it is, not copied.
 */
export function withoutNulls(value: unknown): unknown {
  return holdsNull(value) ? copyWithoutNulls(value) : value
}

function holdsNull(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false
  for (const field of Array.isArray(value) ? value : Object.values(value)) {
    if (field === null || holdsNull(field)) return true
  }
  return false
}

function copyWithoutNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(copyWithoutNulls)
  if (typeof value !== 'object' || value === null) return value
  const result: Record<string, unknown> = {}
  for (const [key, field] of Object.entries(value)) {
    if (field === null) continue
    // defineProperty, so that a "__proto__" key stays a plain key and never sets the prototype.
    Object.defineProperty(result, key, { value: copyWithoutNulls(field), enumerable: true, writable: true, configurable: true })
  }
  return result
}

/**
 * A private chat (a user's chat with the bot). Telegram always says the type; a chat without one
 * (as in some of Telegram's own examples) is private when its id is positive, as users' ids are.
 */
export function isPrivate(chat: Pick<Chat, 'id'> & { readonly type?: string }): boolean {
  return chat.type === undefined ? chat.id > 0 : chat.type === 'private'
}
