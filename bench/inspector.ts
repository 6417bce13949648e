// Works on another node process through its inspector (started with --inspect). By default it
// forces a full garbage collection and prints the JS heap before and after as one JSON line:
// {msg: "gc", before, after}. With --profile FILE --seconds S it records a CPU profile of the next S
// seconds into FILE, then prints {msg: "profiled"}.
//   node build/bench/inspector.js ws://127.0.0.1:PORT/ID [--profile FILE --seconds S]
import fs from 'node:fs'
import { parseArgs } from 'node:util'

interface MinimalWebSocket {
  addEventListener(type: 'open' | 'error' | 'close', listener: () => void): void
  addEventListener(type: 'message', listener: (event: { data: unknown }) => void): void
  send(data: string): void
  close(): void
}
type WebSocketClass = new (url: string) => MinimalWebSocket

interface HeapUsage {
  readonly usedSize: number
  readonly totalSize: number
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { profile: { type: 'string' }, seconds: { type: 'string' } } })
const url = positionals[0]
const WebSocketImpl = (globalThis as { WebSocket?: WebSocketClass }).WebSocket
if (!url || WebSocketImpl === undefined) {
  process.stderr.write('inspector: pass the ws:// URL\n')
  process.exit(2)
}

const socket = new WebSocketImpl(url)
const waiting = new Map<number, (result: unknown) => void>()
let nextId = 1
socket.addEventListener('message', (event) => {
  const message = JSON.parse(String(event.data)) as { id?: number; result?: unknown }
  if (message.id !== undefined) waiting.get(message.id)?.(message.result)
})
const call = (method: string, params: Record<string, unknown> = {}): Promise<unknown> =>
  new Promise((resolve) => {
    const id = nextId++
    waiting.set(id, resolve)
    socket.send(JSON.stringify({ id, method, params }))
  })

await new Promise<void>((resolve, reject) => {
  socket.addEventListener('open', () => resolve())
  socket.addEventListener('error', () => reject(new Error(`inspector: could not connect to ${url}`)))
})
if (values.profile !== undefined) {
  await call('Profiler.enable')
  await call('Profiler.start')
  await new Promise((resolve) => setTimeout(resolve, Number(values.seconds ?? 5) * 1000))
  const { profile } = (await call('Profiler.stop')) as { profile: unknown }
  fs.writeFileSync(values.profile, JSON.stringify(profile))
  socket.close()
  process.stdout.write(`${JSON.stringify({ level: 30, msg: 'profiled', time: Date.now() })}\n`)
} else {
  const before = (await call('Runtime.getHeapUsage')) as HeapUsage
  await call('HeapProfiler.collectGarbage')
  const after = (await call('Runtime.getHeapUsage')) as HeapUsage
  socket.close()
  process.stdout.write(`${JSON.stringify({ level: 30, msg: 'gc', time: Date.now(), before, after })}\n`)
}
process.exit(0)
