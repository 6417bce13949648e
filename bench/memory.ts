// Memory: the service's RSS with 10,000 chats × 10 queued messages behind busy brain slots, and
// again once every chat's queue is drained.
import autocannon from 'autocannon'
import {
  HEADERS,
  SLOTS,
  WEBHOOK_PATH,
  anonymousOf,
  delay,
  inspectorUrlOf,
  memoryOf,
  registerChats,
  startEmulatorProcess,
  startInspector,
  startService,
  textUpdate,
  waitForHealth,
  type AnonymousMemory,
  type RunningService,
} from './harness.js'
import { PAGE_CACHE_KIB } from '../src/store/sqlite.js'
import { table, verdict, type Section } from './report.js'
import { fmt } from './stats.js'

const PER_CHAT = 10
const CONNECTIONS = 10
const BUSY_CHAT_BASE = 900_000
const SAMPLE_EVERY_MS = 250
const SETTLE_MS = 2000
// A settled reading: RSS sampled every second until the last 25 are within 2 MB (at most 75 s),
// longer than the heap reducer waits before it hands a burst back (15 s idle, checked every 5 s).
const SAMPLE_SETTLED_MS = 1000
const STEADY_SAMPLES = 25
const STEADY_MB = 2
const SETTLE_MAX_MS = 75_000
const RSS_TARGET_MB = 150
// "Back near baseline": at most this much above the idle service's RSS once drained (after a GC).
const NEAR_BASELINE_MB = 20

export interface MemoryOptions {
  readonly chats: number
}

interface Reading {
  readonly phase: string
  readonly rssMB: number
  readonly anonMB: number
  /** V8's heap after a forced full GC, when this reading follows one: live objects, and what V8 keeps committed. */
  readonly heap?: Heap
  /** With `heap`: the anonymous memory by who maps it (malloc's arenas, the rest). */
  readonly split?: AnonymousMemory
}

interface Heap {
  readonly usedMB: number
  readonly totalMB: number
}

export async function memoryBenchmark({ chats }: MemoryOptions): Promise<Section> {
  const queued = chats * PER_CHAT
  process.stdout.write(`memory: ${chats} chats × ${PER_CHAT} messages = ${queued} queued behind ${SLOTS} hanging brains\n`)
  const emulator = await startEmulatorProcess()
  try {
    const chatIds = Array.from({ length: chats }, (_, i) => i + 1)
    const busyChats = Array.from({ length: SLOTS }, (_, i) => BUSY_CHAT_BASE + i)
    await registerChats(emulator.url, [...chatIds, ...busyChats])
    const service = await startService({ apiRoot: emulator.url, nodeArgs: ['--inspect=127.0.0.1:0'] })
    try {
      return await measure(service, chatIds, busyChats)
    } finally {
      await service.child.stop()
    }
  } finally {
    await emulator.child.stop()
  }
}

