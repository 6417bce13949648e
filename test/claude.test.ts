import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import type { Message, Update } from 'grammy/types'
import t from 'tap'
import { splitCommandLine } from '../src/brain/argv.js'
import { buildPrompt, CLAUDE_BASE_ARGS, claudeArgv, SESSION_GONE_NOTICE } from '../src/adapters/claude/claude.js'
import { readSession, SESSION_FILE } from '../src/adapters/claude/claude-session.js'
import { classifyFailure, describeToolUse, progressOf, type ClaudeResult, type RunEvidence } from '../src/adapters/claude/claude-stream.js'
import type { RecordedCall } from '../src/emulator/index.js'
import { eventually, isAlive, ROOT, startStack, tempDir, type Stack } from './helpers/service.js'

// The real service runs the real adapter (scripts/brains/claude → dist/adapters/claude/claude.js), which runs
// test/fixtures/fake-claude/claude, a stand-in for Claude Code's CLI, found first on PATH.
const ADAPTER = path.join(ROOT, 'scripts/brains/claude')
const FAKE_CLAUDE_BIN_DIR = path.join(ROOT, 'test/fixtures/fake-claude')
const CLAUDE_ARGS = `--model sonnet --allowedTools "Read,Grep,Bash(npm test:*)" --permission-mode acceptEdits`
const CLAUDE_ARGS_SPLIT = ['--model', 'sonnet', '--allowedTools', 'Read,Grep,Bash(npm test:*)', '--permission-mode', 'acceptEdits']
// Generous: CI machines are noisy; these bound waits, they are not what the tests measure.
const WAIT_MS = 20_000

interface FakeCall {
  argv: string[]
  prompt: string
  pid: number
  config_dir?: string
}

/** Live fake claude processes started for `fakeDir` (their pids mean nothing outside a sandbox's PID namespace). */
function fakeClaudesOf(fakeDir: string): number[] {
  const found: number[] = []
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/u.test(entry)) continue
    try {
      if (!fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('fake-claude/claude')) continue
      if (!fs.readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0').includes(`FAKE_CLAUDE_DIR=${fakeDir}`)) continue
      if (isAlive(Number(entry))) found.push(Number(entry))
    } catch {
      // gone meanwhile
    }
  }
  return found
}

interface ClaudeStack {
  stack: Stack
  fakeDir: string
  /** What the fake claude was run with, oldest first. */
  calls(): FakeCall[]
  /** Texts of the messages the bot sent to a chat, oldest first. */
  texts(chatId: number): string[]
  /** Waits for the bot to send a message matching `pattern` to the chat; resolves with its text. */
  waitForText(chatId: number, pattern: RegExp): Promise<string>
  chatDir(chatId: number): string
}

async function startClaudeStack(env: Record<string, string> = {}): Promise<ClaudeStack> {
  const fakeDir = tempDir('fake-claude-')
  const stack = await startStack({
    env: {
      BRAIN_COMMAND: ADAPTER,
      BRAIN_ENV_ALLOW: 'FAKE_CLAUDE_DIR,CLAUDE_ARGS',
      FAKE_CLAUDE_DIR: fakeDir,
      // The fake keeps its sessions there: the sandbox must let it write.
      BRAIN_CWD: fakeDir,
      CLAUDE_ARGS,
      PATH: `${FAKE_CLAUDE_BIN_DIR}:${process.env['PATH'] ?? '/usr/bin:/bin'}`,
      MAX_CONCURRENT_BRAINS: '8',
      ...env,
    },
  })
  const sentIn = (chatId: number) => (call: RecordedCall) => call.method === 'sendMessage' && call.ok && call.params['chat_id'] === chatId
  return {
    stack,
    fakeDir,
    calls: () => {
      const file = path.join(fakeDir, 'calls.jsonl')
      if (!fs.existsSync(file)) return []
      return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as FakeCall)
    },
    texts: (chatId) => stack.emu.calls.filter(sentIn(chatId)).map((call) => (call.result as Message).text ?? ''),
    waitForText: async (chatId, pattern) => {
      const call = await stack.emu.waitFor((call) => sentIn(chatId)(call) && pattern.test((call.result as Message).text ?? ''), { timeoutMs: WAIT_MS })
      return (call.result as Message).text ?? ''
    },
    chatDir: (chatId) => path.join(stack.stateDir, 'chats', String(chatId)),
  }
}

