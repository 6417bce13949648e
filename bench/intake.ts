// Intake: how many updates per second the webhook takes in while every brain slot is busy, beside
// the essential work alone (bare Fastify + the same grammY reaction) and the in-memory inbox.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import autocannon from 'autocannon'
import {
  BENCH_BUILD,
  BenchChild,
  HEADERS,
  SECRET,
  SLOTS,
  TOKEN,
  WEBHOOK_PATH,
  cpuSecondsOf,
  delay,
  freePort,
  inspectorUrlOf,
  probeHealth,
  type Probed,
  registerChats,
  startEmulatorProcess,
  startInspector,
  startService,
  tempDir,
  textUpdate,
  waitForHealth,
  waitUntilUp,
  type EmulatorProcess,
} from './harness.js'
import type { ServiceProcess } from '../src/demo/service.js'
import { table, verdict, type Section } from './report.js'
import { fmt, median, summarize, withMissing, type Summary } from './stats.js'
import { summarizeProfile, type Profile } from './profile-parts.js'

const CHATS = 1000
const CONNECTIONS = 10
const HEALTH_CHECKS_PER_S = 20
// Each variant's run is cut into this many slices, taken in turn with the other variants', so that
// the machine's background load drifting during the benchmark weighs on every variant alike.
const ROUNDS = 3
// Each variant first takes this much load unmeasured (JIT, connections, first-time code paths).
const WARM_UP_S = 1
// Below every variant's saturation on a small machine, so CPU per update compares like with like.
const FIXED_RATE_PER_S = 400
const FIXED_RATE_S = 5
// Each variant's load goes to its own chats (so the emulator's reactions can be told apart), after
// the SLOTS chats whose `hang` messages hold its brain slots.
const CHAT_RANGE = 10_000

export interface IntakeOptions {
  readonly durationS: number
}

interface Variant {
  readonly name: string
  readonly url: string
  readonly child: BenchChild | ServiceProcess
  /** Its chats are firstChat + 1 … firstChat + CHATS. */
  readonly firstChat: number
  /** The 👀 rides in the webhook's answer (ACK_MODE=webhook-reply): the emulator never sees it. */
  readonly ackInAnswer: boolean
  /** A service (with /healthz), not the essential route. */
  readonly isService: boolean
}

/** What the slices of one variant add up to. */
// A slice without a /healthz poller (the essential route, the fixed-rate slices).
// The targets: durable intake throughput against the essential route's, and CPU per update.
const THROUGHPUT_TARGET = 0.6
const CPU_RATIO_TARGET = 1.5

const NO_PROBE: Probed = { latencies: [], failures: 0 }

interface Tally {
  requests: number
  seconds: number
  non2xx: number
  errors: number
  readonly p50s: number[]
  readonly p99s: number[]
  readonly health: number[]
  healthFailures: number
  cpu: Cpu
}

/** CPU seconds (in a tally) or µs per request (in a row): the variant's process, the emulator, this process (autocannon). */
interface Cpu {
  readonly variant: number
  readonly emulator: number
  readonly loadGenerator: number
}

interface Row {
  readonly name: string
  readonly rps: number
  /** Medians over the slices of autocannon's per-slice percentiles. */
  readonly p50: number
  readonly p99: number
  readonly non2xx: number
  readonly errors: number
  /** setMessageReaction calls the emulator answered 200 during the measured slices; undefined when the 👀 rides in the answer. */
  readonly reactions: number | undefined
  readonly health: Summary | undefined
  /** µs per request at saturation. */
  readonly cpu: Cpu
  /** µs per request at FIXED_RATE_PER_S, where every variant keeps up: what one update costs, free of queueing effects. */
  readonly cpuAtFixedRate: Cpu
}

let nextUpdateId = 1

