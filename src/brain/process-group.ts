import fs from 'node:fs'
import { setTimeout as delay } from 'node:timers/promises'
import type { FastifyBaseLogger } from 'fastify'

// How often a dying process group is checked while we wait for it to go.
const GROUP_POLL_MS = 25
// After SIGKILL, how long to wait for the kernel before giving up on a process (stuck in D state).
const KILL_SETTLE_MS = 2000

/**
 * The brain's process group (pgid = the leader's pid, thanks to `detached: true`): SIGTERM, then
 * SIGKILL after the grace if anything in it is still alive.
 */
export class ProcessGroup {
  readonly #pgid: number
  readonly #graceMs: number
  readonly #log: FastifyBaseLogger
  #graceTimer: NodeJS.Timeout | undefined
  #killedAt: number | undefined
  // Resolves when SIGKILL has gone out; from then on waiting is bounded by KILL_SETTLE_MS.
  #onKilled!: () => void
  readonly #killed = new Promise<void>((resolve) => {
    this.#onKilled = resolve
  })
  #terminating = false

  constructor(pgid: number, graceMs: number, log: FastifyBaseLogger) {
    this.#pgid = pgid
    this.#graceMs = graceMs
    this.#log = log
  }

  /** Whether SIGTERM has been sent. */
  get terminating(): boolean {
    return this.#terminating
  }

  /** SIGTERM now, SIGKILL after the grace if needed. Calling it again changes nothing. */
  terminate(): void {
    if (this.#terminating) return
    this.#terminating = true
    this.#signal('SIGTERM')
    this.#graceTimer = setTimeout(() => {
      if (!this.hasLiveMembers()) return
      this.#log.warn({ child_pid: this.#pgid, grace_ms: this.#graceMs }, 'brain process group outlived SIGTERM: sending SIGKILL')
      this.#signal('SIGKILL')
      this.#killedAt = Date.now()
      this.#onKilled()
    }, this.#graceMs)
  }

  /**
   * Waits for the leader's exit; gives up (undefined) only if it survives SIGKILL for
   * KILL_SETTLE_MS, so a process stuck in the kernel cannot hold a brain slot forever.
   */
  async awaitLeader<T>(exited: Promise<T>): Promise<T | undefined> {
    const settle = new AbortController()
    const stuck = this.#killed.then(() => delay(KILL_SETTLE_MS, undefined, { signal: settle.signal })).catch(() => undefined)
    try {
      const exit = await Promise.race([exited, stuck])
      if (exit === undefined) this.#log.error({ child_pid: this.#pgid }, 'brain did not exit after SIGKILL; giving up on it')
      return exit
    } finally {
      settle.abort()
    }
  }

  /** Resolves when no live process is left in the group (or SIGKILL did not help in time). */
  async gone(): Promise<void> {
    while (this.hasLiveMembers()) {
      if (this.#killedAt !== undefined && Date.now() - this.#killedAt > KILL_SETTLE_MS) {
        this.#log.error({ child_pid: this.#pgid }, 'brain process group survived SIGKILL; leaving it behind')
        return
      }
      await delay(GROUP_POLL_MS)
    }
  }

  /**
   * Whether any process of the group is still alive. Zombies do not count: orphans re-parented to
   * a PID 1 that never reaps stay zombies forever, yet are dead and hold nothing.
   */
  hasLiveMembers(): boolean {
    try {
      process.kill(-this.#pgid, 0)
    } catch (error) {
      return (error as NodeJS.ErrnoException).code !== 'ESRCH'
    }
    return process.platform !== 'linux' || groupHasLiveProcessOnLinux(this.#pgid)
  }

  dispose(): void {
    clearTimeout(this.#graceTimer)
  }

  #signal(signal: NodeJS.Signals): void {
    try {
      process.kill(-this.#pgid, signal)
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      if (code !== 'ESRCH') this.#log.warn({ child_pid: this.#pgid, signal, err: error }, 'could not signal the brain process group')
    }
  }
}

/** Scans /proc for a process in group `pgid` that is not a zombie; true if /proc cannot be read. */
function groupHasLiveProcessOnLinux(pgid: number): boolean {
  let entries: string[]
  try {
    entries = fs.readdirSync('/proc')
  } catch {
    return true
  }
  for (const entry of entries) {
    if (!/^\d+$/u.test(entry)) continue
    let stat: string
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8')
    } catch {
      continue
    }
    // "pid (comm) state ppid pgrp …"; comm may contain spaces and parentheses, so cut at the last ')'.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    if (Number(pgrp) === pgid && state !== 'Z' && state !== 'X') return true
  }
  return false
}

