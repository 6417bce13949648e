#!/usr/bin/env node
import { createRequire } from 'node:module'
import { ConfigError, loadConfig } from './config.js'
import { BrainCommandError } from './brain/preflight.js'
import { CommandFailed } from './cli/failure.js'
import { parseServeArgs, UsageError } from './cli/usage.js'
import { DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS_RANGE, TELEGRAM_WEBHOOK_PORTS } from './cli/webhook-settings.js'

/** Exit status for a configuration that cannot work. */
export const EXIT_CONFIG = 2
/** Exit status for a command that ran but failed (a check, Telegram unreachable). */
export const EXIT_FAILED = 1

interface Command {
  /** The command line(s), as listed by `coordinator --help`. */
  readonly synopsis: readonly string[]
  /** One line for the list. */
  readonly summary: string
  /** The options and notes `coordinator <command> --help` adds below the synopsis. */
  readonly details: string
  readonly run: (args: string[]) => Promise<number | void>
}

const TELEGRAM_ENV = 'Reads TELEGRAM_BOT_TOKEN, TELEGRAM_WEBHOOK_SECRET and TELEGRAM_API_ROOT from the environment.'

// Each command loads only what it needs, so `--help` stays instant.
const COMMANDS: Record<string, Command> = {
  serve: {
    synopsis: ['serve [--role all|intake|worker]'],
    summary: 'run the service (configuration from the environment; see README)',
    details: [
      '  --role R   with DATABASE_URL (the Postgres mode): intake answers the webhook, worker runs brains,',
      '             all does both (the default)',
      '',
      'Runs until SIGTERM or SIGINT, then drains: running brains get SHUTDOWN_GRACE_S to finish.',
    ].join('\n'),
    run: async (args) => {
      const role = parseServeArgs(args)
      // A configuration that cannot work is told before the service's modules load.
      const config = loadConfig()
      const { serve } = await import('./server.js')
      await serve(config, role)
    },
  },
  check: {
    synopsis: ['check [--url URL]'],
    summary: 'check configuration, brain, directories, bot token and webhook (exit 1 on a failure)',
    details: [
      '  --url URL   the webhook URL Telegram should have (default: any, on WEBHOOK_PATH)',
      '',
      "Run it as the service runs: its user, its environment (docs/DEPLOY.md's `coord check`).",
      'It creates no directories and no inbox. A configuration that does not load is one line, exit status 2.',
    ].join('\n'),
    run: async (args) => (await import('./cli/check.js')).checkCommand(args),
  },
  'set-webhook': {
    synopsis: ['set-webhook --url https://… [--drop-pending] [--max-connections N]'],
    summary: 'register the webhook with Telegram (secret, allowed updates)',
    details: [
      '  --url URL              the public HTTPS address of the webhook, e.g. https://bot.example.com/telegram/webhook',
      '  --drop-pending         drop the updates Telegram is holding',
      `  --max-connections N    parallel connections Telegram may open, ${MAX_CONNECTIONS_RANGE.min}–${MAX_CONNECTIONS_RANGE.max} (default ${DEFAULT_MAX_CONNECTIONS})`,
      `  --allow-http           accept http:// and ports other than ${TELEGRAM_WEBHOOK_PORTS.join(', ')} (the emulator, a local Bot API server)`,
      '',
      `${TELEGRAM_ENV} The secret_token is TELEGRAM_WEBHOOK_SECRET.`,
    ].join('\n'),
    run: async (args) => (await import('./cli/webhook.js')).setWebhookCommand(args),
  },
  'webhook-info': {
    synopsis: ['webhook-info [--json]'],
    summary: "show Telegram's view of the webhook: URL, pending updates, last error",
    details: ['  --json   print getWebhookInfo as JSON', '', TELEGRAM_ENV].join('\n'),
    run: async (args) => (await import('./cli/webhook.js')).webhookInfoCommand(args),
  },
  'delete-webhook': {
    synopsis: ['delete-webhook [--drop-pending]'],
    summary: 'remove the webhook (Telegram then holds updates)',
    details: ['  --drop-pending   drop the updates Telegram is holding', '', TELEGRAM_ENV].join('\n'),
    run: async (args) => (await import('./cli/webhook.js')).deleteWebhookCommand(args),
  },
  inbox: {
    synopsis: ['inbox [--chat ID] [--state STATE] [--limit N] [--json]', 'inbox retry ID'],
    summary: 'list messages in the inbox; retry re-queues a failed, timed-out or cancelled one',
    details: [
      '  --chat ID      only this chat',
      '  --state STATE  only messages in this state (queued, running, done, failed, timed_out, cancelled)',
      '  --limit N      at most N messages, newest first',
      '  --json         print JSON',
      '',
      'Reads the inbox in STATE_DIR, or with DATABASE_URL the Postgres store every host shares.',
    ].join('\n'),
    run: async (args) => (await import('./cli/inbox.js')).inboxCommand(args),
  },
  demo: {
    synopsis: ['demo [--delay S]'],
    summary: 'play a scripted conversation against a local Bot API emulator',
    details: '  --delay S   seconds the echo brain takes per message\n\nNeeds no token and no network; exits 1 if a claim of the script did not hold.',
    run: async (args) => (await import('./demo/demo.js')).runDemo(args),
  },
  sandbox: {
    synopsis: ['sandbox [--port P] [--state DIR]'],
    summary: 'talk to your brain in a browser: a local chat page, the emulator and the service',
    details: [
      '  --port P      the chat page\'s port on 127.0.0.1 (default 0: a free one)',
      '  --state DIR   keep the service\'s state here (default: a temporary directory, removed at the end)',
      '',
      'Prints the chat page\'s URL as its first line. The brain is BRAIN_COMMAND (with BRAIN_ENV_ALLOW and the',
      'other brain settings of the environment), else scripts/brains/echo (ECHO_DELAY_S seconds a message,',
      'default 1). Needs no token and no network; Ctrl-C stops it.',
    ].join('\n'),
    run: async (args) => (await import('./chat-page/sandbox.js')).runSandbox(args),
  },
  emulator: {
    synopsis: ['emulator [--host H] [--port P] [--token T]'],
    summary: 'run the local Telegram Bot API emulator',
    details: [
      '  --host H                 address to listen on',
      '  --port P                 port (0 picks a free one)',
      '  --token T                the bot token it accepts (default TELEGRAM_BOT_TOKEN)',
      '  --bot-username NAME      the username getMe answers',
      '  --delivery-retry-ms MS   first retry delay after a failed webhook delivery',
      '  --delivery-timeout-ms MS how long a webhook gets to answer',
      '',
      'A local Telegram Bot API (default 127.0.0.1:8081): /bot<token>/<method> as Telegram, files at',
      '/file/bot<token>/<path>, updates delivered to the webhook set with set-webhook --allow-http.',
      'Drive it from a script with its control API (JSON; README "The emulator, from a script"):',
      '  POST   /_emulator/updates        a user writes: {"chatId": 42, "text": "hello"}, or a raw Update',
      '  GET    /_emulator/calls          the bot\'s calls (?method=sendMessage&since=N)',
      '  GET    /_emulator/deliveries     webhook deliveries (?since=N)',
      '  GET    /_emulator/webhook        the webhook, as getWebhookInfo',
      '  POST   /_emulator/faults         {"method": "sendMessage", "fault": {"kind": "server_error"}, "times": 2}',
      '  DELETE /_emulator/faults         disarm every fault',
      '  POST   /_emulator/reset          forget calls, deliveries, chats and files',
      'Example: curl -s 127.0.0.1:8081/_emulator/updates -d \'{"chatId": 42, "text": "hello"}\'',
    ].join('\n'),
    run: async (args) => {
      const { runEmulatorCommand } = await import('./cli/emulator.js')
      await runEmulatorCommand(args)
    },
  },
}

