import { once } from 'node:events'
import type { Readable } from 'node:stream'
import { setTimeout as delay } from 'node:timers/promises'

/** Keeps the first `limit` bytes of a stream and counts the rest; the pipe keeps draining. */
export class OutputHead {
  readonly #limit: number
  readonly #chunks: Buffer[] = []
  #kept = 0
  #total = 0

  constructor(limit: number) {
    this.#limit = limit
  }

  push(chunk: Buffer): void {
    this.#total += chunk.length
    const room = this.#limit - this.#kept
    if (room <= 0) return
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk
    this.#chunks.push(part)
    this.#kept += part.length
  }

  get totalBytes(): number {
    return this.#total
  }

  get truncated(): boolean {
    return this.#total > this.#kept
  }

  /** The kept bytes as UTF-8, never ending in half a character. */
  text(): string {
    const bytes = Buffer.concat(this.#chunks, this.#kept)
    return bytes.subarray(0, this.truncated ? completeUtf8Length(bytes) : bytes.length).toString('utf8')
  }
}

/** Keeps the last `limit` bytes of a stream. */
export class OutputTail {
  readonly #limit: number
  #chunks: Buffer[] = []
  #bytes = 0
  #total = 0

  constructor(limit: number) {
    this.#limit = limit
  }

  push(chunk: Buffer): void {
    this.#chunks.push(chunk)
    this.#bytes += chunk.length
    this.#total += chunk.length
    // Compact only past twice the limit, so a flood costs linear time.
    if (this.#bytes > 2 * this.#limit) {
      const tail = this.#tail()
      this.#chunks = [tail]
      this.#bytes = tail.length
    }
  }

  /** The kept bytes as UTF-8, never starting in the middle of a character. */
  text(): string {
    const tail = this.#tail()
    let start = 0
    // A cut through a character leaves at most 3 continuation bytes (10xxxxxx) in front.
    if (this.#total > tail.length) {
      while (start < 3 && start < tail.length && ((tail[start] as number) & 0xc0) === 0x80) start++
    }
    return tail.subarray(start).toString('utf8')
  }

  #tail(): Buffer {
    const all = Buffer.concat(this.#chunks, this.#bytes)
    return all.length > this.#limit ? all.subarray(all.length - this.#limit) : all
  }
}

/** The length of the longest prefix of `bytes` that does not end inside a UTF-8 sequence. */
function completeUtf8Length(bytes: Buffer): number {
  for (let i = bytes.length - 1; i >= 0 && i >= bytes.length - 4; i--) {
    const byte = bytes[i] as number
    if ((byte & 0xc0) === 0x80) continue
    const length = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1
    return i + length <= bytes.length ? bytes.length : i
  }
  return bytes.length
}

/** Waits until every stream has closed, or `ms` passed; leaves no listener or timer behind. */
export async function drainPipes(streams: readonly Readable[], ms: number): Promise<void> {
  const open = streams.filter((stream) => !stream.closed)
  if (open.length === 0) return
  const done = new AbortController()
  const closed = Promise.all(open.map((stream) => once(stream, 'close', { signal: done.signal }).catch(() => undefined)))
  const timeout = delay(ms, undefined, { signal: done.signal }).catch(() => undefined)
  try {
    await Promise.race([closed, timeout])
  } finally {
    done.abort()
  }
}
