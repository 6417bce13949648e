import type { StoredMessage, TurnStore } from '../store/inbox.js'
import { mediaGroupOf } from '../telegram/updates.js'

/**
 * Telegram delivers an album (photos or files sent together) as one update per item, sharing a
 * `media_group_id`, within a fraction of a second. The turn of the first item waits until no new
 * item has arrived for this long, then takes every queued item of the album into one run.
 */
export const ALBUM_SETTLE_MS = 1000
// However the items trickle in, a turn waits no longer than this for its album.
const ALBUM_MAX_WAIT_MS = 5000

/** The album a stored message belongs to, if any. */
export function albumOf(message: StoredMessage): string | undefined {
  return mediaGroupOf(message.updateJson)
}

/**
 * Waits for an album's items to settle (before the turn's first brain attempt, so it holds a slot's
 * place the way media downloads do), then returns its items still queued, in arrival order. Returns early, with what is
 * there, when `signal` aborts.
 */
export async function settleAlbum(inbox: TurnStore, first: StoredMessage, album: string, signal: AbortSignal): Promise<StoredMessage[]> {
  const giveUpAt = Date.now() + ALBUM_MAX_WAIT_MS
  for (;;) {
    const items = (await inbox.queuedInChat(first.chatId)).filter((message) => albumOf(message) === album)
    const lastArrival = Math.max(first.receivedAt, ...items.map((message) => message.receivedAt))
    const wait = Math.min(lastArrival + ALBUM_SETTLE_MS, giveUpAt) - Date.now()
    if (wait <= 0 || signal.aborted) return items
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, wait)
      function done(): void {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        resolve()
      }
      signal.addEventListener('abort', done, { once: true })
    })
  }
}
