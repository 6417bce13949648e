import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { ChatMigrations, MIGRATIONS_FILE } from './store/chat-migrations.js'
import { ConfigError, type Config } from './config.js'
import { buildApp } from './app.js'
import { Coordinator } from './coordinator.js'
import { ClusterNode, parseRole, ROLES, type Role } from './cluster/node.js'
import { UsageError } from './cli/usage.js'
import type { ClusterStats } from './store/postgres/store.js'
import { ChatStateSync } from './store/postgres/chat-state.js'
import { EventLoopDelay, type ServiceCore } from './health.js'
import { HeapReducer } from './heap-reducer.js'
import { LoopStallWatch } from './loop-stalls.js'
import { createLogger } from './log.js'
import { Metrics } from './metrics.js'
import { checkBrainCommand, isExecutable } from './brain/preflight.js'
import { BrainSandbox } from './brain/sandbox.js'
import { checkBrainCwd } from './brain/cwd.js'
import { ChatLocks } from './dispatch/chat-lock.js'
import { MemoryInbox } from './store/memory.js'
import { SqliteInbox } from './store/sqlite.js'
import type { Inbox } from './store/inbox.js'
import { BotCheck } from './telegram/bot-check.js'
import { TelegramClient } from './telegram/client.js'
import { mediaRoot } from './telegram/media.js'
import { MediaQuota } from './telegram/media-quota.js'

/** Files the service creates are readable by its own user only. */
export const STATE_UMASK = 0o077

/** A running service, for tests and the demo that start it in-process. */
export interface Service {
  readonly app: FastifyInstance
  readonly coordinator: Coordinator | ClusterNode
  readonly url: string
  /** Drains (see Coordinator.stop), closes the server and the inbox. */
  stop(): Promise<void>
}

/**
 * Wires the service together and starts listening. Throws BrainCommandError or ConfigError for a
 * configuration that cannot work, before anything listens.
 */
export async function startService(
  config: Config,
  logger: Logger = createLogger(config.logLevel, { secrets: secretsOf(config) }),
  role: Role = 'all',
): Promise<Service> {
  if (config.databaseUrl !== undefined) return startClusterService(config, config.databaseUrl, logger, role)
  if (role !== 'all') throw new ConfigError('DATABASE_URL', `is needed for --role ${role} (several hosts share one Postgres); without it, run serve with no --role`)
  const brainPath = checkBrainCommand(config.brain.argv[0], process.env['PATH'], config.brain.cwd ?? config.stateDir).path
  const inbox = openInbox(config)
  try {
    checkBrainCwd(config.brain.cwd)
  } catch (error) {
    inbox.close()
    throw error
  }
  const parts = serviceParts(config, logger)
  const { metrics, locks } = parts
  const coordinator = new Coordinator({ ...parts, config, inbox, log: logger })
  const botCheck = new BotCheck({ settings: config, log: logger, onIdentified: (username) => (coordinator.intake.botUsername = username) })
  try {
    await botCheck.first()
  } catch (error) {
    inbox.close()
    throw error
  }
  metrics.observe({
    queued: () => coordinator.dispatcher.queued,
    running: () => coordinator.dispatcher.running,
    oldestQueuedAgeS: () => {
      const oldest = inbox.stats().oldestQueuedAt
      return oldest === null ? 0 : (Date.now() - oldest) / 1000
    },
  })
  const { app, url } = await serveRoutes({
    config,
    logger,
    metrics,
    core: coordinator,
    botCheck,
    brainStartable: () => isExecutable(brainPath),
    stop: () => coordinator.stop(),
    close: () => inbox.close(),
  })
  locks.prepare()
  const recovered = coordinator.start()
  logger.info(
    { url, webhook_path: config.webhookPath, brains: config.maxConcurrentBrains, inbox: config.inbox, sandbox: config.brain.sandbox, ...recovered },
    'coordinator ready',
  )
  return { app, coordinator, url, stop: () => app.close() }
}

/**
 * A host of the Postgres mode: the shared store and engine instead of the SQLite inbox and the
 * local dispatcher; the same brain, sandbox, Telegram client and HTTP routes. A database that
 * refuses the login or lacks rights stops the start (exit 2); one that cannot be reached yet is
 * tried again in the background while the webhook answers 503.
 */
