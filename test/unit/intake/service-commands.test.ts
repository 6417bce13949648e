import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { answerCommand, localCommandContext, type CommandAnswer } from '../../../src/intake/service-commands.js'
import type { BusyMode } from '../../../src/config.js'
import { Dispatcher } from '../../../src/dispatch/dispatcher.js'
import { parseCommand } from '../../../src/intake/classify.js'
import { MemoryInbox } from '../../../src/store/memory.js'
import { deferred, delay, settle, type Deferred } from '../../helpers/deferred.js'
import { tempDir } from '../../helpers/service.js'

/**
 * A real Dispatcher and MemoryInbox, with work that does what the service's does to the inbox (a
 * cancelled message is skipped; a running one is marked) and holds its slot until released or stopped.
 */
function chatService({ maxConcurrent = 2, busyMode = 'queue' as BusyMode } = {}) {
  const inbox = new MemoryInbox()
  const stateDir = tempDir()
  const brains = new Map<number, Deferred<void>>()
  const ran: number[] = []
  const stopped = new Map<number, unknown>()
  const dispatcher = new Dispatcher({
    maxConcurrent,
    work: async (job, { inSlot, signal }) => {
      if (inbox.get(job.seq)?.state !== 'queued') return
      const brain = deferred()
      brains.set(job.seq, brain)
      signal.addEventListener('abort', () => {
        stopped.set(job.seq, signal.reason)
        brain.resolve()
      })
      await inSlot(async () => {
        inbox.markRunning(job.seq, 1, Date.now())
        ran.push(job.seq)
        await brain.promise
      }).catch(() => {})
      inbox.finish(job.seq, { state: signal.aborted ? 'cancelled' : 'done', exitCode: 0, exitSignal: null, stderrTail: '', reply: '' }, Date.now())
    },
  })
  let updateId = 1
  return {
    inbox,
    dispatcher,
    stateDir,
    ran,
    stopped,
    /** A message arriving in a chat: stored, then queued. */
    send(chatId: number): number {
      const id = updateId++
      const seq = inbox.accept({ updateId: id, chatId, messageId: id, updateJson: '{}', receivedAt: Date.now() })
      if (seq === 'duplicate') throw new Error('duplicate')
      dispatcher.enqueue({ seq, chatId, updateId: id, receivedAt: Date.now() })
      return seq
    },
    finishBrain: (seq: number) => brains.get(seq)?.resolve(),
    command(chatId: number, text: string, now = Date.now()): CommandAnswer {
      const command = parseCommand(text)
      if (!command) throw new Error(`${text} is not a service command`)
      return answerCommand(
        command,
        localCommandContext({
          chatId,
          dispatcher,
          inbox,
          config: { maxConcurrentBrains: maxConcurrent, busyMode, stateDir },
          now,
          onError: (error) => {
            throw error
          },
        }),
      )
    },
  }
}

t.test('/status in an idle chat: nothing running, the slots', async (t) => {
  const service = chatService()
  t.same(service.command(1, '/status'), { reply: '💤 Nothing is running for this chat.\n⚙️ Brains busy: 0 of 2.' })
})

t.test('/status while a brain runs: for how long, what is queued, how busy the service is', async (t) => {
  const service = chatService({ maxConcurrent: 2 })
  const first = service.send(1)
  service.send(1)
  service.send(1)
  await settle()
  const since = service.dispatcher.chatStatus(1).running?.runningSince as number
  const answer = service.command(1, '/status', since + 5400)
  t.equal(
    answer.reply,
    ['🧠 Working on your message for 5 s.', '📥 2 more messages queued.', '⚙️ Brains busy: 1 of 2, 2 messages waiting across all chats.'].join('\n'),
  )
  t.equal(answer.act, undefined, '/status changes nothing')
  t.match(service.command(1, '/status', since + 125_000).reply, /for 2 min 5 s\./u, 'minutes past two minutes')
  service.finishBrain(first)
})

t.test('/status while waiting for a slot, and while the answer is being sent', async (t) => {
  const service = chatService({ maxConcurrent: 1 })
  const holder = service.send(1)
  service.send(2)
  await settle()
  const since = service.dispatcher.chatStatus(2).running?.since as number
  t.equal(
    service.command(2, '/status', since + 3000).reply,
    '⏳ Your message is next; waiting for 3 s so far.\n⚙️ Brains busy: 1 of 1, 1 message waiting across all chats.',
    'the waiting message is not counted as queued behind itself',
  )
  service.send(2)
  t.match(service.command(2, '/status', since + 3000).reply, /\n📥 1 more message queued\.\n/u, 'the one behind it is')
  t.equal(
    service.command(2, '/cancel all').reply,
    '⏹ Stopped the brain working on your message.\n🗑 Dropped 1 queued message.',
    '/cancel all while waiting: the waiting one is stopped, the one behind it dropped',
  )
  // A job whose outcome is decided is only sending its reply.
  const replying = chatService()
  const dispatcher = new Dispatcher({
    maxConcurrent: 1,
    work: async (_job, { settle: decide }) => {
      decide()
      await delay(50)
    },
  })
  dispatcher.enqueue({ seq: 1, chatId: 3, updateId: 1, receivedAt: Date.now() })
  await settle()
  const answer = answerCommand({ name: 'status', args: '' }, localCommandContext({ chatId: 3, dispatcher, inbox: replying.inbox, config: { maxConcurrentBrains: 1, busyMode: 'queue', stateDir: replying.stateDir }, now: Date.now(), onError: () => {} }))
  t.match(answer.reply, /^📨 Sending the answer to your message\./u)
  const cancel = answerCommand({ name: 'cancel', args: '' }, localCommandContext({ chatId: 3, dispatcher, inbox: replying.inbox, config: { maxConcurrentBrains: 1, busyMode: 'queue', stateDir: replying.stateDir }, now: Date.now(), onError: () => {} }))
  t.equal(cancel.reply, 'Nothing to stop: the answer is being sent.')
  cancel.act?.()
  t.equal(dispatcher.chatStatus(3).running?.phase, 'replying', 'the reply goes on')
  service.finishBrain(holder)
})