export async function intakeBenchmark({ durationS }: IntakeOptions): Promise<Section> {
  const sliceS = durationS / ROUNDS
  process.stdout.write(`intake: ${durationS} s per variant in ${ROUNDS} slices, ${CONNECTIONS} connections, ${CHATS} chats, ${SLOTS} brain slots busy\n`)
  const emulator = await startEmulatorProcess()
  const variants: Variant[] = []
  try {
    const specs: readonly { name: string; env: Record<string, string> }[] = [
      { name: 'durable (INBOX=sqlite)', env: {} },
      { name: 'durable, ACK_MODE=webhook-reply', env: { ACK_MODE: 'webhook-reply' } },
      { name: 'memory (INBOX=memory)', env: { INBOX: 'memory' } },
    ]
    for (const [i, spec] of specs.entries()) variants.push(await startServiceVariant(emulator, spec.name, spec.env, (i + 1) * CHAT_RANGE))
    variants.push(await startEssential(emulator, (specs.length + 1) * CHAT_RANGE))

    // A different variant goes first in each round.
    const inTurn = (round: number): Variant[] => [...variants.slice(round % variants.length), ...variants.slice(0, round % variants.length)]
    const saturated = new Map(variants.map((variant) => [variant, emptyTally()]))
    const fixedRate = new Map(variants.map((variant) => [variant, emptyTally()]))
    for (const variant of variants) await hammer(variant, emulator, WARM_UP_S)
    const since = await callCount(emulator.url)
    for (let round = 0; round < ROUNDS; round++) {
      for (const variant of inTurn(round)) {
        const probe = variant.isService ? probeHealth(variant.url, HEALTH_CHECKS_PER_S, sliceS) : undefined
        add(saturated.get(variant) as Tally, await hammer(variant, emulator, sliceS), await probe?.result)
        await delay(300)
      }
    }
    await delay(1000)
    const reactions = await reactionsByVariant(emulator.url, since, variants)
    const fixedSliceS = Math.min(FIXED_RATE_S, durationS) / ROUNDS
    for (let round = 0; round < ROUNDS; round++) {
      for (const variant of inTurn(round)) add(fixedRate.get(variant) as Tally, await hammer(variant, emulator, fixedSliceS, FIXED_RATE_PER_S))
    }
    const rows = variants.map((variant) =>
      toRow(variant, saturated.get(variant) as Tally, reactions.get(variant) ?? 0, fixedRate.get(variant) as Tally),
    )
    for (const variant of variants) await variant.child.stop()
    const parts = await profileDurable(emulator, (specs.length + 2) * CHAT_RANGE, Math.min(FIXED_RATE_S, durationS))
    return report(rows, durationS, parts)
  } finally {
    for (const variant of variants) await variant.child.stop()
    await emulator.child.stop()
  }
}

async function startServiceVariant(emulator: EmulatorProcess, name: string, env: Record<string, string>, firstChat: number, nodeArgs: readonly string[] = []): Promise<Variant> {
  const busyChats = Array.from({ length: SLOTS }, (_, i) => firstChat - SLOTS + i)
  await registerChats(emulator.url, [...busyChats, ...Array.from({ length: CHATS }, (_, i) => firstChat + 1 + i)])
  const running = await startService({ apiRoot: emulator.url, env, nodeArgs })
  const ackInAnswer = env['ACK_MODE'] === 'webhook-reply'
  for (const chatId of busyChats) {
    const body = await post(running.url, textUpdate(nextUpdateId++, chatId, 1, 'hang'))
    if (ackInAnswer && !body.includes('"setMessageReaction"')) {
      throw new Error(`${name}: the webhook's answer should carry the 👀 as setMessageReaction; got ${body}`)
    }
  }
  await waitForHealth(running.url, (report) => report.brains.running === SLOTS, 10_000, `${SLOTS} brains running`)
  return { name, url: running.url, child: running.child, firstChat, ackInAnswer, isService: true }
}

