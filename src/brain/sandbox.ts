import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError, type NetworkMode, type SandboxMode } from '../config.js'
import { DEFAULT_PATH } from './env.js'
import type { BrainAttempt } from './run.js'

/** The settings the sandbox is built from (a slice of Config). */
export interface SandboxSettings {
  readonly mode: SandboxMode
  readonly network: NetworkMode
  readonly stateDir: string
  /** BRAIN_CWD when configured: visible read-write, and the brain's working directory. */
  readonly brainCwd: string | undefined
  /** BRAIN_COMMAND's argv[0]: its directory must be visible. */
  readonly command: string
}

/** One attempt's command line, working directory and environment, sandboxed or not. */
export interface SandboxedCommand {
  readonly argv: readonly [string, ...string[]]
  readonly cwd: string
  readonly env: Readonly<Record<string, string>>
}

/** What one attempt may see of STATE_DIR. */
export interface AttemptPaths {
  /** The chat's directory: read-write, and HOME. */
  readonly chatDir: string
  /** This run's media directories: read-only (missing ones are skipped). */
  readonly mediaDirs: readonly string[]
}

// The read-only system. Merged-/usr systems have /bin, /lib… as symlinks into /usr; they are
// recreated as symlinks, not bound.
const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc']
// Debian's resolv.conf may point into systemd-resolved's runtime directory.
const RESOLVER_DIRS = ['/run/systemd/resolve']
// The coordinator's own install directory: the bundled adapters (scripts/brains/*) import its dist/.
const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
// How long the start-up probe may take before bubblewrap counts as unusable.
const PROBE_TIMEOUT_MS = 10_000
// The sandbox's private /tmp: a brain filling it fills memory, so it is bounded.
const TMP_SIZE_BYTES = 512 * 1024 * 1024
// bwrap's last words when the brain's exec fails, and the errno behind the usual reasons.
const EXEC_FAILURE = /^bwrap: execvp (.+): ([^\n:]+)$/u
const EXEC_ERRORS: ReadonlyMap<string, string> = new Map([
  ['Permission denied', 'EACCES'],
  ['No such file or directory', 'ENOENT'],
  ['Exec format error', 'ENOEXEC'],
  ['Resource temporarily unavailable', 'EAGAIN'],
])
const BWRAP_CANDIDATES = ['/usr/bin/bwrap', '/usr/local/bin/bwrap']

/**
 * The bubblewrap sandbox every brain attempt runs in (BRAIN_SANDBOX=on). Each attempt gets new
 * user, mount, PID and IPC namespaces (and network, with BRAIN_NETWORK=off), no capabilities,
 * no_new_privs, and a file system made of: the system directories read-only, the brain's program,
 * its interpreter and the PATH directories read-only, a private /tmp, a /proc of its own PID
 * namespace, a minimal /dev, BRAIN_CWD read-write when configured, and of STATE_DIR only the
 * chat's directory (read-write) and this run's media (read-only). HOME is the chat's directory.
 *
 * bwrap stays the process-group leader the service supervises: a SIGTERM to the group reaches the
 * brain inside (the group spans the namespace), bwrap itself dies of it at once, and the namespace's
 * init lingers only until the brain exits or the SIGKILL after the grace ends it all. bwrap
 * reports the brain's exit status as its own (128 + N for a brain killed by signal N).
 *
 * When the service runs as root, the brain is still uid 0 to the kernel, without capabilities:
 * it cannot unmount, remount, signal or trace anything outside, but it owns root's files, so every
 * file under /etc that another user could not read is masked (and nothing under /root, /home,
 * /var, /srv or /run is visible at all).
 */
export class BrainSandbox {
  readonly #settings: SandboxSettings
  readonly #bwrap: string
  // Computed once: the parts of the command line that are the same for every attempt.
  readonly #fixedMounts: readonly Mount[]

  private constructor(settings: SandboxSettings, bwrap: string, fixedMounts: readonly Mount[]) {
    this.#settings = settings
    this.#bwrap = bwrap
    this.#fixedMounts = fixedMounts
  }

