import path from 'node:path'

// What Claude Code prints with `-p --output-format stream-json --verbose`: one JSON object per line,
// `{"type":"system","subtype":"init","session_id":…}` first, then `assistant` messages (content
// blocks: text, tool_use, thinking) and `user` messages (tool_result blocks), and last one
// `{"type":"result",…}` with the reply, session id, cost and duration. Only what the adapter needs
// is read here; everything else, including types it doesn't know yet, is skipped.

/** Progress texts are one glance in a status message. */
export const PROGRESS_CHARS = 80
// A failure reason is one line of the user's "⚠️ brain exited 1: …" notice.
const REASON_CHARS = 300
// How the CLI words a failed API call ("API Error: 529 …"), in an assistant text and the result.
const API_ERROR_TEXT = /^API Error\b/iu

type Json = Record<string, unknown>

/** The final `result` event of a run, as far as the adapter reads it. */
export interface ClaudeResult {
  /** "success", or why it stopped: "error_max_turns", "error_during_execution", "error_max_budget_usd"… */
  readonly subtype: string
  /** A failed API call comes as subtype "success" with is_error true and the message in `text`. */
  readonly isError: boolean
  /** The reply (Markdown), or the error message when isError; empty when absent. */
  readonly text: string
  /** Error details of the error_* subtypes ("No conversation found with session ID: …"). */
  readonly errors: readonly string[]
  readonly sessionId: string | undefined
  readonly costUsd: number | undefined
  readonly durationMs: number | undefined
  readonly turns: number | undefined
  /** The HTTP status of a failed API call (429, 500, 529…), in newer versions of the CLI. */
  readonly apiErrorStatus: number | undefined
}

/** The run answered: the result is the reply. */
export function succeeded(result: ClaudeResult): boolean {
  return result.subtype === 'success' && !result.isError
}

/** The JSON object on a stdout line, or undefined for anything else (blank, garbage, an array). */
export function parseLine(line: string): Json | undefined {
  const trimmed = line.trim()
  if (!trimmed.startsWith('{')) return undefined
  try {
    const value: unknown = JSON.parse(trimmed)
    return isObject(value) ? value : undefined
  } catch {
    return undefined
  }
}

/** The `result` event's fields, or undefined for any other event. */
export function resultOf(event: Json): ClaudeResult | undefined {
  if (event['type'] !== 'result') return undefined
  return {
    subtype: typeof event['subtype'] === 'string' ? event['subtype'] : 'unknown',
    isError: event['is_error'] === true,
    text: typeof event['result'] === 'string' ? event['result'] : '',
    errors: Array.isArray(event['errors']) ? event['errors'].map((entry) => (typeof entry === 'string' ? entry : JSON.stringify(entry))) : [],
    sessionId: typeof event['session_id'] === 'string' ? event['session_id'] : undefined,
    costUsd: numberOf(event['total_cost_usd']),
    durationMs: numberOf(event['duration_ms']),
    turns: numberOf(event['num_turns']),
    apiErrorStatus: numberOf(event['api_error_status']),
  }
}

/** The `error` an assistant message carries when its API call failed ("rate_limit", "server_error"…). */
export function assistantErrorOf(event: Json): string | undefined {
  return event['type'] === 'assistant' && typeof event['error'] === 'string' ? event['error'] : undefined
}

/** A status line for the work in progress, from an assistant message. */
export interface Progress {
  readonly text: string
  /**
   * True when it comes from the message's text rather than a tool call. That text may be the final
   * answer (its result event is next), so it is worth showing only once something follows it.
   */
  readonly narration: boolean
}

/**
 * What an event says about the work in progress: the last tool call or text of an assistant
 * message ("🔧 Bash: npm test", "📖 reading src/x.ts", "💬 Let me look at the tests"), or undefined.
 */