async function startClusterService(config: Config, databaseUrl: string, logger: Logger, role: Role): Promise<Service> {
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

/** What both modes wire the same way. */
function serviceParts(config: Config, logger: Logger) {
  const sandbox = prepareSandbox(config, logger)
  const mediaQuota = new MediaQuota({ root: mediaRoot(config.stateDir), quotaBytes: config.mediaQuotaBytes, log: logger })
  const metrics = new Metrics()
  const migrations = openMigrations(config)
  const telegram = new TelegramClient({ token: config.botToken, apiRoot: config.apiRoot, metrics, log: logger, migrations, linkPreviews: config.linkPreviews })
  const locks = new ChatLocks(config.lockDir, logger)
  return { sandbox, mediaQuota, metrics, telegram, locks }
}

/** The routes on `core`, stopping it when the server closes (whoever closes it: a signal, a test, the demo), listening. */
async function serveRoutes(options: {
  readonly config: Config
  readonly logger: Logger
  readonly metrics: Metrics
  readonly core: ServiceCore
  readonly botCheck: BotCheck
  readonly brainStartable: () => boolean
  readonly stop: () => Promise<void>
  readonly close: () => void
}): Promise<{ app: FastifyInstance; url: string }> {
  const { config, logger, botCheck } = options
  const loopDelay = new EventLoopDelay()
  const app = await buildApp({
    config,
    coordinator: options.core,
    metrics: options.metrics,
    loopDelay,
    logger,
    brainStartable: options.brainStartable,
    botTokenChecked: () => botCheck.ready,
  })
  app.addHook('preClose', options.stop)
  const stalls = new LoopStallWatch(logger)
  const heap = new HeapReducer(logger)
  app.addHook('onClose', async () => {
    stalls.close()
    heap.close()
    botCheck.stop()
    loopDelay.close()
    options.close()
  })
  try {
    return { app, url: await app.listen({ host: config.host, port: config.port }) }
  } catch (error) {
    await app.close().catch(() => undefined)
    throw listenError(error, config)
  }
}

/** `serve [--role all|intake|worker]`. */
export function parseServeArgs(args: readonly string[]): Role {
  if (args.length === 0) return 'all'
  const [flag, value, ...rest] = args
  const role = flag === '--role' ? parseRole(value) : undefined
  if (role === undefined || rest.length > 0) throw new UsageError(`serve takes --role ${ROLES.join('|')}; got: ${args.join(' ')}`)
  return role
}

/** What the log must never show. */
export function secretsOf(config: Config): string[] {
  return [config.botToken, config.webhookSecret, config.webhookSecretPrevious ?? '']
}

function openMigrations(config: Config): ChatMigrations {
  try {
    return new ChatMigrations(config.inbox === 'memory' ? undefined : config.stateDir)
  } catch (error) {
    throw new ConfigError('STATE_DIR', `holds a group-upgrade record that cannot be read (${(error as Error).message}): fix or delete ${MIGRATIONS_FILE} there`)
  }
}

/** The sandbox for every brain attempt; BRAIN_SANDBOX=off is allowed, but not quietly. */
function prepareSandbox(config: Config, logger: Logger): BrainSandbox {
  const sandbox = BrainSandbox.prepare({
    mode: config.brain.sandbox,
    network: config.brain.network,
    stateDir: config.stateDir,
    brainCwd: config.brain.cwd,
    command: config.brain.argv[0],
  })
  if (!sandbox.enabled) {
    logger.warn('BRAIN_SANDBOX=off: brains run unconfined, as this service\'s user, and can read its token, its inbox and every chat')
  }
  return sandbox
}

/** A listen failure the operator can fix, as the one-line ConfigError naming HOST or PORT. */
function listenError(error: unknown, { host, port }: Config): unknown {
  const { code } = error as NodeJS.ErrnoException
  if (code === 'EADDRINUSE') return new ConfigError('PORT', `${port} is already in use on ${host}; stop what listens there or set PORT to a free port`)
  if (code === 'EACCES') return new ConfigError('PORT', `${port} needs privileges this user lacks on ${host}; set PORT to 1024 or above`)
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_FAIL' || code === 'EAI_NONAME') {
    return new ConfigError('HOST', `"${host}" does not resolve to an address; set HOST to an address such as 127.0.0.1`)
  }
  if (code === 'EADDRNOTAVAIL') return new ConfigError('HOST', `${host} is not an address of this machine; set HOST to one, such as 127.0.0.1`)
  return error
}

function openInbox(config: Config): Inbox {
  if (config.inbox === 'memory') return new MemoryInbox()
  try {
    return new SqliteInbox(config.stateDir)
  } catch (error) {
    throw new ConfigError('STATE_DIR', `must be a writable directory for the inbox; opening it in ${config.stateDir} failed: ${(error as Error).message}`)
  }
}

/**
 * Runs the service until SIGTERM or SIGINT, then shuts down gracefully: the webhook answers 503 so
 * Telegram re-sends later, running brains get SHUTDOWN_GRACE_S to finish, queued messages stay in
 * the inbox for the next start. Exits 0.
 */
export async function serve(config: Config, role: Role = 'all'): Promise<void> {
  // The inbox, media and chat directories hold people's messages: private, whatever umask the
  // launcher left (systemd sets UMask=0077; a shell usually 0022).
  process.umask(STATE_UMASK)
  const logger = createLogger(config.logLevel, { secrets: secretsOf(config) })
  process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled rejection'))
  const service = await startService(config, logger, role)
  let stopping = false
  const shutdown = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn({ signal }, 'already shutting down')
      return
    }
    stopping = true
    logger.info({ signal, grace_s: config.shutdownGraceMs / 1000 }, 'shutting down')
    service.stop().then(
      () => {
        logger.info('stopped')
        logger.flush()
        process.exit(0)
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed')
        process.exit(1)
      },
    )
  }
  process.on('SIGTERM', shutdown)
  process.on('SIGINT', shutdown)
}
