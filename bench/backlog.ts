// A huge backlog: the service restarts on an inbox holding 1,000,000 queued messages over 100,000
// chats (a brain down for an afternoon in a busy bot), then takes new updates at a steady rate.
// Does it stay lean, and does every new message still get its 👀 at once?
import { startEmulator } from '../src/emulator/index.js'
import { measured, sendSteadily } from './ack-latency.js'
import {
  SLOTS,
  TOKEN,
  WEBHOOK_PATH,
  delay,
  fillInbox,
  memoryOf,
  pointWebhookAt,
  startService,
  tempDir,
  waitForHealth,
  wallClockMs,
  type LogLine,
} from './harness.js'
import { table, verdict, type Section } from './report.js'
import { fmt, withMissing } from './stats.js'

const RSS_TARGET_MB = 400
const ACK_TARGET_MS = 20
const RATE_PER_S = 100
const SETTLE_MS = 2000
// New updates go to chats far from the backlog's, so each is its chat's first message.
const NEW_CHAT_BASE = 50_000_000

export interface BacklogOptions {
  readonly queued: number
  readonly chats: number
  readonly durationS: number
}

export async function backlogBenchmark({ queued, chats, durationS }: BacklogOptions): Promise<Section> {
  process.stdout.write(`backlog: restart on ${queued} queued over ${chats} chats, then ${RATE_PER_S} updates/s for ${durationS} s\n`)
  const stateDir = tempDir('backlog')
  const fillStarted = wallClockMs()
  // `hang`: the first chats' brains hold every slot, so the whole backlog stays queued.
  fillInbox(stateDir, queued, chats, 'hang')
  const fillS = (wallClockMs() - fillStarted) / 1000
  const emulator = await startEmulator({ token: TOKEN })
  try {
    const service = await startService({ apiRoot: emulator.url, stateDir, readLog: true, env: { LOG_LEVEL: 'info' } })
    try {
      const since = (line: LogLine): number => line.time - service.child.spawnedAtWallMs
      const firstBrain = since(await service.child.waitForLog((line) => line.msg === 'child started', 120_000))
      const recovered = service.child.logs.find((line) => line.msg === 'inbox recovered')
      await waitForHealth(service.url, (report) => report.brains.running === SLOTS, 30_000, `${SLOTS} brains running`)
      await delay(SETTLE_MS)
      const { pid } = service.child
      const afterRecovery = memoryOf(pid)
      await pointWebhookAt(emulator.url, `${service.url}${WEBHOOK_PATH}`)
      const sent = await sendSteadily(emulator, durationS, NEW_CHAT_BASE)
      await delay(1000)
      const { ack, answer } = measured(emulator, sent)
      const afterLoad = memoryOf(pid)
      const health = await waitForHealth(service.url, () => true, 5000, 'a /healthz answer')
      const rssMB = Math.max(afterRecovery.rssMB, afterLoad.rssMB)
      const ackMet = ack.p99 <= ACK_TARGET_MS && ack.missing === 0
      return {
        title: 'A huge backlog',
        method: [
          `${queued} queued messages over ${chats} chats are written into a fresh inbox in the service's own schema (${fmt(fillS, 1)} s), as a`,
          `stopped service would leave them; \`coordinator serve\` starts on it, every brain \`hang\`s, so the backlog stays. Once the`,
          `${SLOTS} slots are busy and ${SETTLE_MS / 1000} s have passed, the emulator (in this process) sends ${RATE_PER_S} new text updates/s for ${durationS} s, each`,
          `to a new chat, and the 👀 latency is timed as in the 👀 latency benchmark. RSS is VmRSS from /proc, with VmHWM as the peak.`,
        ].join('\n'),
        body: [
          table(
            ['queued', 'spawn → inbox recovered ms', 'spawn → first brain ms', 'RSS after recovery MB', 'RSS after the load MB', 'peak (VmHWM) MB', '👀 p50 ms', '👀 p99 ms', '👀 missing', 'answer p99 ms'],
            [
              [
                String(queued),
                recovered ? fmt(since(recovered), 0) : '–',
                fmt(firstBrain, 0),
                fmt(afterRecovery.rssMB, 1),
                fmt(afterLoad.rssMB, 1),
                fmt(afterLoad.peakMB, 1),
                fmt(ack.p50),
                fmt(ack.p99),
                String(ack.missing),
                fmt(answer.p99),
              ],
            ],
          ),
          '',
          `/healthz after the load: ${health.queue.pending} queued over ${health.queue.chats} chats.`,
          '',
          `- RSS with ${queued} queued: **${fmt(rssMB, 1)} MB** (target ≤ ${RSS_TARGET_MB} MB: ${verdict(rssMB <= RSS_TARGET_MB)})`,
          `- 👀 p99 at ${RATE_PER_S} updates/s meanwhile: **${withMissing(ack, ack.p99)}** (target ≤ ${ACK_TARGET_MS} ms, none missing: ${verdict(ackMet)})`,
        ].join('\n'),
        targets: [
          { target: `RSS ≤ ${RSS_TARGET_MB} MB with ${queued} queued (${chats} chats)`, measured: `${fmt(rssMB, 1)} MB (peak ${fmt(afterLoad.peakMB, 1)} MB)`, met: rssMB <= RSS_TARGET_MB },
          { target: `👀 p99 ≤ ${ACK_TARGET_MS} ms at ${RATE_PER_S} updates/s with ${queued} queued`, measured: withMissing(ack, ack.p99), met: ackMet },
        ],
      }
    } finally {
      await service.child.stop()
    }
  } finally {
    await emulator.close()
  }
}
