import { isIP } from 'node:net'
import path from 'node:path'
import { splitCommandLine } from './brain/argv.js'
import { toReaction, type ReactionEmoji } from './telegram/reactions.js'

/** The service's settings, read once from the environment and validated up front. */
export interface Config {
  readonly botToken: string
  readonly webhookSecret: string
  /** The secret being rotated out, accepted alongside webhookSecret until Telegram has the new one. */
  readonly webhookSecretPrevious: string | undefined
  readonly apiRoot: string
  /** Chats whose messages reach the brain; 'all' only when ALLOW_ALL_CHATS=1. */
  readonly allowedChats: ReadonlySet<number> | 'all'
  /** Who may speak: any message in a group needs its sender here (see access.ts). */
  readonly allowedUsers: ReadonlySet<number>
  /** Proxies whose X-Forwarded-For is believed (addresses or CIDR ranges); none by default. */
  readonly trustedProxies: readonly string[]
  readonly brain: BrainConfig
  readonly host: string
  readonly port: number
  readonly webhookPath: string
  readonly maxConcurrentBrains: number
  readonly shutdownGraceMs: number
  readonly stateDir: string
  readonly lockDir: string
  readonly ackEmoji: ReactionEmoji
  readonly ackMode: AckMode
  /** The reaction that replaces the receipt one when a message is finished; undefined leaves the receipt. */
  readonly reactions: OutcomeReactions
  /** What happens to a message that arrives while its chat's brain runs. */
  readonly busyMode: BusyMode
  /** Whether an edited message is ignored or queued for the brain as a new message. */
  readonly edits: EditsMode
  readonly logLevel: LogLevel
  /** 'sqlite' keeps the inbox on disk (the default); 'memory' trades durability for nothing. */
  readonly inbox: 'sqlite' | 'memory'
  /** DATABASE_URL: the Postgres mode (several hosts sharing one database) when set. */
  readonly databaseUrl: string | undefined
  /** CHAT_STATE_MAX_MB: a chat's directory is carried between hosts through Postgres up to this size; 0: a shared directory instead. */
  readonly chatStateMaxBytes: number
  readonly inboxRetentionMs: number
  /** All stored media together stay under this; a file that would not fit is not downloaded. */
  readonly mediaQuotaBytes: number
  /** Whether Telegram may show (and so fetch) a preview of the first link in a reply. */
  readonly linkPreviews: boolean
}

export interface BrainConfig {
  readonly argv: readonly [string, ...string[]]
  /** What the brain reads on stdin: the JSON envelope, or just the message text (prompt-on-stdin CLIs). */
  readonly input: BrainInput
  /** BRAIN_CWD when configured; otherwise each attempt works in its chat's directory. */
  readonly cwd: string | undefined
  /** Whether each attempt runs inside the bubblewrap sandbox (see brain/sandbox.ts). */
  readonly sandbox: SandboxMode
  /** Whether a sandboxed brain keeps the host's network. */
  readonly network: NetworkMode
  readonly envAllow: readonly string[]
  readonly timeoutMs: number
  readonly messageBudgetMs: number
  readonly killGraceMs: number
}

export interface OutcomeReactions {
  readonly done: ReactionEmoji | undefined
  readonly failed: ReactionEmoji | undefined
  readonly timedOut: ReactionEmoji | undefined
}

/**
 * `queue`: each message gets its own run, in order. `collect`: what arrived during a run goes into
 * one next run. `interrupt`: a new message stops the running brain; the next run gets everything.
 */
export const BUSY_MODES = ['queue', 'collect', 'interrupt'] as const
export type BusyMode = (typeof BUSY_MODES)[number]
export const BRAIN_INPUTS = ['json', 'text'] as const
export type BrainInput = (typeof BRAIN_INPUTS)[number]
/**
 * `api`: the receipt reaction is its own Bot API call (failures visible, the default).
 * `webhook-reply`: it rides in the webhook's 200 body, as the Bot API allows: no outbound request,
 * but no error either when Telegram refuses it.
 */
