import { randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdir, rename, rm, stat } from 'node:fs/promises'
import path from 'node:path'
import { Readable, Transform, type TransformCallback } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { ReadableStream as NodeReadableStream } from 'node:stream/web'
import { setTimeout as delay } from 'node:timers/promises'
import type { FastifyBaseLogger } from 'fastify'
import { GrammyError, HttpError, type Api } from 'grammy'
import type { Message } from 'grammy/types'
import { FILE_KINDS, type BrainFile, type FileKind } from '../brain/protocol.js'
import type { MediaQuota } from './media-quota.js'


/** Bots may download files up to 20 MB; getFile refuses bigger ones with "file is too big". */
export const MAX_DOWNLOAD_SIZE = 20 * 1024 * 1024
/** How long one file may take, getFile and retries included, unless the caller says otherwise. */
export const DEFAULT_DOWNLOAD_TIMEOUT_MS = 120_000

/** One downloadable file of a message, as the message describes it. */
export interface MediaRef {
  readonly kind: FileKind
  readonly fileId: string
  readonly fileUniqueId: string
  /** The size the message announces; null when Telegram left it out. */
  readonly size: number | null
  /** From the message, or the kind's natural default (image/jpeg for photos). */
  readonly mimeType: string | null
  /** The name the user gave the file, unsanitised; null for kinds that have none. */
  readonly fileName: string | null
}

export interface DownloadMediaOptions {
  /** Calls getFile; its own retry policy (e.g. auto-retry) applies. */
  readonly api: Api
  readonly token: string
  readonly apiRoot: string
  /** Where the files go, one directory per update (see mediaDir). */
  readonly dir: string
  readonly media: readonly MediaRef[]
  /** Aborting it stops the downloads and rejects with its reason. */
  readonly signal?: AbortSignal
  /** The bound on one file (default DEFAULT_DOWNLOAD_TIMEOUT_MS). */
  readonly timeoutMs?: number
  /** MEDIA_QUOTA_MB: a file that does not fit is not downloaded (its note says why). */
  readonly quota?: MediaQuota
  readonly log: FastifyBaseLogger
}

interface TelegramFile {
  readonly file_id: string
  readonly file_unique_id: string
  readonly file_size?: number
  readonly mime_type?: string
  readonly file_name?: string
}

interface KindRule {
  /** The message's file of this kind, if it has one. */
  readonly pick: (message: Message) => TelegramFile | undefined
  readonly defaultMimeType: string | null
  /** The name on disk before collisions are resolved. */
  readonly localName: (ref: MediaRef) => string
}

const KIND_RULES: Readonly<Record<FileKind, KindRule>> = {
  photo: { pick: (message) => largestPhoto(message.photo), defaultMimeType: 'image/jpeg', localName: () => 'photo.jpg' },
  voice: {
    pick: (message) => message.voice,
    defaultMimeType: 'audio/ogg',
    localName: (ref) => `voice${extensionFor(ref.mimeType) || '.ogg'}`,
  },
  audio: { pick: (message) => message.audio, defaultMimeType: null, localName: (ref) => userFileName(ref) },
  video: { pick: (message) => message.video, defaultMimeType: null, localName: (ref) => userFileName(ref) },
  video_note: { pick: (message) => message.video_note, defaultMimeType: 'video/mp4', localName: () => 'video_note.mp4' },
  document: { pick: (message) => message.document, defaultMimeType: null, localName: (ref) => userFileName(ref) },
}

// A Map, so that a MIME type like "constructor" finds nothing.
const MIME_EXTENSIONS: ReadonlyMap<string, string> = new Map([
  ['image/jpeg', '.jpg'],
  ['image/png', '.png'],
  ['image/gif', '.gif'],
  ['image/webp', '.webp'],
  ['image/heic', '.heic'],
  ['audio/ogg', '.ogg'],
  ['audio/opus', '.opus'],
  ['audio/mpeg', '.mp3'],
  ['audio/mp4', '.m4a'],
  ['audio/x-m4a', '.m4a'],
  ['audio/aac', '.aac'],
  ['audio/flac', '.flac'],
  ['audio/wav', '.wav'],
  ['audio/x-wav', '.wav'],
  ['video/mp4', '.mp4'],
  ['video/quicktime', '.mov'],
  ['video/webm', '.webm'],
  ['video/x-matroska', '.mkv'],
  ['application/pdf', '.pdf'],
  ['application/zip', '.zip'],
  ['application/json', '.json'],
  ['text/plain', '.txt'],
  ['text/csv', '.csv'],
  ['text/markdown', '.md'],
  ['text/html', '.html'],
])

