import type { ReactionTypeEmoji } from 'grammy/types'

/** An emoji that Telegram accepts in setMessageReaction. */
export type ReactionEmoji = ReactionTypeEmoji['emoji']

/**
 * The emoji Telegram allows as reactions (Bot API, ReactionTypeEmoji). The one list the config, the
 * service and the emulator all check against.
 */
export const ALLOWED_REACTIONS: readonly ReactionEmoji[] = [
  "👍", "👎", "❤", "🔥", "🥰", "👏", "😁", "🤔", "🤯", "😱", "🤬", "😢", "🎉", "🤩", "🤮", "💩", "🙏", "👌", "🕊", "🤡", "🥱", "🥴", "😍", "🐳", "❤‍🔥", "🌚", "🌭", "💯", "🤣", "⚡", "🍌", "🏆", "💔", "🤨", "😐", "🍓", "🍾", "💋", "🖕", "😈", "😴", "😭", "🤓", "👻", "👨‍💻", "👀", "🎃", "🙈", "😇", "😨", "🤝", "✍", "🤗", "🫡", "🎅", "🎄", "☃", "💅", "🤪", "🗿", "🆒", "💘", "🙉", "🦄", "😘", "💊", "🙊", "😎", "👾", "🤷‍♂", "🤷", "🤷‍♀", "😡",
]

const allowed = new Set<string>(ALLOWED_REACTIONS)

/**
 * Returns the allowed reaction for an emoji as a person would type it, or undefined. Keyboards add
 * the emoji presentation selector (U+FE0F, as in "❤️"), which Telegram's list leaves out.
 */
export function toReaction(emoji: string): ReactionEmoji | undefined {
  const bare = emoji.replace(/\uFE0F/gu, '')
  return allowed.has(bare) ? (bare as ReactionEmoji) : undefined
}
