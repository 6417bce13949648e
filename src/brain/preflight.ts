import fs from 'node:fs'
import path from 'node:path'
import { DEFAULT_PATH } from './env.js'

/**
 * BRAIN_COMMAND names something that cannot be run as a brain. The message is one line that starts
 * with "BRAIN_COMMAND:" and says what to do, so a CLI can print it as is and exit 2.
 */
export class BrainCommandError extends Error {
  /** The first word of BRAIN_COMMAND, as configured. */
  readonly command: string
  constructor(command: string, problem: string) {
    super(`BRAIN_COMMAND: ${problem}`)
    this.name = 'BrainCommandError'
    this.command = command
  }
}

// Linux reads at most this much of a file to find its #! line (BINPRM_BUF_SIZE).
const HEADER_BYTES = 256
const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46])
const SHEBANG = Buffer.from('#!')
const UTF8_BOM = Buffer.from([0xef, 0xbb, 0xbf])

/**
 * Checks at startup that BRAIN_COMMAND's program can really be executed, so a bad setting fails the
 * service at once rather than every message later. A name containing a slash is resolved against
 * `cwd` (the brain's working directory, as the spawn will); a bare name is searched on `searchPath`
 * (the PATH the brain will get), where an empty entry means `cwd`, like execvp.
 *
 * Besides "exists, is a file, is executable", it refuses a file that is neither an ELF binary nor a
 * `#!` script: Node on Linux would silently run such a file with /bin/sh, and a Python or Node
 * brain without its `#!` line then dies of shell syntax errors (or "Exec format error" one level
 * down). It also catches the #! line mistakes that turn into a baffling ENOENT at spawn time: a
 * byte-order mark, Windows line endings, an interpreter that does not exist.
 *
 * Returns the absolute path that will run. Throws {@link BrainCommandError}.
 */
export function checkBrainCommand(argv0: string, searchPath: string | undefined, cwd: string): { path: string } {
  if (argv0 === '') throw new BrainCommandError(argv0, "is empty: set it to the brain's command line")
  const file = argv0.includes('/') ? resolveRelative(argv0, cwd) : searchOnPath(argv0, searchPath ?? DEFAULT_PATH, cwd)
  checkHeader(argv0, file)
  return { path: file }
}

function resolveRelative(argv0: string, cwd: string): string {
  const file = path.resolve(cwd, argv0)
  const where = path.isAbsolute(argv0) ? file : `${file} (resolved against ${cwd})`
  let stat: fs.Stats
  try {
    stat = fs.statSync(file)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new BrainCommandError(argv0, `${where} does not exist; fix the path, or use a bare name to search PATH`)
    }
    throw new BrainCommandError(argv0, `${where} cannot be examined (${code ?? String(error)}); check the permissions of its directories`)
  }
  const problem = runnableProblem(file, stat)
  if (problem) throw new BrainCommandError(argv0, problem)
  return file
}

function searchOnPath(argv0: string, searchPath: string, cwd: string): string {
  let nearMiss: string | undefined
  for (const dir of searchPath.split(':')) {
    const file = path.resolve(cwd, dir, argv0)
    const stat = statOrUndefined(file)
    if (!stat) continue
    const problem = runnableProblem(file, stat)
    if (!problem) return file
    nearMiss ??= problem
  }
  if (nearMiss) throw new BrainCommandError(argv0, `"${argv0}" was found on PATH but ${nearMiss}`)
  throw new BrainCommandError(
    argv0,
    `"${argv0}" was not found on PATH (${searchPath}); install it, give its full path, or add its directory to PATH`,
  )
}

/** Why `file` cannot be executed, or undefined if it can. */
function runnableProblem(file: string, stat: fs.Stats): string | undefined {
  if (stat.isDirectory()) return `${file} is a directory, not a program; point BRAIN_COMMAND at the executable file`
  if (!stat.isFile()) return `${file} is not a regular file; point BRAIN_COMMAND at an executable file`
  try {
    fs.accessSync(file, fs.constants.X_OK)
  } catch {
    return `${file} is not executable by this user; run chmod +x ${file}`
  }
  return undefined
}

function checkHeader(argv0: string, file: string): void {
  const header = readHeader(file)
  // Execute-only files cannot be inspected; the kernel will judge them.
  if (header === undefined) return
  const fail = (problem: string): never => {
    throw new BrainCommandError(argv0, `${file} ${problem}`)
  }
  if (header.length === 0) fail('is empty; it should be a program or a script starting with a #! line such as #!/bin/sh')
  if (startsWith(header, ELF_MAGIC)) return
  if (startsWith(header, UTF8_BOM)) fail('starts with a byte-order mark, which hides its #! line from Linux; save it as UTF-8 without BOM')
  if (!startsWith(header, SHEBANG)) {
    if (header.includes(0)) fail('is neither an ELF binary nor a #! script, so Linux cannot run it; wrap it in a script that starts with #!/bin/sh')
    fail('is a script without a #! line; add e.g. #!/bin/sh as its first line')
  }

  const newline = header.indexOf(0x0a)
  const line = header.subarray(SHEBANG.length, newline === -1 ? header.length : newline).toString('utf8')
  if (line.endsWith('\r')) fail('has Windows line endings (CRLF) on its #! line, so Linux looks for an interpreter ending in \\r; convert it with dos2unix')
  const interpreter = line.trim().split(/[ \t]/u)[0] ?? ''
  if (interpreter === '') fail('has a #! line that names no interpreter; write e.g. #!/bin/sh or #!/usr/bin/env node')
  if (path.isAbsolute(interpreter)) {
    const stat = statOrUndefined(interpreter)
    if (!stat) fail(`has a #! line naming ${interpreter}, which does not exist; fix the #! line (e.g. #!/usr/bin/env node)`)
    else if (runnableProblem(interpreter, stat)) fail(`has a #! line naming ${interpreter}, which cannot be executed; fix the #! line`)
  }
}

function readHeader(file: string): Buffer | undefined {
  let fd: number
  try {
    fd = fs.openSync(file, 'r')
  } catch {
    return undefined
  }
  try {
    const buffer = Buffer.alloc(HEADER_BYTES)
    return buffer.subarray(0, fs.readSync(fd, buffer, 0, HEADER_BYTES, 0))
  } finally {
    fs.closeSync(fd)
  }
}

function statOrUndefined(file: string): fs.Stats | undefined {
  try {
    return fs.statSync(file)
  } catch {
    return undefined
  }
}

function startsWith(buffer: Buffer, prefix: Buffer): boolean {
  return buffer.length >= prefix.length && buffer.subarray(0, prefix.length).equals(prefix)
}

/** Whether this process may execute `file` now (readyz asks this of the resolved brain). */
export function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return true
  } catch {
    return false
  }
}
