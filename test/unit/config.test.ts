import t from 'tap'
import { ConfigError, DEFAULTS, loadConfig } from '../../src/config.js'

const VALID = {
  TELEGRAM_BOT_TOKEN: '123456:ABC-def',
  TELEGRAM_WEBHOOK_SECRET: 'secret_0123456789',
  ALLOWED_CHAT_IDS: '5550001',
  BRAIN_COMMAND: 'scripts/brains/echo',
  STATE_DIR: '/tmp/coordinator-config-test',
} as const

/** Loads VALID with some variables changed (undefined removes one) and returns the ConfigError. */
function errorFor(changes: Record<string, string | undefined>): ConfigError | undefined {
  try {
    loadConfig({ ...VALID, ...changes }, '/srv')
    return undefined
  } catch (error) {
    if (error instanceof ConfigError) return error
    throw error
  }
}

// Each row: a bad setting, the variable the message must name, and the fix it must say.
const CASES: [Record<string, string | undefined>, string, RegExp][] = [
  [{ TELEGRAM_BOT_TOKEN: undefined }, 'TELEGRAM_BOT_TOKEN', /is required: set it to the token @BotFather gave you/u],
  [{ TELEGRAM_BOT_TOKEN: '123 456' }, 'TELEGRAM_BOT_TOKEN', /must be a bot token like 123456:ABC-DEF…/u],
  [{ TELEGRAM_WEBHOOK_SECRET: undefined }, 'TELEGRAM_WEBHOOK_SECRET', /is required: set it to 16–256 characters of A–Z a–z 0–9 _ - \(make one with `openssl rand -hex 32`\)/u],
  [{ TELEGRAM_WEBHOOK_SECRET: 'has space!' }, 'TELEGRAM_WEBHOOK_SECRET', /must be 16–256 characters .*; got 10 characters including others/u],
  [{ TELEGRAM_WEBHOOK_SECRET: 'a'.repeat(257) }, 'TELEGRAM_WEBHOOK_SECRET', /must be 16–256 characters .*; got 257 characters$/u],
  [{ TELEGRAM_WEBHOOK_SECRET: 'short_secret' }, 'TELEGRAM_WEBHOOK_SECRET', /must be at least 16 characters \(make one with `openssl rand -hex 32`\); got 12$/u],
  [{ TELEGRAM_WEBHOOK_SECRET_PREVIOUS: 'old' }, 'TELEGRAM_WEBHOOK_SECRET_PREVIOUS', /must be at least 16 characters \(make one with `openssl rand -hex 32`\); got 3$/u],
  [{ ALLOWED_USER_IDS: '12,@ada' }, 'ALLOWED_USER_IDS', /must be comma-separated user ids such as 123456789; got "@ada"/u],
  [{ ALLOWED_CHAT_IDS: '12,-1001234567890' }, 'ALLOWED_USER_IDS', /is required when ALLOWED_CHAT_IDS has a group \(-1001234567890\): set it to the user ids of the people who may talk/u],
  [{ TRUSTED_PROXIES: 'caddy' }, 'TRUSTED_PROXIES', /must be comma-separated IP addresses or CIDR ranges such as 127\.0\.0\.1,::1; got "caddy"/u],
  [{ TRUSTED_PROXIES: '10.0.0.0/40' }, 'TRUSTED_PROXIES', /got "10\.0\.0\.0\/40"/u],
  [{ TELEGRAM_API_ROOT: 'ftp://example.com' }, 'TELEGRAM_API_ROOT', /must be an http\(s\) URL such as https:\/\/api\.telegram\.org; got "ftp:\/\/example\.com"/u],
  [{ ALLOWED_CHAT_IDS: undefined }, 'ALLOWED_CHAT_IDS', /is required: set it to the comma-separated chat ids .* \(or ALLOW_ALL_CHATS=1/u],
  [{ ALLOWED_CHAT_IDS: '12,abc' }, 'ALLOWED_CHAT_IDS', /must be comma-separated integer chat ids such as .*; got "abc"/u],
  [{ ALLOWED_CHAT_IDS: '0' }, 'ALLOWED_CHAT_IDS', /got "0"/u],
  [{ ALLOW_ALL_CHATS: 'yes' }, 'ALLOW_ALL_CHATS', /must be 1 \(any chat reaches the brain\) or 0; got "yes"/u],
  [{ BRAIN_COMMAND: undefined }, 'BRAIN_COMMAND', /is required: set it to the brain's command line, e.g\. "scripts\/brains\/echo"/u],
  [{ BRAIN_COMMAND: 'brain "unclosed' }, 'BRAIN_COMMAND', /: brain "unclosed$/u],
  [{ BRAIN_COMMAND: '""' }, 'BRAIN_COMMAND', /is empty: set it to the brain's command line/u],
  [{ BRAIN_INPUT: 'xml' }, 'BRAIN_INPUT', /must be one of json, text; got "xml"/u],
  [{ BRAIN_ENV_ALLOW: 'GOOD,1BAD' }, 'BRAIN_ENV_ALLOW', /must be environment variable names separated by commas; "1BAD" is not one/u],
  [{ PORT: '70000' }, 'PORT', /must be a whole number from 0 to 65535; got "70000"/u],
  [{ PORT: '80a' }, 'PORT', /must be a whole number from 0 to 65535; got "80a"/u],
  [{ WEBHOOK_PATH: 'no-slash' }, 'WEBHOOK_PATH', /must be a URL path starting with \/ .*; got "no-slash"/u],
  [{ MAX_CONCURRENT_BRAINS: '0' }, 'MAX_CONCURRENT_BRAINS', /must be a whole number from 1 to 1024; got "0"/u],
  [{ BRAIN_TIMEOUT_S: '0' }, 'BRAIN_TIMEOUT_S', /must be a number of seconds at least 0\.001 \(decimals allowed, e\.g\. 90\); got "0"/u],
  [{ BRAIN_TIMEOUT_S: '1m' }, 'BRAIN_TIMEOUT_S', /got "1m"/u],
  [{ MESSAGE_BUDGET_S: '-5' }, 'MESSAGE_BUDGET_S', /must be a number of seconds at least 0\.001 \(decimals allowed, e\.g\. 180\); got "-5"/u],
  [{ BRAIN_TIMEOUT_S: '60', MESSAGE_BUDGET_S: '30' }, 'MESSAGE_BUDGET_S', /must be at least BRAIN_TIMEOUT_S \(60 s\): it covers all attempts of a message; got 30 s/u],
  [{ BRAIN_TIMEOUT_S: '600' }, 'MESSAGE_BUDGET_S', /must be at least BRAIN_TIMEOUT_S \(600 s\).*; got 180 s/u],
  [{ KILL_GRACE_S: 'soon' }, 'KILL_GRACE_S', /must be a number of seconds at least 0 \(decimals allowed, e\.g\. 5\); got "soon"/u],
  [{ SHUTDOWN_GRACE_S: '1e3' }, 'SHUTDOWN_GRACE_S', /must be a number of seconds at least 0 \(decimals allowed, e\.g\. 30\); got "1e3"/u],
  [{ ACK_EMOJI: 'x' }, 'ACK_EMOJI', /must be an emoji Telegram allows as a reaction \(such as .*\); got "x"/u],
  [{ ACK_MODE: 'reply' }, 'ACK_MODE', /must be one of api, webhook-reply; got "reply"/u],
  [{ REACTION_DONE: '✅' }, 'REACTION_DONE', /must be an emoji Telegram allows as a reaction .*; got "✅"/u],
  [{ REACTION_FAILED: 'no' }, 'REACTION_FAILED', /must be an emoji Telegram allows/u],
  [{ REACTION_TIMEOUT: 'no' }, 'REACTION_TIMEOUT', /must be an emoji Telegram allows/u],
  [{ BUSY_MODE: 'drop' }, 'BUSY_MODE', /must be one of queue, collect, interrupt; got "drop"/u],
  [{ EDITS: 'yes' }, 'EDITS', /must be one of ignore, queue; got "yes"/u],
  [{ INBOX: 'redis' }, 'INBOX', /must be "sqlite" \(durable, the default\) or "memory"; got "redis"/u],
  [{ INBOX_RETENTION_H: '12' }, 'INBOX_RETENTION_H', /must be a number of hours at least 24 \(decimals allowed, e\.g\. 72\); got "12"/u],
  [{ LOG_LEVEL: 'verbose' }, 'LOG_LEVEL', /must be one of fatal, error, warn, info, debug, trace, silent; got "verbose"/u],
  [{ DATABASE_URL: 'db.example.com' }, 'DATABASE_URL', /must be a URL such as postgresql:\/\//u],
  [{ DATABASE_URL: 'mysql://db/x' }, 'DATABASE_URL', /must start with postgresql:\/\/ \(got mysql:\/\/\); unset it for the single-host SQLite inbox/u],
  [{ CHAT_STATE_MAX_MB: '-1' }, 'CHAT_STATE_MAX_MB', /CHAT_STATE_MAX_MB must be/u],
]

t.test('every bad setting: one line that starts with the variable and says the fix', async (t) => {
  for (const [changes, variable, fix] of CASES) {
    const error = errorFor(changes)
    const what = `${variable}=${JSON.stringify(Object.values(changes)[0])?.slice(0, 40) ?? '(unset)'}`
    if (!error) {
      t.fail(`${what} was accepted`)
      continue
    }
    t.equal(error.variable, variable, `${what}: names ${variable}`)
    t.ok(error.message.startsWith(`${variable} `), `${what}: the message starts with the variable`)
    t.notMatch(error.message, /\n/u, `${what}: one line`)
    t.match(error.message, fix, `${what}: says the fix`)
  }
})

t.test('every variable in the table has a row', async (t) => {
  const covered = new Set(CASES.map(([, variable]) => variable))
  // HOST, STATE_DIR and LOCK_DIR take any value; their problems show when the service uses them.
  for (const variable of ['TELEGRAM_BOT_TOKEN', 'TELEGRAM_WEBHOOK_SECRET', 'TELEGRAM_WEBHOOK_SECRET_PREVIOUS', 'TELEGRAM_API_ROOT', 'ALLOWED_CHAT_IDS', 'ALLOWED_USER_IDS', 'ALLOW_ALL_CHATS', 'TRUSTED_PROXIES', 'BRAIN_COMMAND', 'BRAIN_INPUT', 'BRAIN_ENV_ALLOW', 'PORT', 'WEBHOOK_PATH', 'MAX_CONCURRENT_BRAINS', 'BRAIN_TIMEOUT_S', 'MESSAGE_BUDGET_S', 'KILL_GRACE_S', 'SHUTDOWN_GRACE_S', 'ACK_EMOJI', 'ACK_MODE', 'REACTION_DONE', 'REACTION_FAILED', 'REACTION_TIMEOUT', 'BUSY_MODE', 'EDITS', 'INBOX', 'INBOX_RETENTION_H', 'LOG_LEVEL', 'DATABASE_URL', 'CHAT_STATE_MAX_MB']) {
    t.ok(covered.has(variable), variable)
  }
})

t.test('the defaults the README documents', async (t) => {
  const config = loadConfig(VALID, '/srv')
  t.match(config, {
    apiRoot: 'https://api.telegram.org',
    host: '127.0.0.1',
    port: 8787,
    webhookPath: '/telegram/webhook',
    maxConcurrentBrains: 4,
    shutdownGraceMs: 30_000,
    ackEmoji: '👀',
    ackMode: 'api',
    reactions: { done: '👍', failed: '💔', timedOut: '🥱' },
    busyMode: 'queue',
    edits: 'ignore',
    inbox: 'sqlite',
    databaseUrl: undefined,
    chatStateMaxBytes: 64 * 1024 * 1024,
    logLevel: 'info',
    inboxRetentionMs: 72 * 3600_000,
    brain: { input: 'json', envAllow: [], timeoutMs: 90_000, messageBudgetMs: 180_000, killGraceMs: 5000, sandbox: 'on', network: 'on' },
    lockDir: `${VALID.STATE_DIR}/locks`,
    webhookSecretPrevious: undefined,
    trustedProxies: [],
    mediaQuotaBytes: 2048 * 1024 * 1024,
    linkPreviews: false,
  })
  t.equal(config.allowedUsers.size, 0, 'nobody listed beyond the chats')
  t.equal(config.brain.cwd, undefined, "no BRAIN_CWD: each brain works in its chat's directory, never in STATE_DIR")
  t.equal(DEFAULTS.maxConcurrentBrains, 4)
})

t.test('good values: decimals, lists, relative paths, empty outcome reactions', async (t) => {
  const config = loadConfig(
    {
      ...VALID,
      ALLOWED_CHAT_IDS: ' 12, -1001234567890 ',
      ALLOWED_USER_IDS: '12,5550002',
      TELEGRAM_WEBHOOK_SECRET_PREVIOUS: 'previous_secret_0123',
      TRUSTED_PROXIES: '127.0.0.1, ::1, 10.0.0.0/8',
      BRAIN_COMMAND: 'bin/brain --flag "two words"',
      BRAIN_TIMEOUT_S: '1.5',
      BRAIN_ENV_ALLOW: 'A, B_2',
      REACTION_DONE: '',
      INBOX_RETENTION_H: '24',
      STATE_DIR: 'state',
    },
    '/srv',
  )
  t.same([...(config.allowedChats as Set<number>)], [12, -1001234567890])
  t.same([...config.allowedUsers], [12, 5550002])
  t.equal(config.webhookSecretPrevious, 'previous_secret_0123')
  t.same(config.trustedProxies, ['127.0.0.1', '::1', '10.0.0.0/8'])
  t.same(config.brain.argv, ['/srv/bin/brain', '--flag', 'two words'], 'a relative command is relative to where the service starts')
  t.equal(config.brain.timeoutMs, 1500)
  t.same(config.brain.envAllow, ['A', 'B_2'])
  t.equal(config.reactions.done, undefined, 'REACTION_DONE empty keeps the 👀')
  t.equal(config.inboxRetentionMs, 24 * 3600_000)
  t.equal(config.stateDir, '/srv/state')
  t.equal(loadConfig({ ...VALID, ALLOWED_CHAT_IDS: undefined, ALLOW_ALL_CHATS: '1' }, '/srv').allowedChats, 'all')
})