async function measure(service: RunningService, chatIds: readonly number[], busyChats: readonly number[]): Promise<Section> {
  const pid = service.child.pid
  const inspectorUrl = await inspectorUrlOf(service.child)
  const readings: Reading[] = []
  const read = async (phase: string, gc: boolean): Promise<void> => {
    await delay(SETTLE_MS)
    const heap = gc ? await forceGc(inspectorUrl) : undefined
    const { rssMB, anonMB } = memoryOf(pid)
    readings.push({ phase, rssMB, anonMB, ...(heap === undefined ? {} : { heap, split: anonymousOf(pid) }) })
  }
  /** RSS once it stopped moving: what the service holds while it idles, after its heap reducer ran. */
  const readSettled = async (phase: string): Promise<number> => {
    const started = performance.now()
    const samples: number[] = []
    for (;;) {
      await delay(SAMPLE_SETTLED_MS)
      samples.push(memoryOf(pid).rssMB)
      const last = samples.slice(-STEADY_SAMPLES)
      const steady = last.length === STEADY_SAMPLES && Math.max(...last) - Math.min(...last) <= STEADY_MB
      if (steady || performance.now() - started >= SETTLE_MAX_MS) break
    }
    const { rssMB, anonMB } = memoryOf(pid)
    readings.push({ phase, rssMB, anonMB })
    return (performance.now() - started) / 1000
  }
  let nextUpdateId = 1
  let nextCommandId = 10_000_000

  for (const chatId of busyChats) await post(service.url, textUpdate(nextUpdateId++, chatId, 1, 'hang'))
  await waitForHealth(service.url, (report) => report.brains.running === SLOTS, 10_000, `${SLOTS} brains running`)
  await read('idle, slots busy', false)
  await read('idle, after a forced GC (baseline)', true)
  const baseline = readings.at(-1)?.rssMB ?? Number.NaN

  const total = chatIds.length * PER_CHAT
  let sampledPeak = 0
  const sampler = setInterval(() => {
    sampledPeak = Math.max(sampledPeak, memoryOf(pid).rssMB)
  }, SAMPLE_EVERY_MS)
  const fillStarted = performance.now()
  let sent = 0
  const fill = await autocannon({
    url: service.url,
    connections: CONNECTIONS,
    amount: total,
    requests: [
      {
        method: 'POST',
        path: WEBHOOK_PATH,
        headers: HEADERS,
        // Round-robin over the chats, so each ends up with PER_CHAT messages.
        setupRequest: (request) => ({ ...request, body: textUpdate(nextUpdateId++, chatIds[sent++ % chatIds.length] as number, 1, 'silent') }),
      },
    ],
  })
  const fillS = (performance.now() - fillStarted) / 1000
  clearInterval(sampler)
  if (fill.non2xx > 0 || fill.errors > 0) throw new Error(`memory: filling the queues got ${fill.non2xx} non-2xx answers and ${fill.errors} errors`)
  await waitForHealth(service.url, (report) => report.queue.pending >= total, 10_000, `${total} queued`)
  await read(`${total} queued, ${SETTLE_MS / 1000} s after the fill`, false)
  const rightAfterFill = readings.at(-1)?.rssMB ?? Number.NaN
  const queuedSettleS = await readSettled(`${total} queued, settled`)
  const queuedRss = readings.at(-1)?.rssMB ?? Number.NaN
  // VmHWM only grows: read now, it is the peak of everything so far.
  const peakDuringFill = Math.max(sampledPeak, memoryOf(pid).peakMB)
  await read(`${total} queued, after a forced GC`, true)
  const queuedHeap = readings.at(-1)?.heap
  const idleHeap = readings[1]?.heap
  const heapPerMessage = (((queuedHeap?.usedMB ?? Number.NaN) - (idleHeap?.usedMB ?? Number.NaN)) * 1e6) / total

  // `/cancel all` stops each chat's waiting job and drops its queue; `/cancel` frees the slots.
  const drainStarted = performance.now()
  let cancelled = 0
  const drain = await autocannon({
    url: service.url,
    connections: CONNECTIONS,
    amount: chatIds.length,
    requests: [
      {
        method: 'POST',
        path: WEBHOOK_PATH,
        headers: HEADERS,
        setupRequest: (request) => ({ ...request, body: textUpdate(nextCommandId++, chatIds[cancelled++ % chatIds.length] as number, 1, '/cancel all') }),
      },
    ],
  })
  if (drain.non2xx > 0 || drain.errors > 0) throw new Error(`memory: /cancel all got ${drain.non2xx} non-2xx answers and ${drain.errors} errors`)
  for (const chatId of busyChats) await post(service.url, textUpdate(nextCommandId++, chatId, 1, '/cancel'))
  await waitForHealth(service.url, (r) => r.queue.pending === 0 && r.queue.chats === 0 && r.brains.running === 0, 120_000, 'every queue drained')
  const drainS = (performance.now() - drainStarted) / 1000
  const peakAfterDrain = memoryOf(pid).peakMB
  await read(`drained, ${SETTLE_MS / 1000} s after`, false)
  const drainedSettleS = await readSettled('drained, settled')
  const drained = readings.at(-1)?.rssMB ?? Number.NaN
  await read('drained, after a forced GC', true)
  const drainedGc = readings.at(-1)?.rssMB ?? Number.NaN
  const drainedHeap = readings.at(-1)?.heap
  const grown = (key: keyof AnonymousMemory): string => fmt((readings.at(-1)?.split?.[key] ?? Number.NaN) - (readings[1]?.split?.[key] ?? Number.NaN), 1)

  const rows = readings.map((r) => [r.phase, fmt(r.rssMB, 1), fmt(r.anonMB, 1), r.heap ? fmt(r.heap.usedMB, 1) : '', r.heap ? fmt(r.heap.totalMB, 1) : ''])
  rows.splice(2, 0, [`peak while filling (VmHWM)`, fmt(peakDuringFill, 1), '', '', ''])
  rows.splice(6, 0, [`peak while draining (VmHWM)`, peakAfterDrain > peakDuringFill ? fmt(peakAfterDrain, 1) : 'no higher', '', '', ''])
  return {
    title: 'Memory',
    method: [
      `The service (SQLite inbox) with ${SLOTS} \`hang\` brains in the slots takes ${chatIds.length} chats × ${PER_CHAT} messages through the webhook`,
      `(autocannon, ${CONNECTIONS} connections): ${total} queued, nothing drains. Then \`/cancel all\` in every chat and \`/cancel\` in the busy`,
      `ones empty every queue without running a brain. RSS is VmRSS from /proc/<pid>/status, ${SETTLE_MS / 1000} s after each step, and`,
      `"settled" once it stops moving (the last ${STEADY_SAMPLES} of readings a second apart within ${STEADY_MB} MB, at most ${SETTLE_MAX_MS / 1000} s): what the idle`,
      `service holds, once its heap reducer (src/heap-reducer.ts) has handed back what the burst left. The targets are judged settled;`,
      `"forced GC" is a full collection through the inspector (the service runs with --inspect), with V8's heap after it: the live`,
      `objects ("used") and the memory V8 keeps for its heap ("committed"); anonymous RSS beyond that is native (malloc, buffers, SQLite).`,
    ].join('\n'),
    body: [
      table(['phase', 'RSS MB', 'of which anonymous MB', 'JS heap used MB', 'JS heap committed MB'], rows),
      '',
      `Filling took ${fmt(fillS, 1)} s (${fmt(total / fillS, 0)} updates/s); draining took ${fmt(drainS, 1)} s.`,
      `Settling took ${fmt(queuedSettleS, 0)} s with the queues full and ${fmt(drainedSettleS, 0)} s drained.`,
      `Live JS heap per queued message (after GC, over the idle service's): ${fmt(heapPerMessage, 0)} bytes.`,
      '',
      `- RSS with ${total} queued, settled: **${fmt(queuedRss, 1)} MB** (target ≤ ${RSS_TARGET_MB} MB: ${verdict(queuedRss <= RSS_TARGET_MB)}); ${fmt(rightAfterFill, 1)} MB ${SETTLE_MS / 1000} s after the fill, peak ${fmt(peakDuringFill, 1)} MB`,
      `- drained, settled: **${fmt(drained, 1)} MB** (after a forced GC ${fmt(drainedGc, 1)} MB), baseline ${fmt(baseline, 1)} MB (target: within ${NEAR_BASELINE_MB} MB: ${verdict(drained - baseline <= NEAR_BASELINE_MB)})`,
    ].join('\n'),
    targets: [
      {
        target: `RSS ≤ ${RSS_TARGET_MB} MB with ${total} queued`,
        measured: `${fmt(queuedRss, 1)} MB settled (${SETTLE_MS / 1000} s after the fill ${fmt(rightAfterFill, 1)}, peak ${fmt(peakDuringFill, 1)} MB)`,
        met: queuedRss <= RSS_TARGET_MB,
        whenMissed:
          `In this run, after a forced GC with ${total} queued: JS heap used ${fmt(queuedHeap?.usedMB ?? Number.NaN, 1)} MB ` +
          `(idle: ${fmt(idleHeap?.usedMB ?? Number.NaN, 1)} MB), ${fmt(heapPerMessage, 0)} bytes per queued message; ` +
          `${fmt(heapPerMessage * PER_CHAT, 0)} bytes per waiting chat.`,
      },
      {
        target: `RSS back near baseline after draining (≤ baseline + ${NEAR_BASELINE_MB} MB)`,
        measured: `${fmt(drained, 1)} MB settled vs ${fmt(baseline, 1)} MB (after a forced GC: ${fmt(drainedGc, 1)} MB)`,
        met: drained - baseline <= NEAR_BASELINE_MB,
        whenMissed:
          `In this run, drained and after a forced GC: JS heap used ${fmt(drainedHeap?.usedMB ?? Number.NaN, 1)} MB ` +
          `(idle: ${fmt(idleHeap?.usedMB ?? Number.NaN, 1)} MB), committed ${fmt(drainedHeap?.totalMB ?? Number.NaN, 1)} MB ` +
          `(idle: ${fmt(idleHeap?.totalMB ?? Number.NaN, 1)} MB), so ${fmt(drainedGc - baseline - ((drainedHeap?.totalMB ?? 0) - (idleHeap?.totalMB ?? 0)), 1)} MB of the rise is outside V8's heap. ` +
          `Anonymous memory over idle: glibc's main arena +${grown('mainArenaMB')} MB, its thread arenas +${grown('threadArenasMB')} MB, ` +
          `the rest (V8's heap and code pages, stacks) +${grown('otherMB')} MB. What the arenas hold is mostly free memory that malloc keeps ` +
          `(holes the fill left in the main arena, V8's compiler zones freed on its worker threads' arenas), which only malloc_trim(3) would ` +
          `hand back and Node cannot call; SQLite's page cache is held to ${PAGE_CACHE_KIB} KiB (src/store/sqlite.ts). See ` +
          `docs/analysis/2026-12-06-backlog-memory-and-intake-cpu.md, "What holds the memory after draining".`,
      },
    ],
  }
}

async function post(serviceUrl: string, body: string): Promise<void> {
  const response = await fetch(`${serviceUrl}${WEBHOOK_PATH}`, { method: 'POST', headers: HEADERS, body })
  if (response.status !== 200) throw new Error(`webhook answered ${response.status}: ${await response.text()}`)
  await response.arrayBuffer()
}


/** Full GC in the service; returns V8's heap after it. */
async function forceGc(inspectorUrl: string): Promise<Heap> {
  const child = startInspector(inspectorUrl)
  const line = await child.waitForLog((l) => l.msg === 'gc', 30_000)
  await child.exited
  const after = line['after'] as { usedSize: number; totalSize: number }
  return { usedMB: after.usedSize / 1e6, totalMB: after.totalSize / 1e6 }
}
