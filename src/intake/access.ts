import type { Message } from 'grammy/types'
import { isPrivate } from '../telegram/message-kinds.js'

/** Who may talk to the brain, from ALLOWED_CHAT_IDS, ALLOWED_USER_IDS and ALLOW_ALL_CHATS. */
export interface AccessRules {
  /** Chats whose messages may reach the brain: ALLOWED_CHAT_IDS, and the supergroups they became. */
  readonly isAllowedChat: (chatId: number) => boolean
  /** ALLOW_ALL_CHATS=1. */
  readonly allChats: boolean
  /** People (and, when listed on purpose, chats posting as themselves or inline bots) who may talk. */
  readonly allowedUsers: ReadonlySet<number>
}

/** Why a message does not reach the brain; undefined when it does. */
export type Refusal = 'chat not allowed' | 'sender not allowed' | 'posted on behalf of a chat' | 'sent via an inline bot'

/**
 * Decides whether a message may reach the brain. A private chat needs its chat or its user listed.
 * In a group, the chat must be allowed and the sender listed: a post made as a chat (anonymous
 * admins, channels, automatic forwards) or through an inline bot speaks for nobody listed, so it
 * needs that chat or bot listed in ALLOWED_USER_IDS too. With ALLOW_ALL_CHATS=1 and no
 * ALLOWED_USER_IDS, anyone anywhere may talk: the operator asked for an open bot.
 */
export function refusalOf(message: Message, { isAllowedChat, allChats, allowedUsers }: AccessRules): Refusal | undefined {
  const chatAllowed = allChats || isAllowedChat(message.chat.id)
  if (isPrivate(message.chat)) {
    const userListed = message.from !== undefined && allowedUsers.has(message.from.id)
    return chatAllowed || userListed ? undefined : 'chat not allowed'
  }
  if (!chatAllowed) return 'chat not allowed'
  if (allChats && allowedUsers.size === 0) return undefined
  if (message.sender_chat !== undefined && !allowedUsers.has(message.sender_chat.id)) return 'posted on behalf of a chat'
  if (message.via_bot !== undefined && !allowedUsers.has(message.via_bot.id)) return 'sent via an inline bot'
  if (message.sender_chat === undefined && (message.from === undefined || !allowedUsers.has(message.from.id))) return 'sender not allowed'
  return undefined
}
