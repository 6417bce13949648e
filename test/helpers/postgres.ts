// A real Postgres server for each test file: the one in COORDINATOR_TEST_DATABASE_URL when given, else
// a throwaway cluster from Debian's postgresql package (initdb in a temp dir, a unix socket there and
// no TCP port), which dies with the test process and leaves nothing behind.
//
// Postgres refuses to run as root, and the tests run as root (CI too): the cluster is then run as the
// `postgres` system user (Debian's package creates it), else `nobody`.
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import pg from 'pg'
import type { Test } from 'tap'
import { processInfo } from './proc.js'

/** A Postgres server for tests. */
export interface TestPostgres {
  /** A connection string for a fresh, empty database of its own (CREATE DATABASE per call). */
  createDatabase(): Promise<string>
  /**
   * Stops the server (a fast shutdown), to test outages; start() brings it back on the same socket.
   * Only for a cluster this helper started: throws for a server given in COORDINATOR_TEST_DATABASE_URL.
   */
  stop(): Promise<void>
  start(): Promise<void>
  /** Stops it (an immediate shutdown) and deletes its directory; drops the databases it made on a given server. */
  close(): Promise<void>
  /** True when this helper started the cluster (so stop() and start() work). */
  readonly owned: boolean
}

/** The environment variable naming a server to use instead of a throwaway cluster. */
export const TEST_DATABASE_URL_ENV = 'COORDINATOR_TEST_DATABASE_URL'

const execFileAsync = promisify(execFile)

const DEBIAN_POSTGRES_ROOT = '/usr/lib/postgresql'
const INSTALL_HELP = `install Debian's package (apt-get install postgresql; .ci/run does), or set ${TEST_DATABASE_URL_ENV}`
// Every throwaway cluster lives in a directory named so; a dead test process's is swept by the next.
const DIR_PREFIX = 'coordinator-postgres-'
// The port only names the socket file (.s.PGSQL.<port>): there is no TCP listener, and each cluster has its own directory.
const PORT = 5432
// Sun_path holds 108 bytes with its NUL: the socket's full path must fit.
const MAX_SOCKET_PATH = 107
const START_TIMEOUT_MS = 30_000
const STOP_TIMEOUT_MS = 30_000
// A directory whose owner never wrote its `owner` file is swept only once it is clearly abandoned.
const ORPHAN_AGE_MS = 10 * 60_000

// Settings for speed over durability (a crash loses a throwaway cluster, which is fine), and room for
// several processes that each hold a pool of connections.
const SERVER_SETTINGS: Record<string, string> = {
  listen_addresses: "''",
  port: String(PORT),
  max_connections: '300',
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
  wal_level: 'minimal',
  max_wal_senders: '0',
  max_wal_size: "'1GB'",
  checkpoint_timeout: "'30min'",
  jit: 'off',
  log_min_messages: 'warning',
  log_checkpoints: 'off',
}

/** The server for a test file, or the reason there is none (which binary or user is missing). */
export async function startTestPostgres(): Promise<TestPostgres | { skip: string }> {
  const given = process.env[TEST_DATABASE_URL_ENV]
  if (given !== undefined && given !== '') return givenServer(given)
  const found = findBinaries()
  if ('skip' in found) return found
  const runAs = clusterUser()
  if ('skip' in runAs) return runAs
  sweepStaleClusters()
  return startCluster(found.bin, runAs)
}

/**
 * For tap: `const pg = await postgresOrSkip(t); if (!pg) return`. Without Postgres it skips the test
 * with the reason, except under CI=true, where it fails it (CI never skips). `{ outages: true }` asks
 * for a server this helper owns, for tests that stop and start it. Closes the server on t's teardown.
 */
