import t, { type Test } from 'tap'
import v8 from 'node:v8'
import { Session } from 'node:inspector/promises'
import { pino } from 'pino'
import { HeapReducer } from '../../src/heap-reducer.js'

// The reducer in this very process: a burst of garbage grows V8's heap, and the reducer hands it
// back only once the event loop has been idle for IDLE_MS, check after check.
const MB = 2 ** 20
const CHECK_MS = 300
const IDLE_MS = 3 * CHECK_MS

interface Reduced {
  readonly heap_mb: number
  readonly heap_after_mb: number
  readonly ms: number
}

function reducer(t: Test): Reduced[] {
  const reduced: Reduced[] = []
  const log = pino({ level: 'info' }, { write: (line: string) => void reduced.push(JSON.parse(line) as Reduced) })
  const heap = new HeapReducer(log, { checkMs: CHECK_MS, idleMs: IDLE_MS, slackBytes: 32 * MB, idleUtilization: 0.5 })
  t.teardown(() => heap.close())
  return reduced
}

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const committedMB = (): number => v8.getHeapStatistics().total_heap_size / MB

/** A full collection, so that each test starts from a heap holding only what is live. */
async function collectAll(): Promise<void> {
  const session = new Session()
  session.connect()
  await session.post('HeapProfiler.collectGarbage')
  session.disconnect()
}

/**
 * Grows the heap by `byMB` committed, as a burst of requests does. The objects stay reachable
 * until the caller drops what it returns, so the heap grows at allocation speed rather than at
 * the pace the collector falls behind.
 */
async function burst(byMB: number): Promise<object[][]> {
  const start = committedMB()
  const kept: object[][] = []
  while (committedMB() < start + byMB) {
    const chunk: object[] = []
    for (let i = 0; i < 5000; i++) chunk.push({ text: `message ${i} ${Math.random()}`, ids: [i, i + 1] })
    kept.push(chunk)
    // Yielding with setImmediate keeps the loop busy (never idle for a check) but lets timers run.
    if (kept.length % 20 === 0) await new Promise((resolve) => setImmediate(resolve))
  }
  return kept
}

/** Keeps the event loop busy for `ms` with short-lived garbage, yielding to timers every few ms. */
async function busyFor(ms: number): Promise<void> {
  const until = performance.now() + ms
  let lastYield = performance.now()
  let inFlight: object[] = []
  while (performance.now() < until) {
    for (let i = 0; i < 1000; i++) inFlight.push({ text: `message ${i} ${Math.random()}` })
    if (inFlight.length > 20_000) inFlight = []
    if (performance.now() - lastYield >= 5) {
      await new Promise((resolve) => setImmediate(resolve))
      lastYield = performance.now()
    }
  }
}

t.test('after a burst, an idle loop gets the heap handed back', async (t) => {
  await collectAll()
  const reduced = reducer(t)
  await burst(96)
  const grown = committedMB()
  t.same(reduced, [], 'nothing handed back while the loop was busy')
  const until = Date.now() + 20 * CHECK_MS
  while (reduced.length === 0 && Date.now() < until) await delay(CHECK_MS)
  t.equal(reduced.length, 1, 'handed back once the loop idled')
  const [entry] = reduced as [Reduced]
  t.ok(entry.heap_after_mb < entry.heap_mb - 32, `the heap shrank: ${entry.heap_mb} → ${entry.heap_after_mb} MB committed (${entry.ms} ms)`)
  t.ok(committedMB() < grown - 32, `and stays smaller (${Math.round(grown)} → ${Math.round(committedMB())} MB)`)
  await delay(3 * CHECK_MS)
  t.equal(reduced.length, 1, 'once per burst: an idle loop with a small heap is left alone')
})

/**
 * Grows the heap and holds it while `keepLoop` works the event loop (calling `sample` now and then),
 * so that only the loop's business can hold the reducer back; then checks it did.
 */
async function heldBack(t: Test, keepLoop: (sample: () => void) => Promise<void>, why: string): Promise<void> {
  await collectAll()
  const reduced = reducer(t)
  const floor = committedMB()
  const held = await burst(64)
  let smallest = committedMB()
  await keepLoop(() => (smallest = Math.min(smallest, committedMB())))
  t.ok(smallest > floor + 32, `the heap stayed grown: at least ${Math.round(smallest)} MB committed over a floor of ${Math.round(floor)} MB`)
  t.same(reduced, [], why)
  t.ok(held.length > 0)
}

t.test('bursts with short idle stretches between them keep their heap', async (t) => {
  await heldBack(
    t,
    async (sample) => {
      const until = Date.now() + 6 * IDLE_MS
      while (Date.now() < until) {
        // An idle stretch of one check, then a busy one that holds a whole check: never IDLE_MS idle.
        await delay(CHECK_MS)
        await busyFor(2 * CHECK_MS + 50)
        sample()
      }
    },
    'no collection: the loop never idled for IDLE_MS',
  )
})

t.test('a loop that stays busy is never paused for it', async (t) => {
  await heldBack(
    t,
    async (sample) => {
      for (let check = 0; check < 6; check++) {
        await busyFor(CHECK_MS)
        sample()
      }
    },
    'no collection while the loop was busy through every check',
  )
})