async function startEssential(emulator: EmulatorProcess, firstChat: number): Promise<Variant> {
  await registerChats(emulator.url, Array.from({ length: CHATS }, (_, i) => firstChat + 1 + i))
  const port = await freePort()
  const env = { TELEGRAM_BOT_TOKEN: TOKEN, TELEGRAM_API_ROOT: emulator.url, TELEGRAM_WEBHOOK_SECRET: SECRET, PORT: String(port) }
  const child = new BenchChild('essential', path.join(BENCH_BUILD, 'essential.js'), [], env, { profile: true })
  const url = `http://127.0.0.1:${port}`
  await waitUntilUp(`${url}/livez`, child)
  return { name: 'essential (Fastify + grammY reaction)', url, child, firstChat, ackInAnswer: false, isService: false }
}

/** The durable service's busy time at FIXED_RATE_PER_S by part of the webhook's path, µs per update as profiled. */
interface Parts {
  readonly busyUsPerUpdate: number
  readonly byPart: readonly (readonly [string, number])[]
}

/**
 * A fresh durable service, loaded at FIXED_RATE_PER_S while V8's sampling profiler runs through its
 * inspector for `seconds` (after a warm-up): where its CPU goes, apart from the measured variants,
 * which the profiler would slow.
 */
async function profileDurable(emulator: EmulatorProcess, firstChat: number, seconds: number): Promise<Parts> {
  const variant = await startServiceVariant(emulator, 'durable, profiled', {}, firstChat, ['--inspect=127.0.0.1:0'])
  try {
    await hammer(variant, emulator, WARM_UP_S, FIXED_RATE_PER_S)
    const file = path.join(tempDir('profile'), 'durable.cpuprofile')
    const profiler = startInspector(await inspectorUrlOf(variant.child as ServiceProcess), ['--profile', file, '--seconds', String(seconds)])
    // The profile starts once the profiler has connected; the load runs the same seconds from about then.
    const load = await hammer(variant, emulator, seconds, FIXED_RATE_PER_S)
    await profiler.waitForLog((line) => line.msg === 'profiled', 30_000)
    const { busyUs, byPart } = summarizeProfile(JSON.parse(fs.readFileSync(file, 'utf8')) as Profile)
    return {
      busyUsPerUpdate: busyUs / load.requests,
      byPart: [...byPart].sort((a, b) => b[1] - a[1]).map(([part, us]) => [part, us / load.requests] as const),
    }
  } finally {
    await variant.child.stop()
  }
}

interface Load {
  readonly requests: number
  readonly seconds: number
  readonly p50: number
  readonly p99: number
  readonly non2xx: number
  readonly errors: number
  /** CPU seconds used meanwhile. */
  readonly cpu: Cpu
}

/** Loads a variant for `seconds` (saturating it unless given a rate) and measures where the CPU went meanwhile. */
async function hammer(variant: Variant, emulator: EmulatorProcess, seconds: number, ratePerS?: number): Promise<Load> {
  const before = { variant: cpuSecondsOf(variant.child.pid), emulator: cpuSecondsOf(emulator.child.pid), own: process.cpuUsage() }
  const result = await autocannon({
    url: variant.url,
    connections: CONNECTIONS,
    duration: seconds,
    ...(ratePerS === undefined ? {} : { overallRate: ratePerS }),
    requests: [
      {
        method: 'POST',
        path: WEBHOOK_PATH,
        headers: HEADERS,
        setupRequest: (request) => ({
          ...request,
          body: textUpdate(nextUpdateId++, variant.firstChat + 1 + Math.floor(Math.random() * CHATS), 1, 'silent'),
        }),
      },
    ],
  })
  const own = process.cpuUsage(before.own)
  return {
    requests: result.requests.total,
    seconds,
    p50: result.latency.p50,
    p99: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
    cpu: {
      variant: cpuSecondsOf(variant.child.pid) - before.variant,
      emulator: cpuSecondsOf(emulator.child.pid) - before.emulator,
      loadGenerator: (own.user + own.system) / 1e6,
    },
  }
}

