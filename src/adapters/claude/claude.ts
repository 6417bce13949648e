import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { setTimeout as delay } from 'node:timers/promises'
import { splitCommandLine } from '../../brain/argv.js'
import { EXIT_TEMPFAIL, type BrainFile } from '../../brain/protocol.js'
import { classifyFailure, cut, parseLine, progressOf, resultOf, assistantErrorOf, succeeded, type ClaudeResult, type RunEvidence } from './claude-stream.js'
import { forgetSession, readSession, saveSession, SESSION_FILE } from './claude-session.js'
import { BrainEvents, eventSinkFor } from './events.js'
import { outboxFiles, outboxInstruction, prepareOutbox } from './outbox.js'

/** Told to the user, once, when the chat's stored session is unknown to Claude Code. */
export const SESSION_GONE_NOTICE = '🆕 The previous conversation is gone; starting a new one.'
/** Always passed first: print mode, one JSON event per line (which the CLI only allows with --verbose). */
export const CLAUDE_BASE_ARGS = ['-p', '--output-format', 'stream-json', '--verbose'] as const
/** Claude Code's configuration directory (CLAUDE_CONFIG_DIR), inside the chat's directory. */
export const CLAUDE_CONFIG_SUBDIR = '.claude'

// claude's stderr kept for classifying a failure; all of it is passed on to ours as it comes.
const STDERR_KEPT_CHARS = 8 * 1024
// Notes about stdout lines that are not JSON, per run, so garbage cannot flood the log.
const GARBAGE_NOTES_MAX = 3
// After claude exits, how long its pipes may stay open (a background process it left holding them).
const PIPE_DRAIN_MS = 500
// After forwarding SIGTERM, how long to wait for claude before leaving anyway.
const STOP_GRACE_MS = 3000
// claude -p sometimes never exits after its result (an MCP server or a tool's process holding it):
// the answer is complete by then, so it gets this long, then SIGTERM, then SIGKILL.
const AFTER_RESULT_GRACE_MS = 5000
const KILL_GRACE_MS = 2000

/** The envelope fields the adapter reads; the rest of the coordinator's envelope is ignored. */
export interface PromptInput {
  readonly text: string
  readonly files: readonly AttachedFile[]
  readonly edited: boolean
  readonly redelivered: boolean
  readonly chat_dir: string | undefined
}

/** A file of the envelope's `files`; its kind is any string, so a kind newer than the adapter still passes. */
export type AttachedFile = Pick<BrainFile, 'path' | 'mime_type' | 'file_name' | 'note'> & { readonly kind: string }

/**
 * The Claude Code brain: reads the coordinator's envelope on stdin, runs `claude -p` in this chat's
 * session (stored in `$COORDINATOR_CHAT_DIR/claude-session.json`), turns its tool calls into fd-3
 * progress, prints the final result as the reply, and exits 0, 75 (a temporary failure worth
 * retrying) or 1 with a one-line reason on stderr. Returns the exit status.
 *
 * Reads CLAUDE_BIN (default `claude` on PATH) and CLAUDE_ARGS (extra arguments, split like a shell
 * command line) from `env`; claude inherits this process's environment and working directory.
 */
