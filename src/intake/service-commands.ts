import { forgetChatDir } from '../brain/chat-dir.js'
import type { Config } from '../config.js'
import type { Dispatcher, JobPhase } from '../dispatch/dispatcher.js'
import type { Inbox } from '../store/inbox.js'
import type { Command } from './classify.js'

/** What a service command answers, and what it does once its message is stored (not for a duplicate). */
export interface CommandAnswer {
  readonly reply: string
  readonly act?: () => void
}

/** A chat and the service as a command sees them at arrival, wherever that state lives. */
export interface ChatSnapshot {
  /** The chat's current message: waiting for a slot, running a brain, or replying. */
  readonly current: { readonly since: number; readonly runningSince: number | undefined; readonly phase: JobPhase } | undefined
  /** The chat's messages queued behind the current one. */
  readonly queuedBehind: number
  readonly brainsBusy: number
  readonly brainsLimit: number
  /** Messages waiting across all chats. */
  readonly waiting: number
}

/** What a command may do to the chat, once its message is stored. */
export interface ChatActions {
  /** Stops the chat's current message (its brain, or its wait for one). */
  stopCurrent(): void
  /** Drops the chat's queued messages. */
  dropQueued(): void
  /** Forgets the chat's brain state (/new). */
  forget(): void
}

export interface CommandContext {
  readonly snapshot: ChatSnapshot
  readonly actions: ChatActions
  readonly config: Pick<Config, 'busyMode'>
  readonly now: number
  readonly onError: (error: unknown) => void
}

/** The context of a command on a single host: the chat as this process's dispatcher and inbox hold it. */
export function localCommandContext(local: {
  readonly chatId: number
  readonly dispatcher: Dispatcher
  readonly inbox: Inbox
  readonly config: Pick<Config, 'maxConcurrentBrains' | 'busyMode' | 'stateDir'>
  readonly now: number
  readonly onError: (error: unknown) => void
}): CommandContext {
  const { chatId, dispatcher, inbox, config, now, onError } = local
  const { running } = dispatcher.chatStatus(chatId)
  return {
    snapshot: {
      current: running,
      queuedBehind: inbox.countQueuedInChat(chatId, running?.job.seq),
      brainsBusy: dispatcher.running,
      brainsLimit: config.maxConcurrentBrains,
      waiting: dispatcher.queued,
    },
    actions: {
      stopCurrent: () => dispatcher.stop(chatId, 'cancel'),
      dropQueued: () => inbox.cancelQueued(chatId, now),
      forget: () => forgetChatDir(config.stateDir, chatId, onError),
    },
    config,
    now,
    onError,
  }
}

const BUSY_MODE_HELP: Record<Config['busyMode'], string> = {
  queue: 'Messages sent while I work wait their turn; each gets its own answer, in order.',
  collect: 'Messages sent while I work are answered together, in one next run.',
  interrupt: 'A new message stops the work in progress; the next run gets every message not yet answered.',
}

/**
 * Answers /status, /cancel, /cancel all and /help from the state at arrival: these never wait behind
 * the chat's brain.
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
function startOver({ snapshot, actions, onError }: CommandContext): CommandAnswer {
  if (snapshot.current !== undefined) {
    return { reply: 'A brain is working on this chat: send /new once it has answered, or /cancel it first.' }
  }
  return {
    reply: '🆕 Starting over: your next message begins a new conversation.',
    act: () => {
      try {
        actions.forget()
      } catch (error) {
        onError(error)
      }
    },
  }
}

function statusText({ snapshot, now }: CommandContext): string {
  const { current: running, queuedBehind: queued } = snapshot
  const lines: string[] = []
  if (running === undefined) lines.push('💤 Nothing is running for this chat.')
  else if (running.phase === 'running') lines.push(`🧠 Working on your message for ${age(running.runningSince ?? running.since, now)}.`)
  else if (running.phase === 'replying') lines.push('📨 Sending the answer to your message.')
  else lines.push(`⏳ Your message is next; waiting for ${age(running.since, now)} so far.`)
  if (queued > 0) lines.push(`📥 ${plural(queued, 'more message')} queued.`)
  const { waiting } = snapshot
  lines.push(
    `⚙️ Brains busy: ${snapshot.brainsBusy} of ${snapshot.brainsLimit}` +
      (waiting > 0 ? `, ${plural(waiting, 'message')} waiting across all chats.` : '.'),
  )
  return lines.join('\n')
}

function cancel(args: string, { snapshot, actions, now }: CommandContext): CommandAnswer {
  if (args !== '' && args.toLowerCase() !== 'all') {
    return { reply: 'Use /cancel to stop the running brain, or /cancel all to also drop the queued messages.' }
  }
  const all = args !== ''
  const { current: running, queuedBehind: queued } = snapshot
  const stoppable = running !== undefined && running.phase !== 'replying'
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
      if (all) actions.dropQueued()
      if (stoppable) actions.stopCurrent()
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

function age(since: number, now: number): string {
  const seconds = Math.max(0, Math.round((now - since) / 1000))
  return seconds < 120 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${seconds % 60} s`
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`
}