  /**
   * Builds the sandbox for `settings` and, when it is on, proves it works by running `true` in it.
   * Throws ConfigError naming BRAIN_SANDBOX when bubblewrap is missing or cannot create namespaces.
   */
  static prepare(settings: SandboxSettings, env: NodeJS.ProcessEnv = process.env): BrainSandbox {
    if (settings.mode === 'off') return new BrainSandbox(settings, '', [])
    const bwrap = findBwrap(env['PATH'])
    if (bwrap === undefined) {
      throw new ConfigError(
        'BRAIN_SANDBOX',
        'is on, but bubblewrap (bwrap) is not installed: install it (apt-get install bubblewrap), or set BRAIN_SANDBOX=off to run brains unconfined',
      )
    }
    // The sandbox hides STATE_DIR, so a brain kept there would be "not found" at every message.
    const command = resolveCommand(settings.command, env['PATH'])
    if (command !== undefined && isInside(realpath(command), realpath(settings.stateDir))) {
      throw new ConfigError(
        'BRAIN_COMMAND',
        `is inside STATE_DIR (${command}), which a sandboxed brain cannot see: keep the brain's program outside STATE_DIR, or set BRAIN_SANDBOX=off`,
      )
    }
    const sandbox = new BrainSandbox(settings, bwrap, fixedMounts(settings, env['PATH']))
    const probe = sandbox.#probe()
    if (probe !== undefined) {
      throw new ConfigError(
        'BRAIN_SANDBOX',
        `is on, but bubblewrap cannot create a sandbox here (${probe}): allow user namespaces (sysctl kernel.unprivileged_userns_clone=1, ` +
          'RestrictNamespaces= in the unit), or set BRAIN_SANDBOX=off to run brains unconfined',
      )
    }
    return sandbox
  }

  get enabled(): boolean {
    return this.#settings.mode === 'on'
  }

