import t from 'tap'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { processes } from './helpers/proc.js'
import { CLI, COMPILE_CACHE_ENV, SECRET, TOKEN, eventually, liveGroupMembers, readBrainLog, startStack, tempDir } from './helpers/service.js'

const run = promisify(execFile)
const CHAT = 5550001

const replies = (calls: readonly { method: string; ok: boolean; params: Record<string, unknown> }[]): string[] =>
  calls.filter((call) => call.method === 'sendMessage' && call.ok).map((call) => String(call.params['text']))

const zombieChildrenOf = (pid: number): number[] =>
  processes()
    .filter((p) => p.ppid === pid && p.state === 'Z')
    .map((p) => p.pid)

t.test('a hung brain with a grandchild is killed at its budget; the user is told; nothing is left', async (t) => {
  const stack = await startStack({ env: { BRAIN_TIMEOUT_S: '2', MESSAGE_BUDGET_S: '3', KILL_GRACE_S: '1' } })
  t.teardown(() => stack.close())
  const started = Date.now()
  stack.emu.sendText({ chatId: CHAT, text: 'grandchild ignore-term hang' })
  const notice = await stack.emu.waitFor((call) => call.method === 'sendMessage', { timeoutMs: 15_000 })
  const elapsed = Date.now() - started
  t.match(String(notice.params['text']), /^⚠️ timed out after 2 s/u)
  t.ok(elapsed >= 2000 && elapsed < 8000, `told after ${elapsed} ms (limit 2 s + 1 s grace)`)
  const grandchild = readBrainLog(stack.brainLog).find((event) => event['ev'] === 'grandchild')?.['grandchild_pid'] as number
  t.ok(grandchild > 0, 'the brain started a grandchild')
  // The pids the brain sees are its own PID namespace's when sandboxed; its process group is the
  // leader's pid as the service sees it, and the grandchild is in it.
  const leader = (await stack.svc.waitForLog((line) => line.msg === 'child started'))['pid'] as number
  const left = await eventually(() => {
    const live = liveGroupMembers(leader)
    return live.length === 0 ? live : undefined
  }, 5000, "the brain's process group to die")
  t.same(left, [], 'nothing of the brain is running (gone, or a zombie of PID 1 where init does not reap)')
  t.same(zombieChildrenOf(stack.svc.pid), [], 'no zombie children of the service')
  const reaped = await stack.svc.waitForLog((line) => line.msg === 'child reaped')
  t.match(reaped, { outcome: 'timed_out', update_id: Number, chat_id: CHAT })
  t.equal(readBrainLog(stack.brainLog).filter((event) => event['ev'] === 'start').length, 1, 'a timeout is not retried')
})

t.test('exit 75 is retried within the budget; other exits are not', async (t) => {
  const stack = await startStack({ env: { BRAIN_TIMEOUT_S: '20', MESSAGE_BUDGET_S: '20' } })
  t.teardown(() => stack.close())
  const retried = stack.emu.sendText({ chatId: CHAT, text: 'tempfail=2' })
  await eventually(() => replies(stack.emu.calls).some((text) => text.startsWith(`reply ${retried.update_id}`)), 20_000, 'the retried reply')
  const attempts = readBrainLog(stack.brainLog).filter((event) => event['update_id'] === retried.update_id && event['ev'] === 'start')
  t.same(attempts.map((event) => event['attempt']), [1, 2, 3], 'three attempts, counted in the envelope')

  const failing = stack.emu.sendText({ chatId: CHAT, text: 'exit=3 stderr=disk-on-fire' })
  await eventually(() => replies(stack.emu.calls).some((text) => text.startsWith('⚠️ brain exited 3')), 10_000, 'the failure notice')
  t.ok(replies(stack.emu.calls).includes('⚠️ brain exited 3: disk-on-fire'))
  t.equal(readBrainLog(stack.brainLog).filter((event) => event['update_id'] === failing.update_id && event['ev'] === 'start').length, 1)

  // In a group everyone reads the notice: it says what failed, the stderr stays in the log.
  const GROUP = -1001234500001
  const inGroup = stack.emu.sendText({ chatId: GROUP, text: 'exit=3 stderr=secret-path-in-stderr' })
  const notice = await stack.emu.waitFor((call) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === GROUP, { timeoutMs: 10_000 })
  t.equal(notice.params['text'], '⚠️ brain exited 3', 'a group gets the notice without the stderr')
  const reaped = await stack.svc.waitForLog((line) => line.msg === 'child reaped' && line['update_id'] === inGroup.update_id)
  t.equal(reaped['stderr_last'], 'secret-path-in-stderr', 'the log keeps it')
})

