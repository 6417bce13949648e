/** An image format Telegram shows as a photo when a bot sends it with sendPhoto. */
export type PhotoFormat = 'jpeg' | 'png' | 'webp'

export interface ImageInfo {
  readonly format: PhotoFormat
  readonly mimeType: string
  readonly width: number
  readonly height: number
}

/** sendPhoto's limits (Bot API): at most 10 MB, width + height at most 10000, a ratio of at most 20. */
export const PHOTO_LIMITS = { maxBytes: 10 * 1024 * 1024, maxSidesSum: 10_000, maxRatio: 20 } as const

const MIME_TYPES: Readonly<Record<PhotoFormat, string>> = { jpeg: 'image/jpeg', png: 'image/png', webp: 'image/webp' }

/**
 * The format and size of a JPEG, PNG or WebP image, read from its first bytes; undefined for
 * anything else (or an image too damaged to tell).
 */
export function imageInfo(head: Buffer): ImageInfo | undefined {
  const found = pngSize(head) ?? jpegSize(head) ?? webpSize(head)
  if (found === undefined || found.width <= 0 || found.height <= 0) return undefined
  return { ...found, mimeType: MIME_TYPES[found.format] }
}

/** Whether Telegram would take an image of this size and these dimensions as a photo. */
export function fitsAsPhoto(info: ImageInfo, bytes: number): boolean {
  const { width, height } = info
  return (
    bytes <= PHOTO_LIMITS.maxBytes &&
    width + height <= PHOTO_LIMITS.maxSidesSum &&
    Math.max(width, height) / Math.min(width, height) <= PHOTO_LIMITS.maxRatio
  )
}

type Found = { format: PhotoFormat; width: number; height: number }

function pngSize(head: Buffer): Found | undefined {
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
  if (head.length < 24 || !head.subarray(0, 8).equals(signature) || head.toString('latin1', 12, 16) !== 'IHDR') return undefined
  return { format: 'png', width: head.readUInt32BE(16), height: head.readUInt32BE(20) }
}

function jpegSize(head: Buffer): Found | undefined {
  if (head.length < 4 || head[0] !== 0xff || head[1] !== 0xd8) return undefined
  // Walk the segments to the first start-of-frame marker (SOF0–SOF15 but DHT, JPG and DAC).
  let offset = 2
  while (offset + 9 < head.length) {
    if (head[offset] !== 0xff) return undefined
    const marker = head[offset + 1] as number
    if (marker === 0xff) {
      offset++
      continue
    }
    const length = head.readUInt16BE(offset + 2)
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      return { format: 'jpeg', height: head.readUInt16BE(offset + 5), width: head.readUInt16BE(offset + 7) }
    }
    offset += 2 + length
  }
  return undefined
}

function webpSize(head: Buffer): Found | undefined {
  if (head.length < 30 || head.toString('latin1', 0, 4) !== 'RIFF' || head.toString('latin1', 8, 12) !== 'WEBP') return undefined
  const chunk = head.toString('latin1', 12, 16)
  if (chunk === 'VP8 ') return { format: 'webp', width: head.readUInt16LE(26) & 0x3fff, height: head.readUInt16LE(28) & 0x3fff }
  if (chunk === 'VP8L') {
    const bits = head.readUInt32LE(21)
    return { format: 'webp', width: (bits & 0x3fff) + 1, height: ((bits >> 14) & 0x3fff) + 1 }
  }
  if (chunk === 'VP8X') return { format: 'webp', width: head.readUIntLE(24, 3) + 1, height: head.readUIntLE(27, 3) + 1 }
  return undefined
}
