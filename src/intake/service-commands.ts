import { forgetChatDir } from '../brain/chat-dir.js'
import type { Config } from '../config.js'
import type { Dispatcher, RunningJob } from '../dispatch/dispatcher.js'
import type { Command } from './classify.js'
import type { Inbox } from '../store/inbox.js'

/** What a service command answers, and what it does once its message is stored (not for a duplicate). */
export interface CommandAnswer {
  readonly reply: string
  readonly act?: () => void
}

export interface CommandContext {
  readonly chatId: number
  readonly dispatcher: Dispatcher
  readonly inbox: Inbox
  readonly config: Pick<Config, 'maxConcurrentBrains' | 'busyMode' | 'stateDir'>
  readonly now: number
  readonly onError: (error: unknown) => void
}

const BUSY_MODE_HELP: Record<Config['busyMode'], string> = {
  queue: 'Messages sent while I work wait their turn; each gets its own answer, in order.',
  collect: 'Messages sent while I work are answered together, in one next run.',
  interrupt: 'A new message stops the work in progress; the next run gets every message not yet answered.',
}

/**
 * Answers /status, /cancel, /cancel all and /help from live state, synchronously: these never wait
 * behind the chat's brain.
 */
export function answerCommand(command: Command, context: CommandContext): CommandAnswer {
  switch (command.name) {
    case 'status':
      return { reply: statusText(context) }
    case 'cancel':
      return cancel(command.args, context)
    case 'new':
      return startOver(context)
    case 'help':
      return { reply: helpText(context) }
  }
}

/** /new: forgets the chat's brain state (COORDINATOR_CHAT_DIR), such as an agent's session. */
function startOver({ chatId, dispatcher, config, onError }: CommandContext): CommandAnswer {
  if (dispatcher.chatStatus(chatId).running !== undefined) {
    return { reply: 'A brain is working on this chat: send /new once it has answered, or /cancel it first.' }
  }
  return {
    reply: '🆕 Starting over: your next message begins a new conversation.',
    act: () => {
      try {
        forgetChatDir(config.stateDir, chatId, onError)
      } catch (error) {
        onError(error)
      }
    },
  }
}

function statusText({ chatId, dispatcher, inbox, config, now }: CommandContext): string {
  const { running } = dispatcher.chatStatus(chatId)
  const queued = queuedBehind(inbox, chatId, running)
  const lines: string[] = []
  if (running === undefined) lines.push('💤 Nothing is running for this chat.')
  else if (running.phase === 'running') lines.push(`🧠 Working on your message for ${age(running.runningSince ?? running.since, now)}.`)
  else if (running.phase === 'replying') lines.push('📨 Sending the answer to your message.')
  else lines.push(`⏳ Your message is next; waiting for ${age(running.since, now)} so far.`)
  if (queued > 0) lines.push(`📥 ${plural(queued, 'more message')} queued.`)
  const waiting = dispatcher.queued
  lines.push(
    `⚙️ Brains busy: ${dispatcher.running} of ${config.maxConcurrentBrains}` +
      (waiting > 0 ? `, ${plural(waiting, 'message')} waiting across all chats.` : '.'),
  )
  return lines.join('\n')
}

function cancel(args: string, { chatId, dispatcher, inbox, now }: CommandContext): CommandAnswer {
  if (args !== '' && args.toLowerCase() !== 'all') {
    return { reply: 'Use /cancel to stop the running brain, or /cancel all to also drop the queued messages.' }
  }
  const all = args !== ''
  const { running } = dispatcher.chatStatus(chatId)
  const stoppable = running !== undefined && running.phase !== 'replying'
  const queued = queuedBehind(inbox, chatId, running)
  const lines: string[] = []
  if (stoppable) {
    const ranFor = running.runningSince === undefined ? '' : ` after ${age(running.runningSince, now)}`
    lines.push(`⏹ Stopped the brain working on your message${ranFor}.`)
  } else {
    lines.push(running?.phase === 'replying' ? 'Nothing to stop: the answer is being sent.' : 'Nothing is running.')
  }
  if (all) lines.push(queued > 0 ? `🗑 Dropped ${plural(queued, 'queued message')}.` : 'No messages were queued.')
  else if (queued > 0) lines.push(`📥 ${plural(queued, 'queued message')} will still be answered (/cancel all drops them).`)
  return {
    reply: lines.join('\n'),
    act: () => {
      if (all) inbox.cancelQueued(chatId, now)
      if (stoppable) dispatcher.stop(chatId, 'cancel')
    },
  }
}

function helpText({ config }: CommandContext): string {
  return [
    'I pass your messages to my brain and send back its answers.',
    BUSY_MODE_HELP[config.busyMode],
    '',
    '/status – what is running for this chat, and what is queued',
    '/cancel – stop the running brain (queued messages stay)',
    '/cancel all – stop it and drop the queued messages too',
    '/new – start over: forget this chat’s conversation',
    '/help – this message',
  ].join('\n')
}

/** The chat's messages still queued behind its current one (which stays queued until its brain starts). */
function queuedBehind(inbox: Inbox, chatId: number, running: RunningJob | undefined): number {
  return inbox.countQueuedInChat(chatId, running?.job.seq)
}

function age(since: number, now: number): string {
  const seconds = Math.max(0, Math.round((now - since) / 1000))
  return seconds < 120 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${seconds % 60} s`
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`
}
