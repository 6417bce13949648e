import { randomBytes } from 'node:crypto'
import { constants as fsConstants, type Stats } from 'node:fs'
import fs from 'node:fs/promises'
import path from 'node:path'
import { Readable } from 'node:stream'
import { createGunzip, createGzip } from 'node:zlib'
import type { FastifyBaseLogger } from 'fastify'
import type pg from 'pg'
import { Header, Parser, Pax, type ReadEntry } from 'tar'

/** How many files and directories a chat's state may hold, unless the options say otherwise. */
export const DEFAULT_MAX_ENTRIES = 10_000

const TAR_BLOCK = 512
// A PAX record here holds a path (at most PATH_MAX, 4096 bytes), a size and a time.
const MAX_PAX_BYTES = 16 * TAR_BLOCK
// Room in the uncompressed archive for each entry's header, PAX record and padding, on top of the
// file bytes themselves: what a tampered row may inflate to before extraction stops.
const ARCHIVE_BYTES_PER_ENTRY = 3 * TAR_BLOCK + MAX_PAX_BYTES
const READ_CHUNK = 64 * 1024
// A file is opened without following a symlink in its last component, and without blocking on a
// fifo that took its place since the directory was read.
const OPEN_FLAGS = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK

const SCHEMA = `
CREATE SCHEMA IF NOT EXISTS coordinator;
CREATE SEQUENCE IF NOT EXISTS coordinator.chat_state_version;
CREATE TABLE IF NOT EXISTS coordinator.chat_state (
  chat_id    bigint      PRIMARY KEY,
  version    bigint      NOT NULL,
  bytes      integer     NOT NULL,
  archive    bytea       NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
`

// Versions come from one sequence, never from the row: a chat forgotten and written again never
// reuses a version number another host may still remember.
const STORE = `
INSERT INTO coordinator.chat_state (chat_id, version, bytes, archive)
VALUES ($1, nextval('coordinator.chat_state_version'), $2, $3)
ON CONFLICT (chat_id) DO UPDATE SET version = EXCLUDED.version, bytes = EXCLUDED.bytes, archive = EXCLUDED.archive, updated_at = now()
RETURNING version::text
`

// A turn's push stores its state only over the version its host started from: a /new (or any
// other write) since then wins, and the turn's state is dropped.
const STORE_OVER = `
INSERT INTO coordinator.chat_state (chat_id, version, bytes, archive)
VALUES ($1, nextval('coordinator.chat_state_version'), $2, $3)
ON CONFLICT (chat_id) DO UPDATE SET version = EXCLUDED.version, bytes = EXCLUDED.bytes, archive = EXCLUDED.archive, updated_at = now()
WHERE coordinator.chat_state.version IS NOT DISTINCT FROM $4::bigint
RETURNING version::text
`

const NEWER = `
SELECT version::text, archive FROM coordinator.chat_state WHERE chat_id = $1 AND version IS DISTINCT FROM $2::bigint
`

export interface ChatStateOptions {
  readonly pool: pg.Pool
  /** The most file bytes (uncompressed) a chat's state may hold. */
  readonly maxBytes: number
  /** The most files and directories a chat's state may hold (default DEFAULT_MAX_ENTRIES). */
  readonly maxEntries?: number
  readonly log: FastifyBaseLogger
}

export type PushResult =
  | { stored: true; bytes: number; version: number }
  | { stored: false; bytes: number; reason: 'over the cap' | 'superseded' }

/** A stored state that cannot be extracted safely: the directory is left as it was. */
export class ChatStateError extends Error {
  override name = 'ChatStateError'
}

/**
 * Carries each chat's directory between hosts through Postgres, so the next turn finds the brain's
 * state (its session, its notes) whichever host runs it. The directory is written by the brain, so
 * nothing in it is trusted: push archives only regular files and directories, never following a
 * link, and pull extracts only those, inside the directory, within the caps, whatever the row holds.
 * Push expects the brain to have exited: nothing else should write the directory meanwhile. Both
 * hold one chat's archive in memory, and pull its checked contents too (at most maxBytes), so that a
 * refused archive writes nothing.
 */
export class ChatStateSync {
  readonly #pool: pg.Pool
  readonly #maxBytes: number
  readonly #maxEntries: number
  readonly #log: FastifyBaseLogger
  // The version this process last pulled or pushed for each chat: a pull of the same version is a
  // no-op. Lost on restart, which costs one pull per chat.
  readonly #versions = new Map<number, number>()