t.test('the brain sees none of the secrets, and a 200 KiB message arrives intact', async (t) => {
  const stack = await startStack({ env: { BRAIN_ENV_ALLOW: 'BRAIN_LOG,TELEGRAM_BOT_TOKEN,NOTIFY_SOCKET', NOTIFY_SOCKET: '/run/notify' } })
  t.teardown(() => stack.close())
  stack.emu.sendText({ chatId: CHAT, text: 'env' })
  const envReply = await stack.emu.waitFor((call) => call.method === 'sendMessage', { timeoutMs: 10_000 })
  const env = JSON.parse(String(envReply.params['text'])) as Record<string, string>
  t.notOk('TELEGRAM_BOT_TOKEN' in env, 'no bot token')
  t.notOk('TELEGRAM_WEBHOOK_SECRET' in env, 'no webhook secret')
  t.notOk('NOTIFY_SOCKET' in env, 'no NOTIFY_SOCKET')
  t.notOk(Object.values(env).some((value) => value.includes(TOKEN) || value.includes(SECRET)), 'no value leaks them')
  t.match(env, { COORDINATOR_CHAT_ID: String(CHAT), COORDINATOR_ATTEMPT: '1', COORDINATOR_UPDATE_ID: String, COORDINATOR_DEADLINE_MS: String })

  // Telegram caps text at 4096 characters, but a brain must not depend on that: the envelope goes through stdin.
  const big = 'len ' + 'ü'.repeat(100 * 1024)
  const update = { update_id: 4242, message: { message_id: 9, date: 1, chat: { id: CHAT, type: 'private' }, text: big } }
  const response = await fetch(`${stack.svc.url}/telegram/webhook`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-telegram-bot-api-secret-token': SECRET },
    body: JSON.stringify(update),
  })
  t.equal(response.status, 200)
  const { createHash } = await import('node:crypto')
  const expected = `len=${big.length} sha256=${createHash('sha256').update(big).digest('hex')}`
  await eventually(() => replies(stack.emu.calls).includes(expected), 10_000, 'the length and hash reply')
  t.pass('the brain read all of a 200 KiB message')
})

