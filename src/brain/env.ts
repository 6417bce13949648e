/** What a brain inherits from the coordinator's own environment without being asked. */
export const INHERITED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'USER'] as const

/**
 * Names a brain never sees, whatever BRAIN_ENV_ALLOW says: the bot's credentials, and systemd's
 * notify socket (a brain writing READY=1 or STOPPING=1 to it would lie about the service's state).
 */
export const NEVER_PASSED_ENV: ReadonlySet<string> = new Set(['TELEGRAM_BOT_TOKEN', 'TELEGRAM_WEBHOOK_SECRET', 'TELEGRAM_WEBHOOK_SECRET_PREVIOUS', 'NOTIFY_SOCKET'])

/** The prefix of every variable the coordinator itself hands a brain (chat id, update id, attempt…). */
export const COORDINATOR_ENV_PREFIX = 'COORDINATOR_'

/** Used when the coordinator runs without PATH (systemd with a bare Environment=, `env -i`). */
export const DEFAULT_PATH = '/usr/local/bin:/usr/bin:/bin'

/**
 * The complete environment for a brain: {@link INHERITED_ENV} and the names in `allow` copied from
 * `parent` when set, then the coordinator's own `COORDINATOR_*` variables (which win over a parent
 * value of the same name). Anything in {@link NEVER_PASSED_ENV} is dropped silently even if listed in
 * `allow`; rejecting such a list loudly is the config layer's job. PATH falls back to
 * {@link DEFAULT_PATH} so a bare BRAIN_COMMAND name still resolves.
 *
 * Throws a TypeError if a key of `coordinator` lacks the `COORDINATOR_` prefix: that is a bug in the
 * caller, and the prefix is what lets a brain tell our variables from its own.
 */
export function brainEnvironment(
  parent: NodeJS.ProcessEnv,
  allow: readonly string[],
  coordinator: Readonly<Record<string, string>>,
): Record<string, string> {
  // A Map, then fromEntries: a name such as "__proto__" becomes a plain variable, not a prototype.
  const env = new Map<string, string>()
  for (const name of [...INHERITED_ENV, ...allow]) {
    const value = parent[name]
    if (typeof value === 'string' && !NEVER_PASSED_ENV.has(name)) env.set(name, value)
  }
  if (!env.get('PATH')) env.set('PATH', DEFAULT_PATH)
  for (const [name, value] of Object.entries(coordinator)) {
    if (!name.startsWith(COORDINATOR_ENV_PREFIX)) {
      throw new TypeError(`brain environment: coordinator variables must start with ${COORDINATOR_ENV_PREFIX}; got "${name}"`)
    }
    env.set(name, value)
  }
  return Object.fromEntries(env)
}