// Names stay short for listings, and well under the file system's 255 bytes with the temp suffix.
const MAX_NAME_CHARS = 100
const MAX_NAME_BYTES = 200
// Longer "extensions" are part of the name ("notes.from the meeting with Bob").
const MAX_EXTENSION_CHARS = 12
// Control and format characters (bidi overrides, zero-width) vanish; shell metacharacters become _.
const INVISIBLE_CHARACTERS = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu
const UNSAFE_CHARACTERS = /[^\p{L}\p{M}\p{N} ._\-()[\]+,=@]/gu
const MEGABYTE = 1024 * 1024
// The file server may blip; getFile's retries belong to the Api the caller passes.
const DOWNLOAD_BACKOFF_MS = [500, 1500] as const
const TEMP_SUFFIX = '.part'

/** Where all media lives: `<stateDir>/media`. */
export function mediaRoot(stateDir: string): string {
  return path.join(path.resolve(stateDir), 'media')
}

/** Where a message's media lives: `<stateDir>/media/<update_id>`. */
export function mediaDir(stateDir: string, updateId: number): string {
  return path.join(mediaRoot(stateDir), String(updateId))
}

/** Deletes a message's media directory (retention); a missing one is fine. */
export async function removeMedia(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true })
}

/** The downloadable files of a message (for a photo: only the largest PhotoSize). Empty for text. */
export function mediaOf(message: Message): MediaRef[] {
  const refs: MediaRef[] = []
  for (const kind of FILE_KINDS) {
    const rule = KIND_RULES[kind]
    const file = rule.pick(message)
    if (!isTelegramFile(file)) continue
    // An animation also carries its file as `document`; one download is enough.
    if (refs.some((ref) => ref.fileUniqueId === file.file_unique_id)) continue
    refs.push({
      kind,
      fileId: file.file_id,
      fileUniqueId: file.file_unique_id,
      size: typeof file.file_size === 'number' ? file.file_size : null,
      mimeType: typeof file.mime_type === 'string' && file.mime_type !== '' ? file.mime_type : rule.defaultMimeType,
      fileName: typeof file.file_name === 'string' ? file.file_name : null,
    })
  }
  return refs
}

/**
 * Downloads a message's media into `dir` (created), reusing files already there (a restart).
 * A file that cannot be had (too big, Telegram or the network failing) gets a note instead of a
 * path; the promise rejects only when `signal` aborts.
 */
export async function downloadMedia(options: DownloadMediaOptions): Promise<BrainFile[]> {
  const dir = path.resolve(options.dir)
  const files: BrainFile[] = []
  for (const { ref, name } of localNames(options.media)) files.push(await fetchOne(options, ref, path.join(dir, name)))
  return files
}

async function fetchOne(options: DownloadMediaOptions, ref: MediaRef, target: string): Promise<BrainFile> {
  const { log, signal } = options
  const described = { kind: ref.kind, mime_type: ref.mimeType, file_name: ref.fileName }
  const fields = { kind: ref.kind, file_unique_id: ref.fileUniqueId }
  signal?.throwIfAborted()
  if (ref.size !== null && ref.size > MAX_DOWNLOAD_SIZE) {
    log.info({ ...fields, size: ref.size }, 'media too big to download')
    return { ...described, path: null, size: ref.size, note: tooBigNote(ref.size) }
  }
  const existing = await sizeOf(target)
  if (existing !== null && (ref.size === null || existing === ref.size)) {
    log.debug({ ...fields, bytes: existing }, 'media already downloaded')
    return { ...described, path: target, size: existing }
  }

  const admission = await options.quota?.admit(ref.size, MAX_DOWNLOAD_SIZE)
  if (admission !== undefined && 'refused' in admission) {
    log.warn({ ...fields, size: ref.size, reason: admission.refused }, 'media not downloaded: over the quota')
    return { ...described, path: null, size: ref.size, note: admission.refused }
  }
  try {
    return await download(options, ref, target, described, fields)
  } finally {
    admission?.release()
  }
}