t.test('start-up refuses what cannot work, with exit 2 and one line naming the variable', async (t) => {
  const dir = tempDir()
  const noShebang = path.join(dir, 'brain.sh')
  fs.writeFileSync(noShebang, 'echo hi\n', { mode: 0o755 })
  // A good brain, but kept inside STATE_DIR (here: dir), which the sandbox hides from every brain.
  const insideState = path.join(dir, 'inside-brain.sh')
  fs.writeFileSync(insideState, '#!/bin/sh\necho hi\n', { mode: 0o755 })
  // A bubblewrap that cannot create namespaces, as in a container that forbids them.
  const brokenBwrapDir = path.join(dir, 'broken-bwrap')
  fs.mkdirSync(brokenBwrapDir)
  fs.writeFileSync(path.join(brokenBwrapDir, 'bwrap'), '#!/bin/sh\necho "bwrap: No permissions to create new namespace" >&2\nexit 1\n', { mode: 0o755 })
  const base = {
    ...COMPILE_CACHE_ENV,
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    TELEGRAM_BOT_TOKEN: TOKEN,
    TELEGRAM_WEBHOOK_SECRET: SECRET,
    ALLOWED_CHAT_IDS: '1',
    BRAIN_COMMAND: '/bin/cat',
    STATE_DIR: dir,
    PORT: '0',
  }
  const cases: [Record<string, string | undefined>, RegExp][] = [
    [{ BRAIN_COMMAND: noShebang }, /^coordinator: BRAIN_COMMAND: .*without a #! line/u],
    [{ BRAIN_COMMAND: 'no-such-brain-anywhere' }, /^coordinator: BRAIN_COMMAND: .*not found/u],
    [{ BRAIN_COMMAND: '"unclosed' }, /^coordinator: BRAIN_COMMAND has an unclosed double quote/u],
    [{ TELEGRAM_BOT_TOKEN: undefined }, /^coordinator: TELEGRAM_BOT_TOKEN is required/u],
    [{ TELEGRAM_WEBHOOK_SECRET: 'has spaces but long enough' }, /^coordinator: TELEGRAM_WEBHOOK_SECRET must be 16–256 characters/u],
    [{ TELEGRAM_WEBHOOK_SECRET: 'x' }, /^coordinator: TELEGRAM_WEBHOOK_SECRET must be at least 16 characters \(make one with `openssl rand -hex 32`\); got 1$/mu],
    [{ TELEGRAM_WEBHOOK_SECRET_PREVIOUS: 'short_one' }, /^coordinator: TELEGRAM_WEBHOOK_SECRET_PREVIOUS must be at least 16 characters .*openssl rand -hex 32/u],
    [{ ALLOWED_CHAT_IDS: '1,-1001234567890' }, /^coordinator: ALLOWED_USER_IDS is required when ALLOWED_CHAT_IDS has a group \(-1001234567890\)/u],
    [{ ALLOWED_USER_IDS: '12,@ada' }, /^coordinator: ALLOWED_USER_IDS must be comma-separated user ids .*got "@ada"/u],
    [{ TRUSTED_PROXIES: 'caddy' }, /^coordinator: TRUSTED_PROXIES must be comma-separated IP addresses .*got "caddy"/u],
    [{ TRUSTED_PROXIES: '127.0.0.1/33' }, /^coordinator: TRUSTED_PROXIES must be comma-separated IP addresses .*got "127.0.0.1\/33"/u],
    [{ TELEGRAM_WEBHOOK_SECRET: 'x'.repeat(300) }, /^coordinator: TELEGRAM_WEBHOOK_SECRET .*got 300 characters/u],
    [{ ALLOWED_CHAT_IDS: undefined }, /^coordinator: ALLOWED_CHAT_IDS is required/u],
    [{ ALLOWED_CHAT_IDS: '12,abc' }, /^coordinator: ALLOWED_CHAT_IDS .*got "abc"/u],
    [{ PORT: '70000' }, /^coordinator: PORT must be a whole number/u],
    [{ MAX_CONCURRENT_BRAINS: '0' }, /^coordinator: MAX_CONCURRENT_BRAINS/u],
    [{ BRAIN_TIMEOUT_S: 'soon' }, /^coordinator: BRAIN_TIMEOUT_S must be a number of seconds/u],
    [{ MESSAGE_BUDGET_S: '-1' }, /^coordinator: MESSAGE_BUDGET_S/u],
    [{ KILL_GRACE_S: '1e3' }, /^coordinator: KILL_GRACE_S/u],
    [{ SHUTDOWN_GRACE_S: '' + 'x' }, /^coordinator: SHUTDOWN_GRACE_S/u],
    [{ ACK_EMOJI: '🦖' }, /^coordinator: ACK_EMOJI must be an emoji Telegram allows/u],
    [{ REACTION_DONE: '✅' }, /^coordinator: REACTION_DONE must be an emoji Telegram allows/u],
    [{ REACTION_FAILED: 'x' }, /^coordinator: REACTION_FAILED must be an emoji Telegram allows/u],
    [{ REACTION_TIMEOUT: '⏰' }, /^coordinator: REACTION_TIMEOUT must be an emoji Telegram allows/u],
    [{ BUSY_MODE: 'steer' }, /^coordinator: BUSY_MODE must be one of queue, collect, interrupt; got "steer"/u],
    [{ EDITS: 'yes' }, /^coordinator: EDITS must be one of ignore, queue/u],
    [{ BRAIN_INPUT: 'yaml' }, /^coordinator: BRAIN_INPUT must be one of json, text; got "yaml"/u],
    [{ ACK_MODE: 'reply' }, /^coordinator: ACK_MODE must be one of api, webhook-reply/u],
    [{ LOG_LEVEL: 'loud' }, /^coordinator: LOG_LEVEL must be one of/u],
    [{ TELEGRAM_API_ROOT: 'ftp://x' }, /^coordinator: TELEGRAM_API_ROOT must be an http\(s\) URL/u],
    [{ WEBHOOK_PATH: 'no-slash' }, /^coordinator: WEBHOOK_PATH must be a URL path/u],
    [{ BRAIN_ENV_ALLOW: 'GOOD,bad-name' }, /^coordinator: BRAIN_ENV_ALLOW .*"bad-name"/u],
    [{ ALLOW_ALL_CHATS: 'yes' }, /^coordinator: ALLOW_ALL_CHATS must be 1/u],
    [{ BRAIN_SANDBOX: 'maybe' }, /^coordinator: BRAIN_SANDBOX must be one of on, off; got "maybe"/u],
    [
      { PATH: `${brokenBwrapDir}:${process.env['PATH'] ?? '/usr/bin:/bin'}` },
      /^coordinator: BRAIN_SANDBOX is on, but bubblewrap cannot create a sandbox here \(bwrap: No permissions to create new namespace\): .*or set BRAIN_SANDBOX=off/u,
    ],
    [{ BRAIN_COMMAND: insideState }, /^coordinator: BRAIN_COMMAND is inside STATE_DIR .*keep the brain's program outside STATE_DIR, or set BRAIN_SANDBOX=off$/mu],
    [{ BRAIN_NETWORK: 'firewalled' }, /^coordinator: BRAIN_NETWORK must be one of on, off/u],
    [{ MEDIA_QUOTA_MB: 'lots' }, /^coordinator: MEDIA_QUOTA_MB must be a whole number/u],
    [{ LINK_PREVIEWS: 'yes' }, /^coordinator: LINK_PREVIEWS must be one of on, off/u],
  ]
  const start = (overrides: Record<string, string | undefined>): Promise<{ code: number; stderr: string }> => {
    const env: Record<string, string> = {}
    for (const [key, value] of Object.entries({ ...base, ...overrides })) if (value !== undefined) env[key] = value
    return run(process.execPath, [CLI, 'serve'], { env, timeout: 10_000 }).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => ({ code: error.code, stderr: error.stderr }),
    )
  }
  // Four at a time: each is a whole process start, and they are independent.
  const results: { code: number; stderr: string }[] = []
  for (let i = 0; i < cases.length; i += 4) results.push(...(await Promise.all(cases.slice(i, i + 4).map(([overrides]) => start(overrides)))))
  for (const [i, [overrides, expected]] of cases.entries()) {
    const result = results[i] as { code: number; stderr: string }
    const name = Object.keys(overrides)[0]
    t.equal(result.code, 2, `${name}: exit 2`)
    t.equal(result.stderr.trim().split('\n').length, 1, `${name}: one line`)
    t.match(result.stderr, expected, `${name}: ${result.stderr.trim()}`)
  }
})
