import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import { Readable } from 'node:stream'
import type { FastifyBaseLogger } from 'fastify'
import { EventLines, LOGGED_LINE_CHARS } from './event-lines.js'
import { drainPipes, OutputHead, OutputTail } from './output.js'
import { ProcessGroup } from './process-group.js'
import { EVENTS_FD } from './protocol.js'

/** The reply is the first this-many bytes of stdout; the rest is drained and dropped. */
export const STDOUT_LIMIT_BYTES = 1024 * 1024
/** Only the end of stderr is kept: that is where the error is. */
export const STDERR_TAIL_BYTES = 8 * 1024
/** How long the pipes may stay open after the brain's process group is gone (a stray holder). */
export const PIPE_DRAIN_MS = 200

// The brain's stdio: stdin, stdout, stderr, then pipes up to and including the events fd.
const STDIO: readonly 'pipe'[] = Array.from({ length: EVENTS_FD + 1 }, () => 'pipe' as const)
// The longest delay setTimeout accepts; later deadlines are re-armed.
const MAX_TIMER_MS = 2 ** 31 - 1

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
  /**
   * For a wrapper that starts the brain itself (the sandbox): tells from a finished attempt that the
   * brain never started, as the error its exec failed with; the attempt then counts as `spawn_error`.
   */
  readonly startFailure?: (attempt: BrainAttempt) => Error | undefined
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
      stdio: [...STDIO],
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
  log.info({ child_pid: pid, ...options.logFields, argv0 }, 'child started')
  return superviseChild(child, pid, options, startedAt)
}

async function superviseChild(child: ChildProcess, pid: number, options: BrainRunOptions, startedAt: number): Promise<BrainAttempt> {
  const { log } = options
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }))
  })
  child.on('error', (error) => log.warn({ child_pid: pid, err: error }, 'brain child process reported an error'))

  const stdout = new OutputHead(STDOUT_LIMIT_BYTES)
  const stderr = new OutputTail(STDERR_TAIL_BYTES)
  const events = new EventLines(options.onEvent, log)
  const readers: Readable[] = []
  const read = (stream: unknown, sink: (chunk: Buffer) => void, name: string): void => {
    if (!(stream instanceof Readable)) return
    readers.push(stream)
    stream.on('data', sink)
    stream.on('error', (error) => log.debug({ child_pid: pid, err: error }, `brain ${name} pipe failed`))
  }
  read(child.stdout, (chunk) => stdout.push(chunk), 'stdout')
  read(child.stderr, (chunk) => stderr.push(chunk), 'stderr')
  read(child.stdio[EVENTS_FD], (chunk) => events.push(chunk), `fd ${EVENTS_FD}`)

  // A brain that never reads stdin (or exits first) makes this write fail with EPIPE: expected.
  child.stdin?.on('error', (error) => log.debug({ child_pid: pid, err: error }, 'brain did not read all of stdin'))
  child.stdin?.end(options.stdin)

  const group = new ProcessGroup(pid, options.killGraceMs, log)
  let stopReason: 'timed_out' | 'cancelled' | undefined
  let leaderExited = false
  const stop = (reason: 'timed_out' | 'cancelled'): void => {
    if (stopReason !== undefined || leaderExited) return
    stopReason = reason
    const why = reason === 'timed_out' ? 'brain ran past its deadline' : 'brain run cancelled'
    log[reason === 'timed_out' ? 'warn' : 'info']({ child_pid: pid, grace_ms: options.killGraceMs }, `${why}: sending SIGTERM to its process group`)
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
    if (!group.terminating) log.info({ child_pid: pid }, 'brain exited but left processes in its group: sending SIGTERM to them')
    group.terminate()
  }
  await group.gone()
  group.dispose()

  await drainPipes(readers, PIPE_DRAIN_MS)
  destroyStdio(child)
  events.end()

  let attempt: BrainAttempt = {
    outcome: stopReason ?? 'exited',
    exitCode: exit?.code ?? null,
    signal: exit?.signal ?? null,
    stdout: stdout.text().trim(),
    stdoutTruncated: stdout.truncated,
    stderrTail: stderr.text(),
    durationMs: Date.now() - startedAt,
    pid,
  }
  const startError = attempt.outcome === 'exited' ? options.startFailure?.(attempt) : undefined
  if (startError !== undefined) {
    const error = describeSpawnError(startError, options)
    log.error({ argv0: options.argv[0], cwd: options.cwd, err_message: error }, 'brain could not be started')
    attempt = { ...attempt, outcome: 'spawn_error', error }
  }
  logReaped(log, attempt, stdout.totalBytes)
  return attempt
}

function logReaped(log: FastifyBaseLogger, attempt: BrainAttempt, stdoutBytes = 0): void {
  log.info(
    {
      child_pid: attempt.pid,
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

function destroyStdio(child: ChildProcess): void {
  for (const stream of child.stdio) stream?.destroy()
}

function describeSpawnError(error: unknown, options: BrainRunOptions): string {
  // A wrapper's start failure names the program it could not run.
  const argv0 = (error as NodeJS.ErrnoException | undefined)?.path ?? options.argv[0]
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

