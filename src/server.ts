import { flushCompileCache } from 'node:module'
import type { Logger } from 'pino'
import { ConfigError, type Config } from './config.js'
import { Coordinator } from './coordinator.js'
import type { Role } from './cluster/role.js'
import { createLogger } from './log.js'
import { checkBrainCommand, isExecutable } from './brain/preflight.js'
import { checkBrainCwd } from './brain/cwd.js'
import { serveRoutes, serviceParts, type Service } from './service-parts.js'
import { MemoryInbox } from './store/memory.js'
import { SqliteInbox } from './store/sqlite.js'
import type { Inbox } from './store/inbox.js'
import { BotCheck } from './telegram/bot-check.js'

export type { Service }

/** Files the service creates are readable by its own user only. */
export const STATE_UMASK = 0o077

/**
 * Wires the service together and starts listening. Throws BrainCommandError or ConfigError for a
 * configuration that cannot work, before anything listens.
 */
export async function startService(
  config: Config,
  logger: Logger = createLogger(config.logLevel, { secrets: secretsOf(config) }),
  role: Role = 'all',
): Promise<Service> {
  if (config.databaseUrl !== undefined) {
    const { startClusterService } = await import('./cluster/service.js')
    return startClusterService(config, config.databaseUrl, logger, role)
  }
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

/** What the log must never show. */
export function secretsOf(config: Config): string[] {
  return [config.botToken, config.webhookSecret, config.webhookSecretPrevious ?? '']
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
  // With NODE_COMPILE_CACHE set, Node keeps every module's compiled code there for the next start.
  // Written now, once everything is loaded, rather than at exit: a service that is killed, or runs
  // for months, still leaves it.
  flushCompileCache()
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
