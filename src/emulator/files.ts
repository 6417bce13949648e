import type { File } from 'grammy/types'

/** Bots may download files up to 20 MB; getFile refuses bigger ones with "file is too big". */
export const MAX_DOWNLOAD_SIZE = 20 * 1024 * 1024

/** A file a test makes known to the emulator, as if a user had uploaded it to Telegram. */
export interface EmulatedFile {
  readonly file_id: string
  readonly file_unique_id: string
  readonly bytes: Buffer
  /** Where the file server serves it; defaults to `files/<file_unique_id>`. */
  readonly file_path?: string
  /** The size getFile reports; defaults to `bytes.length`. Set it to emulate a huge file cheaply. */
  readonly file_size?: number
}

interface StoredFile {
  readonly info: Required<Pick<File, 'file_id' | 'file_unique_id' | 'file_size' | 'file_path'>>
  readonly bytes: Buffer
}

/** The files behind getFile and the file server (`/file/bot<token>/<file_path>`). */
export class FileStore {
  readonly #byId = new Map<string, StoredFile>()
  readonly #byPath = new Map<string, StoredFile>()

  /** Registers (or replaces) a file; returns what getFile will answer for it. */
  add(file: EmulatedFile): File {
    if (typeof file.file_id !== 'string' || file.file_id === '') {
      throw new TypeError(`addFile needs a non-empty file_id; got ${JSON.stringify(file.file_id)}`)
    }
    if (!Buffer.isBuffer(file.bytes)) {
      throw new TypeError(`addFile needs the file's bytes as a Buffer (file_id ${file.file_id})`)
    }
    const info = {
      file_id: file.file_id,
      file_unique_id: file.file_unique_id,
      file_size: file.file_size ?? file.bytes.length,
      file_path: file.file_path ?? `files/${file.file_unique_id}`,
    }
    const previous = this.#byId.get(file.file_id)
    if (previous) this.#byPath.delete(previous.info.file_path)
    const stored = { info, bytes: file.bytes }
    this.#byId.set(info.file_id, stored)
    this.#byPath.set(info.file_path, stored)
    return { ...info }
  }

  /** What getFile answers for a file id, or undefined when the id is unknown. */
  info(fileId: string): StoredFile['info'] | undefined {
    return this.#byId.get(fileId)?.info
  }

  /** The bytes the file server sends for a path, or undefined when nothing lives there. */
  bytesAt(filePath: string): Buffer | undefined {
    return this.#byPath.get(filePath)?.bytes
  }

  clear(): void {
    this.#byId.clear()
    this.#byPath.clear()
  }
}