export async function main(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let envelope: PromptInput
  try {
    envelope = readEnvelope(fs.readFileSync(0, 'utf8'))
  } catch (error) {
    note(`expected the coordinator's JSON envelope on stdin: ${(error as Error).message}`)
    return 1
  }
  let extraArgs: string[]
  try {
    extraArgs = splitCommandLine(env['CLAUDE_ARGS'] ?? '')
  } catch (error) {
    note(`CLAUDE_ARGS ${(error as Error).message}: quote it like a shell command line`)
    return 1
  }
  const question = buildPrompt(envelope)
  if (question === '') {
    note('the message has neither text nor files: nothing to ask')
    return 0
  }
  const chatDir = env['COORDINATOR_CHAT_DIR'] || envelope.chat_dir
  if (!chatDir) note('no COORDINATOR_CHAT_DIR: this conversation will not be remembered')
  // Files Claude writes here are sent back to the chat (fd-3 file events) when it has answered.
  const outbox = chatDir ? prepareOutbox(chatDir, note) : undefined
  const prompt = outbox ? `${question}\n\n${outboxInstruction(outbox)}` : question
  const sessionFile = chatDir ? path.join(chatDir, SESSION_FILE) : undefined
  const bin = env['CLAUDE_BIN'] || 'claude'
  const events = new BrainEvents(eventSinkFor(env, 'claude'))

  // The coordinator stops a brain with SIGTERM to its whole process group; claude gets it too, but
  // when run by hand only this process does. Either way claude is told, and this process leaves soon.
  let child: ChildProcess | undefined
  let stoppedBy: NodeJS.Signals | undefined
  const onSignal = (signal: NodeJS.Signals): void => {
    stoppedBy ??= signal
    child?.kill(signal)
    setTimeout(() => process.exit(exitStatusFor(signal)), STOP_GRACE_MS).unref()
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)

  const cwd = process.cwd()
  const claudeEnv = claudeEnvironment(env, chatDir)
  const attempt = (resume: string | undefined): Promise<ClaudeRun> =>
    runClaude({
      bin,
      env: claudeEnv,
      argv: claudeArgv({ resume, files: envelope.files, cwd, extraArgs, writableDirs: outbox ? [outbox] : [] }),
      prompt,
      cwd,
      events,
      onSpawn: (spawned) => {
        child = spawned
        if (stoppedBy !== undefined) spawned.kill(stoppedBy)
      },
    })
  try {
    const resume = sessionFile ? readSession(sessionFile, note) : undefined
    let run = await attempt(resume)
    if (resume && stoppedBy === undefined && isSessionGone(run)) {
      note(`session ${resume} is unknown to Claude Code; starting a new one`)
      if (sessionFile) {
        try {
          forgetSession(sessionFile)
        } catch (error) {
          note(`could not remove ${sessionFile}: ${(error as Error).message}`)
        }
      }
      events.message(SESSION_GONE_NOTICE)
      run = await attempt(undefined)
    }
    if (stoppedBy !== undefined) {
      note(`stopped by ${stoppedBy}`)
      return exitStatusFor(stoppedBy)
    }
    if (outbox) for (const file of outboxFiles(outbox)) events.file(file)
    return settle(run, { bin, binFromEnv: Boolean(env['CLAUDE_BIN']), sessionFile })
  } finally {
    events.close()
    process.off('SIGTERM', onSignal)
    process.off('SIGINT', onSignal)
  }
}

/**
 * claude's arguments: {@link CLAUDE_BASE_ARGS}, the session to resume, an `--add-dir` for each
 * directory of attached files and of the outbox outside `cwd` (so Claude Code may use them without
 * asking, which print mode cannot), then CLAUDE_ARGS.
 */
export function claudeArgv(options: {
  resume: string | undefined
  files: readonly AttachedFile[]
  cwd: string
  extraArgs: readonly string[]
  /** Directories Claude should be able to write to (the outbox), added when outside `cwd`. */
  writableDirs?: readonly string[]
}): string[] {
  const outside = (dir: string): boolean => {
    const relative = path.relative(options.cwd, dir)
    return relative.startsWith('..') || path.isAbsolute(relative)
  }
  const fileDirs = new Set(
    [...options.files.flatMap((file) => (file.path ? [path.dirname(file.path)] : [])), ...(options.writableDirs ?? [])].filter(outside),
  )
  return [
    ...CLAUDE_BASE_ARGS,
    ...(options.resume ? ['--resume', options.resume] : []),
    ...[...fileDirs].flatMap((dir) => ['--add-dir', dir]),
    ...options.extraArgs,
  ]
}

/** The prompt for claude: the message text, a line per attached file, and notes on edits and redeliveries. */
export function buildPrompt(envelope: PromptInput): string {
  const parts: string[] = []
  const text = envelope.text.trim()
  if (text !== '') parts.push(text)
  if (envelope.files.length > 0) parts.push(envelope.files.map(describeFile).join('\n'))
  if (parts.length === 0) return ''
  if (envelope.edited) parts.push('(This is an edited version of an earlier message.)')
  if (envelope.redelivered) {
    parts.push('(The service restarted while this message was being handled, so some of the work may be done already: check before repeating anything with side effects.)')
  }
  return parts.join('\n\n')
}

