import fs from 'node:fs'
import path from 'node:path'

/** The file in STATE_DIR that remembers groups upgraded to supergroups. */
export const MIGRATIONS_FILE = 'chat-migrations.json'

/**
 * Groups upgraded to supergroups: Telegram gives the supergroup a new id and refuses anything sent
 * to the old one. Kept in STATE_DIR so that a restart does not make the supergroup deaf again
 * before the operator has put its id in ALLOWED_CHAT_IDS.
 */
export class ChatMigrations {
  // Old group id → new supergroup id.
  readonly #newIds = new Map<number, number>()
  readonly #file: string | undefined

  /** With no state directory (INBOX=memory), migrations last until the process ends. */
  constructor(stateDir: string | undefined) {
    this.#file = stateDir === undefined ? undefined : path.join(stateDir, MIGRATIONS_FILE)
    if (this.#file === undefined || !fs.existsSync(this.#file)) return
    const saved = JSON.parse(fs.readFileSync(this.#file, 'utf8')) as Record<string, unknown>
    for (const [from, to] of Object.entries(saved)) {
      if (Number.isSafeInteger(Number(from)) && Number.isSafeInteger(to)) this.#newIds.set(Number(from), to as number)
    }
  }

  /** Records an upgrade; true when it was not known yet. */
  record(from: number, to: number): boolean {
    if (this.#newIds.get(from) === to) return false
    this.#newIds.set(from, to)
    if (this.#file !== undefined) {
      const temporary = `${this.#file}.tmp`
      fs.writeFileSync(temporary, `${JSON.stringify(Object.fromEntries(this.#newIds))}\n`, { mode: 0o600 })
      fs.renameSync(temporary, this.#file)
    }
    return true
  }

  /** Where a chat lives now: its supergroup's id after an upgrade, else the id itself. */
  currentId(chatId: number): number {
    let id = chatId
    // A chain is at most one step long in practice; the bound guards against a loop in a hand-edited file.
    for (let step = 0; step < 8; step++) {
      const next = this.#newIds.get(id)
      if (next === undefined) return id
      id = next
    }
    return id
  }

  /** The groups this supergroup was upgraded from, so that an allowed group's supergroup is allowed too. */
  earlierIds(chatId: number): number[] {
    return [...this.#newIds].filter(([, to]) => to === chatId).map(([from]) => from)
  }
}
