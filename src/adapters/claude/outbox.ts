import fs from 'node:fs'
import path from 'node:path'

/** The directory, in the chat's directory, whose files the Claude adapter sends back after a run. */
export const OUTBOX_DIR = 'outbox'

/**
 * Makes `<chatDir>/outbox/` and empties it of what an earlier run left (already sent: the service
 * sends a run's files before its reply, and the chat's next run starts after that). Returns its
 * path, or undefined when it cannot be made (files are then not offered).
 */
export function prepareOutbox(chatDir: string, note: (text: string) => void): string | undefined {
  const outbox = path.join(chatDir, OUTBOX_DIR)
  try {
    fs.mkdirSync(outbox, { recursive: true })
    for (const entry of fs.readdirSync(outbox)) fs.rmSync(path.join(outbox, entry), { recursive: true, force: true })
    return outbox
  } catch (error) {
    note(`could not prepare ${outbox}: ${(error as Error).message}; files cannot be sent back this time`)
    return undefined
  }
}

/** The files a run left in the outbox, oldest first (the order they were written). */
export function outboxFiles(outbox: string): string[] {
  let entries: fs.Dirent[]
  try {
    entries = fs.readdirSync(outbox, { withFileTypes: true })
  } catch {
    return []
  }
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => {
      const file = path.join(outbox, entry.name)
      return { file, mtime: fs.statSync(file).mtimeMs }
    })
    .sort((a, b) => a.mtime - b.mtime || a.file.localeCompare(b.file))
    .map(({ file }) => file)
}

/** What the prompt tells Claude about the outbox. */
export function outboxInstruction(outbox: string): string {
  return `(To send the user a file, such as a chart, a PDF or a patch, write it into the directory ${outbox}: every file there when you finish is sent to the chat with your answer, images as photos.)`
}
