import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import type { Message } from 'grammy/types'
import type { RecordedCall } from '../src/emulator/index.js'
import { ROOT, SECRET, delay, eventually, startStack, tempDir } from './helpers/service.js'

// A brain that attacks the service with the default settings (sandbox on): see the fixture for
// each attack. The sandbox must defeat every one while the service keeps acknowledging other chats.
const HOSTILE_BRAIN = path.join(ROOT, 'test/fixtures/hostile-brain.mjs')
const ATTACKER = 6660001
const OTHER = 6660002
const PROBES = 6660003
const SECRET_TEXT = 'the other chat keeps this'
// The receipt reaction must keep coming within this, whatever the brain does.
const ACK_LIMIT_MS = 1000

interface Report {
  visiblePids: number
  tokenFound: boolean
  capabilities: string
  uidInside: number
  inboxViaDotDot: boolean | string
  inboxAbsolute: boolean | string
  stateDirListing: string[] | string
  otherChat: string
  shadow: number | string
  ownDirWrite: boolean | string
  writes: Record<string, boolean | string>
  umountStateDir: string
  umountChatDir: string
  remountRw: string
  newUserNamespace: string
  forked: number
  killedPids: number
  loopback?: string
}

const sentTexts = (calls: readonly RecordedCall[], chatId: number): string[] =>
  calls.filter((call) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === chatId).map((call) => (call.result as Message).text ?? '')

