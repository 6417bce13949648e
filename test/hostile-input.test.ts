// Hostile input: thousands of generated webhook requests (mutated real updates, random JSON, deep
// nesting, odd Unicode, giant bodies, truncated JSON, wrong content types, secret header tricks),
// each answered as a correct service must (judge() in helpers/hostile.ts), never with a 5xx, and
// quickly; and nothing but the messages the oracle accepted reaches the inbox, each exactly once.
// Mostly in-process through inject; then a smaller pass over real HTTP against the service process.
import fs from 'node:fs'
import t, { type Test } from 'tap'
import fc from 'fast-check'
import { BODY_LIMIT } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { startEmulator, type BotApiEmulator } from '../src/emulator/index.js'
import { createLogger } from '../src/log.js'
import { startService, type Service } from '../src/server.js'
import { SqliteInbox } from '../src/store/sqlite.js'
import {
  ALLOWED_CHATS,
  AcceptedLedger,
  FRESH_ID,
  FreshUpdateId,
  RawJson,
  SECRET_HEADER_NAME,
  anyRealUpdate,
  hostileString,
  judge,
  mutate,
  mutatedUpdate,
  nested,
  randomBody,
  realUpdate,
  sendRaw,
  serialize,
  textMessage,
  type Draft,
  type HeaderLine,
  type Verdict,
  type WebhookContract,
  type WebhookRequest,
} from './helpers/hostile.js'
import { SECRET, TOKEN, eventually, readBrainLog, startStack, tempDir } from './helpers/service.js'

const WEBHOOK_PATH = '/telegram/webhook'
// Each answer's limit: generous for a loaded 2-core CI box; a 1 MiB body takes ~50 ms on a laptop.
const ANSWER_LIMIT_MS = 1000
// The people who may talk: Ada (the samples' private chats and group messages) and Grace.
const ALLOWED_USERS = [5550001, 5550002]
const CONTRACT: WebhookContract = { secret: SECRET, allowedChats: new Set(ALLOWED_CHATS), allowedUsers: new Set(ALLOWED_USERS), bodyLimit: BODY_LIMIT }
// Generated bodies per in-process property; together at least 5,000.
const RUNS = { mutated: 2400, random: 1000, truncated: 600, contentTypes: 500, secrets: 600, deep: 100, giant: 12 }
const E2E_RUNS = 200

/** A request with a JSON body and the right secret; `draft` is written when the request is sent. */
interface Planned {
  readonly draft: Draft | undefined
  /** Bytes sent instead of the written draft (truncated, re-encoded, not JSON at all). */
  readonly bytes?: (json: string) => Buffer
  readonly contentTypes?: readonly string[]
  readonly secretHeaders?: readonly HeaderLine[]
}

/** The service in this process, with the emulator as Telegram, and the oracle's ledger. */
class InProcess {
  readonly ledger = new AcceptedLedger()
  generated = 0
  /** The slowest answer so far, and what it answered. */
  slowest = { ms: 0, what: '' }
  readonly statuses = new Map<number, number>()
  #nextUpdateId = 1_000_000_000
  #nextClient = 0

  private constructor(
    readonly service: Service,
    readonly emulator: BotApiEmulator,
    readonly stateDir: string,
  ) {}

  static async start(): Promise<InProcess> {
    const emulator = await startEmulator({ token: TOKEN })
    for (const id of ALLOWED_CHATS) emulator.addChat({ id })
    const stateDir = tempDir('coordinator-hostile-')
    const config = loadConfig(
      {
        TELEGRAM_BOT_TOKEN: TOKEN,
        TELEGRAM_WEBHOOK_SECRET: SECRET,
        TELEGRAM_API_ROOT: emulator.url,
        ALLOWED_CHAT_IDS: ALLOWED_CHATS.join(','),
        ALLOWED_USER_IDS: ALLOWED_USERS.join(','),
        EDITS: 'ignore',
        // One slot, held by a brain that sleeps: every accepted message after the first stays
        // queued in the inbox, where the audit finds it, and no CPU goes to thousands of brains.
        BRAIN_COMMAND: 'sleep 600',
        MAX_CONCURRENT_BRAINS: '1',
        SHUTDOWN_GRACE_S: '0',
        KILL_GRACE_S: '0',
        STATE_DIR: stateDir,
        PORT: '0',
      },
      stateDir,
    )
    return new InProcess(await startService(config, createLogger('silent', { pretty: false })), emulator, stateDir)
  }

  nextUpdateId = (): number => this.#nextUpdateId++

  materialize(planned: Planned): WebhookRequest {
    return materialize(planned, this.nextUpdateId)
  }

  /**
   * Sends one request and checks the answer against the oracle; throws on a wrong status, so
   * fast-check reports the request (unshrunk: shrinking megabyte bodies and deep nesting can take
   * gigabytes; the seed in the report replays it). Speed is checked once at the end: shrinking
   * can't make a loaded machine faster. `client` is the peer address: by default a new one each
   * time, so the bad-secret rate limit never applies.
   */
  async check(request: WebhookRequest, client = this.#freshClient()): Promise<Verdict> {
    const verdict = judge(request, CONTRACT, 'inject')
    const response = await this.send(request, client, verdict.why)
    if (response.statusCode !== verdict.status) {
      throw new Error(`answered ${response.statusCode} ${response.body.slice(0, 160)}; a correct service answers ${verdict.status} (${verdict.why})`)
    }
    if (verdict.status === 200 && verdict.accept) this.ledger.record(verdict.accept)
    return verdict
  }