t.test('/cancel stops the running brain and keeps the queue', async (t) => {
  const service = chatService()
  const running = service.send(1)
  const queued = [service.send(1), service.send(1)]
  await settle()
  const since = service.dispatcher.chatStatus(1).running?.runningSince as number
  const answer = service.command(1, '/cancel', since + 4000)
  t.equal(answer.reply, '⏹ Stopped the brain working on your message after 4 s.\n📥 2 queued messages will still be answered (/cancel all drops them).')
  t.same(service.stopped.size, 0, 'nothing happens until the command is stored')
  answer.act?.()
  t.equal(service.stopped.get(running), 'cancel', 'the brain was told to stop, for a cancel')
  await settle()
  t.equal(service.ran.at(-1), queued[0], 'the next queued message runs')
  service.finishBrain(queued[0] as number)
  await settle()
  service.finishBrain(queued[1] as number)
  await delay(10)
  t.same(service.ran, [running, ...queued])
  t.equal(service.inbox.get(running)?.state, 'cancelled')
})

t.test('/cancel all also drops the queued messages, saying how many', async (t) => {
  const service = chatService()
  const running = service.send(1)
  const dropped = [service.send(1), service.send(1)]
  const otherChat = service.send(2)
  await settle()
  const answer = service.command(1, '/cancel all')
  t.match(answer.reply, /^⏹ Stopped the brain working on your message after \d+ s\.\n🗑 Dropped 2 queued messages\.$/u)
  answer.act?.()
  await delay(10)
  t.same(dropped.map((seq) => service.inbox.get(seq)?.state), ['cancelled', 'cancelled'])
  t.same(service.ran, [running, otherChat], 'the dropped messages never reach a brain; the other chat is untouched')
  t.equal(service.stopped.get(otherChat), undefined)
  service.finishBrain(otherChat)
})

t.test('/cancel with nothing to stop changes nothing', async (t) => {
  const service = chatService()
  const idle = service.command(1, '/cancel')
  t.equal(idle.reply, 'Nothing is running.')
  t.equal(service.command(1, '/cancel all').reply, 'Nothing is running.\nNo messages were queued.')
  idle.act?.()
  const usage = service.command(1, '/cancel everything')
  t.same(usage, { reply: 'Use /cancel to stop the running brain, or /cancel all to also drop the queued messages.' }, 'an unknown argument gets the usage, and no action')
  t.equal(service.command(1, '/CANCEL ALL').reply, 'Nothing is running.\nNo messages were queued.', '"all" in any case')
})

t.test('/new forgets the chat directory, but not while a brain works on the chat', async (t) => {
  const service = chatService()
  const chatDir = path.join(service.stateDir, 'chats', '1')
  fs.mkdirSync(chatDir, { recursive: true })
  fs.writeFileSync(path.join(chatDir, 'session.json'), '{}')
  const seq = service.send(1)
  await settle()
  const refused = service.command(1, '/new')
  t.same(refused, { reply: 'A brain is working on this chat: send /new once it has answered, or /cancel it first.' }, 'refused, with no action')
  service.finishBrain(seq)
  await delay(10)
  const fresh = service.command(1, '/new')
  t.equal(fresh.reply, '🆕 Starting over: your next message begins a new conversation.')
  t.ok(fs.existsSync(chatDir), 'nothing is forgotten until the command is stored')
  fresh.act?.()
  t.notOk(fs.existsSync(chatDir), 'the chat directory is gone')
  t.ok(fs.existsSync(path.join(service.stateDir, 'chats')), 'other chats keep theirs')
  service.command(2, '/new').act?.()
  t.pass('a chat without a directory starts over too')
})

t.test('/help lists every command and says what the busy mode does', async (t) => {
  const busyLines: Record<BusyMode, string> = {
    queue: 'Messages sent while I work wait their turn; each gets its own answer, in order.',
    collect: 'Messages sent while I work are answered together, in one next run.',
    interrupt: 'A new message stops the work in progress; the next run gets every message not yet answered.',
  }
  for (const [busyMode, line] of Object.entries(busyLines) as [BusyMode, string][]) {
    const { reply } = chatService({ busyMode }).command(1, '/help')
    t.ok(reply.split('\n').includes(line), `${busyMode}: "${line}"`)
    for (const command of ['/status', '/cancel', '/cancel all', '/new', '/help']) t.match(reply, new RegExp(`^${command} – `, 'mu'))
  }
})
