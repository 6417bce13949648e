import fs from 'node:fs'
import path from 'node:path'
import { fitsAsPhoto, imageInfo } from './image-size.js'
import type { OutgoingFile } from './client.js'

/** Files a run may send back (fd-3 `file` events); more are refused. */
export const FILE_EVENTS_MAX = 10
/** The Bot API's limit for a file a bot uploads. */
export const FILE_BYTES_MAX = 50 * 1024 * 1024
// Enough of a file to tell an image's format and size (a JPEG's EXIF block comes first).
const HEAD_BYTES = 256 * 1024

/** A file event the service will not act on; the message says why, without server paths. */
export class FileRefused extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'FileRefused'
  }
}

/**
 * Reads a file the brain asked to send, if it lies in one of `allowedDirs` (the chat's directory,
 * BRAIN_CWD) once symlinks are resolved, is a regular file and is at most {@link FILE_BYTES_MAX}.
 * A relative path is taken from `cwd` (the brain's working directory). The file is opened first
 * and its real path checked through the open descriptor, so a symlink swapped in between cannot
 * lead outside. Throws {@link FileRefused} otherwise.
 */
export async function readBrainFile(
  requested: string,
  options: { cwd: string; allowedDirs: readonly string[]; caption?: string | undefined },
): Promise<OutgoingFile> {
  const name = path.basename(requested)
  const absolute = path.resolve(options.cwd, requested)
  let handle: fs.promises.FileHandle
  try {
    handle = await fs.promises.open(absolute, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw new FileRefused(code === 'ENOENT' ? `${name}: no such file` : `${name}: cannot be opened (${code ?? 'error'})`)
  }
  try {
    const real = await fs.promises.readlink(`/proc/self/fd/${handle.fd}`).catch(() => fs.promises.realpath(absolute))
    const roots = await Promise.all(options.allowedDirs.map((dir) => fs.promises.realpath(dir).catch(() => path.resolve(dir))))
    if (!roots.some((root) => isInside(real, root))) {
      throw new FileRefused(`${name}: outside the chat's directory and the brain's working directory`)
    }
    const stat = await handle.stat()
    if (!stat.isFile()) throw new FileRefused(`${name}: not a regular file`)
    if (stat.size > FILE_BYTES_MAX) {
      throw new FileRefused(`${name}: ${megabytes(stat.size)} MB is over the ${megabytes(FILE_BYTES_MAX)} MB Telegram allows`)
    }
    if (stat.size === 0) throw new FileRefused(`${name}: empty`)
    const bytes = await handle.readFile()
    // The file may have grown since the stat.
    if (bytes.length > FILE_BYTES_MAX) throw new FileRefused(`${name}: over the ${megabytes(FILE_BYTES_MAX)} MB Telegram allows`)
    const image = imageInfo(bytes.subarray(0, HEAD_BYTES))
    const kind = image !== undefined && fitsAsPhoto(image, bytes.length) ? 'photo' : 'document'
    return { kind, bytes, fileName: name, caption: options.caption }
  } finally {
    await handle.close()
  }
}

function isInside(file: string, root: string): boolean {
  const relative = path.relative(root, file)
  return relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative)
}

function megabytes(bytes: number): string {
  return String(Math.round((bytes / 1024 / 1024) * 10) / 10)
}