export async function postgresOrSkip(t: Test, options: { outages?: boolean } = {}): Promise<TestPostgres | undefined> {
  const started = await startTestPostgres()
  let skip = 'skip' in started ? started.skip : undefined
  if (!('skip' in started)) {
    t.teardown(() => started.close())
    if (!options.outages || started.owned) return started
    skip = `this test stops and starts Postgres, which it cannot do to the server in ${TEST_DATABASE_URL_ENV}`
  }
  if (process.env.CI === 'true') t.fail(`no Postgres for this test under CI: ${skip}`)
  // A skipped assertion carrying the reason: tap lists it with the run's skips.
  else t.pass('this test needs Postgres', { skip: skip ?? '' })
  return undefined
}

function findBinaries(): { bin: string } | { skip: string } {
  let versions: string[] = []
  try {
    versions = fs.readdirSync(DEBIAN_POSTGRES_ROOT).filter((entry) => /^\d+(\.\d+)?$/u.test(entry))
  } catch {
    // no postgresql package at all
  }
  // The newest major version that has every binary the cluster needs.
  versions.sort((a, b) => Number(b) - Number(a))
  for (const version of versions) {
    const bin = path.join(DEBIAN_POSTGRES_ROOT, version, 'bin')
    if (['initdb', 'postgres'].every((name) => isExecutable(path.join(bin, name)))) return { bin }
  }
  return { skip: `no ${DEBIAN_POSTGRES_ROOT}/<version>/bin/initdb and postgres: ${INSTALL_HELP}` }
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** Who runs the cluster, and the command prefix that makes a child run as them and die with this process. */
interface ClusterUser {
  readonly name: string
  readonly uid: number
  readonly gid: number
  /** setpriv's arguments up to and including `--`. */
  readonly setpriv: string[]
}

function clusterUser(): ClusterUser | { skip: string } {
  if (spawnSync('setpriv', ['--version']).error) return { skip: 'setpriv is not installed (Debian\'s util-linux has it)' }
  // The parent-death signal: SIGQUIT is Postgres's immediate shutdown, so a test process killed
  // outright (SIGKILL, a tap timeout) takes its server with it.
  const deathSignal = '--pdeathsig=SIGQUIT'
  if (process.getuid?.() !== 0) {
    const me = os.userInfo()
    return { name: me.username, uid: me.uid, gid: me.gid, setpriv: [deathSignal, '--'] }
  }
  for (const name of ['postgres', 'nobody']) {
    const ids = spawnSync('id', ['-u', name], { encoding: 'utf8' })
    const gids = spawnSync('id', ['-g', name], { encoding: 'utf8' })
    if (ids.status === 0 && gids.status === 0) {
      const uid = Number(ids.stdout.trim())
      const gid = Number(gids.stdout.trim())
      return { name, uid, gid, setpriv: [`--reuid=${uid}`, `--regid=${gid}`, '--init-groups', deathSignal, '--'] }
    }
  }
  return { skip: 'Postgres cannot run as root, and there is neither a `postgres` nor a `nobody` user to run it as' }
}

/** Runs a program as the cluster's user; rejects with its output when it fails. */
async function runAsClusterUser(user: ClusterUser, dir: string, program: string, args: string[]): Promise<void> {
  try {
    await execFileAsync('setpriv', [...user.setpriv, program, ...args], { cwd: dir, env: clusterEnv(), encoding: 'utf8' })
  } catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string }
    throw new Error(`${path.basename(program)} failed: ${(error as Error).message}\n${stdout}${stderr}`, { cause: error })
  }
}

function clusterEnv(): NodeJS.ProcessEnv {
  return { PATH: '/usr/bin:/bin', LC_ALL: 'C', TZ: 'UTC' }
}

