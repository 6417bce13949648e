// What the single host (server.ts) and a host of the Postgres mode (cluster/service.ts) build alike.
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { buildApp } from './app.js'
import { ConfigError, type Config } from './config.js'
import type { Coordinator } from './coordinator.js'
import type { ClusterNode } from './cluster/node.js'
import { EventLoopDelay, type ServiceCore } from './health.js'
import { HeapReducer } from './heap-reducer.js'
import { LoopStallWatch } from './loop-stalls.js'
import { Metrics } from './metrics.js'
import { BrainSandbox } from './brain/sandbox.js'
import { ChatLocks } from './dispatch/chat-lock.js'
import { ChatMigrations, MIGRATIONS_FILE } from './store/chat-migrations.js'
import type { BotCheck } from './telegram/bot-check.js'
import { TelegramClient } from './telegram/client.js'
import { mediaRoot } from './telegram/media.js'
import { MediaQuota } from './telegram/media-quota.js'

/** A running service, for tests and the demo that start it in-process. */
export interface Service {
  readonly app: FastifyInstance
  readonly coordinator: Coordinator | ClusterNode
  readonly url: string
  /** Drains (see Coordinator.stop), closes the server and the inbox. */
  stop(): Promise<void>
}

/** What both modes wire the same way. */
export function serviceParts(config: Config, logger: Logger) {
  const sandbox = prepareSandbox(config, logger)
  const mediaQuota = new MediaQuota({ root: mediaRoot(config.stateDir), quotaBytes: config.mediaQuotaBytes, log: logger })
  const metrics = new Metrics()
  const migrations = openMigrations(config)
  const telegram = new TelegramClient({ token: config.botToken, apiRoot: config.apiRoot, metrics, log: logger, migrations, linkPreviews: config.linkPreviews })
  const locks = new ChatLocks(config.lockDir, logger)
  return { sandbox, mediaQuota, metrics, telegram, locks }
}

/** The routes on `core`, stopping it when the server closes (whoever closes it: a signal, a test, the demo), listening. */
export async function serveRoutes(options: {
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