// Claude Code reads files by path, so a downloaded file is announced by its path.
function describeFile(file: AttachedFile): string {
  const kind = file.kind.replaceAll('_', ' ')
  const name = file.file_name ? ` ${JSON.stringify(cut(file.file_name, 100))}` : ''
  if (file.path) return `[attached ${kind}${name}: ${file.path}${file.mime_type ? ` (${file.mime_type})` : ''}]`
  return `[${kind}${name} not available: ${file.note ?? 'it could not be downloaded'}]`
}

/** The envelope's fields the adapter needs, checked; throws a TypeError naming what is wrong. */
export function readEnvelope(json: string): PromptInput {
  const value: unknown = JSON.parse(json)
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new TypeError('not a JSON object')
  const record = value as Record<string, unknown>
  const text = record['text'] ?? ''
  if (typeof text !== 'string') throw new TypeError('"text" is not a string')
  const files = record['files'] ?? []
  if (!Array.isArray(files)) throw new TypeError('"files" is not an array')
  return {
    text,
    files: files.filter((file): file is Record<string, unknown> => typeof file === 'object' && file !== null).map((file) => ({
      kind: typeof file['kind'] === 'string' ? file['kind'] : 'file',
      path: typeof file['path'] === 'string' && file['path'] !== '' ? file['path'] : null,
      mime_type: typeof file['mime_type'] === 'string' ? file['mime_type'] : null,
      file_name: typeof file['file_name'] === 'string' ? file['file_name'] : null,
      ...(typeof file['note'] === 'string' ? { note: file['note'] } : {}),
    })),
    edited: record['edited'] === true,
    redelivered: record['redelivered'] === true,
    chat_dir: typeof record['chat_dir'] === 'string' && record['chat_dir'] !== '' ? record['chat_dir'] : undefined,
  }
}

/**
 * Claude Code's environment: this process's, with its configuration directory (sessions, settings,
 * caches) in the chat's directory, so that a conversation lives where the sandbox lets it write
 * and nowhere else. An operator's own CLAUDE_CONFIG_DIR wins.
 */
export function claudeEnvironment(env: NodeJS.ProcessEnv, chatDir: string | undefined): NodeJS.ProcessEnv {
  if (!chatDir || env['CLAUDE_CONFIG_DIR']) return env
  return { ...env, CLAUDE_CONFIG_DIR: path.join(chatDir, CLAUDE_CONFIG_SUBDIR) }
}

/** How one claude process went. */
interface ClaudeRun extends RunEvidence {
  /** Set when claude could not be started at all (ENOENT, EACCES…). */
  readonly spawnError: NodeJS.ErrnoException | undefined
}

interface RunClaudeOptions {
  readonly bin: string
  readonly env: NodeJS.ProcessEnv
  readonly argv: readonly string[]
  /** Written to claude's stdin: with -p and no prompt argument, that is where it reads the prompt. */
  readonly prompt: string
  readonly cwd: string
  readonly events: BrainEvents
  readonly onSpawn: (child: ChildProcess) => void
}

async function runClaude(options: RunClaudeOptions): Promise<ClaudeRun> {
  const child = spawn(options.bin, options.argv, { env: options.env, stdio: ['pipe', 'pipe', 'pipe'] })
  const spawnError = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    child.once('spawn', () => resolve(undefined))
    child.once('error', resolve)
  })
  const resumed = options.argv.includes('--resume')
  if (spawnError) return { spawnError, result: undefined, assistantError: undefined, exitCode: null, signal: null, stderr: '', garbage: undefined, resumed }
  options.onSpawn(child)
  child.on('error', (error) => note(`claude process error: ${error.message}`))
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (code, signal) => resolve([code, signal])))
  const stdoutClosed = new Promise((resolve) => child.stdout?.once('close', resolve))
  const stderrClosed = new Promise((resolve) => child.stderr?.once('close', resolve))

  // claude may exit (a bad flag) before it reads its stdin: EPIPE then is expected.
  child.stdin?.on('error', () => {})
  child.stdin?.end(options.prompt)

  let result: ClaudeResult | undefined
  let assistantError: string | undefined
  let garbage: string | undefined
  let garbageNotes = 0
  let narration: string | undefined
  let lingerTimer: NodeJS.Timeout | undefined
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream, crlfDelay: Infinity })
  lines.on('line', (line) => {
    const event = parseLine(line)
    if (event === undefined) {
      if (line.trim() === '') return
      garbage ??= line
      if (garbageNotes++ < GARBAGE_NOTES_MAX) note(`skipped a stdout line that is not JSON: ${cut(line, 120)}`)
      return
    }
    // Text is shown once something follows it: followed by the result, it was the answer itself.
    if (narration !== undefined && event['type'] !== 'result') options.events.progress(narration)
    narration = undefined
    const progress = progressOf(event, options.cwd)
    if (progress?.narration) narration = progress.text
    else if (progress) options.events.progress(progress.text)
    assistantError = assistantErrorOf(event) ?? assistantError
    const ended = resultOf(event)
    if (ended === undefined) return
    result = ended
    lingerTimer ??= setTimeout(() => {
      note(`claude did not exit ${AFTER_RESULT_GRACE_MS / 1000} s after its result; stopping it`)
      child.kill('SIGTERM')
      lingerTimer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS)
    }, AFTER_RESULT_GRACE_MS)
  })
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => {
    process.stderr.write(chunk)
    stderr = (stderr + chunk.toString('utf8')).slice(-STDERR_KEPT_CHARS)
  })

  const [exitCode, signal] = await exited
  clearTimeout(lingerTimer)
  await Promise.race([Promise.all([stdoutClosed, stderrClosed]), delay(PIPE_DRAIN_MS, undefined, { ref: false })])
  lines.close()
  child.stdout?.destroy()
  child.stderr?.destroy()
  return { spawnError: undefined, result, assistantError, exitCode, signal, stderr, garbage, resumed }
}