/** The prompt without the outbox instruction the adapter appends. */
const questionOf = (call: FakeCall): string => call.prompt.replace(/\n\n\(To send the user a file, [^\n]*\)$/u, '')
const storedSession = (dir: string): string | undefined => readSession(path.join(dir, SESSION_FILE), () => {})
const retriesOf = (stack: Stack, update: Update) =>
  stack.svc.logs.filter((line) => line.msg === 'brain asked for a retry (exit 75)' && line['update_id'] === update.update_id).length

const [claude, hanging] = await Promise.all([
  startClaudeStack({ BRAIN_TIMEOUT_S: '10', MESSAGE_BUDGET_S: '30' }),
  startClaudeStack({ BRAIN_TIMEOUT_S: '3', MESSAGE_BUDGET_S: '10' }),
])
t.teardown(() => Promise.all([claude.stack.close(), hanging.stack.close()]))
const { emu } = claude.stack
// Sent now and checked last, so its time limit runs out while the other tests run.
const hangSentAt = Date.now()
hanging.stack.emu.sendText({ chatId: 9120, text: 'hang' })
const lingerDir = tempDir('fake-claude-')
const lingering = runAdapter({ text: 'linger', files: [] }, { FAKE_CLAUDE_DIR: lingerDir })

t.test('sessions resume per chat and never cross chats; CLAUDE_ARGS and the prompt reach claude', async (t) => {
  const [alice, bob] = [9101, 9102]
  emu.sendText({ chatId: alice, text: 'alpha one' })
  emu.sendText({ chatId: bob, text: 'beta one' })
  await claude.waitForText(alice, /^Turn 1 of this conversation\. You said: "alpha one"$/u)
  await claude.waitForText(bob, /^Turn 1 of this conversation\. You said: "beta one"$/u)
  const aliceSession = storedSession(claude.chatDir(alice))
  const bobSession = storedSession(claude.chatDir(bob))
  t.ok(aliceSession && bobSession && aliceSession !== bobSession, `each chat has its own session (${aliceSession}, ${bobSession})`)

  emu.sendText({ chatId: bob, text: 'beta two' })
  emu.sendText({ chatId: alice, text: 'alpha two' })
  await claude.waitForText(alice, /^Turn 2 of this conversation\. You said: "alpha two" Before that: "alpha one"$/u)
  await claude.waitForText(bob, /^Turn 2 of this conversation\. You said: "beta two" Before that: "beta one"$/u)
  t.equal(storedSession(claude.chatDir(alice)), aliceSession, "alice's session id stays")

  const byPrompt = new Map(claude.calls().map((call) => [questionOf(call), call]))
  // The chat's outbox is outside BRAIN_CWD here, so Claude gets it with --add-dir.
  const addOutbox = (chatId: number): string[] => ['--add-dir', path.join(claude.chatDir(chatId), 'outbox')]
  t.same(byPrompt.get('alpha one')?.argv, [...CLAUDE_BASE_ARGS, ...addOutbox(alice), ...CLAUDE_ARGS_SPLIT], 'a first turn: no --resume; CLAUDE_ARGS split like a shell')
  t.same(byPrompt.get('alpha two')?.argv, [...CLAUDE_BASE_ARGS, '--resume', aliceSession, ...addOutbox(alice), ...CLAUDE_ARGS_SPLIT], "alice's second turn resumes alice's session")
  t.same(byPrompt.get('beta two')?.argv, [...CLAUDE_BASE_ARGS, '--resume', bobSession, ...addOutbox(bob), ...CLAUDE_ARGS_SPLIT], "bob's second turn resumes bob's session")
  t.same(claude.texts(alice).length, 2, 'one message per turn, nothing else')
  t.equal(byPrompt.get('alpha one')?.config_dir, path.join(claude.chatDir(alice), '.claude'), "Claude Code's state (CLAUDE_CONFIG_DIR) is in the chat's directory")

  const photo = emu.sendPhoto({ chatId: 9111, caption: 'what is this?', bytes: Buffer.from('jpeg bytes') })
  await claude.waitForText(9111, /^Turn 1 /u)
  const photoCall = claude.calls().find((call) => call.prompt.startsWith('what is this?'))
  const mediaDir = path.join(claude.stack.stateDir, 'media', String(photo.update_id))
  const outbox = path.join(claude.chatDir(9111), 'outbox')
  t.match(
    photoCall?.prompt,
    new RegExp(`^what is this\\?\\n\\n\\[attached photo: ${mediaDir}/\\S+ \\(image/jpeg\\)\\]\\n\\n\\(To send the user a file, .* write it into the directory ${outbox}: `, 'u'),
    'a photo is announced by its path, then the outbox',
  )
})

