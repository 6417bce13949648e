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
import { EventLoopDelay } from './health.js'
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
  const sandbox = prepareSandbox(config, logger)
  const mediaQuota = new MediaQuota({ root: mediaRoot(config.stateDir), quotaBytes: config.mediaQuotaBytes, log: logger })
  const metrics = new Metrics()
  const migrations = openMigrations(config)
  const telegram = new TelegramClient({ token: config.botToken, apiRoot: config.apiRoot, metrics, log: logger, migrations, linkPreviews: config.linkPreviews })
  const locks = new ChatLocks(config.lockDir, logger)
  const coordinator = new Coordinator({ config, inbox, telegram, locks, metrics, log: logger, sandbox, mediaQuota })
  const botCheck = new BotCheck({ settings: config, log: logger, onIdentified: (username) => (coordinator.intake.botUsername = username) })
  try {
    await botCheck.first()
  } catch (error) {
    inbox.close()
    throw error
  }
  const loopDelay = new EventLoopDelay()
  metrics.observe({
    queued: () => coordinator.dispatcher.queued,
    running: () => coordinator.dispatcher.running,
    oldestQueuedAgeS: () => {
      const oldest = inbox.stats().oldestQueuedAt
      return oldest === null ? 0 : (Date.now() - oldest) / 1000
    },
  })
  const app = await buildApp({
    config,
    coordinator,
    metrics,
    loopDelay,
    logger,
    brainStartable: () => isExecutable(brainPath),
    botTokenChecked: () => botCheck.ready,
  })

  // Drains on close, whoever closes: a signal, a test, the demo.
  app.addHook('preClose', async () => {
    await coordinator.stop()
  })
  const stalls = new LoopStallWatch(logger)
  app.addHook('onClose', async () => {
    stalls.close()
    botCheck.stop()
    loopDelay.close()
    inbox.close()
  })

  let url: string
  try {
    url = await app.listen({ host: config.host, port: config.port })
  } catch (error) {
    await app.close().catch(() => undefined)
    throw listenError(error, config)
  }
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
 * local dispatcher; the same brain, sandbox, Telegram client and HTTP routes.
 */
async function startClusterService(config: Config, databaseUrl: string, logger: Logger, role: Role): Promise<Service> {
  const runsBrains = role !== 'intake'
  const brainPath = runsBrains ? checkBrainCommand(config.brain.argv[0], process.env['PATH'], config.brain.cwd ?? config.stateDir).path : undefined
  if (runsBrains) checkBrainCwd(config.brain.cwd)
  const sandbox = prepareSandbox(config, logger)
  const mediaQuota = new MediaQuota({ root: mediaRoot(config.stateDir), quotaBytes: config.mediaQuotaBytes, log: logger })
  const metrics = new Metrics()
  const migrations = openMigrations(config)
  const telegram = new TelegramClient({ token: config.botToken, apiRoot: config.apiRoot, metrics, log: logger, migrations, linkPreviews: config.linkPreviews })
  const locks = new ChatLocks(config.lockDir, logger)
  const node = new ClusterNode({
    config,
    role,
    databaseUrl,
    telegram,
    locks,
    metrics,
    log: logger,
    sandbox,
    mediaQuota,
    chatState: (store) => (config.chatStateMaxBytes > 0 ? new ChatStateSync({ pool: store.pool, maxBytes: config.chatStateMaxBytes, log: logger }) : undefined),
  })
  try {
    await node.start()
  } catch (error) {
    await node.stop().catch(() => undefined)
    throw new ConfigError('DATABASE_URL', `could not be used: ${(error as Error).message}; check the address, the user's rights and that Postgres runs`)
  }
  const botCheck = new BotCheck({ settings: config, log: logger, onIdentified: (username) => node.intake && (node.intake.botUsername = username) })
  try {
    await botCheck.first()
  } catch (error) {
    await node.stop().catch(() => undefined)
    throw error
  }
  const loopDelay = new EventLoopDelay()
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
  const app = await buildApp({
    config,
    coordinator: node,
    metrics,
    loopDelay,
    logger,
    brainStartable: () => brainPath === undefined || isExecutable(brainPath),
    botTokenChecked: () => botCheck.ready,
  })
  app.addHook('preClose', async () => {
    clearInterval(statsTimer)
    await node.stop()
  })
  const stalls = new LoopStallWatch(logger)
  app.addHook('onClose', async () => {
    stalls.close()
    botCheck.stop()
    loopDelay.close()
  })
  let url: string
  try {
    url = await app.listen({ host: config.host, port: config.port })
  } catch (error) {
    await app.close().catch(() => undefined)
    throw listenError(error, config)
  }
  locks.prepare()
  logger.info(
    { url, webhook_path: config.webhookPath, role, brains: runsBrains ? config.maxConcurrentBrains : 0, store: 'postgres', worker: node.worker?.id, sandbox: config.brain.sandbox },
    'coordinator ready',
  )
  return { app, coordinator: node, url, stop: () => app.close() }
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
