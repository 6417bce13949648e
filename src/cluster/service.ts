import type { Logger } from 'pino'
import { ConfigError, type Config } from '../config.js'
import { checkBrainCwd } from '../brain/cwd.js'
import { checkBrainCommand, isExecutable } from '../brain/preflight.js'
import { serveRoutes, serviceParts, type Service } from '../service-parts.js'
import type { ClusterStats } from '../store/postgres/store.js'
import { ChatStateSync } from '../store/postgres/chat-state.js'
import { BotCheck } from '../telegram/bot-check.js'
import { ClusterNode } from './node.js'
import type { Role } from './role.js'

/**
 * A host of the Postgres mode: the shared store and engine instead of the SQLite inbox and the
 * local dispatcher; the same brain, sandbox, Telegram client and HTTP routes. A database that
 * refuses the login or lacks rights stops the start (exit 2); one that cannot be reached yet is
 * tried again in the background while the webhook answers 503. server.ts imports this module only
 * when DATABASE_URL is set, so a single host never loads pg or Graphile Worker.
 */
export async function startClusterService(config: Config, databaseUrl: string, logger: Logger, role: Role): Promise<Service> {
  const runsBrains = role !== 'intake'
  const brainPath = runsBrains ? checkBrainCommand(config.brain.argv[0], process.env['PATH'], config.brain.cwd ?? config.stateDir).path : undefined
  if (runsBrains) checkBrainCwd(config.brain.cwd)
  const parts = serviceParts(config, logger)
  const { metrics, locks } = parts
  const node = new ClusterNode({
    ...parts,
    config,
    role,
    databaseUrl,
    log: logger,
    chatState: (store) => (config.chatStateMaxBytes > 0 ? new ChatStateSync({ pool: store.pool, maxBytes: config.chatStateMaxBytes, log: logger }) : undefined),
  })
  let started = false
  try {
    await node.start()
    started = true
  } catch (error) {
    if (!isTransientDatabaseError(error)) {
      await node.stop().catch(() => undefined)
      throw new ConfigError('DATABASE_URL', `could not be used: ${(error as Error).message}; check the user, its password and its rights on the database`)
    }
    logger.warn({ err: error }, 'Postgres cannot be reached yet; trying again in the background (the webhook answers 503 meanwhile)')
  }
  const botCheck = new BotCheck({ settings: config, log: logger, onIdentified: (username) => node.intake && (node.intake.botUsername = username) })
  try {
    await botCheck.first()
  } catch (error) {
    await node.stop().catch(() => undefined)
    throw error
  }
  let stats: ClusterStats | undefined
  const statsTimer = setInterval(() => {
    node.clusterStats().then(
      (value) => (stats = value),
      () => undefined,
    )
  }, 2000)
  statsTimer.unref()
  metrics.observe({
    queued: () => stats?.queued ?? 0,
    running: () => node.worker?.running ?? 0,
    oldestQueuedAgeS: () => (stats?.oldestQueuedAt == null ? 0 : (Date.now() - stats.oldestQueuedAt) / 1000),
  })
  metrics.observeCluster({
    liveWorkers: () => stats?.liveWorkers ?? 0,
    liveSlots: () => stats?.liveSlots ?? 0,
    deadWorkers: () => stats?.deadWorkers ?? 0,
  })
  const { app, url } = await serveRoutes({
    config,
    logger,
    metrics,
    core: node,
    botCheck,
    brainStartable: () => brainPath === undefined || isExecutable(brainPath),
    stop: async () => {
      clearInterval(statsTimer)
      await node.stop()
    },
    close: () => undefined,
  })
  locks.prepare()
  if (!started) void startWhenReachable(node, logger)
  logger.info(
    { url, webhook_path: config.webhookPath, role, brains: runsBrains ? config.maxConcurrentBrains : 0, store: 'postgres', worker: node.worker?.id, sandbox: config.brain.sandbox },
    'coordinator ready',
  )
  return { app, coordinator: node, url, stop: () => app.close() }
}

// While Postgres cannot be reached at start, it is tried this often.
const START_RETRY_MS = 2000

async function startWhenReachable(node: ClusterNode, logger: Logger): Promise<void> {
  for (let tries = 1; !node.draining; tries++) {
    await new Promise((resolve) => setTimeout(resolve, START_RETRY_MS))
    if (node.draining) return
    try {
      await node.start()
      logger.info({ tries }, 'Postgres reached; the host is up')
      return
    } catch (error) {
      if (tries % 15 === 1) logger.warn({ err: error, tries }, 'Postgres still cannot be reached')
    }
  }
}

/** A database that is down, starting or full of connections, rather than one that refuses us. */
function isTransientDatabaseError(error: unknown): boolean {
  const { code, message } = error as { code?: string; message?: string }
  const network = ['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOENT']
  // 57P03: the database system is starting up; 53300: too many connections.
  return (code !== undefined && (network.includes(code) || code === '57P03' || code === '53300')) || /timeout/iu.test(message ?? '')
}