function emptyTally(): Tally {
  return { requests: 0, seconds: 0, non2xx: 0, errors: 0, p50s: [], p99s: [], health: [], healthFailures: 0, cpu: { variant: 0, emulator: 0, loadGenerator: 0 } }
}

function add(tally: Tally, load: Load, health: Probed = NO_PROBE): void {
  tally.requests += load.requests
  tally.seconds += load.seconds
  tally.non2xx += load.non2xx
  tally.errors += load.errors
  tally.p50s.push(load.p50)
  tally.p99s.push(load.p99)
  tally.health.push(...health.latencies)
  tally.healthFailures += health.failures
  tally.cpu = {
    variant: tally.cpu.variant + load.cpu.variant,
    emulator: tally.cpu.emulator + load.cpu.emulator,
    loadGenerator: tally.cpu.loadGenerator + load.cpu.loadGenerator,
  }
}

function perRequest(cpu: Cpu, requests: number): Cpu {
  const us = (seconds: number): number => (seconds * 1e6) / requests
  return { variant: us(cpu.variant), emulator: us(cpu.emulator), loadGenerator: us(cpu.loadGenerator) }
}

function toRow(variant: Variant, tally: Tally, reactions: number, fixed: Tally): Row {
  return {
    name: variant.name,
    rps: tally.requests / tally.seconds,
    p50: median(tally.p50s),
    p99: median(tally.p99s),
    non2xx: tally.non2xx,
    errors: tally.errors,
    reactions: variant.ackInAnswer ? undefined : reactions,
    health: variant.isService ? summarize(tally.health, tally.healthFailures) : undefined,
    cpu: perRequest(tally.cpu, tally.requests),
    cpuAtFixedRate: perRequest(fixed.cpu, fixed.requests),
  }
}

async function post(serviceUrl: string, body: string): Promise<string> {
  const response = await fetch(`${serviceUrl}${WEBHOOK_PATH}`, { method: 'POST', headers: HEADERS, body })
  const text = await response.text()
  if (response.status !== 200) throw new Error(`webhook answered ${response.status}: ${text}`)
  return text
}

interface CallSummary {
  readonly method: string
  readonly ok: boolean
  readonly params: { readonly chat_id?: unknown }
}

async function calls(emulatorUrl: string, since: number): Promise<CallSummary[]> {
  const response = await fetch(`${emulatorUrl}/_emulator/calls?since=${since}`)
  return ((await response.json()) as { result: CallSummary[] }).result
}

/** How many calls the emulator has recorded so far. */
async function callCount(emulatorUrl: string): Promise<number> {
  return (await calls(emulatorUrl, 0)).length
}

/** The setMessageReaction calls answered 200 since `since`, by the variant whose chats they went to. */
async function reactionsByVariant(emulatorUrl: string, since: number, variants: readonly Variant[]): Promise<Map<Variant, number>> {
  const counts = new Map<Variant, number>()
  for (const call of await calls(emulatorUrl, since)) {
    if (call.method !== 'setMessageReaction' || !call.ok) continue
    const chatId = Number(call.params.chat_id)
    const variant = variants.find((v) => chatId > v.firstChat && chatId <= v.firstChat + CHATS)
    if (variant) counts.set(variant, (counts.get(variant) ?? 0) + 1)
  }
  return counts
}