export const ACK_MODES = ['api', 'webhook-reply'] as const
export type AckMode = (typeof ACK_MODES)[number]
export const EDITS_MODES = ['ignore', 'queue'] as const
export type EditsMode = (typeof EDITS_MODES)[number]

/** `on`: every brain attempt runs inside bubblewrap (the default). `off`: unconfined, as the service's user. */
export const SANDBOX_MODES = ['on', 'off'] as const
export type SandboxMode = (typeof SANDBOX_MODES)[number]
/** `on`: a sandboxed brain shares the host's network (the default). `off`: it has only a loopback of its own. */
export const NETWORK_MODES = ['on', 'off'] as const
export type NetworkMode = (typeof NETWORK_MODES)[number]
export const LINK_PREVIEW_MODES = ['on', 'off'] as const

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

export const DEFAULTS = {
  apiRoot: 'https://api.telegram.org',
  host: '127.0.0.1',
  port: 8787,
  webhookPath: '/telegram/webhook',
  maxConcurrentBrains: 4,
  brainTimeoutS: 90,
  messageBudgetS: 180,
  killGraceS: 5,
  shutdownGraceS: 30,
  stateDir: './var',
  ackEmoji: '👀',
  reactionDone: '👍',
  reactionFailed: '💔',
  reactionTimeout: '🥱',
  busyMode: 'queue',
  brainInput: 'json',
  ackMode: 'api',
  edits: 'ignore',
  logLevel: 'info',
  inboxRetentionH: 72,
  chatStateMaxMb: 64,
  brainSandbox: 'on',
  brainNetwork: 'on',
  mediaQuotaMb: 2048,
  linkPreviews: 'off',
} as const

/** A configuration value that cannot be used; the message names the variable and the fix. */
export class ConfigError extends Error {
  readonly variable: string
  constructor(variable: string, problem: string) {
    super(`${variable} ${problem}`)
    this.name = 'ConfigError'
    this.variable = variable
  }
}

type Env = Readonly<Record<string, string | undefined>>

const SECRET_PATTERN = /^[A-Za-z0-9_-]{1,256}$/u
/** The webhook secret is all that tells Telegram's deliveries from anyone else's: it must not be guessable. */
export const MIN_SECRET_LENGTH = 16
const MAKE_SECRET = 'make one with `openssl rand -hex 32`'
const CHAT_ID_PATTERN = /^-?\d{1,20}$/u
const ENV_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/u
const DECIMAL_PATTERN = /^\d+(\.\d+)?$/u

