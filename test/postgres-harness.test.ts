// The Postgres the tests run against (test/helpers/postgres.ts): a throwaway cluster that starts, gives
// each caller a database of its own, can be stopped and started for outage tests, and leaves neither
// a process nor a directory behind, even when its test process is killed outright.
import t from 'tap'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { postgresOrSkip, startTestPostgres } from './helpers/postgres.js'
import { isAlive } from './helpers/proc.js'

const HELPER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'postgres.js')

async function query(url: string, sql: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await client.query(sql)
  } finally {
    await client.end()
  }
}

/** The error connecting to `url` fails with, or undefined when it connects. */
async function connectError(url: string): Promise<NodeJS.ErrnoException | undefined> {
  try {
    await query(url, 'SELECT 1')
    return undefined
  } catch (error) {
    return error as NodeJS.ErrnoException
  }
}

/** A throwaway cluster's directory (its socket directory, the URL's host) and its postmaster's pid. */
function clusterOf(url: string): { dir: string; pid: number } {
  const dir = decodeURIComponent(new URL(url).host)
  const pid = Number(fs.readFileSync(path.join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0])
  return { dir, pid }
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

t.test('a query works on a database of its own, and two databases do not see each other', async (t) => {
  const started = Date.now()
  const postgres = await postgresOrSkip(t)
  if (!postgres) return
  t.comment(`Postgres ready in ${Date.now() - started} ms (${postgres.owned ? 'a throwaway cluster' : 'the given server'})`)

  const first = await postgres.createDatabase()
  const second = await postgres.createDatabase()
  t.not(first, second, 'each call names a new database')
  const { rows } = await query(first, 'SELECT current_database() AS name, 6 * 7 AS answer')
  t.equal(rows[0].answer, 42)
  t.match(rows[0].name, /^t_[0-9a-f]{16}$/u)

  await query(first, 'CREATE TABLE only_here (id int)')
  const inSecond = await query(second, "SELECT count(*)::int AS n FROM pg_tables WHERE tablename = 'only_here'")
  t.equal(inSecond.rows[0].n, 0, "the second database does not see the first's table")
  const inFirst = await query(first, "SELECT count(*)::int AS n FROM pg_tables WHERE tablename = 'only_here'")
  t.equal(inFirst.rows[0].n, 1)

  const { rows: settings } = await query(first, "SELECT current_setting('max_connections')::int AS max, current_setting('fsync') AS fsync")
  if (postgres.owned) {
    t.ok(settings[0].max >= 300, 'room for several processes with a pool each')
    t.equal(settings[0].fsync, 'off')
  }
})

t.test('stop() makes connections fail; start() brings the server back on the same URL', async (t) => {
  const postgres = await postgresOrSkip(t, { outages: true })
  if (!postgres) return
  const url = await postgres.createDatabase()
  await query(url, 'CREATE TABLE kept (id int); INSERT INTO kept VALUES (7)')
  const { pid } = clusterOf(url)
  t.not(processOwner(pid), 0, 'the postmaster does not run as root')

  await postgres.stop()
  t.notOk(isAlive(pid), 'the postmaster is gone')
  const refused = await connectError(url)
  t.ok(refused, 'a connection fails while it is stopped')
  t.match(refused?.code, /^(ECONNREFUSED|ENOENT)$/u, 'refused at the socket')

  const restarted = Date.now()
  await postgres.start()
  t.comment(`restarted in ${Date.now() - restarted} ms`)
  const { rows } = await query(url, 'SELECT id FROM kept')
  t.same(rows, [{ id: 7 }], 'the same URL works again, and a fast shutdown kept the data')
})

t.test('close() stops the server and removes its directory', async (t) => {
  const started = await postgresOrSkip(t, { outages: true })
  if (!started) return
  const url = await started.createDatabase()
  const { dir, pid } = clusterOf(url)
  t.ok(isAlive(pid))
  await started.close()
  t.notOk(isAlive(pid), 'the postmaster is gone')
  t.notOk(fs.existsSync(dir), 'its directory is gone')
  await started.close()
  t.pass('close() twice is harmless')
  await t.rejects(started.start(), /closed/u, 'a closed cluster does not start again')
})

t.test('a test process killed outright takes its server with it; the next one removes its directory', async (t) => {
  const probe = await postgresOrSkip(t, { outages: true })
  if (!probe) return
  const script = `
    const { startTestPostgres } = await import(${JSON.stringify(HELPER)})
    const postgres = await startTestPostgres()
    console.log(await postgres.createDatabase())
    setInterval(() => {}, 1000)
  `
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()))
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk
      if (out.includes('\n')) resolve(out.trim())
    })
    child.once('close', () => reject(new Error(`the child exited before printing its URL: ${out}`)))
  })
  const { dir, pid } = clusterOf(url)
  t.ok(isAlive(pid), 'the child started a server')

  child.kill('SIGKILL')
  await exited
  await waitFor('the orphaned postmaster to exit', () => !isAlive(pid))
  t.pass('the server died with its test process')
  t.ok(fs.existsSync(dir), 'its directory is left behind')

  const next = await startTestPostgres()
  if (!('skip' in next)) await next.close()
  t.notOk(fs.existsSync(dir), 'the next start removed it')
})

function processOwner(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
  return Number(/^Uid:\s+(\d+)/mu.exec(status)?.[1])
}