  /**
   * `argv` and `env` as one attempt runs them: inside bwrap when the sandbox is on, unchanged when
   * off. The working directory is BRAIN_CWD when configured, else the chat's directory; should that
   * directory be unusable (the service warned it could not create it), the brain runs anyway, in
   * a temporary directory (the sandbox's own /tmp), never in STATE_DIR.
   */
  wrap(argv: readonly [string, ...string[]], env: Readonly<Record<string, string>>, paths: AttemptPaths): SandboxedCommand {
    const chatDirUsable = isDirectory(paths.chatDir)
    const fallback = this.enabled ? '/tmp' : os.tmpdir()
    const cwd = this.#settings.brainCwd ?? (chatDirUsable ? paths.chatDir : fallback)
    if (!this.enabled) return { argv, cwd, env }
    const mounts: Mount[] = [...this.#fixedMounts]
    if (chatDirUsable) mounts.push({ op: '--bind', src: paths.chatDir, dest: paths.chatDir })
    for (const dir of paths.mediaDirs) mounts.push({ op: '--ro-bind-try', src: dir, dest: dir })
    // What is left of STATE_DIR (the directories leading to the chat's) and the sandbox's root
    // (the mount points) are not for writing: only the chat's directory, BRAIN_CWD and /tmp are.
    const readOnly = ['--remount-ro', this.#settings.stateDir, '--remount-ro', '/']
    return {
      argv: [this.#bwrap, ...this.#namespaceArgs(), ...mountArgs(mounts), ...readOnly, '--chdir', cwd, '--', ...argv],
      // bwrap itself starts from a directory that exists; --chdir moves the brain.
      cwd: os.tmpdir(),
      env: { ...env, HOME: chatDirUsable ? paths.chatDir : fallback, TMPDIR: '/tmp' },
    }
  }

  /**
   * bwrap reports a brain it could not exec ("bwrap: execvp PATH: Permission denied") on stderr and
   * exits 1; that is the brain failing to start, as an unsandboxed spawn would have said.
   */
  startFailure(attempt: BrainAttempt): Error | undefined {
    if (!this.enabled || attempt.exitCode !== 1) return undefined
    const match = EXEC_FAILURE.exec(attempt.stderrTail.trim())
    if (match === null) return undefined
    const [, program = '', reason = ''] = match
    const error: NodeJS.ErrnoException = new Error(reason)
    const code = EXEC_ERRORS.get(reason)
    if (code !== undefined) error.code = code
    error.path = program
    return error
  }

  #namespaceArgs(): string[] {
    return [
      '--unshare-user',
      // A nested user namespace would give the brain capabilities over a copy of its mounts.
      '--disable-userns',
      '--unshare-pid',
      '--unshare-ipc',
      ...(this.#settings.network === 'off' ? ['--unshare-net'] : []),
      '--cap-drop',
      'ALL',
    ]
  }

  /** Runs `true` in the sandbox as an attempt would; returns why it failed, or undefined. */
  #probe(): string | undefined {
    const probeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coordinator-sandbox-probe-'))
    try {
      const trueCommand = ['/usr/bin/true', '/bin/true'].find(isExecutableFile) ?? 'true'
      const { argv } = this.wrap([trueCommand], { PATH: DEFAULT_PATH }, { chatDir: probeDir, mediaDirs: [] })
      const result = spawnSync(argv[0], argv.slice(1), { cwd: probeDir, env: { PATH: DEFAULT_PATH }, timeout: PROBE_TIMEOUT_MS, encoding: 'utf8' })
      if (result.error) return result.error.message
      if (result.status === 0) return undefined
      const said = result.stderr.trim().split('\n').at(-1)?.trim()
      return said || `bwrap exited ${result.status ?? result.signal ?? 'abnormally'}`
    } finally {
      fs.rmSync(probeDir, { recursive: true, force: true })
    }
  }
}

interface Mount {
  readonly op: '--ro-bind' | '--ro-bind-try' | '--bind' | '--tmpfs' | '--symlink' | '--proc' | '--dev' | '--mask'
  readonly src?: string
  readonly dest: string
}

/** What every attempt sees apart from its chat's directory and media, in mount order. */
function fixedMounts(settings: SandboxSettings, searchPath: string | undefined): Mount[] {
  const mounts: Mount[] = []
  for (const dir of SYSTEM_DIRS) {
    const stat = lstat(dir)
    if (stat === undefined) continue
    if (stat.isSymbolicLink()) mounts.push({ op: '--symlink', src: fs.readlinkSync(dir), dest: dir })
    else if (stat.isDirectory()) mounts.push({ op: '--ro-bind', src: dir, dest: dir })
  }
  for (const dir of RESOLVER_DIRS) mounts.push({ op: '--ro-bind-try', src: dir, dest: dir })
  if (process.getuid?.() === 0) for (const hidden of rootOnlyEntries('/etc')) mounts.push({ op: '--mask', dest: hidden })
  mounts.push({ op: '--proc', dest: '/proc' }, { op: '--dev', dest: '/dev' }, { op: '--tmpfs', dest: '/tmp' })

  // Programs: the brain's own directory, the PATH directories, the coordinator's install and the
  // Node running it (wherever they live), read-only. Anything inside STATE_DIR stays hidden.
  const programs = new Set<string>()
  const addProgramDir = (dir: string | undefined): void => {
    if (dir === undefined || !path.isAbsolute(dir) || isInside(dir, settings.stateDir)) return
    if (SYSTEM_DIRS.some((system) => isInside(dir, system))) return
    programs.add(dir)
  }
  const command = resolveCommand(settings.command, searchPath)
  if (command !== undefined) {
    addProgramDir(path.dirname(command))
    addProgramDir(path.dirname(realpath(command)))
    addProgramDir(interpreterPrefix(realpath(command)))
  }
  for (const entry of (searchPath ?? DEFAULT_PATH).split(':')) if (isDirectory(entry)) addProgramDir(realpath(entry))
  addProgramDir(PACKAGE_ROOT)
  addProgramDir(path.dirname(path.dirname(realpath(process.execPath))))
  // A program directory inside another is mounted by the outer one already.
  const outermost = [...programs].filter((dir) => ![...programs].some((other) => other !== dir && isInside(dir, other)))

  const ordered: Mount[] = outermost.map((dir) => ({ op: '--ro-bind', src: dir, dest: dir }))
  if (settings.brainCwd !== undefined) ordered.push({ op: '--bind', src: settings.brainCwd, dest: settings.brainCwd })
  // Whatever of STATE_DIR a mount above reaches (BRAIN_CWD, the install dir or /tmp holding it) is covered.
  ordered.push({ op: '--tmpfs', dest: settings.stateDir })
  // A shallower mount first, so that a deeper one is not covered by it.
  ordered.sort((a, b) => depth(a.dest) - depth(b.dest))
  return [...mounts, ...ordered]
}

function mountArgs(mounts: readonly Mount[]): string[] {
  return mounts.flatMap((mount) => {
    switch (mount.op) {
      case '--tmpfs':
        return mount.dest === '/tmp' ? ['--size', String(TMP_SIZE_BYTES), '--tmpfs', mount.dest] : ['--tmpfs', mount.dest]
      case '--proc':
      case '--dev':
        return [mount.op, mount.dest]
      case '--mask':
        // An empty file over a file, an empty read-only tmpfs over a directory.
        return isDirectory(mount.dest) ? ['--perms', '0000', '--tmpfs', mount.dest, '--remount-ro', mount.dest] : ['--ro-bind', '/dev/null', mount.dest]
      default:
        return [mount.op, mount.src ?? mount.dest, mount.dest]
    }
  })
}

/**
 * Files and directories under `dir` that a user other than their owner could not read (mode lacks
 * o+r, or o+x for a directory): root's secrets, such as an EnvironmentFile holding the bot token.
 */
function rootOnlyEntries(dir: string, found: string[] = [], level = 0): string[] {
  let entries: fs.Dirent[]
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true })
  } catch {
    return found
  }
  for (const entry of entries) {
    const file = path.join(dir, entry.name)
    if (!entry.isFile() && !entry.isDirectory()) continue
    const stat = lstat(file)
    if (stat === undefined) continue
    const needed = entry.isDirectory() ? 0o005 : 0o004
    if ((stat.mode & needed) !== needed) found.push(file)
    else if (entry.isDirectory() && level < 6) rootOnlyEntries(file, found, level + 1)
  }
  return found
}