async function download(
  options: DownloadMediaOptions,
  ref: MediaRef,
  target: string,
  described: Pick<BrainFile, 'kind' | 'mime_type' | 'file_name'>,
  fields: Record<string, unknown>,
): Promise<BrainFile> {
  const { log, signal } = options
  const startedAt = Date.now()
  const timeoutMs = options.timeoutMs ?? DEFAULT_DOWNLOAD_TIMEOUT_MS
  const timeout = AbortSignal.timeout(timeoutMs)
  const bounded = signal === undefined ? timeout : AbortSignal.any([signal, timeout])
  try {
    // grammY types its signal with the abort-controller polyfill; the runtime takes the global one.
    const file = await options.api.getFile(ref.fileId, bounded as Parameters<Api['getFile']>[1])
    if (file.file_path === undefined || file.file_path === '') throw new DownloadFailure('Telegram gave no file_path for it')
    await mkdir(path.dirname(target), { recursive: true })
    const url = `${options.apiRoot}/file/bot${options.token}/${file.file_path}`
    const bytes = await downloadWithRetries(url, target, file.file_size ?? null, bounded)
    log.info({ ...fields, bytes, ms: Date.now() - startedAt }, 'media downloaded')
    return { ...described, path: target, size: bytes }
  } catch (error) {
    signal?.throwIfAborted()
    if (isTooBig(error)) {
      log.info({ ...fields, size: ref.size }, 'media too big to download')
      return { ...described, path: null, size: ref.size, note: tooBigNote(null) }
    }
    const reason = timeout.aborted ? `it took longer than ${timeoutMs / 1000} s` : shortReason(error)
    log.warn({ ...fields, err: error, reason }, 'media download failed')
    return { ...described, path: null, size: ref.size, note: `not downloaded: ${reason}` }
  }
}

async function downloadWithRetries(url: string, target: string, expectedSize: number | null, signal: AbortSignal): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await downloadTo(url, target, expectedSize, signal)
    } catch (error) {
      const backoff = DOWNLOAD_BACKOFF_MS[attempt]
      if (backoff === undefined || signal.aborted || !isTransient(error)) throw error
      await delay(backoff, undefined, { signal })
    }
  }
}

// Streams into a temporary file beside the target and renames it into place, so a file under its
// final name is always complete.
async function downloadTo(url: string, target: string, expectedSize: number | null, signal: AbortSignal): Promise<number> {
  const response = await fetch(url, { signal })
  if (!response.ok || response.body === null) {
    await response.body?.cancel()
    throw new DownloadFailure(`the file server answered ${response.status}`, response.status >= 500 || response.status === 429)
  }
  const temp = path.join(path.dirname(target), `.${path.basename(target)}.${randomBytes(6).toString('hex')}${TEMP_SUFFIX}`)
  const cap = new SizeCap(MAX_DOWNLOAD_SIZE)
  try {
    const body = Readable.fromWeb(response.body as NodeReadableStream<Uint8Array>)
    await pipeline(body, cap, createWriteStream(temp, { flags: 'wx' }), { signal })
    if (expectedSize !== null && cap.bytes !== expectedSize) {
      throw new DownloadFailure(`got ${cap.bytes} bytes where Telegram announced ${expectedSize}`)
    }
    await rename(temp, target)
    return cap.bytes
  } catch (error) {
    await rm(temp, { force: true })
    throw error
  }
}

/** Counts the bytes passing through and fails past `limit`, whatever the server promised. */
class SizeCap extends Transform {
  bytes = 0
  readonly #limit: number

  constructor(limit: number) {
    super()
    this.#limit = limit
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length
    if (this.bytes > this.#limit) done(new FileTooBig())
    else done(null, chunk)
  }
}

/** A failure of our own making, with the reason the brain reads. */
class DownloadFailure extends Error {
  readonly transient: boolean