  /** Sends one request through inject, timing and counting the answer. */
  async send(request: WebhookRequest, client = this.#freshClient(), why = ''): Promise<{ statusCode: number; body: string }> {
    const headers: Record<string, string[]> = {}
    if (request.contentTypes.length > 0) headers['content-type'] = [...request.contentTypes]
    for (const [name, value] of request.secretHeaders) (headers[name.toLowerCase()] ??= []).push(value)
    const started = performance.now()
    const response = await this.service.app.inject({ method: 'POST', url: WEBHOOK_PATH, headers, payload: request.body, remoteAddress: client })
    const elapsedMs = performance.now() - started
    if (elapsedMs > this.slowest.ms) this.slowest = { ms: Math.round(elapsedMs), what: `${response.statusCode} to ${request.body.length} bytes (${why})` }
    this.statuses.set(response.statusCode, (this.statuses.get(response.statusCode) ?? 0) + 1)
    return response
  }

  /** Runs a property: each generated plan is sent once and checked (by the oracle, unless `check` says otherwise). */
  async property(
    arbitrary: fc.Arbitrary<Planned>,
    numRuns: number,
    { endOnFailure = true, check = (request: WebhookRequest): Promise<unknown> => this.check(request) } = {},
  ): Promise<void> {
    await fc.assert(
      fc.asyncProperty(arbitrary, async (planned) => {
        this.generated++
        await check(this.materialize(planned))
      }),
      { numRuns, endOnFailure },
    )
  }

  /** Stops the service and returns what its inbox held; the state directory is gone afterwards. */
  async stopAndReadInbox(): Promise<ReturnType<SqliteInbox['list']>> {
    await this.service.stop()
    await this.emulator.close()
    const rows = readInbox(this.stateDir)
    fs.rmSync(this.stateDir, { recursive: true, force: true })
    return rows
  }

  #freshClient(): string {
    const n = this.#nextClient++
    return `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`
  }
}

type Outcome = 400 | 401 | 413 | 415 | 'accepted' | 'ignored'
const outcomeOf = (verdict: Verdict): Outcome => (verdict.status !== 200 ? verdict.status : verdict.accept ? 'accepted' : 'ignored')

/** Writes a planned request, taking update ids from `nextUpdateId`. */
function materialize(planned: Planned, nextUpdateId: () => number): WebhookRequest {
  const json = planned.draft === undefined ? '' : serialize(planned.draft, nextUpdateId)
  return {
    body: planned.bytes ? planned.bytes(json) : Buffer.from(json),
    contentTypes: planned.contentTypes ?? ['application/json'],
    secretHeaders: planned.secretHeaders ?? [[SECRET_HEADER_NAME, SECRET]],
  }
}

function readInbox(stateDir: string): ReturnType<SqliteInbox['list']> {
  const inbox = new SqliteInbox(stateDir)
  try {
    return inbox.list({ limit: 1_000_000 })
  } finally {
    inbox.close()
  }
}

// ——— What the properties send ———

const asJson = (draft: fc.Arbitrary<Draft>): fc.Arbitrary<Planned> => draft.map((value) => ({ draft: value }))

/** A valid text message with odd text, in any allowed chat. */
const oddTextMessage: fc.Arbitrary<Draft> = fc.tuple(hostileString, fc.constantFrom(...ALLOWED_CHATS)).map(([text, chatId]) => textMessage(text, chatId))

/** A valid text message with odd text, or a real update with a field or two broken. */
const authenticLooking: fc.Arbitrary<Draft> = fc.oneof(oddTextMessage, mutatedUpdate)

/** A valid body cut at a random byte: inside a key, a number, an escape, a multi-byte character. */
const truncated: fc.Arbitrary<Planned> = fc
  .tuple(
    fc.oneof(mutatedUpdate, anyRealUpdate, oddTextMessage),
    fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
    fc.constantFrom<string | number | undefined>(undefined, 2, '\t'),
  )
  .map(([draft, cut, indent]) => ({
    draft,
    bytes: (json: string) => {
      const whole = Buffer.from(indent === undefined ? json : JSON.stringify(JSON.parse(json), null, indent))
      return whole.subarray(0, Math.floor(whole.length * cut))
    },
  }))

/** Media types that are JSON however they are written; RFC 8259 defines no charset parameter. */
const JSON_MEDIA_TYPES = [
  'application/json', 'APPLICATION/JSON', 'Application/Json', 'application/json; charset=utf-8', 'application/json;charset=UTF-8',
  'application/json; charset="utf-8"', 'application/json; charset=utf-16', 'application/json; charset=latin1', 'application/json; foo=bar',
]
/** Everything else is 415, however JSON-like (text/plain has its own regression test below). */
const OTHER_MEDIA_TYPES = [
  'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'text/xml', 'text/html', 'text/json',
  'application/octet-stream', 'application/jsonx', 'application/json-seq', 'application/vnd.api+json', 'application/ld+json', 'json',
  'application', '*/*', 'application/*', 'application/json, text/plain', 'application/json/x', 'image/png', '', 'x',
]

const contentTypeTricks: fc.Arbitrary<Planned> = fc
  .tuple(
    fc.oneof(
      authenticLooking.map((draft): Planned => ({ draft })),
      fc.constantFrom<Planned>(
        { draft: undefined, bytes: () => Buffer.from('update_id=1&message=hello') },
        { draft: undefined, bytes: () => Buffer.from('--x\r\nContent-Disposition: form-data; name="update_id"\r\n\r\n1\r\n--x--\r\n') },
        { draft: undefined, bytes: () => Buffer.alloc(0) },
      ),
    ),
    fc.array(fc.constantFrom(...JSON_MEDIA_TYPES, ...OTHER_MEDIA_TYPES), { maxLength: 2 }),
    fc.constantFrom<BufferEncoding | 'utf16le-bom'>('utf8', 'utf8', 'utf16le', 'utf16le-bom', 'latin1'),
  )
  .map(([planned, contentTypes, encoding]) => ({
    ...planned,
    contentTypes,
    bytes: (json: string) => {
      const text = planned.bytes ? planned.bytes(json).toString('utf8') : json
      return encoding === 'utf16le-bom' ? Buffer.from(`\uFEFF${text}`, 'utf16le') : Buffer.from(text, encoding)
    },
  }))