const SYNOPSIS_WIDTH = 26

const HELP = `coordinator: a Telegram bot webhook in front of a slow command-line brain

Usage: coordinator <command> [options]      coordinator <command> --help for its options

Commands:
${Object.values(COMMANDS)
  .map(({ synopsis, summary }) => {
    const lines = synopsis.map((line) => `  ${line}`)
    // The summary goes beside a short synopsis, under a long one.
    const [only] = lines
    if (lines.length === 1 && only !== undefined && only.length < SYNOPSIS_WIDTH) return `${only.padEnd(SYNOPSIS_WIDTH + 2)}${summary}`
    return [...lines, `${' '.repeat(SYNOPSIS_WIDTH + 2)}${summary}`].join('\n')
  })
  .join('\n')}

Options:
  -h, --help                show this help
  -v, --version             print the version
`

function findCommand(name: string | undefined): Command | undefined {
  return name !== undefined && Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined
}

function commandHelp(command: Command): string {
  const usage = command.synopsis.map((line, i) => `${i === 0 ? 'Usage:' : '      '} coordinator ${line}`).join('\n')
  return `${usage}\n\n${command.summary[0]?.toUpperCase()}${command.summary.slice(1)}.\n\n${command.details}\n`
}

async function main(argv: string[]): Promise<number | void> {
  const [name, ...args] = argv
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    const topic = name === 'help' ? findCommand(args[0]) : undefined
    process.stdout.write(topic ? commandHelp(topic) : HELP)
    return name === undefined ? 1 : 0
  }
  if (name === '-v' || name === '--version') {
    const require = createRequire(import.meta.url)
    process.stdout.write(`${(require('../package.json') as { version: string }).version}\n`)
    return 0
  }
  const command = findCommand(name)
  if (!command) {
    process.stderr.write(`coordinator: unknown command "${name}"; run coordinator --help for the list\n`)
    return EXIT_CONFIG
  }
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(commandHelp(command))
    return 0
  }
  try {
    return await command.run(args)
  } catch (error) {
    // node:util parseArgs: an unknown option, a missing value, a stray argument.
    if (error instanceof TypeError && String((error as NodeJS.ErrnoException).code).startsWith('ERR_PARSE_ARGS')) {
      // Its first sentence; the rest explains `--` for positionals, which no command here takes.
      const problem = error.message.split(/\.\s|\n/u)[0] ?? error.message
      throw new UsageError(`${name}: ${problem}; see coordinator ${name} --help`)
    }
    throw error
  }
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
    if (error instanceof CommandFailed) {
      process.stderr.write(`coordinator: ${error.message}\n`)
      process.exit(EXIT_FAILED)
    }
    process.stderr.write(`coordinator: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    process.exit(EXIT_FAILED)
  },
)