async function startCluster(bin: string, user: ClusterUser): Promise<TestPostgres> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), DIR_PREFIX))
  fs.writeFileSync(path.join(dir, 'owner'), processIdentity(process.pid) ?? '')
  const socket = path.join(dir, `.s.PGSQL.${PORT}`)
  if (socket.length > MAX_SOCKET_PATH) {
    fs.rmSync(dir, { recursive: true, force: true })
    throw new Error(`the Postgres socket path ${socket} is longer than ${MAX_SOCKET_PATH} bytes: set TMPDIR to a shorter directory`)
  }
  const data = path.join(dir, 'data')
  try {
    fs.chownSync(dir, user.uid, user.gid)
    // Any local user may reach the socket (clients run as root, or as another user); the data dir stays 0700.
    fs.chmodSync(dir, 0o711)
    await runAsClusterUser(user, dir, path.join(bin, 'initdb'), ['-D', data, '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync', '--no-instructions'])
    const settings = { ...SERVER_SETTINGS, unix_socket_directories: `'${dir}'` }
    fs.appendFileSync(path.join(data, 'postgresql.conf'), Object.entries(settings).map(([name, value]) => `${name} = ${value}\n`).join(''))
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true })
    throw error
  }
  const cluster = new Cluster(bin, dir, user)
  try {
    await cluster.start()
  } catch (error) {
    await cluster.close()
    throw error
  }
  return cluster
}

/** A throwaway cluster: a postmaster run as this process's child, in a directory of its own. */
class Cluster implements TestPostgres {
  readonly owned = true
  readonly #bin: string
  readonly #dir: string
  readonly #user: ClusterUser
  #server: { child: ChildProcess; exited: Promise<void>; log: () => string } | undefined
  #closed = false
  // Removes what close() would, if the process exits without calling it (a test that forgot).
  readonly #onExit = (): void => {
    this.#server?.child.kill('SIGKILL')
    fs.rmSync(this.#dir, { recursive: true, force: true, maxRetries: 3 })
  }