  constructor(options: ChatStateOptions) {
    const { pool, maxBytes, maxEntries = DEFAULT_MAX_ENTRIES, log } = options
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) throw new TypeError(`maxBytes must be a whole number of bytes ≥ 0; got ${maxBytes}`)
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) throw new TypeError(`maxEntries must be a whole number ≥ 1; got ${maxEntries}`)
    this.#pool = pool
    this.#maxBytes = maxBytes
    this.#maxEntries = maxEntries
    this.#log = log
  }

  /** Creates the table if missing (idempotent). */
  static async migrate(client: pg.ClientBase): Promise<void> {
    await client.query(SCHEMA)
  }

  /** Before a turn on this host: makes `dir` hold the chat's newest stored state, unless this host already has that version. */
  async pull(chatId: number, dir: string): Promise<void> {
    const known = (await isDirectory(dir)) ? this.#versions.get(chatId) : undefined
    const { rows } = await this.#pool.query<{ version: string; archive: Buffer }>(NEWER, [chatId, known === undefined ? null : String(known)])
    const row = rows[0]
    // No row: nothing was ever stored for this chat (or this host has the newest), so the directory stays as it is.
    if (row === undefined) return
    const version = Number(row.version)
    const started = performance.now()
    const incoming = `${dir}.incoming-${randomBytes(6).toString('hex')}`
    await fs.mkdir(path.dirname(dir), { recursive: true })
    await fs.mkdir(incoming, { mode: 0o700 })
    let extracted: Extracted
    try {
      extracted = await extract(row.archive, incoming, this.#maxBytes, this.#maxEntries)
    } catch (error) {
      await fs.rm(incoming, { recursive: true, force: true })
      throw error
    }
    await replaceDirectory(dir, incoming)
    this.#versions.set(chatId, version)
    this.#log.info(
      { chat_id: chatId, version, bytes: extracted.bytes, entries: extracted.entries, ms: Math.round(performance.now() - started) },
      'chat state pulled',
    )
  }

  /**
   * After a turn: stores `dir` as the chat's newest state (a new version), unless it is over the
   * caps (nothing is stored and the caller tells the user), or the stored state changed since this
   * host pulled or pushed it (a /new meanwhile: it wins, and this turn's state is dropped).
   */
  async push(chatId: number, dir: string): Promise<PushResult> {
    const started = performance.now()
    const tree = await walk(dir, this.#maxEntries)
    if (tree.bytes > this.#maxBytes || tree.entries.length > this.#maxEntries) {
      this.#log.warn(
        { chat_id: chatId, bytes: tree.bytes, entries: tree.entries.length, max_bytes: this.#maxBytes, max_entries: this.#maxEntries },
        `chat ${chatId}'s state (${tree.bytes} bytes in ${tree.entries.length}${tree.truncated ? '+' : ''} entries) is over the cap (${this.#maxBytes} bytes, ${this.#maxEntries} entries); the previous version stays`,
      )
      return { stored: false, bytes: tree.bytes, reason: 'over the cap' }
    }
    const packed = await pack(dir, tree.entries)
    const skipped = tree.skipped + packed.skipped
    if (skipped > 0) this.#log.warn({ chat_id: chatId, skipped }, 'chat state: left out what is not a regular file or directory')
    const known = this.#versions.get(chatId)
    const { rows } = await this.#pool.query<{ version: string }>(STORE_OVER, [chatId, packed.bytes, packed.archive, known === undefined ? null : String(known)])
    if (rows[0] === undefined) {
      this.#versions.delete(chatId)
      this.#log.info({ chat_id: chatId, since: known ?? null }, 'chat state not pushed: it changed since this turn began (a /new)')
      return { stored: false, bytes: packed.bytes, reason: 'superseded' }
    }
    const version = Number(rows[0].version)
    this.#versions.set(chatId, version)
    this.#log.info(
      { chat_id: chatId, version, bytes: packed.bytes, archive_bytes: packed.archive.length, ms: Math.round(performance.now() - started) },
      'chat state pushed',
    )
    return { stored: true, bytes: packed.bytes, version }
  }

  /**
   * Forgets a chat's state (/new): an empty state is stored as its newest version, so every host
   * empties its copy of the directory at its next pull.
   */
  async forget(chatId: number): Promise<void> {
    const { rows } = await this.#pool.query<{ version: string }>(STORE, [chatId, 0, Buffer.alloc(0)])
    this.#versions.delete(chatId)
    this.#log.info({ chat_id: chatId, version: Number(rows[0]?.version) }, 'chat state forgotten')
  }
}

/** A file or directory found by walk, as lstat saw it. */
interface TreeEntry {
  /** Relative to the chat directory, with `/` separators. */
  readonly name: string
  readonly stats: Stats
}

interface Tree {
  readonly entries: TreeEntry[]
  readonly bytes: number
  readonly skipped: number
  /** True when the walk stopped past the entry cap. */
  readonly truncated: boolean
}

