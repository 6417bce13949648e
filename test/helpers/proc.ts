// What Linux's /proc says about processes, for the tests, the benchmarks and the soak: which exist,
// their state, parent and group, memory, CPU time, open fds and environment.
import fs from 'node:fs'

/** One process, from /proc/<pid>/stat. */
export interface ProcessInfo {
  readonly pid: number
  readonly comm: string
  /** R, S, D, Z (zombie: dead, not yet reaped), X, … */
  readonly state: string
  readonly ppid: number
  readonly pgrp: number
}

/** The process `pid`, or undefined once it is gone. */
export function processInfo(pid: number): ProcessInfo | undefined {
  let stat: string
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined
  }
  // "pid (comm) state ppid pgrp …"; comm may hold spaces and parentheses, so cut at the last ')'.
  const close = stat.lastIndexOf(')')
  const [state = '?', ppid = '0', pgrp = '0'] = stat.slice(close + 2).split(' ')
  return { pid, comm: stat.slice(stat.indexOf('(') + 1, close), state, ppid: Number(ppid), pgrp: Number(pgrp) }
}

/** Every process there is (those that vanish while being read are left out). */
export function processes(): ProcessInfo[] {
  const found: ProcessInfo[] = []
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/u.test(entry)) continue
    const info = processInfo(Number(entry))
    if (info) found.push(info)
  }
  return found
}

/**
 * Processes of process group `pgid` that are not zombies. A brain's group is the pid the service
 * logs as `child started`; the pids a brain reports itself are its PID namespace's when sandboxed.
 */
export function liveGroupMembers(pgid: number): number[] {
  return processes()
    .filter((p) => p.pgrp === pgid && p.state !== 'Z' && p.state !== 'X')
    .map((p) => p.pid)
}

/** True while a process exists and is not a zombie (a zombie is dead, only not yet reaped). */
export function isAlive(pid: number): boolean {
  const state = processInfo(pid)?.state
  return state !== undefined && state !== 'Z'
}

/** True if the process's environment holds `NAME=value` exactly. */
export function carriesEnv(pid: number, entry: string): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(entry)
  } catch {
    return false
  }
}

/** A process's open fds: how many sockets, and what the others point at (pipes, files, event fds). */
export function fdsOf(pid: number): { sockets: number; others: string[] } {
  let targets: string[] = []
  try {
    targets = fs.readdirSync(`/proc/${pid}/fd`).map((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`)
      } catch {
        return 'gone'
      }
    })
  } catch {
    // the process is gone
  }
  // Pipe and socket inode numbers differ from run to run; their kind and number are what count.
  const others = targets.filter((target) => !target.startsWith('socket:')).map((target) => target.replace(/:\[\d+\]$/u, ''))
  return { sockets: targets.length - others.length, others: others.sort() }
}

/** A field of /proc/<pid>/status given in kB (VmRSS, VmHWM, RssAnon, …). */
export function statusKb(pid: number, field: string): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'mu').exec(status)
  if (!match?.[1]) throw new Error(`/proc/${pid}/status has no ${field}`)
  return Number(match[1])
}

// /proc/<pid>/stat counts CPU time in clock ticks: USER_HZ, 100 on every Linux this runs on.
const CLOCK_TICKS_PER_S = 100

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
export function cpuSecondsOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command name (which may hold spaces), which ends at the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S
}
