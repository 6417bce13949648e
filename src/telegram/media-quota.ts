import fs from 'node:fs/promises'
import path from 'node:path'
import type { FastifyBaseLogger } from 'fastify'

/**
 * Room the file system keeps besides the quota, for the inbox: a download that would leave less
 * free space than this is refused (after pruning), so that accepting an update never fails for
 * lack of space that media took.
 */
export const INBOX_HEADROOM_BYTES = 256 * 1024 * 1024

/** Why a file was not admitted; the brain reads it as the file's `note`. */
export type QuotaRefusal = string

export interface MediaQuotaOptions {
  /** `<stateDir>/media`: one directory per update. */
  readonly root: string
  /** MEDIA_QUOTA_MB in bytes: all stored media together stay under it. */
  readonly quotaBytes: number
  readonly log: FastifyBaseLogger
  /** Free bytes on the file system holding `root` (fs.statfs; replaceable for tests). */
  readonly freeBytes?: (dir: string) => Promise<number>
}

/**
 * Keeps stored media under MEDIA_QUOTA_MB. Before a file is downloaded, {@link admit} makes room
 * for it by deleting the media of the oldest messages not in use (a message is in use from the
 * start of its turn to its end, see {@link hold}), and refuses the file if it still would not fit,
 * or would leave the disk with less than {@link INBOX_HEADROOM_BYTES} free. Admissions run one at
 * a time, and admitted bytes count as used until the download is over.
 */
export class MediaQuota {
  readonly #root: string
  readonly #quotaBytes: number
  readonly #log: FastifyBaseLogger
  readonly #freeBytes: (dir: string) => Promise<number>
  // Update ids whose media a turn is using: never pruned.
  readonly #inUse = new Map<number, number>()
  #reserved = 0
  // Admissions one after another, so two downloads cannot both take the last free room.
  #queue: Promise<unknown> = Promise.resolve()

  constructor(options: MediaQuotaOptions) {
    this.#root = options.root
    this.#quotaBytes = options.quotaBytes
    this.#log = options.log
    this.#freeBytes = options.freeBytes ?? freeBytesOf
  }

  /** Marks these messages' media as in use until the returned function is called. */
  hold(updateIds: readonly number[]): () => void {
    for (const id of updateIds) this.#inUse.set(id, (this.#inUse.get(id) ?? 0) + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      for (const id of updateIds) {
        const count = (this.#inUse.get(id) ?? 1) - 1
        if (count <= 0) this.#inUse.delete(id)
        else this.#inUse.set(id, count)
      }
    }
  }

  /**
   * Makes room for `bytes` (the announced size; null means unknown, counted as `unknownBytes`).
   * Resolves with a release function to call when the download is over, or with the reason the
   * file does not fit.
   */
  admit(bytes: number | null, unknownBytes: number): Promise<{ release: () => void } | { refused: QuotaRefusal }> {
    const need = bytes ?? unknownBytes
    const admission = this.#queue.then(() => this.#admit(need))
    this.#queue = admission.catch(() => undefined)
    return admission
  }

  async #admit(need: number): Promise<{ release: () => void } | { refused: QuotaRefusal }> {
    const quotaMb = Math.round(this.#quotaBytes / 1024 / 1024)
    if (need > this.#quotaBytes) return { refused: `not downloaded: it is larger than the media quota (MEDIA_QUOTA_MB=${quotaMb})` }
    const dirs = await this.#mediaDirs()
    let used = dirs.reduce((sum, dir) => sum + dir.bytes, 0) + this.#reserved
    let free = await this.#freeBytes(this.#root).catch(() => Number.POSITIVE_INFINITY)
    const pruned: number[] = []
    for (const dir of dirs) {
      if (used + need <= this.#quotaBytes && free - need >= INBOX_HEADROOM_BYTES) break
      if (this.#inUse.has(dir.updateId)) continue
      await fs.rm(dir.path, { recursive: true, force: true })
      used -= dir.bytes
      free += dir.bytes
      pruned.push(dir.updateId)
    }
    if (pruned.length > 0) this.#log.info({ pruned, used_bytes: used, quota_bytes: this.#quotaBytes }, 'media of older messages deleted to stay under MEDIA_QUOTA_MB')
    if (used + need > this.#quotaBytes) {
      return { refused: `not downloaded: the media quota (MEDIA_QUOTA_MB=${quotaMb}) is taken by messages still being worked on` }
    }
    if (free - need < INBOX_HEADROOM_BYTES) return { refused: 'not downloaded: the disk is nearly full' }
    this.#reserved += need
    let released = false
    return {
      release: () => {
        if (released) return
        released = true
        this.#reserved -= need
      },
    }
  }

  /** Every message's media directory with its size, oldest (least recently written) first. */
  async #mediaDirs(): Promise<{ updateId: number; path: string; bytes: number; mtimeMs: number }[]> {
    let entries: string[]
    try {
      entries = await fs.readdir(this.#root)
    } catch {
      return []
    }
    const dirs = []
    for (const entry of entries) {
      if (!/^\d+$/u.test(entry)) continue
      const dir = path.join(this.#root, entry)
      try {
        const stat = await fs.stat(dir)
        dirs.push({ updateId: Number(entry), path: dir, bytes: await sizeOfTree(dir), mtimeMs: stat.mtimeMs })
      } catch {
        // removed meanwhile (retention)
      }
    }
    return dirs.sort((a, b) => a.mtimeMs - b.mtimeMs || a.updateId - b.updateId)
  }
}

async function sizeOfTree(dir: string): Promise<number> {
  let total = 0
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name)
    if (entry.isDirectory()) total += await sizeOfTree(file)
    else if (entry.isFile()) total += (await fs.stat(file).catch(() => ({ size: 0 }))).size
  }
  return total
}

async function freeBytesOf(dir: string): Promise<number> {
  // The media directory may not exist yet; its nearest existing parent is on the same file system.
  for (let current = dir; ; current = path.dirname(current)) {
    try {
      const stats = await fs.statfs(current)
      return stats.bavail * stats.bsize
    } catch (error) {
      if (path.dirname(current) === current) throw error
    }
  }
}