/** The regular files and directories under `dir`, parents first, never following a link; a missing dir is an empty tree. */
async function walk(dir: string, maxEntries: number): Promise<Tree> {
  const entries: TreeEntry[] = []
  let bytes = 0
  let skipped = 0
  if (!(await isDirectory(dir))) return { entries, bytes, skipped, truncated: false }
  const pending = ['']
  while (pending.length > 0) {
    const relative = pending.shift() as string
    const names = (await fs.readdir(path.join(dir, relative))).sort()
    for (const name of names) {
      // One past the cap is enough to say the state is over it.
      if (entries.length > maxEntries) return { entries, bytes, skipped, truncated: true }
      const child = relative === '' ? name : `${relative}/${name}`
      const stats = await fs.lstat(path.join(dir, child))
      if (stats.isDirectory()) {
        entries.push({ name: child, stats })
        pending.push(child)
      } else if (stats.isFile() && stats.nlink === 1) {
        entries.push({ name: child, stats })
        bytes += stats.size
      } else {
        // Symlinks, fifos, sockets, devices, and files with another name that may lie outside.
        skipped++
      }
    }
  }
  return { entries, bytes, skipped, truncated: false }
}

interface Packed {
  readonly archive: Buffer
  readonly bytes: number
  readonly skipped: number
}

/** The walked entries as a gzipped tar; a file that is no longer what the walk saw is left out. */
async function pack(dir: string, entries: readonly TreeEntry[]): Promise<Packed> {
  let bytes = 0
  let skipped = 0
  async function* blocks(): AsyncGenerator<Buffer> {
    for (const { name, stats } of entries) {
      if (stats.isDirectory()) {
        yield* header({ path: `${name}/`, type: 'Directory', mode: stats.mode & 0o777, mtime: stats.mtime, size: 0 })
        continue
      }
      let file: fs.FileHandle
      try {
        file = await fs.open(path.join(dir, name), OPEN_FLAGS)
      } catch {
        skipped++
        continue
      }
      try {
        const opened = await file.stat()
        // The same inode the walk measured, still a lone regular file: not something swapped in since.
        if (!opened.isFile() || opened.nlink !== 1 || opened.ino !== stats.ino || opened.dev !== stats.dev || opened.size !== stats.size) {
          skipped++
          continue
        }
        yield* header({ path: name, type: 'File', mode: opened.mode & 0o777, mtime: opened.mtime, size: opened.size })
        let position = 0
        while (position < opened.size) {
          const chunk = Buffer.alloc(Math.min(READ_CHUNK, opened.size - position))
          const { bytesRead } = await file.read(chunk, 0, chunk.length, position)
          // A file that shrank meanwhile is padded with zeros: the header already promised its size.
          if (bytesRead === 0) chunk.fill(0)
          position += chunk.length
          yield chunk
        }
        bytes += opened.size
        const padding = (TAR_BLOCK - (opened.size % TAR_BLOCK)) % TAR_BLOCK
        if (padding > 0) yield Buffer.alloc(padding)
      } finally {
        await file.close()
      }
    }
    yield Buffer.alloc(2 * TAR_BLOCK)
  }
  const chunks: Buffer[] = []
  for await (const chunk of Readable.from(blocks()).pipe(createGzip())) chunks.push(chunk as Buffer)
  return { archive: Buffer.concat(chunks), bytes, skipped }
}

/** A tar header block, preceded by a PAX record when the path is too long for the header itself. */
function* header(data: { path: string; type: 'File' | 'Directory'; mode: number; mtime: Date; size: number }): Generator<Buffer> {
  const block = new Header(data)
  if (block.encode()) yield new Pax({ path: data.path, mtime: data.mtime, size: data.size }).encode()
  if (block.block === undefined) throw new Error(`could not encode a tar header for ${data.path}`)
  yield block.block
}

interface Extracted {
  readonly bytes: number
  readonly entries: number
}

interface ParsedEntry {
  readonly name: string
  readonly type: 'File' | 'Directory'
  readonly mode: number
  readonly mtime: Date | undefined
  readonly data: Buffer[]
}

/**
 * Writes the archive's files and directories into `target`, a fresh empty directory. The row may
 * have been tampered with: anything but a plain file or directory, a path that is absolute or
 * climbs out, or more than the caps, and the whole archive is refused before anything is written.
 */
