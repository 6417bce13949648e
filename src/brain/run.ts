import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import { Readable } from 'node:stream'
import { setTimeout as delay } from 'node:timers/promises'
import type { FastifyBaseLogger } from 'fastify'

/** The reply is the first this-many bytes of stdout; the rest is drained and dropped. */
export const STDOUT_LIMIT_BYTES = 1024 * 1024
/** Only the end of stderr is kept: that is where the error is. */
export const STDERR_TAIL_BYTES = 8 * 1024
/** A progress line (fd 3) longer than this is skipped whole. */
export const PROGRESS_LINE_LIMIT_BYTES = 64 * 1024
/** After this much fd-3 traffic in one attempt, further progress is drained unread. */
export const PROGRESS_VOLUME_LIMIT_BYTES = 16 * 1024 * 1024
/** How long the pipes may stay open after the brain's process group is gone (a stray holder). */
export const PIPE_DRAIN_MS = 200

// How often a dying process group is checked while we wait for it to go.
const GROUP_POLL_MS = 25
// After SIGKILL, how long to wait for the kernel before giving up on a process (stuck in D state).
const KILL_SETTLE_MS = 2000
// Warnings about bad progress lines per attempt, so a brain writing garbage cannot flood the log.
const PROGRESS_WARNINGS_MAX = 10
// The longest delay setTimeout accepts; later deadlines are re-armed.
const MAX_TIMER_MS = 2 ** 31 - 1
const LOGGED_LINE_CHARS = 200

/** How an attempt ended. `exited` covers any exit code or signal the brain died of by itself. */
export type BrainOutcome = 'exited' | 'timed_out' | 'cancelled' | 'spawn_error'

/** The result of one attempt; {@link runBrain} always resolves with one, never rejects. */
export interface BrainAttempt {
  readonly outcome: BrainOutcome
  /** The leader's exit code; null when it died of a signal or never started. */
  readonly exitCode: number | null
  readonly signal: NodeJS.Signals | null
  /** The reply: stdout as UTF-8, trimmed, at most {@link STDOUT_LIMIT_BYTES}. */
  readonly stdout: string
  /** stdout was longer than {@link STDOUT_LIMIT_BYTES}; the caller should say the reply was cut. */
  readonly stdoutTruncated: boolean
  /** The last {@link STDERR_TAIL_BYTES} of stderr, untrimmed. */
  readonly stderrTail: string
  /** From the call to the end of clean-up (group gone, pipes closed). */
  readonly durationMs: number
  /** The leader's pid (and its process group id); absent if nothing was spawned. */
  readonly pid?: number
  /** For spawn_error: one line saying what is wrong and what to do. */
  readonly error?: string
}

/** Fields for the `child started` log line, named as the rest of the service logs them. */
export interface BrainLogFields {
  readonly chat_id?: number
  readonly update_id?: number
  readonly attempt?: number
}

/** One attempt's inputs; the caller computes the deadline from its per-attempt and per-message budgets. */
export interface BrainRunOptions {
  /** The command and its arguments; spawned without a shell. */
  readonly argv: readonly [string, ...string[]]
  readonly cwd: string
  /** The brain's complete environment (see brainEnvironment); nothing else is inherited. */
  readonly env: Readonly<Record<string, string>>
  /** Written to the brain's stdin, then EOF. It may be megabytes; a brain need not read it. */
  readonly stdin: string
  /** Absolute time (Date.now() ms) at which the brain's process group gets SIGTERM. */
  readonly deadline: number
  /** How long after SIGTERM a surviving process in the group gets SIGKILL. */
  readonly killGraceMs: number
  /** Aborting kills the group like a timeout does; the outcome is then `cancelled`. */
  readonly signal?: AbortSignal
  /**
   * Called with each JSON object the brain writes as a line to fd 3. It runs synchronously on the
   * pipe's data path, so keep it quick; a throw is logged and the event dropped.
   */
  readonly onEvent?: (event: unknown) => void
  /** Already bound with update_id and chat_id by the caller. */
  readonly log: FastifyBaseLogger
  readonly logFields?: BrainLogFields
}

/**
 * Runs one attempt of the brain: spawns it in its own process group, writes `stdin`, collects the
 * reply from stdout, and enforces `deadline` and `signal` by killing the whole group (SIGTERM, then
 * SIGKILL after `killGraceMs`).
 *
 * It finishes when the leader exits, not when stdout closes: a grandchild may hold the pipe open
 * forever. Whatever is left in the group then is killed as well, and the promise resolves only once
 * the group is gone (zombies aside) and every pipe is closed, so no process, listener, timer or fd
 * outlives the attempt. A grandchild that moved itself to another process group or session
 * (setsid, daemonizing) escapes this and needs a cgroup to contain it.
 *
 * Logs `child started` and `child reaped` (at info) for every attempt, even one that never got a
 * process, so the two can be counted against each other; kill escalation is logged at warn.
 */
