import { badRequest } from './api-error.js'

/** Telegram's limit for a file a bot uploads (multipart/form-data): 50 MB. */
export const MAX_UPLOAD_SIZE = 50 * 1024 * 1024

/** A file a bot uploaded with its call (sendPhoto, sendDocument), as multipart/form-data. */
export class UploadedFile {
  readonly fileName: string
  readonly mimeType: string
  readonly bytes: Buffer

  constructor(fileName: string, mimeType: string, bytes: Buffer) {
    this.fileName = fileName
    this.mimeType = mimeType
    this.bytes = bytes
  }

  /** How a recorded call shows the upload: its name, type and size, never its bytes. */
  toJSON(): { upload: string; mime_type: string; size: number } {
    return { upload: this.fileName, mime_type: this.mimeType, size: this.bytes.length }
  }
}

/** A multipart/form-data body's fields: strings, and files as {@link UploadedFile}. */
export async function readMultipart(body: Buffer, contentType: string): Promise<Record<string, unknown>> {
  let form: FormData
  try {
    form = await new Response(body, { headers: { 'content-type': contentType } }).formData()
  } catch {
    throw badRequest("can't parse multipart/form-data body")
  }
  const params: Record<string, unknown> = {}
  for (const [name, value] of form) {
    params[name] =
      typeof value === 'string'
        ? value
        : new UploadedFile(value.name, value.type || 'application/octet-stream', Buffer.from(await value.arrayBuffer()))
  }
  return params
}

/**
 * The file a parameter names: an upload in the same request, given directly or as
 * "attach://<field>" (how grammY and the Bot API name multipart files), or undefined for a string
 * (a file_id or URL, which the caller resolves).
 */
export function uploadIn(params: Readonly<Record<string, unknown>>, name: string): UploadedFile | string | undefined {
  const value = params[name]
  if (value instanceof UploadedFile) return value
  if (typeof value !== 'string' || value === '') return undefined
  const attached = /^attach:\/\/(.+)$/u.exec(value)?.[1]
  if (attached === undefined) return value
  const file = params[attached]
  if (!(file instanceof UploadedFile)) throw badRequest(`wrong HTTP URL specified: attach://${attached} names no uploaded file`)
  return file
}