t.test('a deleted or corrupt session file starts a new conversation, silently (what /new does)', async (t) => {
  const chatId = 9103
  emu.sendText({ chatId, text: 'remember me' })
  await claude.waitForText(chatId, /^Turn 1 .*"remember me"$/u)
  fs.rmSync(path.join(claude.chatDir(chatId), SESSION_FILE))
  emu.sendText({ chatId, text: 'after the reset' })
  await claude.waitForText(chatId, /^Turn 1 of this conversation\. You said: "after the reset"$/u)
  t.same(
    claude.calls().find((call) => questionOf(call) === 'after the reset')?.argv,
    [...CLAUDE_BASE_ARGS, '--add-dir', path.join(claude.chatDir(chatId), 'outbox'), ...CLAUDE_ARGS_SPLIT],
    'no --resume',
  )

  fs.writeFileSync(path.join(claude.chatDir(chatId), SESSION_FILE), '{"session_id": ')
  emu.sendText({ chatId, text: 'after the corruption' })
  await claude.waitForText(chatId, /^Turn 1 of this conversation\. You said: "after the corruption"$/u)
  t.ok(storedSession(claude.chatDir(chatId)), 'a good session file again')
  t.same(claude.texts(chatId).length, 3, 'no notice: a missing or unreadable file is simply a new conversation')
})

t.test('a session Claude Code no longer knows: a new one, and the user is told once', async (t) => {
  const chatId = 9104
  const stale = '5f0c4a52-0000-4000-8000-00000000dead'
  fs.mkdirSync(claude.chatDir(chatId), { recursive: true })
  fs.writeFileSync(path.join(claude.chatDir(chatId), SESSION_FILE), JSON.stringify({ session_id: stale }))
  emu.sendText({ chatId, text: 'hello again' })
  await claude.waitForText(chatId, /^Turn 1 of this conversation\. You said: "hello again"$/u)
  emu.sendText({ chatId, text: 'and again' })
  await claude.waitForText(chatId, /^Turn 2 .*"and again" Before that: "hello again"$/u)
  t.same(
    claude.texts(chatId).map((text) => text.replace(/ You said.*/u, '')),
    [SESSION_GONE_NOTICE, 'Turn 1 of this conversation.', 'Turn 2 of this conversation.'],
    'the notice came once, before the first answer',
  )
  const fresh = storedSession(claude.chatDir(chatId))
  t.ok(fresh && fresh !== stale, 'the new session replaced the stale one')
  t.same(
    claude.calls().filter((call) => questionOf(call) === 'hello again').map((call) => call.argv.includes('--resume')),
    [true, false],
    'tried with --resume, then without',
  )
})

t.test('tool calls reach the chat as one status message edited in place, then deleted', async (t) => {
  const chatId = 9105
  const expected = ['🔧 Bash: npm test', '📖 reading src/x.ts', '✍️ editing src/app.ts', '🔎 searching: TODO', '🌐 fetching https://example.com/docs']
  emu.sendText({ chatId, text: 'tools' })
  await claude.waitForText(chatId, /^Turn 1 /u)
  const sent = emu.callsOf('sendMessage').filter((call) => call.ok && call.params['chat_id'] === chatId)
  t.equal(sent.length, 2, 'two messages: the status and the reply')
  const status = sent[0]?.result as Message
  t.equal(status.text, expected[0], 'the status starts at the first tool call')
  const edits = emu.callsOf('editMessageText').filter((call) => call.params['message_id'] === status.message_id)
  t.ok(edits.length >= 1, `the status was edited in place (${edits.length} times)`)
  for (const edit of edits) t.ok(expected.includes(String(edit.params['text'])), `edited to a tool call: ${String(edit.params['text'])}`)
  const deleted = await emu.waitFor((call) => call.method === 'deleteMessage' && call.params['message_id'] === status.message_id, { timeoutMs: WAIT_MS })
  t.ok(deleted.ok, 'the status message was deleted when the answer came')
})