const secretName = fc.mixedCase(fc.constant(SECRET_HEADER_NAME))
const SECRET_ALPHABET = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-']
// The secret in the wrong case, a character short or over, with a joiner, a Cyrillic "е", in full-width letters.
const NEAR_MISSES = [
  SECRET.toUpperCase(), SECRET.slice(0, -1), `${SECRET}x`, `x${SECRET}`, `${SECRET}\u200D`, SECRET.replace('e', '\u0435'),
  [...SECRET].map((c) => String.fromCodePoint((c.codePointAt(0) as number) + 0xfee0)).join(''),
]

/** Secret header lines: right, padded, doubled, empty, huge, unicode, near misses, misnamed, absent. */
const secretTricks: fc.Arbitrary<readonly HeaderLine[]> = fc.oneof(
  secretName.map((name): HeaderLine[] => [[name, SECRET]]),
  fc.tuple(secretName, fc.constantFrom(' ', '\t', '  ', ' \t'), fc.boolean()).map(([name, pad, before]): HeaderLine[] => [[name, before ? `${pad}${SECRET}` : `${SECRET}${pad}`]]),
  fc.tuple(secretName, secretName, fc.constantFrom([SECRET, SECRET], [SECRET, 'wrong'], ['', SECRET])).map(([a, b, [x, y]]): HeaderLine[] => [[a, x as string], [b, y as string]]),
  secretName.map((name): HeaderLine[] => [[name, '']]),
  fc.tuple(secretName, fc.integer({ min: 257, max: 100_000 }), fc.boolean()).map(([name, length, repeat]): HeaderLine[] => [[name, (repeat ? SECRET : 'a').repeat(length).slice(0, length)]]),
  fc.tuple(secretName, hostileString, fc.nat()).map(([name, inserted, at]): HeaderLine[] => {
    const position = at % (SECRET.length + 1)
    return [[name, `${SECRET.slice(0, position)}${inserted}${SECRET.slice(position)}`]]
  }),
  fc.tuple(secretName, fc.constantFrom(...NEAR_MISSES)).map(([name, value]): HeaderLine[] => [[name, value]]),
  fc.tuple(secretName, fc.string({ unit: fc.constantFrom(...SECRET_ALPHABET), minLength: SECRET.length, maxLength: SECRET.length })).map(([name, value]): HeaderLine[] => [[name, value]]),
  fc.constantFrom('X-Telegram-Bot-Api-Secret', 'X-Telegram-Bot-Api-Secret-Tokens', 'X-Telegram-Bot-Api-Secret_Token', 'Secret-Token', 'Authorization').map((name): HeaderLine[] => [[name, SECRET]]),
  fc.constant<HeaderLine[]>([]),
)

/** A deep value where its depth decides nothing: the answer is 400 or "ignored" regardless. */
const deepJunk: fc.Arbitrary<Planned> = fc
  .tuple(
    fc.oneof({ arbitrary: fc.integer({ min: 1000, max: 20_000 }), weight: 19 }, { arbitrary: fc.constantFrom(100_000, 300_000), weight: 1 }),
    fc.constantFrom<'array' | 'object'>('array', 'object'),
    fc.nat(),
  )
  .chain(([depth, shape, at]) => {
    const deep = nested(depth, shape)
    return fc.constantFrom<Draft>(
      deep,
      { update_id: deep },
      { update_id: FRESH_ID, callback_query: deep },
      mutate(realUpdate('callback-query'), [{ op: 'replace', at, value: deep }]),
      mutate(realUpdate('stranger-text'), [{ op: 'add', at, key: 'deep', value: deep }]),
      { ...(realUpdate('private-text') as Record<string, Draft>), message: deep },
      nested(depth, 'object', '{"__proto__":{"x":1}}'),
    )
  })
  .map((draft) => ({ draft }))

/** A body of exactly BODY_LIMIT + delta bytes; the text's characters take 1 to 6 bytes each once written. */
function sizedBody(delta: number, character: string, kind: 'message' | 'callback', updateId: number): Buffer {
  const shell = (filler: string): Draft =>
    kind === 'message' ? { ...(textMessage(filler) as Record<string, Draft>), update_id: updateId } : { update_id: updateId, callback_query: { id: '1', data: filler } }
  const target = BODY_LIMIT + delta
  const empty = Buffer.byteLength(serialize(shell(''), () => updateId))
  const each = Buffer.byteLength(JSON.stringify(character)) - 2
  const count = Math.floor((target - empty) / each)
  const body = Buffer.from(serialize(shell(character.repeat(count) + 'a'.repeat(target - empty - count * each)), () => updateId))
  if (body.length !== target) throw new Error(`sized body is ${body.length} bytes, meant ${target}`)
  return body
}

// ——— In-process properties ———