export function progressOf(event: Json, cwd: string): Progress | undefined {
  if (event['type'] !== 'assistant' || !isObject(event['message'])) return undefined
  const content = event['message']['content']
  if (!Array.isArray(content)) return undefined
  let latest: Progress | undefined
  for (const block of content) {
    if (!isObject(block)) continue
    if (block['type'] === 'tool_use' && typeof block['name'] === 'string') {
      latest = { text: describeToolUse(block['name'], isObject(block['input']) ? block['input'] : {}, cwd), narration: false }
    } else if (block['type'] === 'text' && typeof block['text'] === 'string') {
      const line = firstLine(block['text'])
      // A failed API call shows up as an assistant text too; it is not news for the user.
      if (line && !API_ERROR_TEXT.test(line)) latest = { text: cut(`💬 ${line}`, PROGRESS_CHARS), narration: true }
    }
  }
  return latest
}

type ToolDescriber = (input: Json, cwd: string) => string | undefined

const editing: ToolDescriber = (input, cwd) => withDetail('✍️ editing ', shownPath(input['file_path'] ?? input['notebook_path'], cwd))
const searching: ToolDescriber = (input) => withDetail('🔎 searching: ', input['pattern'])
const delegating: ToolDescriber = (input) => withDetail('🤖 Task: ', input['description'])

// Claude Code's built-in tools, by the name in their tool_use blocks; any other tool shows as "🔧 Name".
const TOOL_PROGRESS: Readonly<Record<string, ToolDescriber>> = {
  Bash: (input) => withDetail('🔧 Bash: ', input['command']),
  Edit: editing,
  MultiEdit: editing,
  Write: editing,
  NotebookEdit: editing,
  Read: (input, cwd) => withDetail('📖 reading ', shownPath(input['file_path'], cwd)),
  Grep: searching,
  Glob: searching,
  WebFetch: (input) => withDetail('🌐 fetching ', input['url']),
  WebSearch: (input) => withDetail('🌐 searching the web: ', input['query']),
  Task: delegating,
  Agent: delegating,
  TodoWrite: (input) => {
    const todos = Array.isArray(input['todos']) ? input['todos'].filter(isObject) : []
    const current = todos.find((todo) => todo['status'] === 'in_progress')
    return withDetail('📋 ', current?.['activeForm'] ?? current?.['content'])
  },
}

/** One short line for a tool call: "🔧 Bash: npm test", "✍️ editing src/app.ts", "🔧 github: create_issue". */
export function describeToolUse(name: string, input: Json, cwd: string): string {
  const described = Object.hasOwn(TOOL_PROGRESS, name) ? TOOL_PROGRESS[name]?.(input, cwd) : undefined
  if (described) return cut(described, PROGRESS_CHARS)
  // MCP tools are named mcp__<server>__<tool>.
  const mcp = /^mcp__(.+?)__(.+)$/u.exec(name)
  return cut(mcp ? `🔧 ${mcp[1]}: ${mcp[2]}` : `🔧 ${name}`, PROGRESS_CHARS)
}

/** What went wrong with a run that did not answer, and so what the adapter does about it. */
export type Failure =
  /** `--resume` named a session Claude Code doesn't have (any more): start a new one. */
  | { readonly kind: 'session_gone' }
  /** Overloaded, rate limited, a network or 5xx error: worth another attempt (exit 75). */
  | { readonly kind: 'transient'; readonly reason: string }
  /** Anything else: exit 1 with the reason. */
  | { readonly kind: 'fatal'; readonly reason: string }

/** What a finished claude process left behind, for {@link classifyFailure}. */
export interface RunEvidence {
  readonly result: ClaudeResult | undefined
  /** The last `error` an assistant message carried, if any. */
  readonly assistantError: string | undefined
  readonly exitCode: number | null
  readonly signal: NodeJS.Signals | null
  /** The end of claude's stderr. */
  readonly stderr: string
  /** The first stdout line that was not JSON, if any. */
  readonly garbage: string | undefined
  /** True when the run passed --resume (only then can the session be gone). */
  readonly resumed: boolean
}