t.test("files Claude writes into the chat's outbox are sent with its answer, photos as photos; the next run starts empty", async (t) => {
  const chatId = 9112
  emu.sendText({ chatId, text: 'draw a chart write=chart.png' })
  await claude.waitForText(chatId, /^Turn 1 /u)
  const sentFiles = (): RecordedCall[] => emu.calls.filter((call) => (call.method === 'sendPhoto' || call.method === 'sendDocument') && Number(call.params['chat_id']) === chatId)
  t.same(sentFiles().map((call) => call.method), ['sendPhoto'])
  const outbox = path.join(claude.chatDir(chatId), 'outbox')
  const reply = emu.calls.findIndex((call) => call.method === 'sendMessage' && call.params['chat_id'] === chatId && /^Turn 1 /u.test(String(call.params['text'])))
  t.ok(emu.calls.indexOf(sentFiles()[0] as RecordedCall) < reply, 'the photo comes before the answer')

  emu.sendText({ chatId, text: 'now the notes write=notes.md' })
  await claude.waitForText(chatId, /^Turn 2 /u)
  t.same(sentFiles().map((call) => call.method), ['sendPhoto', 'sendDocument'], "only this run's file: the chart was not sent again")
  t.same(fs.readdirSync(outbox), ['notes.md'], 'the outbox was emptied before the run')
})

t.test('an overloaded or rate-limited claude is retried (exit 75) until it answers', async (t) => {
  const overloaded = emu.sendText({ chatId: 9106, text: 'overloaded=1 please' })
  const limited = emu.sendText({ chatId: 9107, text: 'ratelimited=1 please' })
  await claude.waitForText(9106, /^Turn 1 .*"overloaded=1 please"$/u)
  await claude.waitForText(9107, /^Turn 1 .*"ratelimited=1 please"$/u)
  t.equal(retriesOf(claude.stack, overloaded), 1, 'the overloaded attempt was retried')
  t.equal(retriesOf(claude.stack, limited), 1, 'one rate-limited attempt was retried')
  t.equal(claude.calls().filter((call) => questionOf(call) === 'overloaded=1 please').length, 2, 'claude ran twice')
  t.same(claude.texts(9106).length, 1, 'the user saw only the answer')
})

