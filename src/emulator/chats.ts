import type { Chat, Message } from 'grammy/types'
import type { ReactionEmoji } from './reactions.js'

/** How a test describes a chat; everything but the id has a sensible default. */
export interface ChatSettings {
  readonly id: number
  /** Defaults from the id as Telegram assigns them: positive → private, -100… → supergroup, else group. */
  readonly type?: Chat['type']
  readonly title?: string
  readonly username?: string
  readonly firstName?: string
  /** Marks a supergroup as a forum (topics), making a group one; implied when a message carries a thread id. */
  readonly isForum?: boolean
  /** The reactions an admin allowed in this chat; unset means every one in BOT_API_REACTIONS. */
  readonly allowedReactions?: readonly ReactionEmoji[]
}

/** A chat the emulator has seen, with the messages it knows in it. */
export interface KnownChat {
  chat: Chat
  allowedReactions: ReadonlySet<string> | undefined
  readonly messages: Map<number, Message>
  lastMessageId: number
  /** Set once the group was upgraded: Telegram then refuses anything sent to the old id. */
  migratedTo?: number
}

const SUPERGROUP_ID_BOUNDARY = -1_000_000_000_000
const DEFAULT_FIRST_NAME = 'Tester'

/**
 * The chats and messages the emulator knows. Telegram only lets a bot act on chats it is in and
 * messages it has seen, so every check "is this chat/message known" is answered here.
 */
export class ChatDirectory {
  readonly #chats = new Map<number, KnownChat>()
  readonly #idsByUsername = new Map<string, number>()

  /** Returns the chat, creating it from `settings` the first time; later settings update it. */
  ensure(settings: ChatSettings): KnownChat {
    let known = this.#chats.get(settings.id)
    if (known === undefined) {
      known = { chat: buildChat(settings), allowedReactions: undefined, messages: new Map(), lastMessageId: 0 }
      this.#chats.set(settings.id, known)
    } else if (settings.type !== undefined && settings.type !== known.chat.type) {
      known.chat = buildChat(settings)
    }
    if (settings.isForum && known.chat.type === 'group') known.chat = buildChat({ title: known.chat.title, ...settings, type: 'supergroup' })
    if (settings.isForum && known.chat.type === 'supergroup') known.chat = { ...known.chat, is_forum: true }
    if (settings.allowedReactions !== undefined) known.allowedReactions = new Set(settings.allowedReactions)
    if (known.chat.username !== undefined) this.#idsByUsername.set(known.chat.username.toLowerCase(), settings.id)
    return known
  }

  /** Finds a chat by id or "@username", as the chat_id parameter names it. */
  find(chatId: number | string): KnownChat | undefined {
    if (typeof chatId === 'number') return this.#chats.get(chatId)
    if (!chatId.startsWith('@')) return undefined
    const id = this.#idsByUsername.get(chatId.slice(1).toLowerCase())
    return id === undefined ? undefined : this.#chats.get(id)
  }

  /** Makes a message (and its chat, as the message describes it) known, as if Telegram had seen it. */
  remember(message: Message): KnownChat {
    let known = this.#chats.get(message.chat.id)
    if (known === undefined) {
      known = { chat: message.chat, allowedReactions: undefined, messages: new Map(), lastMessageId: 0 }
      this.#chats.set(message.chat.id, known)
      if (message.chat.username !== undefined) this.#idsByUsername.set(message.chat.username.toLowerCase(), message.chat.id)
    }
    known.messages.set(message.message_id, message)
    known.lastMessageId = Math.max(known.lastMessageId, message.message_id)
    return known
  }

  /**
   * Upgrades a group to a supergroup, as Telegram does when a group grows or gets a public link:
   * the supergroup gets a new id (and the group's title); the old id answers with migrate_to_chat_id.
   */
  migrate(groupId: number, supergroupId: number): { group: KnownChat; supergroup: KnownChat } {
    const group = this.#chats.get(groupId)
    if (group === undefined || group.chat.type !== 'group') throw new TypeError(`migrateGroup: chat ${groupId} is not a known group`)
    if (supergroupId > SUPERGROUP_ID_BOUNDARY) throw new TypeError(`migrateGroup: a supergroup's id is -100… (at most ${SUPERGROUP_ID_BOUNDARY}); got ${supergroupId}`)
    const title = 'title' in group.chat ? group.chat.title : undefined
    const supergroup = this.ensure({ id: supergroupId, type: 'supergroup', ...(title === undefined ? {} : { title }) })
    group.migratedTo = supergroupId
    return { group, supergroup }
  }

  /** Message ids grow per chat, shared by the users' and the bot's messages. */
  nextMessageId(known: KnownChat): number {
    known.lastMessageId += 1
    return known.lastMessageId
  }

  clear(): void {
    this.#chats.clear()
    this.#idsByUsername.clear()
  }
}

function buildChat(settings: ChatSettings): Chat {
  // Only supergroups have topics: a forum is one, whatever its id would suggest.
  const type = settings.type ?? (settings.isForum && settings.id < 0 ? 'supergroup' : defaultChatType(settings.id))
  const title = settings.title ?? `Chat ${settings.id}`
  switch (type) {
    case 'private':
      return {
        id: settings.id,
        type,
        first_name: settings.firstName ?? DEFAULT_FIRST_NAME,
        ...(settings.username === undefined ? {} : { username: settings.username }),
      }
    case 'group':
      return { id: settings.id, type, title }
    case 'supergroup':
      return {
        id: settings.id,
        type,
        title,
        ...(settings.username === undefined ? {} : { username: settings.username }),
        ...(settings.isForum ? { is_forum: true } : {}),
      }
    case 'channel':
      return { id: settings.id, type, title, ...(settings.username === undefined ? {} : { username: settings.username }) }
  }
}

function defaultChatType(id: number): Chat['type'] {
  if (id > 0) return 'private'
  return id <= SUPERGROUP_ID_BOUNDARY ? 'supergroup' : 'group'
}
