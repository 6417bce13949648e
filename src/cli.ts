#!/usr/bin/env node
import { createRequire } from 'node:module'
import { ConfigError, loadConfig } from './config.js'
import { BrainCommandError } from './brain/preflight.js'
import { UsageError } from './commands/usage.js'

/** Exit status for a configuration that cannot work. */
export const EXIT_CONFIG = 2

const HELP = `coordinator: a Telegram bot webhook in front of a slow command-line brain

Usage: coordinator <command> [options]

Commands:
  serve                     run the service (configuration from the environment; see README)
  demo                      play a scripted conversation against a local Bot API emulator
  inbox [--chat ID] [--state STATE] [--limit N] [--json]
                            list messages in the inbox
  inbox retry ID            re-queue a failed, timed-out or cancelled message
  emulator [--host H] [--port P] [--token T]
                            run the local Telegram Bot API emulator

Options:
  -h, --help                show this help
  -v, --version             print the version
`

type Command = (args: string[]) => Promise<number | void>

// Each command loads only what it needs, so `--help` stays instant.
const COMMANDS: Record<string, Command> = {
  serve: async () => {
    const { serve } = await import('./server.js')
    await serve(loadConfig())
  },
  demo: async (args) => (await import('./demo/demo.js')).runDemo(args),
  inbox: async (args) => (await import('./commands/inbox.js')).inboxCommand(args),
  emulator: async (args) => {
    const { runEmulatorCommand } = await import('./emulator/cli.js')
    await runEmulatorCommand(args)
  },
}

async function main(argv: string[]): Promise<number | void> {
  const [name, ...args] = argv
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(HELP)
    return name === undefined ? 1 : 0
  }
  if (name === '-v' || name === '--version') {
    const require = createRequire(import.meta.url)
    process.stdout.write(`${(require('../package.json') as { version: string }).version}\n`)
    return 0
  }
  const command = COMMANDS[name]
  if (!command) {
    process.stderr.write(`coordinator: unknown command "${name}"; run coordinator --help for the list\n`)
    return EXIT_CONFIG
  }
  return command(args)
}

main(process.argv.slice(2)).then(
  (code) => {
    if (typeof code === 'number') process.exitCode = code
  },
  (error: unknown) => {
    if (error instanceof ConfigError || error instanceof BrainCommandError || error instanceof UsageError) {
      process.stderr.write(`coordinator: ${error.message}\n`)
      process.exit(EXIT_CONFIG)
    }
    process.stderr.write(`coordinator: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    process.exit(1)
  },
)
