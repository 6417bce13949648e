import fs from 'node:fs'
import path from 'node:path'

/** Per-chat directories for brains (COORDINATOR_CHAT_DIR), inside STATE_DIR. */
export const CHATS_DIR = 'chats'

export function chatDirOf(stateDir: string, chatId: number): string {
  return path.join(stateDir, CHATS_DIR, String(chatId))
}

/**
 * Forgets what the brain kept for a chat (/new): the directory is renamed aside at once, so the
 * next run finds none, and deleted in the background.
 */
export function forgetChatDir(stateDir: string, chatId: number, onError: (error: unknown) => void): void {
  const dir = chatDirOf(stateDir, chatId)
  const aside = path.join(stateDir, CHATS_DIR, `.forgotten-${chatId}-${Date.now()}`)
  try {
    fs.renameSync(dir, aside)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return
    throw error
  }
  fs.promises.rm(aside, { recursive: true, force: true }).catch(onError)
}