export async function runBrain(options: BrainRunOptions): Promise<BrainAttempt> {
  const startedAt = Date.now()
  const { log } = options
  const argv0 = options.argv[0]

  const notStarted = (outcome: BrainOutcome, error?: string): BrainAttempt => {
    const attempt: BrainAttempt = {
      outcome,
      exitCode: null,
      signal: null,
      stdout: '',
      stdoutTruncated: false,
      stderrTail: '',
      durationMs: Date.now() - startedAt,
      ...(error === undefined ? {} : { error }),
    }
    if (error !== undefined) log.error({ argv0, cwd: options.cwd, err_message: error }, 'brain could not be started')
    logReaped(log, attempt)
    return attempt
  }

  if (options.signal?.aborted) return notStarted('cancelled')
  if (options.deadline <= startedAt) return notStarted('timed_out')

  let child: ChildProcess
  try {
    child = spawn(argv0, options.argv.slice(1), {
      cwd: options.cwd,
      env: options.env,
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
    })
  } catch (error) {
    return notStarted('spawn_error', describeSpawnError(error, options))
  }

  const pid = child.pid
  if (pid === undefined) {
    // Runtime failures (ENOENT, EACCES, EMFILE…) arrive as an 'error' event on the next tick.
    const [error] = (await once(child, 'error')) as [unknown]
    destroyStdio(child)
    return notStarted('spawn_error', describeSpawnError(error, options))
  }
  log.info({ pid, ...options.logFields, argv0 }, 'child started')
  return superviseChild(child, pid, options, startedAt)
}

async function superviseChild(child: ChildProcess, pid: number, options: BrainRunOptions, startedAt: number): Promise<BrainAttempt> {
  const { log } = options
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }))
  })
  child.on('error', (error) => log.warn({ pid, err: error }, 'brain child process reported an error'))

  const stdout = new OutputHead(STDOUT_LIMIT_BYTES)
  const stderr = new OutputTail(STDERR_TAIL_BYTES)
  const progress = new ProgressLines(options.onEvent, log)
  const readers: Readable[] = []
  const read = (stream: unknown, sink: (chunk: Buffer) => void, name: string): void => {
    if (!(stream instanceof Readable)) return
    readers.push(stream)
    stream.on('data', sink)
    stream.on('error', (error) => log.debug({ pid, err: error }, `brain ${name} pipe failed`))
  }
  read(child.stdout, (chunk) => stdout.push(chunk), 'stdout')
  read(child.stderr, (chunk) => stderr.push(chunk), 'stderr')
  read(child.stdio[3], (chunk) => progress.push(chunk), 'fd 3')

  // A brain that never reads stdin (or exits first) makes this write fail with EPIPE: expected.
  child.stdin?.on('error', (error) => log.debug({ pid, err: error }, 'brain did not read all of stdin'))
  child.stdin?.end(options.stdin)

  const group = new ProcessGroup(pid, options.killGraceMs, log)
  let stopReason: 'timed_out' | 'cancelled' | undefined
  let leaderExited = false
  const stop = (reason: 'timed_out' | 'cancelled'): void => {
    if (stopReason !== undefined || leaderExited) return
    stopReason = reason
    const why = reason === 'timed_out' ? 'brain ran past its deadline' : 'brain run cancelled'
    log[reason === 'timed_out' ? 'warn' : 'info']({ pid, grace_ms: options.killGraceMs }, `${why}: sending SIGTERM to its process group`)
    group.terminate()
  }

  let deadlineTimer: NodeJS.Timeout | undefined
  const armDeadline = (): void => {
    const remaining = options.deadline - Date.now()
    if (remaining <= 0) return stop('timed_out')
    deadlineTimer = setTimeout(armDeadline, Math.min(remaining, MAX_TIMER_MS))
  }
  armDeadline()
  const onAbort = (): void => stop('cancelled')
  options.signal?.addEventListener('abort', onAbort, { once: true })

  const exit = await group.awaitLeader(exited)
  leaderExited = true
  clearTimeout(deadlineTimer)
  options.signal?.removeEventListener('abort', onAbort)

  if (group.hasLiveMembers()) {
    if (!group.terminating) log.info({ pid }, 'brain exited but left processes in its group: sending SIGTERM to them')
    group.terminate()
  }
  await group.gone()
  group.dispose()

  await drain(readers, PIPE_DRAIN_MS)
  destroyStdio(child)
  progress.end()

  const attempt: BrainAttempt = {
    outcome: stopReason ?? 'exited',
    exitCode: exit?.code ?? null,
    signal: exit?.signal ?? null,
    stdout: stdout.text().trim(),
    stdoutTruncated: stdout.truncated,
    stderrTail: stderr.text(),
    durationMs: Date.now() - startedAt,
    pid,
  }
  logReaped(log, attempt, stdout.totalBytes)
  return attempt
}

