import type { ReactionTypeEmoji } from 'grammy/types'

/** An emoji that Telegram accepts in setMessageReaction. */
export type ReactionEmoji = ReactionTypeEmoji['emoji']

/**
 * The emoji the Bot API allows as reactions (ReactionTypeEmoji), as Telegram spells them: without
 * the presentation selector U+FE0F. The emulator keeps its own copy of the list, apart from the
 * service's, so that a wrong emoji in the service is caught here instead of agreed with.
 */
export const BOT_API_REACTIONS: ReadonlySet<string> = new Set<ReactionEmoji>([
  "👍", "👎", "❤", "🔥", "🥰", "👏", "😁", "🤔", "🤯", "😱", "🤬", "😢", "🎉", "🤩", "🤮", "💩", "🙏", "👌", "🕊", "🤡", "🥱", "🥴", "😍", "🐳", "❤‍🔥", "🌚", "🌭", "💯", "🤣", "⚡", "🍌", "🏆", "💔", "🤨", "😐", "🍓", "🍾", "💋", "🖕", "😈", "😴", "😭", "🤓", "👻", "👨‍💻", "👀", "🎃", "🙈", "😇", "😨", "🤝", "✍", "🤗", "🫡", "🎅", "🎄", "☃", "💅", "🤪", "🗿", "🆒", "💘", "🙉", "🦄", "😘", "💊", "🙊", "😎", "👾", "🤷‍♂", "🤷", "🤷‍♀", "😡",
])
