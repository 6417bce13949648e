import fs from 'node:fs'
import path from 'node:path'

/** The file in a chat's directory that remembers its Claude Code session; `/new` deletes it. */
export const SESSION_FILE = 'claude-session.json'

// Claude Code's session ids are UUIDs; anything that could pass for a flag is refused.
const SESSION_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$/u

/** What the session file holds. */
interface SessionRecord {
  readonly session_id: string
  readonly updated_at: string
}

/**
 * The session id stored in `file`, or undefined to start a new conversation: when there is no file
 * (a new chat, or `/new` removed it), silently; when it is unreadable or malformed, with a note
 * through `warn`.
 */
export function readSession(file: string, warn: (message: string) => void): string | undefined {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') warn(`cannot read ${file} (${(error as Error).message}); starting a new session`)
    return undefined
  }
  let record: unknown
  try {
    record = JSON.parse(text)
  } catch {
    warn(`${file} is not JSON; starting a new session`)
    return undefined
  }
  const id = typeof record === 'object' && record !== null ? (record as Partial<SessionRecord>).session_id : undefined
  if (typeof id !== 'string' || !SESSION_ID_PATTERN.test(id)) {
    warn(`${file} holds no valid session_id; starting a new session`)
    return undefined
  }
  return id
}

/** Stores `sessionId` in `file` atomically (a temporary file renamed over it), so a crash never leaves half a file. */
export function saveSession(file: string, sessionId: string): void {
  if (!SESSION_ID_PATTERN.test(sessionId)) throw new TypeError(`not a session id: ${JSON.stringify(sessionId)}`)
  const record: SessionRecord = { session_id: sessionId, updated_at: new Date().toISOString() }
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`)
  try {
    fs.writeFileSync(temporary, `${JSON.stringify(record)}\n`, { mode: 0o600 })
    fs.renameSync(temporary, file)
  } catch (error) {
    fs.rmSync(temporary, { force: true })
    throw error
  }
}

/** Forgets the chat's session, so the next run starts a new one. */
export function forgetSession(file: string): void {
  fs.rmSync(file, { force: true })
}