/** Reads and validates the whole configuration; throws ConfigError on the first bad value. */
export function loadConfig(env: Env = process.env, cwd = process.cwd()): Config {
  const read = reader(env)

  const { botToken, webhookSecret, webhookSecretPrevious, apiRoot } = readTelegramSettings(read)
  const allowedChats = readAllowedChats(read)
  const allowedUsers = readIdList(read, 'ALLOWED_USER_IDS', 'user ids such as 123456789')
  const lonelyGroup = groupWithoutSenders(allowedChats, allowedUsers)
  if (lonelyGroup !== undefined) {
    throw new ConfigError(
      'ALLOWED_USER_IDS',
      `is required when ALLOWED_CHAT_IDS has a group (${lonelyGroup}): set it to the user ids of the people who may talk to the brain there`,
    )
  }

  const stateDir = readStateDir(read, cwd)
  const lockDir = path.resolve(cwd, read('LOCK_DIR') ?? defaultLockDir(read, stateDir))

  const timeoutMs = seconds(read, 'BRAIN_TIMEOUT_S', DEFAULTS.brainTimeoutS, { min: 0.001 })
  const messageBudgetMs = seconds(read, 'MESSAGE_BUDGET_S', DEFAULTS.messageBudgetS, { min: 0.001 })
  // A budget shorter than one attempt's limit would cut every attempt short of BRAIN_TIMEOUT_S.
  if (messageBudgetMs < timeoutMs) {
    throw new ConfigError(
      'MESSAGE_BUDGET_S',
      `must be at least BRAIN_TIMEOUT_S (${timeoutMs / 1000} s): it covers all attempts of a message; got ${messageBudgetMs / 1000} s`,
    )
  }

  const brain: BrainConfig = {
    argv: readBrainCommand(read, cwd),
    input: oneOf(read, 'BRAIN_INPUT', BRAIN_INPUTS, DEFAULTS.brainInput),
    cwd: optionalPath(read('BRAIN_CWD'), cwd),
    sandbox: oneOf(read, 'BRAIN_SANDBOX', SANDBOX_MODES, DEFAULTS.brainSandbox),
    network: oneOf(read, 'BRAIN_NETWORK', NETWORK_MODES, DEFAULTS.brainNetwork),
    envAllow: readEnvAllow(read),
    timeoutMs,
    messageBudgetMs,
    killGraceMs: seconds(read, 'KILL_GRACE_S', DEFAULTS.killGraceS, { min: 0 }),
  }

  const webhookPath = read('WEBHOOK_PATH') ?? DEFAULTS.webhookPath
  if (!/^\/[A-Za-z0-9._~\-/]*$/u.test(webhookPath)) {
    throw new ConfigError('WEBHOOK_PATH', `must be a URL path starting with / (letters, digits, . _ ~ - /); got "${webhookPath}"`)
  }

  const ackEmoji = reaction(read, 'ACK_EMOJI', DEFAULTS.ackEmoji)
  // Unlike other variables, an empty value means something here: keep the receipt reaction.
  const outcomeReaction = (name: string, fallback: ReactionEmoji): ReactionEmoji | undefined =>
    env[name] !== undefined && env[name]?.trim() === '' ? undefined : reaction(read, name, fallback)
  const reactions: OutcomeReactions = {
    done: outcomeReaction('REACTION_DONE', DEFAULTS.reactionDone),
    failed: outcomeReaction('REACTION_FAILED', DEFAULTS.reactionFailed),
    timedOut: outcomeReaction('REACTION_TIMEOUT', DEFAULTS.reactionTimeout),
  }

  const logLevel = read('LOG_LEVEL') ?? DEFAULTS.logLevel
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}; got "${logLevel}"`)
  }

  const inbox = read('INBOX') ?? 'sqlite'
  if (inbox !== 'sqlite' && inbox !== 'memory') {
    throw new ConfigError('INBOX', `must be "sqlite" (durable, the default) or "memory"; got "${inbox}"`)
  }

  return {
    botToken,
    webhookSecret,
    webhookSecretPrevious,
    apiRoot,
    allowedChats,
    allowedUsers,
    trustedProxies: readTrustedProxies(read),
    brain,
    host: read('HOST') ?? DEFAULTS.host,
    port: integer(read, 'PORT', DEFAULTS.port, { min: 0, max: 65535 }),
    webhookPath,
    maxConcurrentBrains: integer(read, 'MAX_CONCURRENT_BRAINS', DEFAULTS.maxConcurrentBrains, { min: 1, max: 1024 }),
    shutdownGraceMs: seconds(read, 'SHUTDOWN_GRACE_S', DEFAULTS.shutdownGraceS, { min: 0 }),
    stateDir,
    lockDir,
    ackEmoji,
    ackMode: oneOf(read, 'ACK_MODE', ACK_MODES, DEFAULTS.ackMode),
    reactions,
    busyMode: oneOf(read, 'BUSY_MODE', BUSY_MODES, DEFAULTS.busyMode),
    edits: oneOf(read, 'EDITS', EDITS_MODES, DEFAULTS.edits),
    logLevel: logLevel as LogLevel,
    inbox,
    databaseUrl: databaseUrl(read),
    chatStateMaxBytes: integer(read, 'CHAT_STATE_MAX_MB', DEFAULTS.chatStateMaxMb, { min: 0, max: 1024 }) * 1024 * 1024,
    inboxRetentionMs: seconds(read, 'INBOX_RETENTION_H', DEFAULTS.inboxRetentionH, { min: 24, unit: 3600 }),
    mediaQuotaBytes: integer(read, 'MEDIA_QUOTA_MB', DEFAULTS.mediaQuotaMb, { min: 0, max: 16 * 1024 * 1024 }) * 1024 * 1024,
    linkPreviews: oneOf(read, 'LINK_PREVIEWS', LINK_PREVIEW_MODES, DEFAULTS.linkPreviews) === 'on',
  }
}

export type TelegramSettings = Pick<Config, 'botToken' | 'webhookSecret' | 'webhookSecretPrevious' | 'apiRoot'>

/** Just the settings the webhook commands need (set-webhook, webhook-info, delete-webhook). */
export function loadTelegramSettings(env: Env = process.env): TelegramSettings {
  return readTelegramSettings(reader(env))
}

/** EDITS alone, for set-webhook's allowed_updates. */
export function loadEditsMode(env: Env = process.env): EditsMode {
  return oneOf(reader(env), 'EDITS', EDITS_MODES, DEFAULTS.edits)
}

/** STATE_DIR alone, for commands that only read the inbox. */
export function loadStateDir(env: Env = process.env, cwd = process.cwd()): string {
  return readStateDir(reader(env), cwd)
}

type Read = (name: string) => string | undefined

function readStateDir(read: Read, cwd: string): string {
  return path.resolve(cwd, read('STATE_DIR') ?? read('STATE_DIRECTORY')?.split(':')[0] ?? DEFAULTS.stateDir)
}

function reader(env: Env): Read {
  return (name) => {
    const value = env[name]?.trim()
    return value === '' ? undefined : value
  }
}

function readTelegramSettings(read: Read): TelegramSettings {
  const botToken = required(read, 'TELEGRAM_BOT_TOKEN', 'set it to the token @BotFather gave you')
  if (/\s|\//u.test(botToken)) {
    throw new ConfigError('TELEGRAM_BOT_TOKEN', 'must be a bot token like 123456:ABC-DEF…; it contains spaces or slashes')
  }

  const webhookSecret = readSecret(read, 'TELEGRAM_WEBHOOK_SECRET')
  if (webhookSecret === undefined) {
    throw new ConfigError('TELEGRAM_WEBHOOK_SECRET', `is required: set it to ${MIN_SECRET_LENGTH}–256 characters of A–Z a–z 0–9 _ - (${MAKE_SECRET})`)
  }
  const webhookSecretPrevious = readSecret(read, 'TELEGRAM_WEBHOOK_SECRET_PREVIOUS')

  const apiRoot = (read('TELEGRAM_API_ROOT') ?? DEFAULTS.apiRoot).replace(/\/+$/u, '')
  if (!isHttpUrl(apiRoot)) {
    throw new ConfigError('TELEGRAM_API_ROOT', `must be an http(s) URL such as ${DEFAULTS.apiRoot}; got "${apiRoot}"`)
  }

  return { botToken, webhookSecret, webhookSecretPrevious, apiRoot }
}

function readSecret(read: Read, name: string): string | undefined {
  const secret = read(name)
  if (secret === undefined) return undefined
  if (!SECRET_PATTERN.test(secret)) {
    throw new ConfigError(
      name,
      `must be ${MIN_SECRET_LENGTH}–256 characters of A–Z a–z 0–9 _ - (${MAKE_SECRET}); got ${secret.length} characters` +
        (secret.length <= 256 ? ' including others' : ''),
    )
  }
  if (secret.length < MIN_SECRET_LENGTH) {
    throw new ConfigError(name, `must be at least ${MIN_SECRET_LENGTH} characters (${MAKE_SECRET}); got ${secret.length}`)
  }
  return secret
}

function required(read: Read, name: string, fix: string): string {
  const value = read(name)
  if (value === undefined) throw new ConfigError(name, `is required: ${fix}`)
  return value
}

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value)
    return url.protocol === 'http:' || url.protocol === 'https:'
  } catch {
    return false
  }
}

function readAllowedChats(read: Read): ReadonlySet<number> | 'all' {
  const allowAll = read('ALLOW_ALL_CHATS')
  if (allowAll !== undefined && allowAll !== '0' && allowAll !== '1') {
    throw new ConfigError('ALLOW_ALL_CHATS', `must be 1 (any chat reaches the brain) or 0; got "${allowAll}"`)
  }
  const list = read('ALLOWED_CHAT_IDS')
  if (list === undefined) {
    if (allowAll === '1') return 'all'
    throw new ConfigError(
      'ALLOWED_CHAT_IDS',
      'is required: set it to the comma-separated chat ids the bot serves (or ALLOW_ALL_CHATS=1 to serve anyone)',
    )
  }
  const ids = parseIds(list, 'ALLOWED_CHAT_IDS', 'integer chat ids such as 123456789,-1001234567890')
  return allowAll === '1' ? 'all' : ids
}

/** A group in ALLOWED_CHAT_IDS while nobody may speak in it (ALLOWED_USER_IDS empty): refused at start. */
function groupWithoutSenders(allowedChats: ReadonlySet<number> | 'all', allowedUsers: ReadonlySet<number>): number | undefined {
  if (allowedChats === 'all' || allowedUsers.size > 0) return undefined
  // Users' and private chats' ids are positive; groups', supergroups' and channels' negative.
  return [...allowedChats].find((id) => id < 0)
}

function readIdList(read: Read, name: string, example: string): ReadonlySet<number> {
  const list = read(name)
  return list === undefined ? new Set() : parseIds(list, name, example)
}

function parseIds(list: string, name: string, example: string): Set<number> {
  const ids = new Set<number>()
  for (const part of list.split(',')) {
    const text = part.trim()
    const id = Number(text)
    if (!CHAT_ID_PATTERN.test(text) || !Number.isSafeInteger(id) || id === 0) {
      throw new ConfigError(name, `must be comma-separated ${example}; got "${text}"`)
    }
    ids.add(id)
  }
  return ids
}

/** TRUSTED_PROXIES: IPv4/IPv6 addresses or CIDR ranges, comma-separated, as Fastify's trustProxy takes them. */
function readTrustedProxies(read: Read): string[] {
  const list = read('TRUSTED_PROXIES')
  if (list === undefined) return []
  const entries = list.split(',').map((entry) => entry.trim()).filter(Boolean)
  for (const entry of entries) {
    const [address = '', bits, extra] = entry.split('/')
    const family = isIP(address)
    const maxBits = family === 6 ? 128 : 32
    const badBits = bits !== undefined && (!/^\d{1,3}$/u.test(bits) || Number(bits) > maxBits)
    if (family === 0 || badBits || extra !== undefined) {
      throw new ConfigError('TRUSTED_PROXIES', `must be comma-separated IP addresses or CIDR ranges such as 127.0.0.1,::1; got "${entry}"`)
    }
  }
  return entries
}

function readBrainCommand(read: Read, cwd: string): readonly [string, ...string[]] {
  const line = required(read, 'BRAIN_COMMAND', 'set it to the brain\'s command line, e.g. "scripts/brains/echo"')
  let argv: string[]
  try {
    argv = splitCommandLine(line)
  } catch (error) {
    throw new ConfigError('BRAIN_COMMAND', `${(error as Error).message}: ${line}`)
  }
  const [command, ...args] = argv
  if (command === undefined || command === '') {
    throw new ConfigError('BRAIN_COMMAND', 'is empty: set it to the brain\'s command line')
  }
  // A relative path means relative to where the service was started, not to BRAIN_CWD.
  return [command.includes('/') ? path.resolve(cwd, command) : command, ...args]
}

function readEnvAllow(read: Read): string[] {
  const list = read('BRAIN_ENV_ALLOW')
  if (list === undefined) return []
  const names = list.split(/[\s,]+/u).filter(Boolean)
  for (const name of names) {
    if (!ENV_NAME_PATTERN.test(name)) {
      throw new ConfigError('BRAIN_ENV_ALLOW', `must be environment variable names separated by commas; "${name}" is not one`)
    }
  }
  return names
}

function optionalPath(value: string | undefined, cwd: string): string | undefined {
  return value === undefined ? undefined : path.resolve(cwd, value)
}

/** DATABASE_URL: a postgres:// URL (a unix socket as ?host=/dir), checked for its form only. */
function databaseUrl(read: Read): string | undefined {
  const value = read('DATABASE_URL')
  if (value === undefined) return undefined
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new ConfigError('DATABASE_URL', 'must be a URL such as postgresql://coordinator@db.example.com/coordinator (or unset for the single-host SQLite inbox)')
  }
  if (url.protocol !== 'postgresql:' && url.protocol !== 'postgres:') {
    throw new ConfigError('DATABASE_URL', `must start with postgresql:// (got ${url.protocol}//); unset it for the single-host SQLite inbox`)
  }
  return value
}