function logReaped(log: FastifyBaseLogger, attempt: BrainAttempt, stdoutBytes = 0): void {
  log.info(
    {
      pid: attempt.pid,
      exit_code: attempt.exitCode,
      signal: attempt.signal,
      duration_ms: attempt.durationMs,
      outcome: attempt.outcome,
      stdout_bytes: stdoutBytes,
      stdout_truncated: attempt.stdoutTruncated,
      // The brain's last word (an error, or a summary such as the Claude adapter's cost line).
      stderr_last: attempt.stderrTail.trim().split('\n').at(-1)?.slice(0, LOGGED_LINE_CHARS) || undefined,
    },
    'child reaped',
  )
}

/**
 * The brain's process group (pgid = the leader's pid, thanks to `detached: true`): SIGTERM, then
 * SIGKILL after the grace if anything in it is still alive.
 */
class ProcessGroup {
  readonly #pgid: number
  readonly #graceMs: number
  readonly #log: FastifyBaseLogger
  #graceTimer: NodeJS.Timeout | undefined
  #killedAt: number | undefined
  // Resolves when SIGKILL has gone out; from then on waiting is bounded by KILL_SETTLE_MS.
  #onKilled!: () => void
  readonly #killed = new Promise<void>((resolve) => {
    this.#onKilled = resolve
  })
  #terminating = false

  constructor(pgid: number, graceMs: number, log: FastifyBaseLogger) {
    this.#pgid = pgid
    this.#graceMs = graceMs
    this.#log = log
  }

  /** Whether SIGTERM has been sent. */
  get terminating(): boolean {
    return this.#terminating
  }

  /** SIGTERM now, SIGKILL after the grace if needed. Calling it again changes nothing. */
  terminate(): void {
    if (this.#terminating) return
    this.#terminating = true
    this.#signal('SIGTERM')
    this.#graceTimer = setTimeout(() => {
      if (!this.hasLiveMembers()) return
      this.#log.warn({ pid: this.#pgid, grace_ms: this.#graceMs }, 'brain process group outlived SIGTERM: sending SIGKILL')
      this.#signal('SIGKILL')
      this.#killedAt = Date.now()
      this.#onKilled()
    }, this.#graceMs)
  }

  /**
   * Waits for the leader's exit; gives up (undefined) only if it survives SIGKILL for
   * KILL_SETTLE_MS, so a process stuck in the kernel cannot hold a brain slot forever.
   */
  async awaitLeader<T>(exited: Promise<T>): Promise<T | undefined> {
    const settle = new AbortController()
    const stuck = this.#killed.then(() => delay(KILL_SETTLE_MS, undefined, { signal: settle.signal })).catch(() => undefined)
    try {
      const exit = await Promise.race([exited, stuck])
      if (exit === undefined) this.#log.error({ pid: this.#pgid }, 'brain did not exit after SIGKILL; giving up on it')
      return exit
    } finally {
      settle.abort()
    }
  }

  /** Resolves when no live process is left in the group (or SIGKILL did not help in time). */
  async gone(): Promise<void> {
    while (this.hasLiveMembers()) {
      if (this.#killedAt !== undefined && Date.now() - this.#killedAt > KILL_SETTLE_MS) {
        this.#log.error({ pid: this.#pgid }, 'brain process group survived SIGKILL; leaving it behind')
        return
      }
      await delay(GROUP_POLL_MS)
    }
  }

  /**
   * Whether any process of the group is still alive. Zombies do not count: orphans re-parented to
   * a PID 1 that never reaps stay zombies forever, yet are dead and hold nothing.
   */
  hasLiveMembers(): boolean {
    try {
      process.kill(-this.#pgid, 0)
    } catch (error) {
      return (error as NodeJS.ErrnoException).code !== 'ESRCH'
    }
    return process.platform !== 'linux' || groupHasLiveProcessOnLinux(this.#pgid)
  }

  dispose(): void {
    clearTimeout(this.#graceTimer)
  }

  #signal(signal: NodeJS.Signals): void {
    try {
      process.kill(-this.#pgid, signal)
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      if (code !== 'ESRCH') this.#log.warn({ pid: this.#pgid, signal, err: error }, 'could not signal the brain process group')
    }
  }
}

/** Scans /proc for a process in group `pgid` that is not a zombie; true if /proc cannot be read. */
function groupHasLiveProcessOnLinux(pgid: number): boolean {
  let entries: string[]
  try {
    entries = fs.readdirSync('/proc')
  } catch {
    return true
  }
  for (const entry of entries) {
    if (!/^\d+$/u.test(entry)) continue
    let stat: string
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8')
    } catch {
      continue
    }
    // "pid (comm) state ppid pgrp …"; comm may contain spaces and parentheses, so cut at the last ')'.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    if (Number(pgrp) === pgid && state !== 'Z' && state !== 'X') return true
  }
  return false
}

/** Waits until every stream has closed, or `ms` passed; leaves no listener or timer behind. */
async function drain(streams: readonly Readable[], ms: number): Promise<void> {
  const open = streams.filter((stream) => !stream.closed)
  if (open.length === 0) return
  const done = new AbortController()
  const closed = Promise.all(open.map((stream) => once(stream, 'close', { signal: done.signal }).catch(() => undefined)))
  const timeout = delay(ms, undefined, { signal: done.signal }).catch(() => undefined)
  try {
    await Promise.race([closed, timeout])
  } finally {
    done.abort()
  }
}

function destroyStdio(child: ChildProcess): void {
  for (const stream of child.stdio) stream?.destroy()
}

function describeSpawnError(error: unknown, options: BrainRunOptions): string {
  const argv0 = options.argv[0]
  const code = (error as NodeJS.ErrnoException | undefined)?.code
  const prefix = `could not start brain "${argv0}"`
  switch (code) {
    case 'ENOENT':
      if (!isDirectory(options.cwd)) return `${prefix}: its working directory ${options.cwd} does not exist; create it or fix BRAIN_CWD`
      return `${prefix}: it (or the interpreter on its #! line) was not found (PATH=${options.env.PATH ?? ''}); install it or give its full path`
    case 'EACCES':
      return `${prefix}: permission denied; make sure it is a file, not a directory, and run chmod +x on it`
    case 'ENOEXEC':
      return `${prefix}: not an executable format; if it is a script, add a #! line such as #!/bin/sh`
    case 'EMFILE':
    case 'ENFILE':
      return `${prefix}: too many open files; raise the limit (LimitNOFILE=) or lower MAX_CONCURRENT_BRAINS`
    case 'EAGAIN':
      return `${prefix}: the system refused a new process (process limit); raise the limit or lower MAX_CONCURRENT_BRAINS`
    default:
      return `${prefix}: ${error instanceof Error ? error.message : String(error)}`
  }
}

function isDirectory(dir: string): boolean {
  try {
    return fs.statSync(dir).isDirectory()
  } catch {
    return false
  }
}

/** Keeps the first `limit` bytes of a stream and counts the rest; the pipe keeps draining. */
class OutputHead {
  readonly #limit: number
  readonly #chunks: Buffer[] = []
  #kept = 0
  #total = 0

  constructor(limit: number) {
    this.#limit = limit
  }

  push(chunk: Buffer): void {
    this.#total += chunk.length
    const room = this.#limit - this.#kept
    if (room <= 0) return
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk
    this.#chunks.push(part)
    this.#kept += part.length
  }

  get totalBytes(): number {
    return this.#total
  }

  get truncated(): boolean {
    return this.#total > this.#kept
  }

  /** The kept bytes as UTF-8, never ending in half a character. */
  text(): string {
    const bytes = Buffer.concat(this.#chunks, this.#kept)
    return bytes.subarray(0, this.truncated ? completeUtf8Length(bytes) : bytes.length).toString('utf8')
  }
}

/** Keeps the last `limit` bytes of a stream. */
class OutputTail {
  readonly #limit: number
  #chunks: Buffer[] = []
  #bytes = 0
  #total = 0

  constructor(limit: number) {
    this.#limit = limit
  }

  push(chunk: Buffer): void {
    this.#chunks.push(chunk)
    this.#bytes += chunk.length
    this.#total += chunk.length
    // Compact only past twice the limit, so a flood costs linear time.
    if (this.#bytes > 2 * this.#limit) {
      const tail = this.#tail()
      this.#chunks = [tail]
      this.#bytes = tail.length
    }
  }

  /** The kept bytes as UTF-8, never starting in the middle of a character. */
  text(): string {
    const tail = this.#tail()
    let start = 0
    // A cut through a character leaves at most 3 continuation bytes (10xxxxxx) in front.
    if (this.#total > tail.length) {
      while (start < 3 && start < tail.length && ((tail[start] as number) & 0xc0) === 0x80) start++
    }
    return tail.subarray(start).toString('utf8')
  }

  #tail(): Buffer {
    const all = Buffer.concat(this.#chunks, this.#bytes)
    return all.length > this.#limit ? all.subarray(all.length - this.#limit) : all
  }
}

/** The length of the longest prefix of `bytes` that does not end inside a UTF-8 sequence. */
function completeUtf8Length(bytes: Buffer): number {
  for (let i = bytes.length - 1; i >= 0 && i >= bytes.length - 4; i--) {
    const byte = bytes[i] as number
    if ((byte & 0xc0) === 0x80) continue
    const length = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1
    return i + length <= bytes.length ? bytes.length : i
  }
  return bytes.length
}

/**
 * Splits the fd-3 progress channel into lines and hands each JSON object to `onEvent`. Bad lines
 * (not JSON, not an object, too long) are skipped with a warning; nothing here can fail the run.
 */
class ProgressLines {
  readonly #onEvent: ((event: unknown) => void) | undefined
  readonly #log: FastifyBaseLogger
  #pending: Buffer[] = []
  #pendingBytes = 0
  // Set while the rest of an over-long line streams by; cleared at its newline.
  #skippingLine = false
  #totalBytes = 0
  #warnings = 0

  constructor(onEvent: ((event: unknown) => void) | undefined, log: FastifyBaseLogger) {
    this.#onEvent = onEvent
    this.#log = log
  }

  push(chunk: Buffer): void {
    if (this.#totalBytes > PROGRESS_VOLUME_LIMIT_BYTES) return
    this.#totalBytes += chunk.length
    if (this.#totalBytes > PROGRESS_VOLUME_LIMIT_BYTES) {
      this.#pending = []
      this.#pendingBytes = 0
      this.#warn(`more than ${PROGRESS_VOLUME_LIMIT_BYTES} bytes of progress; ignoring the rest of fd 3`)
      return
    }
    let start = 0
    for (let newline = chunk.indexOf(0x0a); newline !== -1; newline = chunk.indexOf(0x0a, start)) {
      this.#append(chunk.subarray(start, newline))
      this.#endLine()
      start = newline + 1
    }
    this.#append(chunk.subarray(start))
  }

  /** The stream is over: a last line without a newline still counts. */
  end(): void {
    if (this.#pendingBytes > 0) this.#endLine()
  }

  #append(part: Buffer): void {
    if (this.#skippingLine || part.length === 0) return
    if (this.#pendingBytes + part.length > PROGRESS_LINE_LIMIT_BYTES) {
      this.#pending = []
      this.#pendingBytes = 0
      this.#skippingLine = true
      this.#warn(`progress line longer than ${PROGRESS_LINE_LIMIT_BYTES} bytes skipped`)
      return
    }
    this.#pending.push(part)
    this.#pendingBytes += part.length
  }

  #endLine(): void {
    if (this.#skippingLine) {
      this.#skippingLine = false
      return
    }
    const line = Buffer.concat(this.#pending, this.#pendingBytes).toString('utf8').trim()
    this.#pending = []
    this.#pendingBytes = 0
    if (line === '') return
    let event: unknown
    try {
      event = JSON.parse(line)
    } catch {
      return this.#warn('progress line is not JSON; skipped', line)
    }
    if (typeof event !== 'object' || event === null || Array.isArray(event)) {
      return this.#warn('progress line is not a JSON object; skipped', line)
    }
    try {
      this.#onEvent?.(event)
    } catch (error) {
      this.#log.warn({ err: error }, 'progress event handler threw; event dropped')
    }
  }

  #warn(message: string, line?: string): void {
    this.#warnings++
    if (this.#warnings > PROGRESS_WARNINGS_MAX) return
    const suffix = this.#warnings === PROGRESS_WARNINGS_MAX ? ' (further progress warnings for this attempt suppressed)' : ''
    this.#log.warn(line === undefined ? {} : { line: line.slice(0, LOGGED_LINE_CHARS) }, message + suffix)
  }
}