t.test('in-process: every generated request gets the answer a correct service gives', async (t) => {
  const service = await InProcess.start()
  let inboxRows: ReturnType<SqliteInbox['list']> | undefined
  t.teardown(async () => {
    if (!inboxRows) await service.stopAndReadInbox()
  })

  t.test('real updates with fields replaced, removed, added or renamed anywhere', async () => {
    await service.property(asJson(mutatedUpdate), RUNS.mutated)
  })

  t.test('random JSON, and update-shaped junk', async () => {
    await service.property(asJson(randomBody), RUNS.random)
  })

  t.test('valid bodies truncated at any byte', async () => {
    await service.property(truncated, RUNS.truncated)
  })

  t.test('content types and encodings, JSON or not', async () => {
    await service.property(contentTypeTricks, RUNS.contentTypes)
  })

  t.test('secret header tricks: only the one exact secret is authentic', async () => {
    const planned = fc.tuple(authenticLooking, secretTricks).map(([draft, secretHeaders]): Planned => ({ draft, secretHeaders }))
    await service.property(planned, RUNS.secrets)
  })

  t.test('deep nesting, 1,000 to 300,000 levels, where it decides nothing', async () => {
    await service.property(deepJunk, RUNS.deep)
  })

  t.test('bodies within a few bytes of the 1 MiB limit, in characters of 1 to 6 bytes', async () => {
    const sized = fc
      .tuple(
        fc.oneof(fc.integer({ min: -8, max: 8 }), fc.constantFrom(-4096, 4096, 100_000)),
        fc.constantFrom('a', 'é', '€', '😀', '\u0000', '\uD800'),
        fc.constantFrom<'message' | 'callback'>('message', 'callback'),
      )
      .map(([delta, character, kind]): Planned => ({ draft: undefined, bytes: () => sizedBody(delta, character, kind, service.nextUpdateId()) }))
    await service.property(sized, RUNS.giant)
  })

  t.test('hand-picked edge cases', async (t) => {
    const message = (extra: Record<string, Draft>, chatId = 5550001): Draft => {
      const update = textMessage('edge', chatId) as { message: Record<string, Draft> }
      return { ...update, message: { ...update.message, ...extra } }
    }
    const raw = (text: string): Planned => ({ draft: undefined, bytes: () => Buffer.from(text) })
    const withId = (template: (id: number) => string): Planned => ({ draft: undefined, bytes: () => Buffer.from(template(service.nextUpdateId())) })
    // What each must come to: a 4xx, or 200 with the message accepted (stored and scheduled) or ignored.
    const cases: [string, Planned, Outcome][] = [
      ['a plain text message', { draft: textMessage('hello') }, 'accepted'],
      ['a photo with a caption', { draft: realUpdate('photo-caption') }, 'accepted'],
      ['a voice message', { draft: realUpdate('voice') }, 'accepted'],
      ['a forum topic message', { draft: realUpdate('supergroup-topic-text') }, 'accepted'],
      ['an edited message', { draft: realUpdate('edited-text') }, 'ignored'],
      ['a callback query', { draft: realUpdate('callback-query') }, 'ignored'],
      ['a chat outside the allow list', { draft: realUpdate('stranger-text') }, 'ignored'],
      ['a group outside the allow list', { draft: realUpdate('group-text') }, 'ignored'],
      ['a membership change', { draft: realUpdate('my-chat-member') }, 'ignored'],
      ['a command', { draft: realUpdate('private-command') }, 'accepted'],
      ['an empty object', raw('{}'), 400],
      ['an array', raw('[{"update_id":1}]'), 400],
      ['null', raw('null'), 400],
      ['a string', raw('"update"'), 400],
      ['a number', raw('731000101'), 400],
      ['an empty body', raw(''), 400],
      ['whitespace', raw(' \r\n\t'), 400],
      ['update_id -1', raw('{"update_id":-1}'), 400],
      ['update_id 1.5', raw('{"update_id":1.5}'), 400],
      ['update_id "7"', raw('{"update_id":"7"}'), 400],
      ['update_id 2^53', raw('{"update_id":9007199254740992}'), 400],
      ['update_id 2^53+1, which parses as 2^53', raw('{"update_id":9007199254740993}'), 400],
      ['update_id 1e400', raw('{"update_id":1e400}'), 400],
      ['update_id null', raw('{"update_id":null}'), 400],
      ['update_id -0, which is 0', raw('{"update_id":-0}'), 'ignored'],
      ['update_id 2^53-1 and nothing else', raw('{"update_id":9007199254740991}'), 'ignored'],
      ['update_id written 1e2', withId((id) => `{"update_id":${id}e0,"message":{"message_id":1,"chat":{"id":5550001},"text":"1e2"}}`), 'accepted'],
      ['a duplicated key: the last one counts', withId((id) => `{"update_id":"x","update_id":${id},"message":{"message_id":1,"chat":{"id":5550001},"text":"dup"}}`), 'accepted'],
      ['a leading byte-order mark', withId((id) => `\uFEFF{"update_id":${id},"message":{"message_id":1,"chat":{"id":5550001},"text":"bom"}}`), 'accepted'],
      ['"__proto__" at the top', withId((id) => `{"update_id":${id},"__proto__":{"admin":true}}`), 400],
      ['"__proto__" deep in a message', withId((id) => `{"update_id":${id},"message":{"message_id":1,"chat":{"id":5550001},"from":{"__proto__":{"x":1}},"text":"p"}}`), 400],
      ['"constructor" holding "prototype"', withId((id) => `{"update_id":${id},"constructor":{"prototype":{"x":1}}}`), 400],
      ['"constructor" as an ordinary key', { draft: message({ constructor: 1 }) }, 'accepted'],
      ['message null', withId((id) => `{"update_id":${id},"message":null}`), 'ignored'],
      ['message an array', withId((id) => `{"update_id":${id},"message":[]}`), 'ignored'],
      ['chat id a string', { draft: message({ chat: { id: '5550001' } }) }, 'ignored'],
      ['chat id 1e400', withId((id) => `{"update_id":${id},"message":{"message_id":1,"chat":{"id":1e400},"text":"x"}}`), 'ignored'],
      ['message_id 0', { draft: message({ message_id: 0 }) }, 'ignored'],
      ['message_id -5', { draft: message({ message_id: -5 }) }, 'ignored'],
      ['text a number', { draft: message({ text: 42 }) }, 'ignored'],
      ['caption an object', { draft: message({ caption: {} }) }, 'ignored'],
      ['thread id 1.5', { draft: message({ message_thread_id: 1.5 }) }, 'ignored'],
      ['text with a lone surrogate, NUL, RTL override and a ZWJ', { draft: textMessage('a\uD800b\u0000c\u202Ed\u200De') }, 'accepted'],
      ['text with an escaped lone surrogate', withId((id) => `{"update_id":${id},"message":{"message_id":1,"chat":{"id":5550001},"text":"\\udcff"}}`), 'accepted'],
      ['text with bytes that are not UTF-8', { draft: undefined, bytes: () => Buffer.concat([Buffer.from(`{"update_id":${service.nextUpdateId()},"message":{"message_id":1,"chat":{"id":5550001},"text":"`), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}}')]) }, 'accepted'],
      ['UTF-16 with charset=utf-16', { draft: textMessage('utf-16'), contentTypes: ['application/json; charset=utf-16'], bytes: (json) => Buffer.from(json, 'utf16le') }, 400],
      ['no content type, with a body', { draft: textMessage('no type'), contentTypes: [] }, 415],
      ['no content type, no body', { draft: undefined, contentTypes: [] }, 400],
      ['form-encoded', { draft: undefined, contentTypes: ['application/x-www-form-urlencoded'], bytes: () => Buffer.from('update_id=1') }, 415],
      ['multipart', { draft: undefined, contentTypes: ['multipart/form-data; boundary=b'], bytes: () => Buffer.from('--b\r\n\r\n{}\r\n--b--') }, 415],
      ['exactly 1 MiB', { draft: undefined, bytes: () => sizedBody(0, 'a', 'message', service.nextUpdateId()) }, 'accepted'],
      ['1 MiB and a byte', { draft: undefined, bytes: () => sizedBody(1, 'a', 'message', service.nextUpdateId()) }, 413],
      ['1 MiB and a byte, with a bad secret', { draft: undefined, bytes: () => sizedBody(1, 'a', 'message', 1), secretHeaders: [[SECRET_HEADER_NAME, 'nope']] }, 401],
      ['1 MiB and a byte, as text/html', { draft: undefined, contentTypes: ['text/html'], bytes: () => sizedBody(1, 'a', 'message', 1) }, 415],
      ['300,000 levels of arrays', { draft: nested(300_000, 'array') }, 400],
      ['200,000 levels under a callback query', withId((id) => `{"update_id":${id},"callback_query":${nested(200_000, 'array').text}}`), 'ignored'],
      ['the secret in upper case', { draft: textMessage('x'), secretHeaders: [[SECRET_HEADER_NAME, SECRET.toUpperCase()]] }, 401],
      ['the header name in upper case', { draft: textMessage('x'), secretHeaders: [[SECRET_HEADER_NAME.toUpperCase(), SECRET]] }, 'accepted'],
      ['the secret twice', { draft: textMessage('x'), secretHeaders: [[SECRET_HEADER_NAME, SECRET], [SECRET_HEADER_NAME, SECRET]] }, 401],
      ['the secret with a trailing space (inject passes it on verbatim)', { draft: textMessage('x'), secretHeaders: [[SECRET_HEADER_NAME, `${SECRET} `]] }, 401],
    ]
    for (const [name, planned, outcome] of cases) {
      const request = service.materialize(planned)
      t.equal(outcomeOf(judge(request, CONTRACT, 'inject')), outcome, `the oracle agrees: ${name}`)
      await t.resolves(service.check(request), name)
    }
    const update = JSON.parse(serialize(textMessage('once'), service.nextUpdateId)) as Draft
    for (let i = 0; i < 3; i++) await service.check(service.materialize({ draft: update }))
    t.pass('the same update three times is answered 200 each time (stored once: see the audit)')
  })

  t.test('bad secrets are rate limited per client; authentic deliveries from that client never are', async (t) => {
    const client = '192.0.2.77'
    const statuses: number[] = []
    for (let i = 0; i < 25; i++) {
      const bad = await service.service.app.inject({
        method: 'POST',
        url: WEBHOOK_PATH,
        headers: { 'content-type': 'application/json', [SECRET_HEADER_NAME]: 'nope' },
        payload: '{}',
        remoteAddress: client,
      })
      statuses.push(bad.statusCode)
      if (i % 5 === 4) await service.check(service.materialize({ draft: textMessage(`authentic ${i}`) }), client)
    }
    t.same(statuses, [...Array<number>(20).fill(401), ...Array<number>(5).fill(429)])
  })

  t.test('nothing but accepted messages is in the inbox, each exactly once', async (t) => {
    t.ok(service.generated >= 5000, `${service.generated} generated requests`)
    t.ok(service.slowest.ms < ANSWER_LIMIT_MS, `the slowest answer took ${service.slowest.ms} ms: ${service.slowest.what}`)
    inboxRows = await service.stopAndReadInbox()
    const problems = service.ledger.audit(inboxRows)
    t.same(problems.slice(0, 20), [], `${problems.length} problems`)
    t.comment(`${service.generated} generated requests, ${service.ledger.count} accepted messages, ${inboxRows.length} stored, slowest answer ${service.slowest.ms} ms`)
    t.comment(`answers: ${[...service.statuses].sort(([a], [b]) => a - b).map(([status, count]) => `${status}×${count}`).join(' ')}`)
  })
})

// ——— Regressions: bugs these properties found ———

t.test('in-process: regressions', async (t) => {
  const service = await InProcess.start()
  t.teardown(() => service.stopAndReadInbox())

  // Runs the property to its first counterexample (no shrinking: the input shape is known) and reports it.
  const pinned = async (
    t: Test,
    planned: fc.Arbitrary<Planned>,
    { numRuns, bug, check }: { numRuns: number; bug: string; check?: (request: WebhookRequest) => Promise<unknown> },
  ): Promise<void> => {
    const counterexample = await service.property(planned, numRuns, { endOnFailure: true, ...(check ? { check } : {}) }).then(
      () => undefined,
      (error: unknown) => {
        // fast-check puts the failing value in the message and the property's own error in `cause`.
        const failure = error instanceof Error ? error : new Error(String(error))
        const value = failure.message.split('\n').find((line) => line.trim().startsWith('Counterexample')) ?? failure.message
        return `${failure.cause instanceof Error ? failure.cause.message : ''}\n${value.length > 400 ? `${value.slice(0, 400)}…` : value}`
      },
    )
    t.equal(counterexample, undefined, `no counterexample (was: ${bug})`)
  }

  t.test('a text/plain body is 415 like any other body that is not JSON', async (t) => {
    const planned = authenticLooking.map((draft): Planned => ({ draft, contentTypes: ['text/plain'] }))
    await pinned(t, planned, { numRuns: 50, bug: "Fastify's default text/plain parser handed the body to the handler as a string, answered 400" })
  })

  t.test('a deeply nested field in an allowed message is not a 500', async (t) => {
    const planned = fc
      .tuple(fc.integer({ min: 10_000, max: 100_000 }), fc.constantFrom<'array' | 'object'>('array', 'object'), fc.constantFrom('entities', 'reply_to_message', 'from', 'x'))
      .map(([depth, shape, key]): Planned => ({ draft: mutate(textMessage('deep'), [{ op: 'add', at: 2, key, value: nested(depth, shape) }]) }))
    // Accepting it, ignoring it or refusing it with 400 would all be fine; a 5xx is not.
    const check = async (request: WebhookRequest): Promise<void> => {
      const { statusCode, body } = await service.send(request)
      if (statusCode !== 200 && statusCode !== 400) throw new Error(`answered ${statusCode} ${body.slice(0, 160)}; a correct service answers 200 or 400`)
    }
    await pinned(t, planned, { numRuns: 20, check, bug: 'Coordinator.receive JSON.stringify()d the parsed body: RangeError (stack) past some thousands of levels, answered 500' })
  })
})

// ——— Over real HTTP, against the service process ———

/** How the body is framed on the wire; all but the first two are malformed. */
type Framing = 'content-length' | 'chunked' | 'length-short' | 'length-long' | 'length-twice' | 'length-and-chunked' | 'length-invalid'

interface WireRequest {
  readonly planned: Planned
  readonly framing: Framing
  /** Chunk sizes for chunked framing; a cut point for length-short and -long. */
  readonly split: number
}

// test/fixtures/brain.mjs takes words like "hang", "silent" or "sleep=5" as directives: every word
// of that form gets a leading "_", so the brain just replies, whatever directives it learns later.
const DIRECTIVE_LIKE = /^[a-z-]+(?:=.*)?$/u

function defuse(draft: Draft): Draft {
  if (typeof draft === 'string') return draft.replace(/\S+/gu, (word) => (DIRECTIVE_LIKE.test(word) ? `_${word}` : word))
  if (Array.isArray(draft)) return draft.map(defuse)
  if (draft === null || typeof draft !== 'object' || draft instanceof RawJson || draft instanceof FreshUpdateId) return draft
  const result: { [key: string]: Draft } = {}
  for (const key of Object.keys(draft)) Object.defineProperty(result, key, { value: defuse(draft[key] as Draft), enumerable: true, writable: true, configurable: true })
  return result
}

// Header values as Node reads them: bytes as latin1; CR and LF would start a new header line, so none are sent.
const onTheWire = (value: string): string => Buffer.from(value.replace(/[\r\n]/gu, ''), 'utf8').toString('latin1')
// Control characters other than HTAB make Node refuse the request before the service sees it.
// eslint-disable-next-line no-control-regex -- control characters are what it looks for
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f]/u

const wireRequest: fc.Arbitrary<WireRequest> = fc.record({
  planned: fc
    .tuple(
      fc.oneof(
        { arbitrary: oddTextMessage, weight: 2 },
        { arbitrary: mutatedUpdate, weight: 3 },
        { arbitrary: randomBody, weight: 2 },
        { arbitrary: anyRealUpdate, weight: 1 },
      ),
      fc.oneof({ arbitrary: fc.constant(['application/json']), weight: 6 }, { arbitrary: fc.array(fc.constantFrom(...JSON_MEDIA_TYPES, ...OTHER_MEDIA_TYPES), { maxLength: 2 }), weight: 1 }),
      fc.oneof(
        { arbitrary: fc.constant<readonly HeaderLine[]>([[SECRET_HEADER_NAME, SECRET]]), weight: 6 },
        { arbitrary: secretTricks.filter((lines) => lines.every(([, value]) => value.length <= 8000 || value.length >= 17_000)), weight: 2 },
      ),
      fc.oneof({ arbitrary: fc.constant(undefined), weight: 6 }, { arbitrary: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), weight: 1 }),
    )
    .map(([draft, contentTypes, secretHeaders, cut]): Planned => ({
      draft: defuse(draft),
      contentTypes,
      secretHeaders: secretHeaders.map(([name, value]): HeaderLine => [name, value.replace(/[\r\n]/gu, '')]),
      ...(cut === undefined ? {} : { bytes: (json: string) => Buffer.from(json).subarray(0, Math.floor(Buffer.byteLength(json) * cut)) }),
    })),
  framing: fc.oneof(
    { arbitrary: fc.constant<Framing>('content-length'), weight: 12 },
    { arbitrary: fc.constant<Framing>('chunked'), weight: 4 },
    { arbitrary: fc.constantFrom<Framing>('length-short', 'length-long', 'length-twice', 'length-and-chunked', 'length-invalid'), weight: 4 },
  ),
  split: fc.integer({ min: 1, max: 400 }),
})