function findBwrap(searchPath: string | undefined): string | undefined {
  const onPath = (searchPath ?? DEFAULT_PATH)
    .split(':')
    .filter((dir) => path.isAbsolute(dir))
    .map((dir) => path.join(dir, 'bwrap'))
  return [...onPath, ...BWRAP_CANDIDATES].find(isExecutableFile)
}

/** BRAIN_COMMAND's program as an absolute path, searching PATH for a bare name. */
function resolveCommand(command: string, searchPath: string | undefined): string | undefined {
  if (path.isAbsolute(command)) return command
  for (const dir of (searchPath ?? DEFAULT_PATH).split(':')) {
    if (!path.isAbsolute(dir)) continue
    const candidate = path.join(dir, command)
    if (isExecutableFile(candidate)) return candidate
  }
  return undefined
}

/** For a `#!/abs/prefix/bin/interpreter` script, `/abs/prefix`; `#!/usr/bin/env x` is found on PATH. */
function interpreterPrefix(file: string): string | undefined {
  let header: string
  try {
    const fd = fs.openSync(file, 'r')
    try {
      const buffer = Buffer.alloc(256)
      header = buffer.subarray(0, fs.readSync(fd, buffer, 0, 256, 0)).toString('utf8')
    } finally {
      fs.closeSync(fd)
    }
  } catch {
    return undefined
  }
  const interpreter = /^#!\s*(\S+)/u.exec(header)?.[1]
  if (interpreter === undefined || !path.isAbsolute(interpreter)) return undefined
  return path.dirname(path.dirname(realpath(interpreter)))
}

function isInside(child: string, parent: string): boolean {
  const relative = path.relative(parent, child)
  return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative))
}

function depth(dir: string): number {
  return dir.split('/').filter(Boolean).length
}

function lstat(file: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(file)
  } catch {
    return undefined
  }
}

function realpath(file: string): string {
  try {
    return fs.realpathSync(file)
  } catch {
    return file
  }
}

function isDirectory(dir: string): boolean {
  try {
    return fs.statSync(dir).isDirectory()
  } catch {
    return false
  }
}

function isExecutableFile(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return fs.statSync(file).isFile()
  } catch {
    return false
  }
}