async function extract(archive: Buffer, target: string, maxBytes: number, maxEntries: number): Promise<Extracted> {
  // The empty archive is the state /new leaves.
  if (archive.length === 0) return { bytes: 0, entries: 0 }
  const entries = await parse(archive, maxBytes, maxEntries)
  let bytes = 0
  for (const entry of entries) {
    const destination = path.join(target, ...entry.name.split('/'))
    if (entry.type === 'Directory') {
      await fs.mkdir(destination, { recursive: true, mode: 0o700 | (entry.mode & 0o755) })
      continue
    }
    await fs.mkdir(path.dirname(destination), { recursive: true, mode: 0o700 })
    // `wx`: a name the archive holds twice fails rather than being written through.
    const file = await fs.open(destination, 'wx', 0o600 | (entry.mode & 0o755))
    try {
      for (const chunk of entry.data) await file.write(chunk)
      if (entry.mtime !== undefined) await file.utimes(entry.mtime, entry.mtime)
    } finally {
      await file.close()
    }
    bytes += entry.data.reduce((sum, chunk) => sum + chunk.length, 0)
  }
  return { bytes, entries: entries.length }
}

/** The archive's entries, checked; throws ChatStateError at the first one that cannot be trusted. */
async function parse(archive: Buffer, maxBytes: number, maxEntries: number): Promise<ParsedEntry[]> {
  const entries: ParsedEntry[] = []
  const names = new Set<string>()
  let bytes = 0
  let refused: Error | undefined
  const refuse = (reason: string): void => {
    refused ??= new ChatStateError(`the stored chat state is refused: ${reason}`)
  }
  const parser = new Parser({ strict: true, maxMetaEntrySize: MAX_PAX_BYTES })
  parser.on('error', (error: Error) => refuse(error.message))
  // The parser skips what it will not read (an oversized PAX record): nothing written here is skipped.
  parser.on('ignoredEntry', (entry: ReadEntry) => refuse(`${JSON.stringify(entry.path)} is a ${entry.type} of ${entry.size} bytes`))
  parser.on('entry', (entry: ReadEntry) => {
    entry.resume()
    if (refused !== undefined) return
    const name = safeName(entry.path)
    if (entry.type !== 'File' && entry.type !== 'Directory') return refuse(`${JSON.stringify(entry.path)} is a ${entry.type}`)
    if (name === undefined) return refuse(`${JSON.stringify(entry.path)} is not a path inside the chat directory`)
    if (names.has(name)) return refuse(`${JSON.stringify(entry.path)} appears twice`)
    names.add(name)
    if (entries.length >= maxEntries) return refuse(`more than ${maxEntries} entries`)
    bytes += entry.size
    if (bytes > maxBytes) return refuse(`more than ${maxBytes} bytes`)
    const parsed: ParsedEntry = { name, type: entry.type, mode: entry.mode ?? 0o600, mtime: entry.mtime, data: [] }
    entries.push(parsed)
    entry.on('data', (chunk: Buffer) => parsed.data.push(chunk))
  })
  const ended = new Promise<void>((resolve) => parser.on('end', resolve))
  // Uncompressed, a tampered row could be a gzip bomb: stop reading past what the caps allow.
  const inflateLimit = maxBytes + (maxEntries + 2) * ARCHIVE_BYTES_PER_ENTRY
  let inflated = 0
  try {
    for await (const chunk of Readable.from([archive]).pipe(createGunzip())) {
      inflated += (chunk as Buffer).length
      if (inflated > inflateLimit) refuse(`it inflates past ${inflateLimit} bytes`)
      if (refused !== undefined) break
      if (!parser.write(chunk as Buffer)) await new Promise((resolve) => parser.once('drain', resolve))
    }
  } catch (error) {
    refuse(`it is not a gzipped tar (${(error as Error).message})`)
  }
  if (refused === undefined) {
    parser.end()
    await ended
  }
  if (refused !== undefined) throw refused
  return entries
}

/** `name` as a relative path of plain components inside the directory, or undefined when it is not one. */
function safeName(name: string): string | undefined {
  const trimmed = name.replace(/\/+$/, '').replace(/^(\.\/)+/, '')
  if (trimmed === '' || trimmed.startsWith('/') || trimmed.includes('\0')) return undefined
  const parts = trimmed.split('/')
  if (parts.some((part) => part === '' || part === '.' || part === '..')) return undefined
  return parts.join('/')
}

/** Puts `incoming` where `dir` is, by renames in the same parent; the old contents are deleted. */
async function replaceDirectory(dir: string, incoming: string): Promise<void> {
  const outgoing = `${dir}.outgoing-${randomBytes(6).toString('hex')}`
  let hadOld = true
  try {
    await fs.rename(dir, outgoing)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
    hadOld = false
  }
  await fs.rename(incoming, dir)
  if (hadOld) await fs.rm(outgoing, { recursive: true, force: true })
}

async function isDirectory(dir: string): Promise<boolean> {
  try {
    return (await fs.lstat(dir)).isDirectory()
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw error
  }
}
