import fs from 'node:fs'
import { ConfigError } from '../config.js'

/**
 * Checks that BRAIN_CWD, when set, is a directory the service can enter and read, before anything
 * listens: otherwise every message would fail, and the chat would be shown server paths. Unset,
 * each brain works in its chat's directory, which the service makes itself.
 */
export function checkBrainCwd(cwd: string | undefined): void {
  if (cwd === undefined) return
  let stat: fs.Stats
  try {
    stat = fs.statSync(cwd)
  } catch {
    throw new ConfigError('BRAIN_CWD', `${cwd} does not exist; create it or set BRAIN_CWD to the directory the brain works in`)
  }
  if (!stat.isDirectory()) throw new ConfigError('BRAIN_CWD', `${cwd} is not a directory; set BRAIN_CWD to the directory the brain works in`)
  try {
    fs.accessSync(cwd, fs.constants.R_OK | fs.constants.X_OK)
  } catch {
    throw new ConfigError('BRAIN_CWD', `${cwd} cannot be entered and read by this user; fix its permissions or set BRAIN_CWD to another directory`)
  }
}