  constructor(reason: string, transient = false) {
    super(reason)
    this.name = 'DownloadFailure'
    this.transient = transient
  }
}

class FileTooBig extends Error {
  constructor() {
    super(`the file server sent more than ${MAX_DOWNLOAD_SIZE} bytes`)
    this.name = 'FileTooBig'
  }
}

function isTooBig(error: unknown): boolean {
  if (error instanceof FileTooBig) return true
  return error instanceof GrammyError && error.error_code === 400 && /file is too big/iu.test(error.description)
}

function isTransient(error: unknown): boolean {
  if (error instanceof DownloadFailure) return error.transient
  // fetch fails with a TypeError when the connection is refused, reset or cut short; a file
  // system error (no space, no permission) would only fail again.
  return error instanceof TypeError
}

function tooBigNote(size: number | null): string {
  const what = size === null ? 'the file' : `${(size / MEGABYTE).toFixed(1)} MB`
  return `not downloaded: ${what} is over the Bot API's ${MAX_DOWNLOAD_SIZE / MEGABYTE} MB download limit`
}

function shortReason(error: unknown): string {
  if (error instanceof GrammyError) return `getFile failed: ${error.description}`
  if (error instanceof HttpError) return `getFile could not reach Telegram (${causeOf(error.error)})`
  if (error instanceof DownloadFailure) return error.message
  return `the download failed (${causeOf(error)})`
}

// "fetch failed" says little; the cause's code (ECONNRESET, ECONNREFUSED) says what happened.
function causeOf(error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  const cause: unknown = error.cause
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code
    return typeof code === 'string' ? code : cause.message
  }
  return error.message
}

async function sizeOf(file: string): Promise<number | null> {
  try {
    const info = await stat(file)
    return info.isFile() ? info.size : null
  } catch {
    return null
  }
}

function isTelegramFile(file: TelegramFile | undefined): file is TelegramFile {
  return (
    typeof file === 'object' &&
    file !== null &&
    typeof file.file_id === 'string' &&
    file.file_id !== '' &&
    typeof file.file_unique_id === 'string'
  )
}

// Telegram lists sizes smallest first, but the largest is chosen by pixels, not by position.
function largestPhoto(sizes: Message['photo']): TelegramFile | undefined {
  if (!Array.isArray(sizes)) return undefined
  let best: (typeof sizes)[number] | undefined
  for (const size of sizes) {
    if (!isTelegramFile(size)) continue
    if (best === undefined || pixels(size) > pixels(best) || (pixels(size) === pixels(best) && (size.file_size ?? 0) > (best.file_size ?? 0))) {
      best = size
    }
  }
  return best
}

function pixels(size: { readonly width: number; readonly height: number }): number {
  return (Number(size.width) || 0) * (Number(size.height) || 0)
}

/** Disk names for a message's files: each kind's name, made unique by an index prefix. */
function localNames(media: readonly MediaRef[]): { ref: MediaRef; name: string }[] {
  // Case-insensitively, so that the names stay distinct on any file system.
  const taken = new Set<string>()
  return media.map((ref, index) => {
    const base = KIND_RULES[ref.kind].localName(ref)
    let name = base
    for (let n = index + 1; taken.has(name.toLowerCase()); n++) name = `${n}-${base}`
    taken.add(name.toLowerCase())
    return { ref, name }
  })
}

function userFileName(ref: MediaRef): string {
  return (ref.fileName === null ? null : safeFileName(ref.fileName)) ?? `${ref.kind}${extensionFor(ref.mimeType)}`
}

function extensionFor(mimeType: string | null): string {
  if (mimeType === null) return ''
  const essence = mimeType.split(';')[0]?.trim().toLowerCase() ?? ''
  return MIME_EXTENSIONS.get(essence) ?? ''
}

/**
 * A user's file name made safe to create in our directory: the last path segment only, without
 * control characters, shell metacharacters, leading dots or a `..`, at most 100 characters with
 * its extension kept. Null when nothing usable is left.
 */
export function safeFileName(name: string): string | null {
  const lastSegment = name.split(/[/\\]/u).pop() ?? ''
  const cleaned = lastSegment
    .replace(INVISIBLE_CHARACTERS, '')
    .replace(UNSAFE_CHARACTERS, '_')
    .replace(/^[\s.]+|[\s.]+$/gu, '')
  if (cleaned === '') return null
  const dot = cleaned.lastIndexOf('.')
  const extension = dot > 0 && cleaned.length - dot <= MAX_EXTENSION_CHARS && !/\s/u.test(cleaned.slice(dot)) ? cleaned.slice(dot) : ''
  const stem = Array.from(cleaned.slice(0, cleaned.length - extension.length)).slice(0, MAX_NAME_CHARS - extension.length)
  while (stem.length > 0 && Buffer.byteLength(stem.join('') + extension) > MAX_NAME_BYTES) stem.pop()
  const trimmedStem = stem.join('').replace(/[\s.]+$/u, '')
  if (trimmedStem === '') return null
  return trimmedStem + extension
}
