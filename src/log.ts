import { pino, type Logger } from 'pino'
import type { LogLevel } from './config.js'

/**
 * The service's logger: JSON lines (one event per line) for journald and log shippers, or
 * human-readable through pino-pretty when stdout is a terminal.
 */
export function createLogger(level: LogLevel, pretty = process.stdout.isTTY === true): Logger {
  if (!pretty) return pino({ level, base: { pid: process.pid } })
  return pino({
    level,
    transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } },
  })
}