const SESSION_GONE = /no conversation found/iu
// Subscription limits come as rate limits too, but they reset in hours: retrying within one message's budget is waste.
const USAGE_LIMIT = /usage limit|limit reached|out of (?:extra )?usage|credit balance is too low/iu
const TRANSIENT_TEXT = [
  /overloaded/iu,
  /rate[ _]limit/iu,
  /API Error:?\s*\(?(?:408|429|5\d\d)\b/iu,
  /internal server error|service unavailable|bad gateway|gateway timeout/iu,
  /\b(?:ECONNRESET|ETIMEDOUT|ECONNREFUSED|EAI_AGAIN|EPIPE|UND_ERR_\w+)\b/u,
  /socket hang up|fetch failed|connection error|request timed out|network error/iu,
]
const TRANSIENT_ASSISTANT_ERRORS: ReadonlySet<string> = new Set(['rate_limit', 'server_error'])

function isTransientStatus(status: number | undefined): boolean {
  return status !== undefined && (status === 408 || status === 429 || (status >= 500 && status <= 599))
}

/** Why a run did not answer, read from its result event, its assistant messages and its stderr. */
export function classifyFailure(run: RunEvidence): Failure {
  const { result } = run
  const texts = result ? [...result.errors, result.text, run.stderr] : [run.stderr]
  if (run.resumed && texts.some((text) => SESSION_GONE.test(text))) return { kind: 'session_gone' }

  const detail = firstLine(result ? [...result.errors, result.text].find((text) => text.trim() !== '') ?? '' : '')
  const usageLimited = texts.some((text) => USAGE_LIMIT.test(text))
  const transient =
    !usageLimited &&
    (isTransientStatus(result?.apiErrorStatus) ||
      (run.assistantError !== undefined && TRANSIENT_ASSISTANT_ERRORS.has(run.assistantError)) ||
      texts.some((text) => TRANSIENT_TEXT.some((pattern) => pattern.test(text))))

  if (result) {
    const reason = cut(result.subtype === 'success' ? `claude: ${detail || 'the run failed'}` : `claude: ${result.subtype}${detail ? `: ${detail}` : ''}`, REASON_CHARS)
    return { kind: transient ? 'transient' : 'fatal', reason }
  }
  const lastStderr = lastLine(run.stderr)
  let reason: string
  if (run.exitCode === null) reason = `claude was killed by ${run.signal ?? 'a signal'}${lastStderr ? `: ${lastStderr}` : ''}`
  else if (lastStderr) reason = `claude exited ${run.exitCode}: ${lastStderr}`
  else if (run.garbage !== undefined) reason = `claude exited ${run.exitCode} without a result; its output was not stream-json: "${cut(run.garbage, 80)}"`
  else reason = `claude exited ${run.exitCode} without a result`
  return { kind: transient ? 'transient' : 'fatal', reason: cut(reason, REASON_CHARS) }
}

/** The first non-blank line, whitespace collapsed. */
export function firstLine(text: string): string {
  return (text.split('\n').find((line) => line.trim() !== '') ?? '').replace(/\s+/gu, ' ').trim()
}

function lastLine(text: string): string {
  return (text.split('\n').findLast((line) => line.trim() !== '') ?? '').replace(/\s+/gu, ' ').trim()
}

/** `text` on one line, at most `max` characters (an ellipsis marks the cut). */
export function cut(text: string, max: number): string {
  const line = text.replace(/\s+/gu, ' ').trim()
  const chars = [...line]
  return chars.length > max ? `${chars.slice(0, max - 1).join('')}…` : line
}

function withDetail(prefix: string, detail: unknown): string | undefined {
  if (typeof detail !== 'string') return undefined
  const line = firstLine(detail)
  return line ? `${prefix}${line}` : undefined
}

// A path under the working directory is shown relative to it: shorter, and what the user knows.
function shownPath(value: unknown, cwd: string): string | undefined {
  if (typeof value !== 'string' || value === '') return undefined
  const relative = path.relative(cwd, value)
  return path.isAbsolute(value) && relative !== '' && !relative.startsWith('..') ? relative : value
}

function numberOf(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
