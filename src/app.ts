import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyRequest } from 'fastify'
import rateLimit from '@fastify/rate-limit'
import type { Config } from './config.js'
import { SECRET_HEADER, secretVerifier } from './intake/verify.js'
import type { Metrics } from './metrics.js'
import type { EventLoopDelay, HealthParts, ServiceCore } from './health.js'
import { RejectedRequestLog } from './request-log.js'

/** Largest webhook body accepted; Telegram's updates are far smaller. */
export const BODY_LIMIT = 1024 * 1024
// Requests failing the secret check, per client IP: enough for a misconfiguration to show in logs.
const BAD_SECRET_LIMIT = { max: 20, timeWindow: 60_000 }
// /healthz turns 503 "degraded" when the event loop lags this much (p99 over ~10 s).
export const DEGRADED_LOOP_DELAY_MS = 1000
// Telegram sends a webhook body of a few KiB at once: a client still sending after this long is
// holding a connection open on purpose.
export const REQUEST_TIMEOUT_MS = 10_000
// An idle connection (keep-alive included) is closed after this long.
export const CONNECTION_TIMEOUT_MS = 30_000
// How often Node looks for requests past their timeout (its default, 30 s, would triple a 10 s limit).
const TIMEOUT_CHECK_MS = 1000

export interface AppDeps {
  readonly config: Config
  readonly coordinator: ServiceCore
  readonly metrics: Metrics
  readonly loopDelay: EventLoopDelay
  /** Whether a brain could be started now (its executable is still there). */
  readonly brainStartable: () => boolean
  /** Whether getMe has answered since the start: the token works and Telegram is reachable. */
  readonly botTokenChecked: () => boolean
  readonly logger: FastifyBaseLogger
}

/** Builds the HTTP side: the webhook, health endpoints and metrics. No process globals. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, coordinator, metrics } = deps
  const app = Fastify({
    loggerInstance: deps.logger,
    bodyLimit: BODY_LIMIT,
    // X-Forwarded-For is believed only from the proxies the operator named (Caddy on loopback).
    trustProxy: config.trustedProxies.length > 0 ? [...config.trustedProxies] : false,
    requestTimeout: REQUEST_TIMEOUT_MS,
    connectionTimeout: CONNECTION_TIMEOUT_MS,
    http: { connectionsCheckingInterval: TIMEOUT_CHECK_MS, headersTimeout: REQUEST_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS },
    return503OnClosing: true,
    // Per-request "incoming request"/"request completed" lines would drown the message log; the
    // service logs what matters itself, and rejected requests in bounded numbers (RejectedRequestLog).
    logController: new LogController({ disableRequestLogging: true }),
  })
  // Telegram posts JSON only; without this, a text/plain body would reach the handler as a string.
  app.removeContentTypeParser('text/plain')
  const rejectedLog = new RejectedRequestLog(deps.logger)
  app.addHook('onClose', async () => rejectedLog.close())

  await app.register(rateLimit, { global: false })

  // While a secret is being rotated, Telegram may still send the previous one.
  const verifySecret = secretVerifier([config.webhookSecret, config.webhookSecretPrevious].filter((secret) => secret !== undefined))
  const hasSecret = (request: FastifyRequest): boolean => verifySecret(request.headers[SECRET_HEADER])

  app.setErrorHandler<FastifyError>((error, request, reply) => {
    const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 600 ? error.statusCode : 500
    const reason = status === 429 ? 'rate_limited' : reasonOf(error.code, status)
    if (request.routeOptions.url === config.webhookPath) metrics.updates.inc({ outcome: 'rejected', reason })
    if (status >= 500) request.log.error({ err: error }, 'request failed')
    else rejectedLog.note(reason, { status, code: error.code, ip: request.ip, url: request.url }, error.message)
    void reply.code(status).send({ error: error.message })
  })
  app.setNotFoundHandler((request, reply) => {
    rejectedLog.note('not_found', { status: 404, ip: request.ip, method: request.method, url: request.url }, 'no such route')
    void reply.code(404).send({ error: 'not found' })
  })

  app.post(
    config.webhookPath,
    {
      config: {
        rateLimit: { ...BAD_SECRET_LIMIT, allowList: (request: FastifyRequest) => hasSecret(request) },
      },
      // After the rate limiter's onRequest hook (so failures are counted), before the body is read.
      preParsing: async (request, reply) => {
        if (hasSecret(request)) return
        metrics.updates.inc({ outcome: 'rejected', reason: 'bad_secret' })
        rejectedLog.note('bad_secret', { status: 401, ip: request.ip }, 'webhook request without the right secret')
        // The body is never read: closing the connection stops a client from trickling it in.
        return reply.code(401).header('connection', 'close').send({ error: 'missing or wrong X-Telegram-Bot-Api-Secret-Token' })
      },
      onResponse: async (_request, reply) => {
        metrics.webhookDuration.observe(reply.elapsedTime / 1000)
      },
    },
    async (request, reply) => {
      const receipt = await coordinator.receive(request.body)
      metrics.updates.inc(
        receipt.outcome === 'rejected' ? { outcome: 'rejected', reason: reasonOf(undefined, receipt.status) } : { outcome: receipt.outcome },
      )
      if (receipt.status === 200) return reply.code(200).send(receipt.webhookReply)
      if (receipt.status === 400) rejectedLog.note('bad_request', { status: 400, ip: request.ip, problem: receipt.detail }, 'webhook body is not a Telegram update')
      return reply.code(receipt.status).send({ error: receipt.detail })
    },
  )

  app.get('/livez', async () => ({ status: 'ok' }))

  app.get('/readyz', async (_request, reply) => {
    const checks = {
      accepting: !coordinator.draining,
      ...(await coordinator.readiness()),
      brain_startable: deps.brainStartable(),
      bot_token_checked: deps.botTokenChecked(),
    }
    const ready = Object.values(checks).every(Boolean)
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks })
  })

  app.get('/healthz', async (_request, reply) => {
    const report = await healthReport(deps)
    return reply.code(report.status === 'ok' ? 200 : 503).send(report)
  })

  app.get('/metrics', async (_request, reply) => {
    const body = await metrics.registry.metrics()
    return reply.type(metrics.registry.contentType).send(body)
  })

  return app
}

/** The /healthz document: everything an operator checks first, computed from live state. */
export async function healthReport({ coordinator, loopDelay }: AppDeps) {
  const now = Date.now()
  const loopDelayMs = loopDelay.p99Ms()
  let parts: HealthParts
  try {
    parts = await coordinator.health(now)
  } catch (error) {
    parts = { degraded: true, fields: { store: { writable: false, last_error: (error as Error).message } }, lastUpdateAt: undefined }
  }
  const status = coordinator.draining ? 'draining' : loopDelayMs > DEGRADED_LOOP_DELAY_MS || parts.degraded ? 'degraded' : 'ok'
  return {
    status,
    uptime_s: Math.round((now - coordinator.startedAt) / 1000),
    event_loop_delay_ms: loopDelayMs,
    ...parts.fields,
    last_update_at: parts.lastUpdateAt === undefined ? null : new Date(parts.lastUpdateAt).toISOString(),
  }
}

function reasonOf(code: string | undefined, status: number): string {
  if (status === 413) return 'too_large'
  if (status === 415) return 'unsupported_media_type'
  if (status === 503) return 'unavailable'
  if (code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || code === 'FST_ERR_CTP_INVALID_JSON_BODY' || status === 400) return 'bad_request'
  return `http_${status}`
}