/** Live processes whose environment carries `mark`, the service's excepted: what the brain left running. */
function survivors(mark: string, servicePid: number): number[] {
  const found: number[] = []
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/u.test(entry) || Number(entry) === servicePid) continue
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8')
      if (stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z') continue
      if (fs.readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0').includes(`HOSTILE_MARK=${mark}`)) found.push(Number(entry))
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found
}

async function hostileStack(extraEnv: Record<string, string> = {}) {
  const stateDir = tempDir('coordinator-hostile-')
  const otherDir = path.join(stateDir, 'chats', String(OTHER))
  fs.mkdirSync(otherDir, { recursive: true })
  fs.writeFileSync(path.join(otherDir, 'secret.txt'), SECRET_TEXT)
  const chatDir = path.join(stateDir, 'chats', String(ATTACKER))
  const stamp = randomBytes(4).toString('hex')
  const targets = [
    path.join(stateDir, `evil-${stamp}`),
    path.join(stateDir, 'chats', `evil-${stamp}`),
    path.join(otherDir, `evil-${stamp}`),
    path.join(chatDir, `../../inbox.sqlite-wal-${stamp}`),
    path.join(ROOT, `evil-${stamp}`),
    `/etc/evil-${stamp}`,
    `/usr/evil-${stamp}`,
    `/evil-${stamp}`,
    `/bin/evil-${stamp}`,
  ]
  const mark = randomBytes(8).toString('hex')
  const stack = await startStack({
    stateDir,
    env: {
      BRAIN_SANDBOX: 'on',
      // The default settings: no BRAIN_CWD, so the brain works in its chat's directory.
      BRAIN_CWD: '',
      BRAIN_COMMAND: HOSTILE_BRAIN,
      BRAIN_ENV_ALLOW: 'HOSTILE_STATE_DIR,HOSTILE_OTHER_CHAT,HOSTILE_WRITE_TARGETS,HOSTILE_MARK,HOSTILE_PORT',
      HOSTILE_STATE_DIR: stateDir,
      HOSTILE_OTHER_CHAT: String(OTHER),
      HOSTILE_WRITE_TARGETS: targets.join(':'),
      HOSTILE_MARK: mark,
      BRAIN_TIMEOUT_S: '20',
      MESSAGE_BUDGET_S: '30',
      ...extraEnv,
    },
  })
  return { stack, stateDir, chatDir, otherDir, targets, mark }
}

t.test('a hostile brain, sandboxed by default, gets nothing, and the service keeps answering', async (t) => {
  const { stack, stateDir, chatDir, otherDir, targets, mark } = await hostileStack()
  t.teardown(() => stack.close())
  const port = new URL(stack.svc.url).port
  await stack.svc.stop('SIGKILL')
  // The port is known only once the service listens: restart with it, on the same state.
  await stack.restart({ HOSTILE_PORT: port, PORT: port })

  stack.emu.sendText({ chatId: ATTACKER, text: 'attack' })
  // Meanwhile another chat writes every 200 ms; each message must get its 👀 within a second.
  const probes: { messageId: number; sentAt: number }[] = []
  const probing = (async () => {
    for (let i = 0; i < 15; i++) {
      const sentAt = Date.now()
      probes.push({ messageId: stack.emu.sendText({ chatId: PROBES, text: `probe ${i}` }).message?.message_id ?? 0, sentAt })
      await delay(200)
    }
  })()
  const reply = await stack.emu.waitFor(
    (call) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === ATTACKER && call.params['reply_parameters'] !== undefined,
    { timeoutMs: 60_000 },
  )
  await probing
  const text = (reply.result as Message).text ?? ''
  t.comment(`the hostile brain's report: ${text}`)
  const report = JSON.parse(text.slice(text.indexOf('{'))) as Report

  t.equal(report.tokenFound, false, 'no /proc/*/environ it can see holds the bot token')
  t.ok(report.visiblePids < 10, `it sees only its own PID namespace (${report.visiblePids} pids)`)
  t.equal(report.capabilities, '0000000000000000', 'no capabilities, though the service runs as root')
  t.match(report.inboxViaDotDot, false, 'inbox.sqlite through ../.. of its chat directory: not there')
  t.match(report.inboxAbsolute, false, 'inbox.sqlite by its absolute path: not there')
  t.same(report.stateDirListing, ['chats'], 'of STATE_DIR it sees only the way to its chat')
  t.match(report.otherChat, /^refused: ENOENT$/u, "another chat's directory: not there")
  if (process.getuid?.() === 0) {
    t.ok(report.shadow === 0 || /^refused/u.test(String(report.shadow)), `a root-only file under /etc (shadow) is masked (${report.shadow})`)
  }
  t.equal(report.ownDirWrite, true, 'it can write in its own chat directory')
  t.equal(fs.readFileSync(path.join(chatDir, 'mine.txt'), 'utf8'), 'mine', 'and what it wrote is kept')
  for (const target of targets) {
    t.match(report.writes[target], /^refused: E(ROFS|NOENT|ACCES|PERM)$/u, `writing ${target}: ${report.writes[target]}`)
    t.notOk(fs.existsSync(target), `${target} does not exist on the host`)
  }
  t.match(report.umountStateDir, /^refused/u, 'umount of what hides STATE_DIR: refused')
  t.match(report.umountChatDir, /^refused/u, 'umount of its chat directory: refused')
  t.match(report.remountRw, /^refused/u, 'remounting /usr read-write: refused')
  t.match(report.newUserNamespace, /^refused/u, 'a nested user namespace: refused')
  t.equal(report.forked, 50, 'it forked its 50 escapees (own sessions, SIGTERM ignored)')
  t.ok(report.killedPids <= report.visiblePids, `SIGKILL to every pid it could see (${report.killedPids} sent) reached only its own`)
  t.equal(report.loopback, 'connected', 'the network is kept by default (the loopback is the host\'s)')

  t.ok(stack.svc.running, 'the service is still running')
  const servicePid = stack.svc.pid
  await eventually(() => survivors(mark, servicePid).length === 0, 10_000, 'no escapee left').catch(() => undefined)
  t.same(survivors(mark, servicePid), [], 'none of the 50 escapees outlived the run')
  t.equal(fs.readFileSync(path.join(otherDir, 'secret.txt'), 'utf8'), SECRET_TEXT, "the other chat's file is untouched")
  t.ok(fs.existsSync(path.join(stateDir, 'inbox.sqlite')), 'the inbox is still there')

  const acks = stack.emu.calls.filter((call) => call.method === 'setMessageReaction' && call.params['chat_id'] === PROBES)
  t.equal(acks.length >= probes.length, true, `every probe got its receipt reaction (${acks.length} of ${probes.length})`)
  const ackDelays = probes.map((probe) => {
    const ack = acks.find((call) => call.params['message_id'] === probe.messageId)
    return ack === undefined ? Number.POSITIVE_INFINITY : ack.wallClockMs - probe.sentAt
  })
  const slowest = Math.max(...ackDelays)
  t.ok(slowest < ACK_LIMIT_MS, `every probe was acknowledged within ${ACK_LIMIT_MS} ms (slowest ${slowest} ms)`)

  // And the service still takes a message and answers it afterwards.
  const after = await fetch(`${stack.svc.url}/healthz`)
  t.equal(after.status, 200, '/healthz answers 200 after the attack')
  const wrongSecret = await fetch(`${stack.svc.url}/telegram/webhook`, { method: 'POST', headers: { 'x-telegram-bot-api-secret-token': `${SECRET}x` }, body: '{}' })
  t.equal(wrongSecret.status, 401, 'the webhook still checks its secret')
  t.ok(sentTexts(stack.emu.calls, PROBES).length > 0, 'the probes were answered too')
})

t.test('with BRAIN_NETWORK=off the brain has no network, not even the host loopback', async (t) => {
  const { stack } = await hostileStack({ BRAIN_NETWORK: 'off' })
  t.teardown(() => stack.close())
  const port = new URL(stack.svc.url).port
  await stack.svc.stop('SIGKILL')
  await stack.restart({ HOSTILE_PORT: port, PORT: port })
  stack.emu.sendText({ chatId: ATTACKER, text: 'attack' })
  const reply = await stack.emu.waitFor((call) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === ATTACKER, { timeoutMs: 60_000 })
  const text = (reply.result as Message).text ?? ''
  const report = JSON.parse(text.slice(text.indexOf('{'))) as Report
  t.match(report.loopback, /^refused: (ECONNREFUSED|ENETUNREACH|timeout)$/u, `the service's port from inside: ${report.loopback}`)
})

t.test('control: without the sandbox the same brain reads the token and the inbox (the test can fail)', async (t) => {
  // Read-only attacks only: unconfined, this brain's SIGKILLs would reach every process of the machine.
  const stateDir = tempDir('coordinator-hostile-control-')
  const probe = path.join(tempDir('coordinator-hostile-probe-'), 'probe.mjs')
  fs.writeFileSync(
    probe,
    `#!${process.execPath}\nimport fs from 'node:fs'\nfs.readFileSync(0)\n` +
      `const token = fs.readdirSync('/proc').filter((e) => /^\\d+$/.test(e)).some((pid) => { try { return fs.readFileSync('/proc/' + pid + '/environ', 'utf8').includes('TELEGRAM_BOT_TOKEN=') } catch { return false } })\n` +
      `const inbox = fs.existsSync(process.env.HOSTILE_STATE_DIR + '/inbox.sqlite')\nconsole.log(JSON.stringify({ token, inbox }))\n`,
    { mode: 0o755 },
  )
  const stack = await startStack({
    stateDir,
    env: { BRAIN_SANDBOX: 'off', BRAIN_COMMAND: probe, BRAIN_ENV_ALLOW: 'HOSTILE_STATE_DIR', HOSTILE_STATE_DIR: stateDir },
  })
  t.teardown(() => stack.close())
  t.ok(stack.svc.logs.some((line) => line.level === 40 && /BRAIN_SANDBOX=off/u.test(line.msg)), 'the service warns at start that brains run unconfined')
  stack.emu.sendText({ chatId: ATTACKER, text: 'attack' })
  const reply = await stack.emu.waitFor((call) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === ATTACKER, { timeoutMs: 30_000 })
  t.same(JSON.parse((reply.result as Message).text ?? ''), { token: true, inbox: true }, 'unconfined, both attacks work')
})