const MAX_HEADER_BYTES = 16 * 1024

/** The request's bytes, and the statuses a correct service (behind Node's HTTP parser) may answer with. */
function onWire(wire: WireRequest, request: WebhookRequest, client: string): { bytes: Buffer; expected: number[]; verdict: Verdict | undefined; halfClose: boolean } {
  const { body } = request
  const seen: WebhookRequest = { ...request, secretHeaders: request.secretHeaders.map(([name, value]): HeaderLine => [name, onTheWire(value)]) }
  const headerLines = [
    `POST ${WEBHOOK_PATH} HTTP/1.1`,
    'Host: 127.0.0.1',
    'Connection: close',
    `X-Forwarded-For: ${client}`,
    ...request.contentTypes.map((value) => `Content-Type: ${value}`),
    ...seen.secretHeaders.map(([name, value]) => `${name}: ${value}`),
  ]
  let framing = wire.framing
  if (framing === 'chunked' && body.length === 0) framing = 'content-length'
  const short = Math.max(0, body.length - wire.split)
  const shortVerdict = judge({ ...seen, body: body.subarray(0, short) }, CONTRACT, 'http')
  if (framing === 'length-short' && (body.length === 0 || shortVerdict.status === 200)) framing = 'content-length'

  let payload = body
  switch (framing) {
    case 'content-length':
    case 'length-short':
      headerLines.push(`Content-Length: ${framing === 'length-short' ? short : body.length}`)
      break
    case 'length-long':
      headerLines.push(`Content-Length: ${body.length + wire.split}`)
      break
    case 'length-twice':
      headerLines.push(`Content-Length: ${body.length}`, `Content-Length: ${body.length + 1}`)
      break
    case 'length-invalid':
      headerLines.push(`Content-Length: ${['-1', 'abc', '1e3', '0x10', '99999999999999999999'][wire.split % 5] as string}`)
      break
    case 'chunked':
    case 'length-and-chunked': {
      if (framing === 'length-and-chunked') headerLines.push(`Content-Length: ${body.length}`)
      headerLines.push('Transfer-Encoding: chunked')
      const chunks: Buffer[] = []
      for (let at = 0; at < body.length; at += wire.split) {
        const chunk = body.subarray(at, at + wire.split)
        chunks.push(Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n'))
      }
      payload = Buffer.concat([...chunks, Buffer.from('0\r\n\r\n')])
      break
    }
  }
  const head = Buffer.from(`${headerLines.join('\r\n')}\r\n\r\n`, 'latin1')
  const bytes = Buffer.concat([head, payload])
  const halfClose = framing === 'length-long'

  if ([...request.contentTypes, ...seen.secretHeaders.map(([, value]) => value)].some((value) => CONTROL.test(value))) {
    return { bytes, expected: [400], verdict: undefined, halfClose }
  }
  if (head.length > MAX_HEADER_BYTES) return { bytes, expected: [431], verdict: undefined, halfClose }
  switch (framing) {
    case 'content-length':
    case 'chunked': {
      const verdict = judge(seen, CONTRACT, 'http')
      return { bytes, expected: [verdict.status], verdict, halfClose }
    }
    case 'length-short':
      // The declared part is answered, then the rest is garbage on a closing connection: either answer may win.
      return { bytes, expected: [shortVerdict.status, 400], verdict: undefined, halfClose }
    case 'length-long': {
      // The service answers what it can tell from the head, or 400 when the body never comes.
      const early = judge({ ...seen, body: Buffer.from('?') }, CONTRACT, 'http')
      if (early.status === 401 || early.status === 415) return { bytes, expected: [early.status, 400], verdict: undefined, halfClose }
      return { bytes, expected: body.length + wire.split > BODY_LIMIT ? [413, 400] : [400], verdict: undefined, halfClose }
    }
    default:
      return { bytes, expected: [400], verdict: undefined, halfClose }
  }
}

t.test('over real HTTP: the service process survives hostile requests and answers the real messages', async (t) => {
  const stack = await startStack({
    env: { ALLOW_ALL_CHATS: '0', ALLOWED_CHAT_IDS: ALLOWED_CHATS.join(','), ALLOWED_USER_IDS: ALLOWED_USERS.join(','), TRUSTED_PROXIES: '127.0.0.1', EDITS: 'ignore', LOG_LEVEL: 'info' },
  })
  t.teardown(async () => {
    await stack.close()
    fs.rmSync(stack.stateDir, { recursive: true, force: true })
  })
  const { emu, svc } = stack
  for (const id of ALLOWED_CHATS) emu.addChat({ id, isForum: id < 0 })
  const ledger = new AcceptedLedger()
  let nextUpdateId = 2_000_000_000
  let sent = 0
  let slowest = { ms: 0, what: '' }
  const statuses = new Map<number, number>()

  const exchange = async (wire: WireRequest): Promise<void> => {
    const request = materialize(wire.planned, () => nextUpdateId++)
    // Each request from its own client (through the trusted loopback proxy): no bad-secret rate limit.
    const client = `198.18.${(sent >> 8) & 255}.${sent & 255}`
    sent++
    const { bytes, expected, verdict, halfClose } = onWire(wire, request, client)
    const answer = await sendRaw(svc.url, bytes, { halfClose, timeoutMs: 5000 })
    if (answer.elapsedMs > slowest.ms) slowest = { ms: answer.elapsedMs, what: `${answer.head} to ${bytes.length} bytes, ${wire.framing}` }
    statuses.set(answer.status ?? 0, (statuses.get(answer.status ?? 0) ?? 0) + 1)
    if (answer.status === undefined || !expected.includes(answer.status)) {
      throw new Error(`answered ${answer.head || 'nothing'}; a correct service answers ${expected.join(' or ')}${verdict ? ` (${verdict.why})` : ''}`)
    }
    if (verdict?.status === 200 && verdict.accept) ledger.record(verdict.accept)
  }

  await fc.assert(fc.asyncProperty(wireRequest, exchange), { numRuns: E2E_RUNS, endOnFailure: true })

  const text = (body: string): Planned => ({ draft: undefined, bytes: () => Buffer.from(body) })
  const valid = (): Planned => ({ draft: textMessage('framed') })
  const handPicked: [string, WireRequest][] = [
    ['a body shorter than its Content-Length, then the client gives up', { planned: valid(), framing: 'length-long', split: 10 }],
    ['a body longer than its Content-Length', { planned: valid(), framing: 'length-short', split: 5 }],
    ['two different Content-Lengths', { planned: valid(), framing: 'length-twice', split: 1 }],
    ['Content-Length and chunked together', { planned: valid(), framing: 'length-and-chunked', split: 7 }],
    ['a negative Content-Length', { planned: valid(), framing: 'length-invalid', split: 0 }],
    ['a chunked body in one-byte chunks', { planned: valid(), framing: 'chunked', split: 1 }],
    ['a chunked body over 1 MiB (no Content-Length to refuse early)', { planned: { draft: textMessage('x'.repeat(BODY_LIMIT)) }, framing: 'chunked', split: 65_536 }],
    ['a Content-Length over 1 MiB', { planned: { draft: textMessage('x'.repeat(BODY_LIMIT)) }, framing: 'content-length', split: 1 }],
    ['the secret padded with blanks (HTTP strips them)', { planned: { ...valid(), secretHeaders: [[SECRET_HEADER_NAME, ` \t${SECRET} `]] }, framing: 'content-length', split: 1 }],
    ['the secret twice', { planned: { ...valid(), secretHeaders: [[SECRET_HEADER_NAME, SECRET], [SECRET_HEADER_NAME.toLowerCase(), SECRET]] }, framing: 'content-length', split: 1 }],
    ['a 20 KiB secret', { planned: { ...valid(), secretHeaders: [[SECRET_HEADER_NAME, 'a'.repeat(20_000)]] }, framing: 'content-length', split: 1 }],
    ['the secret with a non-ASCII suffix', { planned: { ...valid(), secretHeaders: [[SECRET_HEADER_NAME, `${SECRET}é`]] }, framing: 'content-length', split: 1 }],
    ['the secret with a NUL', { planned: { ...valid(), secretHeaders: [[SECRET_HEADER_NAME, `${SECRET}\u0000`]] }, framing: 'content-length', split: 1 }],
    ['two content types: Node keeps the first', { planned: { ...valid(), contentTypes: ['application/json', 'text/html'] }, framing: 'content-length', split: 1 }],
    ['truncated JSON', { planned: text('{"update_id":12,"message":{"message_id":1,"chat":{"id":5550001},"te'), framing: 'content-length', split: 1 }],
    ['100,000 levels of arrays', { planned: { draft: nested(100_000, 'array') }, framing: 'content-length', split: 1 }],
  ]
  for (const [name, wire] of handPicked) await t.resolves(exchange(wire), name)

  t.ok(slowest.ms < ANSWER_LIMIT_MS, `the slowest answer took ${slowest.ms} ms: ${slowest.what}`)
  t.ok(svc.running, 'the service process is still running')
  const health = await fetch(`${svc.url}/healthz`)
  t.equal(health.status, 200, '/healthz answers 200')
  t.match(await health.json(), { status: 'ok' })

  const replied = (message: { updateId: number; chatId: number }): boolean =>
    emu
      .callsOf('sendMessage')
      .some((call) => call.ok && call.params['chat_id'] === message.chatId && new RegExp(`^reply ${message.updateId}(?!\\d)`, 'u').test(String(call.params['text'])))
  const awaited = ledger.firstDeliveries().filter((message) => message.plainText !== undefined)
  await eventually(() => awaited.every(replied), 60_000, 'replies to every plain text message').catch(() => undefined)
  const unanswered = awaited.filter((message) => !replied(message)).map((message) => message.updateId)
  t.same(unanswered, [], `all ${awaited.length} plain text messages got their reply`)

  const started = readBrainLog(stack.brainLog).filter((event) => event['ev'] === 'start')
  t.same(started.filter((event) => !ledger.has(event['update_id'] as number)), [], 'every brain ran for an accepted message')

  await svc.stop('SIGTERM')
  const problems = ledger.audit(readInbox(stack.stateDir))
  t.same(problems.slice(0, 20), [], `${problems.length} problems in the inbox`)
  t.comment(`${sent} requests over HTTP, ${ledger.count} accepted messages, ${awaited.length} replies checked, slowest answer ${slowest.ms} ms`)
  t.comment(`answers: ${[...statuses].sort(([a], [b]) => a - b).map(([status, count]) => `${status}×${count}`).join(' ')}`)
})
