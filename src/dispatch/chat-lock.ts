import fs from 'node:fs'
import path from 'node:path'
import lockfile from 'proper-lockfile'
import type { FastifyBaseLogger } from 'fastify'

// A lock whose holder stopped refreshing it for this long is taken over (proper-lockfile's default).
const STALE_MS = 10_000
const RETRY_EVERY_MS = 250
// Inside the lock directory: the holder's pid, so a lock left by a killed process is taken over at
// once instead of after STALE_MS.
const OWNER_FILE = 'owner'

/** Gives up the lock; never throws. */
export type Release = () => Promise<void>

/** Another process held the chat's lock until the message's deadline. */
export class ChatLockTimeout extends Error {
  constructor(file: string) {
    super(`another process held ${file} until the time budget ran out`)
    this.name = 'ChatLockTimeout'
  }
}

/**
 * Per-chat lock files (LOCK_DIR/chat-<id>.lock, proper-lockfile's format), held while a chat's brain
 * runs so that other processes touching the same chat's files (a second instance, a cron job)
 * serialise with it. If the directory can't be used, the service warns once and runs without
 * locks: answering the user matters more than strict mutual exclusion.
 */
export class ChatLocks {
  readonly dir: string
  #log: FastifyBaseLogger
  #usable: boolean | undefined

  constructor(dir: string, log: FastifyBaseLogger) {
    this.dir = dir
    this.#log = log
  }

  /**
   * Makes LOCK_DIR, so that an unusable one is reported at start rather than at the first message.
   * Returns whether locks are in use.
   */
  prepare(): boolean {
    return this.#ensureDir()
  }

  /** Waits for the chat's lock until `deadline` (epoch ms). */
  async acquire(chatId: number, deadline: number, log: FastifyBaseLogger): Promise<Release> {
    if (!this.#ensureDir()) return async () => {}
    const file = path.join(this.dir, `chat-${chatId}`)
    const lockfilePath = `${file}.lock`
    for (;;) {
      try {
        const release = await lockfile.lock(file, {
          realpath: false,
          lockfilePath,
          stale: STALE_MS,
          retries: 0,
          fs: ownerRecordingFs(lockfilePath),
          onCompromised: (error) => log.warn({ err: error, lock: lockfilePath }, 'chat lock compromised'),
        })
        return async () => {
          try {
            fs.rmSync(path.join(lockfilePath, OWNER_FILE), { force: true })
            await release()
          } catch (error) {
            log.warn({ err: error, lock: lockfilePath }, 'chat lock release failed')
          }
        }
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code
        // ENOTEMPTY: proper-lockfile found a stale lock of ours (owner file inside) it can't rmdir.
        if (code !== 'ELOCKED' && code !== 'ENOTEMPTY') {
          this.#disable(error as Error)
          return async () => {}
        }
        if (ownerIsGone(lockfilePath)) {
          log.warn({ lock: lockfilePath }, 'taking over a chat lock whose process is gone')
          fs.rmSync(lockfilePath, { recursive: true, force: true })
          continue
        }
        // Stale by age (a live holder keeps it fresh), though its owner's pid runs: a process that
        // died and whose pid went to another. Without this, such a lock would hold the chat forever.
        if (code === 'ENOTEMPTY') {
          log.warn({ lock: lockfilePath }, 'taking over a stale chat lock (its pid now belongs to another process)')
          fs.rmSync(lockfilePath, { recursive: true, force: true })
          continue
        }
        if (Date.now() + RETRY_EVERY_MS >= deadline) throw new ChatLockTimeout(lockfilePath)
        await new Promise((resolve) => setTimeout(resolve, RETRY_EVERY_MS))
      }
    }
  }

  #ensureDir(): boolean {
    if (this.#usable !== undefined) return this.#usable
    try {
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 })
      fs.accessSync(this.dir, fs.constants.W_OK)
      this.#usable = true
    } catch (error) {
      this.#disable(error as Error)
    }
    return this.#usable as boolean
  }

  #disable(error: Error): void {
    if (this.#usable === false) return
    this.#usable = false
    this.#log.warn(
      { err: error, lock_dir: this.dir },
      'LOCK_DIR is not usable; running without per-chat locks (messages may interleave with other processes)',
    )
  }
}

/**
 * node:fs for proper-lockfile, except that creating the lock directory also records our pid in it,
 * in the same callback: a crash can hardly leave a lock without its owner.
 */
function ownerRecordingFs(lockfilePath: string): typeof fs {
  return {
    ...fs,
    mkdir: ((target: string, callback: (error: NodeJS.ErrnoException | null) => void) =>
      fs.mkdir(target, (error) => {
        if (!error && target === lockfilePath) writeOwner(lockfilePath)
        callback(error)
      })) as typeof fs.mkdir,
  }
}

function writeOwner(lockfilePath: string): void {
  try {
    fs.writeFileSync(path.join(lockfilePath, OWNER_FILE), `${process.pid}\n`)
  } catch {
    // Without an owner file the lock only goes stale by age.
  }
}

/** True when the lock names a holder on this machine that no longer runs. */
function ownerIsGone(lockfilePath: string): boolean {
  let pid: number
  try {
    pid = Number(fs.readFileSync(path.join(lockfilePath, OWNER_FILE), 'utf8').trim())
  } catch {
    return false
  }
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return false
  try {
    process.kill(pid, 0)
    return false
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH'
  }
}
