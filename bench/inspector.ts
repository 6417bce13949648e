// Forces a full garbage collection in another node process through its inspector (started with
// --inspect), and prints the JS heap before and after as one JSON line: {msg: "gc", before, after}.
// Node 20 needs --experimental-websocket for the global WebSocket; run.ts passes it when needed.
//   node [--experimental-websocket] build/bench/inspector.js ws://127.0.0.1:PORT/ID

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

const url = process.argv[2]
const WebSocketImpl = (globalThis as { WebSocket?: WebSocketClass }).WebSocket
if (!url || WebSocketImpl === undefined) {
  process.stderr.write('inspector: pass the ws:// URL, and run with --experimental-websocket on Node 20\n')
  process.exit(2)
}

const socket = new WebSocketImpl(url)
const waiting = new Map<number, (result: unknown) => void>()
let nextId = 1
socket.addEventListener('message', (event) => {
  const message = JSON.parse(String(event.data)) as { id?: number; result?: unknown }
  if (message.id !== undefined) waiting.get(message.id)?.(message.result)
})
const call = (method: string): Promise<unknown> =>
  new Promise((resolve) => {
    const id = nextId++
    waiting.set(id, resolve)
    socket.send(JSON.stringify({ id, method }))
  })

await new Promise<void>((resolve, reject) => {
  socket.addEventListener('open', () => resolve())
  socket.addEventListener('error', () => reject(new Error(`inspector: could not connect to ${url}`)))
})
const before = (await call('Runtime.getHeapUsage')) as HeapUsage
await call('HeapProfiler.collectGarbage')
const after = (await call('Runtime.getHeapUsage')) as HeapUsage
socket.close()
process.stdout.write(`${JSON.stringify({ level: 30, msg: 'gc', time: Date.now(), before, after })}\n`)
process.exit(0)