function defaultLockDir(read: Read, stateDir: string): string {
  const runtime = read('RUNTIME_DIRECTORY')?.split(':')[0]
  if (runtime) return path.join(runtime, 'locks')
  const xdg = read('XDG_RUNTIME_DIR')
  if (xdg) return path.join(xdg, 'coordinator')
  return path.join(stateDir, 'locks')
}

function reaction(read: Read, name: string, fallback: ReactionEmoji): ReactionEmoji {
  const text = read(name)
  if (text === undefined) return fallback
  const emoji = toReaction(text)
  if (!emoji) throw new ConfigError(name, `must be an emoji Telegram allows as a reaction (such as 👀 👍 🔥 🤔 💔 🥱); got "${text}"`)
  return emoji
}

function oneOf<T extends string>(read: Read, name: string, choices: readonly T[], fallback: T): T {
  const text = read(name) ?? fallback
  if (!(choices as readonly string[]).includes(text)) {
    throw new ConfigError(name, `must be one of ${choices.join(', ')}; got "${text}"`)
  }
  return text as T
}

interface Bounds {
  min: number
  max?: number
  unit?: number
}

/** A duration given in seconds (or another unit), decimals allowed; returned in milliseconds. */
function seconds(read: Read, name: string, fallback: number, { min, max, unit = 1 }: Bounds): number {
  const text = read(name)
  const unitName = unit === 3600 ? 'hours' : 'seconds'
  if (text === undefined) return fallback * unit * 1000
  const value = Number(text)
  if (!DECIMAL_PATTERN.test(text) || !Number.isFinite(value) || value < min || (max !== undefined && value > max)) {
    const range = max === undefined ? `at least ${min}` : `between ${min} and ${max}`
    throw new ConfigError(name, `must be a number of ${unitName} ${range} (decimals allowed, e.g. ${fallback}); got "${text}"`)
  }
  return Math.round(value * unit * 1000)
}

function integer(read: Read, name: string, fallback: number, { min, max }: Bounds): number {
  const text = read(name)
  if (text === undefined) return fallback
  const value = Number(text)
  if (!/^\d+$/u.test(text) || value < min || (max !== undefined && value > max)) {
    throw new ConfigError(name, `must be a whole number from ${min} to ${max}; got "${text}"`)
  }
  return value
}