  constructor(bin: string, dir: string, user: ClusterUser) {
    this.#bin = bin
    this.#dir = dir
    this.#user = user
    process.once('exit', this.#onExit)
  }

  async createDatabase(): Promise<string> {
    const name = databaseName()
    await withClient(this.#url('postgres'), (client) => client.query(`CREATE DATABASE ${name}`))
    return this.#url(name)
  }

  async start(): Promise<void> {
    if (this.#closed) throw new Error('this Postgres cluster is closed')
    if (this.#server) return
    // The server's log goes to a file, not a pipe: a pipe would keep this process alive.
    const logFile = path.join(this.#dir, 'server.log')
    const logFd = fs.openSync(logFile, 'a')
    const child = spawn('setpriv', [...this.#user.setpriv, path.join(this.#bin, 'postgres'), '-D', path.join(this.#dir, 'data')], {
      cwd: this.#dir,
      env: clusterEnv(),
      stdio: ['ignore', logFd, logFd],
    })
    fs.closeSync(logFd)
    const log = (): string => readTail(logFile)
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()))
    let spawnError: Error | undefined
    child.once('error', (error) => (spawnError = error))
    // A test that forgets close() must not be kept alive by its server, which dies with it anyway.
    child.unref()
    this.#server = { child, exited, log }

    const deadline = Date.now() + START_TIMEOUT_MS
    for (;;) {
      if (spawnError || child.exitCode !== null || child.signalCode !== null) {
        this.#server = undefined
        throw new Error(`postgres exited before it was ready: ${spawnError?.message ?? ''}\n${log()}`)
      }
      if (this.#ready()) return
      if (Date.now() > deadline) {
        await this.#shutdown('SIGQUIT')
        throw new Error(`postgres was not ready in ${START_TIMEOUT_MS} ms\n${log()}`)
      }
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  stop(): Promise<void> {
    // SIGINT is the fast shutdown (pg_ctl stop -m fast): clients are disconnected, the data is kept.
    return this.#shutdown('SIGINT')
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    // SIGQUIT is the immediate shutdown: nothing of this cluster is kept anyway.
    await this.#shutdown('SIGQUIT')
    fs.rmSync(this.#dir, { recursive: true, force: true, maxRetries: 3 })
    process.removeListener('exit', this.#onExit)
  }

  /** The postmaster's pid file says `ready` once it accepts connections (what pg_ctl -w waits for). */
  #ready(): boolean {
    try {
      const lines = fs.readFileSync(path.join(this.#dir, 'data', 'postmaster.pid'), 'utf8').split('\n')
      return lines[7]?.trim() === 'ready'
    } catch {
      return false
    }
  }

  async #shutdown(signal: NodeJS.Signals): Promise<void> {
    const server = this.#server
    if (!server) return
    const { child, exited, log } = server
    if (child.exitCode === null && child.signalCode === null) {
      child.kill(signal)
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS)
      await exited
      clearTimeout(timer)
    }
    this.#server = undefined
    if (child.signalCode === 'SIGKILL') throw new Error(`postgres did not stop on ${signal} in ${STOP_TIMEOUT_MS} ms\n${log()}`)
  }

  #url(database: string): string {
    // The socket directory as the host, percent-encoded: a form both pg and WHATWG URL parse.
    return `postgresql://${encodeURIComponent(this.#user.name)}@${encodeURIComponent(this.#dir)}/${database}`
  }
}

/** The server in COORDINATOR_TEST_DATABASE_URL: databases are made there, and dropped on close(). */
function givenServer(url: string): TestPostgres {
  const created: string[] = []
  const refuse = (): Promise<void> =>
    Promise.reject(new Error(`cannot stop or start the server in ${TEST_DATABASE_URL_ENV}: unset it to use a throwaway cluster`))
  return {
    owned: false,
    async createDatabase() {
      const name = databaseName()
      await withClient(url, (client) => client.query(`CREATE DATABASE ${name}`))
      created.push(name)
      return withDatabase(url, name)
    },
    stop: refuse,
    start: refuse,
    async close() {
      const names = created.splice(0)
      if (names.length === 0) return
      await withClient(url, async (client) => {
        for (const name of names) await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      })
    },
  }
}

/** `url` with its database replaced by `database`, whichever form it has (a host, or a socket directory). */
function withDatabase(url: string, database: string): string {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new Error(`${TEST_DATABASE_URL_ENV} must be a postgresql:// URL (a socket directory as %2F-encoded host or ?host=); got ${url}`)
  }
  parsed.pathname = `/${database}`
  return parsed.href
}

/** The last few kilobytes of a log file, for an error message. */
function readTail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').slice(-8000)
  } catch {
    return ''
  }
}

function databaseName(): string {
  return `t_${randomBytes(8).toString('hex')}`
}

async function withClient<T>(url: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await use(client)
  } finally {
    await client.end()
  }
}

/** "pid starttime": a process's identity that a recycled pid does not share. */
function processIdentity(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const startTime = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
    return `${pid} ${startTime}`
  } catch {
    return undefined
  }
}

/**
 * Removes the clusters of test processes that died without closing them (killed outright). Their
 * servers died with them (the parent-death signal); a postmaster still alive is killed first.
 */
function sweepStaleClusters(): void {
  const tmp = os.tmpdir()
  let entries: string[]
  try {
    entries = fs.readdirSync(tmp).filter((entry) => entry.startsWith(DIR_PREFIX))
  } catch {
    return
  }
  for (const entry of entries) {
    const dir = path.join(tmp, entry)
    let owner = ''
    try {
      owner = fs.readFileSync(path.join(dir, 'owner'), 'utf8').trim()
    } catch {
      // being created right now, or abandoned
    }
    if (owner !== '') {
      if (processIdentity(Number(owner.split(' ')[0])) === owner) continue
    } else {
      // Without an owner to ask, only a directory untouched for a while is taken for abandoned.
      try {
        if (Date.now() - fs.statSync(dir).mtimeMs < ORPHAN_AGE_MS) continue
      } catch {
        continue
      }
    }
    try {
      const postmaster = Number(fs.readFileSync(path.join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0])
      if (processInfo(postmaster)?.comm === 'postgres') process.kill(postmaster, 'SIGKILL')
    } catch {
      // no server, or already gone
    }
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
  }
}