t.test('failures reach the user as "⚠️ brain exited 1: <reason>", without retries', async (t) => {
  const cases = [
    { chatId: 9108, text: 'garbage', reply: /^⚠️ brain exited 1: claude exited 1 without a result; its output was not stream-json: "Segmentation fault/u },
    { chatId: 9109, text: 'maxturns', reply: /^⚠️ brain exited 1: claude: error_max_turns$/u },
    { chatId: 9110, text: 'crash', reply: /^⚠️ brain exited 1: claude exited 2: Error: boom \(fake crash\)$/u },
  ]
  const updates = cases.map(({ chatId, text }) => emu.sendText({ chatId, text }))
  for (const [index, { chatId, reply }] of cases.entries()) {
    t.ok(await claude.waitForText(chatId, reply), `chat ${chatId}: ${String(reply)}`)
    t.equal(retriesOf(claude.stack, updates[index] as Update), 0, 'not retried')
  }
})

t.test('a claude that hangs is stopped at BRAIN_TIMEOUT_S, with the timeout notice', async (t) => {
  const notice = await hanging.stack.emu.waitFor(
    (call) => call.method === 'sendMessage' && call.params['chat_id'] === 9120 && /^⚠️ timed out after 3 s; the brain was stopped$/u.test(String(call.params['text'])),
    { timeoutMs: WAIT_MS },
  )
  t.ok(notice.wallClockMs - hangSentAt >= 2900, `after the limit (${notice.wallClockMs - hangSentAt} ms)`)
  t.ok(fs.existsSync(path.join(hanging.fakeDir, 'hang.pid')), 'claude was hanging')
  await eventually(() => fakeClaudesOf(hanging.fakeDir).length === 0, 5000, 'the hanging claude gone')
  t.pass('no claude process is left')
})

t.test('a claude that never exits after its result is stopped, and its answer stands', async (t) => {
  const run = await lingering
  t.equal(run.code, 0)
  t.equal(run.stdout, 'Turn 1 of this conversation. You said: "linger"\n')
  t.match(run.stderr, /^claude: claude did not exit 5 s after its result; stopping it$/mu)
  const pid = Number(fs.readFileSync(path.join(lingerDir, 'linger.pid'), 'utf8'))
  await eventually(() => !isAlive(pid), 5000, 'the lingering claude gone')
  t.pass('claude was stopped')
})

t.test('run by hand (no service): the reply on stdout, progress on stderr, no fd 3 needed', async (t) => {
  const fakeDir = tempDir('fake-claude-')
  const chatDir = tempDir('claude-chat-')
  const run = await runAdapter({ text: 'tools=1', files: [], chat_dir: chatDir }, { FAKE_CLAUDE_DIR: fakeDir })
  t.equal(run.code, 0)
  t.equal(run.stdout, 'Turn 1 of this conversation. You said: "tools=1"\n')
  t.match(run.stderr, /^claude: progress: 🔧 Bash: npm test$/mu)
  t.match(run.stderr, /^claude: session=[\w-]+ cost_usd=0\.0123 duration_ms=\d+ turns=2$/mu, 'cost and duration logged in one line')
  t.ok(storedSession(chatDir), 'the session was stored')
})

t.test('claude missing from PATH: exit 1 with what to do', async (t) => {
  const run = await runAdapter({ text: 'hi', files: [] }, { PATH: '/usr/bin:/bin' })
  t.equal(run.code, 1)
  t.equal(lastLine(run.stderr), 'claude not found on PATH: install Claude Code or set CLAUDE_BIN')
  const unquoted = await runAdapter({ text: 'hi', files: [] }, { CLAUDE_ARGS: '--model "sonnet' })
  t.equal(unquoted.code, 1)
  t.match(lastLine(unquoted.stderr), /CLAUDE_ARGS has an unclosed double quote/u)
})

t.test('SIGTERM to the adapter alone reaches claude, and the adapter exits promptly', async (t) => {
  const fakeDir = tempDir('fake-claude-')
  const started = Date.now()
  const run = runAdapter({ text: 'hang', files: [] }, { FAKE_CLAUDE_DIR: fakeDir }, (child) => {
    void eventually(() => fs.existsSync(path.join(fakeDir, 'hang.pid')), WAIT_MS, 'claude started').then(() => child.kill('SIGTERM'))
  })
  const { code } = await run
  t.equal(code, 143, 'exit 128 + SIGTERM')
  t.ok(Date.now() - started < 10_000, 'promptly')
  const pid = Number(fs.readFileSync(path.join(fakeDir, 'hang.pid'), 'utf8'))
  await eventually(() => !isAlive(pid), 5000, 'claude gone')
  t.pass('claude was stopped too')
})

t.test('tool calls in one short line each', async (t) => {
  const cwd = '/work/repo'
  t.equal(describeToolUse('Bash', { command: 'npm test\nnpm run lint' }, cwd), '🔧 Bash: npm test')
  t.equal(describeToolUse('Edit', { file_path: '/work/repo/src/app.ts' }, cwd), '✍️ editing src/app.ts')
  t.equal(describeToolUse('Write', { file_path: '/etc/motd' }, cwd), '✍️ editing /etc/motd', 'outside the working directory: the full path')
  t.equal(describeToolUse('Read', { file_path: '/work/repo/README.md' }, cwd), '📖 reading README.md')
  t.equal(describeToolUse('Glob', { pattern: '**/*.ts' }, cwd), '🔎 searching: **/*.ts')
  t.equal(describeToolUse('WebSearch', { query: 'node 22 release' }, cwd), '🌐 searching the web: node 22 release')
  t.equal(describeToolUse('Task', { description: 'Find the flaky test' }, cwd), '🤖 Task: Find the flaky test')
  t.equal(describeToolUse('TodoWrite', { todos: [{ content: 'a', status: 'completed' }, { content: 'b', activeForm: 'Writing tests', status: 'in_progress' }] }, cwd), '📋 Writing tests')
  t.equal(describeToolUse('mcp__github__create_issue', {}, cwd), '🔧 github: create_issue')
  t.equal(describeToolUse('Bash', {}, cwd), '🔧 Bash', 'no detail: the name')
  t.equal([...describeToolUse('Bash', { command: 'x'.repeat(200) }, cwd)].length, 80, 'cut to 80 characters')
  t.equal(describeToolUse('constructor', {}, cwd), '🔧 constructor', 'a name that is not a table entry')
  const narration = progressOf({ type: 'assistant', message: { content: [{ type: 'text', text: 'Let me look.\nMore.' }] } }, cwd)
  t.same(narration, { text: '💬 Let me look.', narration: true })
  t.equal(progressOf({ type: 'assistant', message: { content: [{ type: 'text', text: 'API Error: 529 Overloaded' }] } }, cwd), undefined, 'an API error is not progress')
})

t.test('failures are classified by what claude printed', async (t) => {
  const result = (fields: Partial<ClaudeResult>): ClaudeResult => ({
    subtype: 'success', isError: true, text: '', errors: [], sessionId: 's', costUsd: 0, durationMs: 1, turns: 1, apiErrorStatus: undefined, ...fields,
  })
  const run = (fields: Partial<RunEvidence>): RunEvidence => ({
    result: undefined, assistantError: undefined, exitCode: 1, signal: null, stderr: '', garbage: undefined, resumed: false, ...fields,
  })
  t.same(classifyFailure(run({ resumed: true, stderr: 'No conversation found with session ID: abc\n' })), { kind: 'session_gone' }, 'older CLIs say it on stderr only')
  t.equal(classifyFailure(run({ stderr: 'No conversation found with session ID: abc\n' })).kind, 'fatal', 'not after a fresh start')
  t.equal(classifyFailure(run({ result: result({ text: 'API Error: 500 {"type":"error","error":{"type":"api_error"}}' }) })).kind, 'transient')
  t.equal(classifyFailure(run({ result: result({ text: 'Request failed', apiErrorStatus: 503 }) })).kind, 'transient', 'api_error_status 5xx')
  t.equal(classifyFailure(run({ result: result({ text: 'API Error: Connection error.' }) })).kind, 'transient')
  t.equal(classifyFailure(run({ stderr: 'TypeError: fetch failed\n  cause: ECONNRESET\n' })).kind, 'transient', 'a network error with no result')
  t.equal(classifyFailure(run({ result: result({ subtype: 'error_during_execution', isError: false, errors: ['API error: Overloaded'] }) })).kind, 'transient')
  t.same(
    classifyFailure(run({ result: result({ text: "You're out of extra usage · resets Apr 24, 4am", apiErrorStatus: 429 }) })),
    { kind: 'fatal', reason: "claude: You're out of extra usage · resets Apr 24, 4am" },
    'a usage limit resets in hours: not worth retrying',
  )
  t.same(classifyFailure(run({ result: result({ text: 'Invalid API key · Please run /login' }) })), { kind: 'fatal', reason: 'claude: Invalid API key · Please run /login' })
  t.same(classifyFailure(run({ exitCode: 0 })), { kind: 'fatal', reason: 'claude exited 0 without a result' })
  t.same(classifyFailure(run({ exitCode: null, signal: 'SIGKILL' })), { kind: 'fatal', reason: 'claude was killed by SIGKILL' })
})

t.test('the prompt: text, then a line per file', async (t) => {
  const files = [
    { kind: 'photo', path: '/m/1/photo.jpg', mime_type: 'image/jpeg', file_name: null },
    { kind: 'document', path: '/m/2/report.pdf', mime_type: 'application/pdf', file_name: 'Q3 "final".pdf' },
    { kind: 'video_note', path: null, mime_type: null, file_name: null, note: 'over the 20 MB download limit' },
  ]
  t.equal(
    buildPrompt({ text: 'one\n\ntwo', files, edited: false, redelivered: false, chat_dir: undefined }),
    [
      'one\n\ntwo',
      '',
      '[attached photo: /m/1/photo.jpg (image/jpeg)]',
      '[attached document "Q3 \\"final\\".pdf": /m/2/report.pdf (application/pdf)]',
      '[video note not available: over the 20 MB download limit]',
    ].join('\n'),
  )
  t.match(buildPrompt({ text: 'hi', files: [], edited: true, redelivered: true, chat_dir: undefined }), /^hi\n\n\(This is an edited version.*\n\n\(The service restarted/su)
  t.equal(buildPrompt({ text: '  ', files: [], edited: false, redelivered: false, chat_dir: undefined }), '', 'nothing to ask')
})

t.test("claude's argv: print mode, the session, directories of attached files outside the working directory, CLAUDE_ARGS", async (t) => {
  const files = [
    { kind: 'photo', path: '/state/media/7/photo.jpg', mime_type: 'image/jpeg', file_name: null },
    { kind: 'voice', path: '/state/media/7/voice.ogg', mime_type: 'audio/ogg', file_name: null },
    { kind: 'document', path: '/work/repo/inbox/a.txt', mime_type: 'text/plain', file_name: 'a.txt' },
    { kind: 'video', path: null, mime_type: null, file_name: null, note: 'too big' },
  ]
  t.same(claudeArgv({ resume: 'abc', files, cwd: '/work/repo', extraArgs: ['--model', 'opus'] }), [
    ...CLAUDE_BASE_ARGS,
    '--resume',
    'abc',
    '--add-dir',
    '/state/media/7',
    '--model',
    'opus',
  ])
  t.same(claudeArgv({ resume: undefined, files: [], cwd: '/work/repo', extraArgs: [] }), ['-p', '--output-format', 'stream-json', '--verbose'])
  t.same(
    claudeArgv({ resume: undefined, files: [], cwd: '/work/repo', extraArgs: [], writableDirs: ['/state/chats/7/outbox', '/work/repo/outbox'] }),
    [...CLAUDE_BASE_ARGS, '--add-dir', '/state/chats/7/outbox'],
    'the outbox, when outside the working directory',
  )
})

interface AdapterRun {
  code: number | null
  stdout: string
  stderr: string
}

function runAdapter(envelope: object, env: Record<string, string>, onStart?: (child: ReturnType<typeof spawn>) => void): Promise<AdapterRun> {
  const child = spawn('env', ['-u', 'NODE_OPTIONS', ADAPTER], {
    env: { PATH: `${FAKE_CLAUDE_BIN_DIR}:${process.env['PATH'] ?? '/usr/bin:/bin'}`, HOME: tempDir('claude-home-'), ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  child.stdin.end(JSON.stringify(envelope))
  onStart?.(child)
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })))
}

function lastLine(text: string): string {
  return text.trim().split('\n').at(-1) ?? ''
}

t.test('claude.env.example is safe by default: no editing combined with running what the edits change', async (t) => {
  const example = fs.readFileSync(path.join(ROOT, 'scripts/brains/claude.env.example'), 'utf8')
  const active = example.split('\n').filter((line) => line.startsWith('CLAUDE_ARGS='))
  t.equal(active.length, 1, 'one active CLAUDE_ARGS')
  const argv = splitCommandLine((active[0] ?? '').slice('CLAUDE_ARGS='.length).replace(/^'|'$/gu, ''))
  const tools = (argv[argv.indexOf('--allowedTools') + 1] ?? '').split(',')
  t.notOk(argv.includes('--dangerously-skip-permissions'), 'permission checks stay on')
  t.notOk(argv.includes('acceptEdits') || argv.includes('bypassPermissions'), 'no permission mode that edits without asking')
  t.notOk(tools.some((tool) => /^(Edit|Write|MultiEdit|NotebookEdit|Bash)\b/u.test(tool)), `no editing or shell tool allowed: ${tools.join(', ')}`)
})