function report(rows: readonly Row[], durationS: number, parts: Parts): Section {
  const [durable, webhookReply, memory, essential] = rows as [Row, Row, Row, Row]
  const ratio = (a: Row, b: Row): number => a.rps / b.rps
  const text = table(
    ['variant', 'req/s', 'p50 ms', 'p99 ms', 'non-2xx', 'errors', '👀 set', '/healthz p50 ms', '/healthz p99 ms', '/healthz failed', 'CPU µs/req: variant', 'emulator', 'autocannon'],
    rows.map((row) => [
      row.name,
      fmt(row.rps, 0),
      fmt(row.p50, 1),
      fmt(row.p99, 1),
      String(row.non2xx),
      String(row.errors),
      row.reactions === undefined ? 'in answer' : String(row.reactions),
      row.health ? fmt(row.health.p50) : '–',
      row.health ? fmt(row.health.p99) : '–',
      row.health ? String(row.health.missing) : '–',
      fmt(row.cpu.variant, 0),
      fmt(row.cpu.emulator, 0),
      fmt(row.cpu.loadGenerator, 0),
    ]),
  )
  const cpuTable = table(
    ['variant', 'variant µs/update', 'emulator µs/update', 'autocannon µs/update'],
    rows.map((row) => [row.name, fmt(row.cpuAtFixedRate.variant, 0), fmt(row.cpuAtFixedRate.emulator, 0), fmt(row.cpuAtFixedRate.loadGenerator, 0)]),
  )
  const durableVsEssential = ratio(durable, essential)
  const healthP99 = durable.health?.p99 ?? Number.NaN
  const healthMet = healthP99 <= 5 && durable.health?.missing === 0
  const healthMeasured = durable.health ? withMissing(durable.health, healthP99) : '–'
  const cpuRatioOf = (row: Row): number => row.cpuAtFixedRate.variant / essential.cpuAtFixedRate.variant
  const cpuRatio = (row: Row): string => cpuRatioOf(row).toFixed(2)
  return {
    title: 'Webhook intake',
    method: [
      `autocannon, ${CONNECTIONS} connections, ${durationS} s per variant taken in ${ROUNDS} slices, the variants in turn (so a drift in the`,
      `machine's background load weighs on all alike): POST ${WEBHOOK_PATH} with a fresh update_id per request, text \`silent\`,`,
      `over ${CHATS} chats per variant, while the ${SLOTS} brain slots are held by \`hang\` messages, so every update queues.`,
      `*durable* is \`coordinator serve\` (SQLite inbox, 👀 through the Bot API); *webhook-reply* returns the 👀 in the 200 body`,
      `instead; *memory* keeps the inbox in memory; *essential* is a bare Fastify route (\`build/bench/essential.js\`) that answers 200`,
      `and fires the same \`setMessageReaction\` through grammY. Each runs in its own process, all started up front; the emulator`,
      `(\`coordinator emulator\`) in another; autocannon in the bench's. Each variant first gets ${WARM_UP_S} s of load, unmeasured.`,
      `/healthz is polled ${HEALTH_CHECKS_PER_S}/s from a separate process while a service is loaded.`,
    ].join('\n'),
    body: [
      text,
      '',
      `req/s is all slices' requests over their time; p50 and p99 are the medians of the slices' own percentiles.`,
      `"👀 set" counts the reactions the emulator applied during the measured slices (it knows each chat's message, as Telegram would).`,
      `"CPU µs/req" is user + system CPU time (/proc/<pid>/stat) over the slices divided by the requests answered: the three`,
      `processes share the machine's ${os.cpus().length} cores, so a variant that costs the emulator a reaction per request also pays for it in throughput.`,
      '',
      `CPU per update at a fixed ${FIXED_RATE_PER_S} updates/s (${Math.min(FIXED_RATE_S, durationS)} s each, in ${ROUNDS} slices taken in turn, after the saturated ones),`,
      `where every variant keeps up:`,
      '',
      cpuTable,
      '',
      `- durable / essential throughput: **${durableVsEssential.toFixed(2)}** (target ≥ ${THROUGHPUT_TARGET}: ${verdict(durableVsEssential >= THROUGHPUT_TARGET)})`,
      `- durable / memory throughput: **${ratio(durable, memory).toFixed(2)}**; webhook-reply / durable: **${ratio(webhookReply, durable).toFixed(2)}**;` +
        ` webhook-reply / essential: **${ratio(webhookReply, essential).toFixed(2)}**`,
      `- CPU per update at ${FIXED_RATE_PER_S}/s, service ÷ essential: durable **${cpuRatio(durable)}**, webhook-reply **${cpuRatio(webhookReply)}**, memory **${cpuRatio(memory)}**`,
      `- webhook answer p99 at saturation (${CONNECTIONS} requests always in flight): durable **${fmt(durable.p99, 1)} ms**, essential **${fmt(essential.p99, 1)} ms**;`,
      '  at saturation latency is mostly queueing (connections ÷ throughput); the ≤ 20 ms target is judged at 100 updates/s below.',
      `- /healthz p99 while the durable service is saturated: **${healthMeasured}** (target ≤ 5 ms, none failed: ${verdict(healthMet)})`,
      '',
      `Where the durable service's CPU goes at ${FIXED_RATE_PER_S} updates/s: a fresh durable service under the same load for`,
      `${Math.min(FIXED_RATE_S, durationS)} s, profiled through its inspector (V8's sampling profiler on its main thread), each sample counted`,
      `once, in the part of the webhook's path nearest the code it caught (\`bench/profile-parts.ts\`). The profiler slows what it`,
      `measures, so "µs per update" is each part's share of the profile applied to the durable variant's unprofiled`,
      `${fmt(durable.cpuAtFixedRate.variant, 0)} µs above (which also counts V8's and libuv's other threads); the profile itself saw`,
      `${fmt(parts.busyUsPerUpdate, 0)} µs of main-thread work per update.`,
      '',
      table(
        ['part of the path', 'share', 'µs per update'],
        parts.byPart.map(([part, us]) => [part, `${fmt((100 * us) / parts.busyUsPerUpdate, 1)} %`, fmt((us / parts.busyUsPerUpdate) * durable.cpuAtFixedRate.variant, 0)]),
      ),
      '',
      `The same before and after each change: docs/analysis/2026-12-06-backlog-memory-and-intake-cpu.md.`,
    ].join('\n'),
    targets: [
      {
        target: `durable intake ≥ ${THROUGHPUT_TARGET} × essential (req/s, all slots busy)`,
        measured: `${durableVsEssential.toFixed(2)} (${fmt(durable.rps, 0)} vs ${fmt(essential.rps, 0)} req/s)`,
        met: durableVsEssential >= THROUGHPUT_TARGET,
        whenMissed:
          `In this run: durable ÷ memory ${ratio(durable, memory).toFixed(2)}, webhook-reply ÷ essential ${ratio(webhookReply, essential).toFixed(2)}; ` +
          `CPU per update at ${FIXED_RATE_PER_S}/s: durable ${fmt(durable.cpuAtFixedRate.variant, 0)} µs, memory ${fmt(memory.cpuAtFixedRate.variant, 0)} µs, ` +
          `webhook-reply ${fmt(webhookReply.cpuAtFixedRate.variant, 0)} µs, essential ${fmt(essential.cpuAtFixedRate.variant, 0)} µs.`,
      },
      {
        target: `CPU per update at ${FIXED_RATE_PER_S}/s, durable service ÷ essential ≤ ${CPU_RATIO_TARGET}`,
        measured: `${cpuRatio(durable)} (${fmt(durable.cpuAtFixedRate.variant, 0)} vs ${fmt(essential.cpuAtFixedRate.variant, 0)} µs)`,
        met: cpuRatioOf(durable) <= CPU_RATIO_TARGET,
        whenMissed: `In this run: memory ${cpuRatio(memory)}, webhook-reply ${cpuRatio(webhookReply)} (the 👀 in the webhook's answer instead of a Bot API call).`,
      },
      {
        target: '/healthz p99 ≤ 5 ms during the intake run',
        measured: healthMeasured,
        met: healthMet,
        whenMissed:
          `In this run /healthz p50 was ${fmt(durable.health?.p50 ?? Number.NaN)} ms over ${durable.health?.n ?? 0} checks, with ${CONNECTIONS} webhook ` +
          `requests always in flight on the same event loop (webhook p50 ${fmt(durable.p50, 1)} ms, p99 ${fmt(durable.p99, 1)} ms).`,
      },
    ],
  }
}
