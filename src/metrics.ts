import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

// Latency buckets in seconds, dense where the service's targets are (1–20 ms).
const FAST_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
const BRAIN_BUCKETS = [0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 90, 180, 300, 600]

/**
 * The service's Prometheus metrics, in a registry of their own so that tests and several
 * instances in one process never collide. Gauges read live state when scraped.
 */
export class Metrics {
  readonly registry = new Registry()
  readonly updates = new Counter({
    name: 'coordinator_updates_total',
    help: 'Webhook updates by outcome (accepted, duplicate, ignored, rejected) and rejection reason',
    labelNames: ['outcome', 'reason'] as const,
    registers: [this.registry],
  })
  readonly ackLatency = new Histogram({
    name: 'coordinator_ack_latency_seconds',
    help: 'Receipt of an update to the acknowledgement reaction confirmed by Telegram',
    buckets: FAST_BUCKETS,
    registers: [this.registry],
  })
  readonly webhookDuration = new Histogram({
    name: 'coordinator_webhook_answer_seconds',
    help: 'Time to answer a webhook request',
    buckets: FAST_BUCKETS,
    registers: [this.registry],
  })
  readonly brainRuns = new Counter({
    name: 'coordinator_brain_runs_total',
    help: 'Brain attempts by outcome',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  })
  readonly brainDuration = new Histogram({
    name: 'coordinator_brain_duration_seconds',
    help: 'Wall-clock duration of one brain attempt',
    buckets: BRAIN_BUCKETS,
    registers: [this.registry],
  })
  readonly telegramErrors = new Counter({
    name: 'coordinator_telegram_api_errors_total',
    help: 'Failed Telegram Bot API calls by method and error code (network for no answer)',
    labelNames: ['method', 'code'] as const,
    registers: [this.registry],
  })

  /** Registers the live gauges and Node's default metrics; call once per service. */
  observe(live: { queued: () => number; running: () => number; oldestQueuedAgeS: () => number }): void {
    new Gauge({
      name: 'coordinator_messages_queued',
      help: 'Messages waiting for a brain',
      registers: [this.registry],
      collect() {
        this.set(live.queued())
      },
    })
    new Gauge({
      name: 'coordinator_brains_running',
      help: 'Brain processes running now',
      registers: [this.registry],
      collect() {
        this.set(live.running())
      },
    })
    new Gauge({
      name: 'coordinator_oldest_queued_age_seconds',
      help: 'Age of the oldest message waiting for a brain (0 when none)',
      registers: [this.registry],
      collect() {
        this.set(live.oldestQueuedAgeS())
      },
    })
    collectDefaultMetrics({ register: this.registry })
  }

  /** The Postgres mode's gauges: the worker hosts with a heartbeat, their slots, the hosts given up for dead. */
  observeCluster(live: { liveWorkers: () => number; liveSlots: () => number; deadWorkers: () => number }): void {
    const gauges = [
      ['coordinator_workers_live', 'Worker hosts with a recent heartbeat', live.liveWorkers],
      ['coordinator_worker_slots_live', 'Brain slots of the worker hosts with a recent heartbeat', live.liveSlots],
      ['coordinator_workers_dead', 'Worker hosts given up for dead (their chats were taken back)', live.deadWorkers],
    ] as const
    for (const [name, help, read] of gauges) {
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(read())
        },
      })
    }
  }
}