function isSessionGone(run: ClaudeRun): boolean {
  if (run.spawnError || (run.result && succeeded(run.result))) return false
  return classifyFailure(run).kind === 'session_gone'
}

/** Turns a finished run into the reply and the exit status. */
function settle(run: ClaudeRun, context: { bin: string; binFromEnv: boolean; sessionFile: string | undefined }): number {
  if (run.spawnError) {
    note(spawnProblem(run.spawnError, context.bin, context.binFromEnv), '')
    return 1
  }
  const { result } = run
  const remember = (sessionId: string | undefined): void => {
    if (!context.sessionFile || !sessionId) return
    try {
      saveSession(context.sessionFile, sessionId)
    } catch (error) {
      note(`could not store the session id in ${context.sessionFile}: ${(error as Error).message}`)
    }
  }
  if (result) note(summary(result))
  if (result && succeeded(result)) {
    remember(result.sessionId)
    if (result.text.trim() !== '') process.stdout.write(`${result.text}\n`)
    return 0
  }
  // A run stopped at a limit did real work in its session: the user may well say "go on".
  if (result?.subtype.startsWith('error_max_')) remember(result.sessionId)
  const failure = classifyFailure(run)
  if (failure.kind === 'transient') {
    note(`${failure.reason} (temporary: exit ${EXIT_TEMPFAIL} to be retried)`, '')
    return EXIT_TEMPFAIL
  }
  note(failure.kind === 'fatal' ? failure.reason : 'claude could not resume the session', '')
  return 1
}

function summary(result: ClaudeResult): string {
  const fields = [
    `session=${result.sessionId ?? '-'}`,
    `cost_usd=${result.costUsd === undefined ? '-' : result.costUsd.toFixed(4)}`,
    `duration_ms=${result.durationMs ?? '-'}`,
    `turns=${result.turns ?? '-'}`,
  ]
  if (!succeeded(result)) fields.push(`result=${result.subtype}${result.isError ? ',is_error' : ''}`)
  return fields.join(' ')
}

function spawnProblem(error: NodeJS.ErrnoException, bin: string, binFromEnv: boolean): string {
  if (error.code === 'ENOENT') {
    return binFromEnv ? `CLAUDE_BIN=${bin} was not found: point it at the claude executable` : 'claude not found on PATH: install Claude Code or set CLAUDE_BIN'
  }
  if (error.code === 'EACCES') return `${bin} is not executable: check CLAUDE_BIN and its permissions`
  return `claude could not be started (${bin}): ${error.message}`
}

function exitStatusFor(signal: NodeJS.Signals): number {
  return 128 + (os.constants.signals[signal] ?? 15)
}

// One line on stderr; the coordinator keeps the end of it, and the last line is the user's failure notice.
function note(message: string, prefix = 'claude: '): void {
  process.stderr.write(`${prefix}${message}\n`)
}
