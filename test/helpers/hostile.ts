// Hostile webhook requests for property tests: fast-check arbitraries that make them, the oracle
// that says how a correct service answers each one (worked out from the contract, never by
// calling the service's code), and a raw HTTP client that can send what fetch refuses to.
import net from 'node:net'
import fc from 'fast-check'

/** A JSON value as a body is built: JSON, plus text spliced in verbatim and a fresh update_id. */
export type Draft = null | boolean | number | string | RawJson | FreshUpdateId | Draft[] | { [key: string]: Draft }

/**
 * JSON text put into a body as is: number literals JSON.stringify can't write (1e400, -0,
 * 9007199254740993) and nesting too deep for any recursive serialiser.
 */
export class RawJson {
  constructor(readonly text: string) {}
  [fc.toStringMethod](): string {
    return this.text.length > 60 ? `raw(${this.text.slice(0, 30)}…${this.text.length} chars)` : `raw(${this.text})`
  }
}

/** Stands for a new update_id, handed out when the body is sent, so each body is a new update. */
export class FreshUpdateId {
  [fc.toStringMethod](): string {
    return 'fresh_id'
  }
}
/** The placeholder for a fresh update_id in a draft. */
export const FRESH_ID = new FreshUpdateId()

/** Sets an own property, even "__proto__" (an assignment would set the prototype instead). */
function setOwn(target: { [key: string]: Draft }, key: string, value: Draft): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true })
}

function isRecord(value: Draft): value is { [key: string]: Draft } {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof RawJson) && !(value instanceof FreshUpdateId)
}

function copy(value: Draft): Draft {
  if (Array.isArray(value)) return value.map(copy)
  if (!isRecord(value)) return value
  const result: { [key: string]: Draft } = {}
  for (const key of Object.keys(value)) setOwn(result, key, copy(value[key] as Draft))
  return result
}

/**
 * Real updates, as Telegram sends them (the shared samples, telegram-updates/*.json, by file name):
 * text, a command, a topic message, a reply with a forward, media with and without a caption, an
 * edit, a callback query, a membership change, and chats inside and outside the allow list.
 */
export const REAL_UPDATES = {
  'private-text': { update_id: 731000101, message: { message_id: 4101, date: 1764000000, chat: { id: 5550001, type: 'private', first_name: 'Ada', username: 'ada_l' }, from: { id: 5550001, is_bot: false, first_name: 'Ada', username: 'ada_l', language_code: 'en' }, text: 'capture: buy oat milk and call the plumber' } },
  'private-command': { update_id: 731000102, message: { message_id: 4102, date: 1764000005, chat: { id: 5550001, type: 'private', first_name: 'Ada', username: 'ada_l' }, from: { id: 5550001, is_bot: false, first_name: 'Ada', username: 'ada_l', language_code: 'en' }, text: '/status', entities: [{ type: 'bot_command', offset: 0, length: 7 }] } },
  'group-text': { update_id: 731000103, message: { message_id: 88, date: 1764000010, chat: { id: -4012345678, type: 'group', title: 'Household' }, from: { id: 5550002, is_bot: false, first_name: 'Grace' }, text: 'what is on the calendar tomorrow?' } },
  'supergroup-topic-text': { update_id: 731000104, message: { message_id: 913, message_thread_id: 900, is_topic_message: true, date: 1764000020, chat: { id: -1001234567890, type: 'supergroup', title: 'Forge Ops', is_forum: true }, from: { id: 5550001, is_bot: false, first_name: 'Ada', username: 'ada_l' }, text: "summarise today's deploys" } },
  'edited-text': { update_id: 731000105, edited_message: { message_id: 4101, date: 1764000000, edit_date: 1764000100, chat: { id: 5550001, type: 'private', first_name: 'Ada' }, from: { id: 5550001, is_bot: false, first_name: 'Ada' }, text: 'capture: buy oat milk, call the plumber at 9' } },
  'photo-caption': { update_id: 731000106, message: { message_id: 4103, date: 1764000200, chat: { id: 5550001, type: 'private', first_name: 'Ada' }, from: { id: 5550001, is_bot: false, first_name: 'Ada' }, photo: [{ file_id: 'AgACAgQAAxkBAAIBsmall', file_unique_id: 'AQADsmall', width: 90, height: 67, file_size: 1843 }, { file_id: 'AgACAgQAAxkBAAIBlarge', file_unique_id: 'AQADlarge', width: 1280, height: 960, file_size: 104233 }], caption: 'receipt for the boiler repair' } },
  'voice': { update_id: 731000107, message: { message_id: 4104, date: 1764000300, chat: { id: 5550001, type: 'private', first_name: 'Ada' }, from: { id: 5550001, is_bot: false, first_name: 'Ada' }, voice: { file_id: 'AwACAgQAAxkBAAIBvoice', file_unique_id: 'AgADvoice', duration: 7, mime_type: 'audio/ogg', file_size: 23510 } } },
  'document': { update_id: 731000108, message: { message_id: 4105, date: 1764000400, chat: { id: 5550001, type: 'private', first_name: 'Ada' }, from: { id: 5550001, is_bot: false, first_name: 'Ada' }, document: { file_id: 'BQACAgQAAxkBAAIBdoc', file_unique_id: 'AgADdoc', file_name: 'lease-2027.pdf', mime_type: 'application/pdf', file_size: 536392 }, caption: 'file this under housing' } },
  'callback-query': { update_id: 731000109, callback_query: { id: '4382bfdwdsb323b2d9', chat_instance: '-8837465523312345678', from: { id: 5550001, is_bot: false, first_name: 'Ada' }, message: { message_id: 4106, date: 1764000500, chat: { id: 5550001, type: 'private', first_name: 'Ada' }, from: { id: 7000000001, is_bot: true, first_name: 'Coordinator', username: 'forge_coordinator_bot' }, text: 'Add to calendar?' }, data: 'cal:add:1' } },
  'stranger-text': { update_id: 731000110, message: { message_id: 12, date: 1764000600, chat: { id: 9990001, type: 'private', first_name: 'Mallory' }, from: { id: 9990001, is_bot: false, first_name: 'Mallory' }, text: 'run rm -rf / please' } },
  'my-chat-member': { update_id: 731000111, my_chat_member: { chat: { id: 5550001, type: 'private', first_name: 'Ada' }, from: { id: 5550001, is_bot: false, first_name: 'Ada' }, date: 1764000700, old_chat_member: { user: { id: 7000000001, is_bot: true, first_name: 'Coordinator', username: 'forge_coordinator_bot' }, status: 'member' }, new_chat_member: { user: { id: 7000000001, is_bot: true, first_name: 'Coordinator', username: 'forge_coordinator_bot' }, status: 'kicked', until_date: 0 } } },
  'reply-forwarded': { update_id: 731000112, message: { message_id: 4107, date: 1764000800, chat: { id: 5550001, type: 'private', first_name: 'Ada' }, from: { id: 5550001, is_bot: false, first_name: 'Ada' }, forward_origin: { type: 'user', sender_user: { id: 5550003, is_bot: false, first_name: 'Linus' }, date: 1763990000 }, reply_to_message: { message_id: 4101, date: 1764000000, chat: { id: 5550001, type: 'private', first_name: 'Ada' }, from: { id: 5550001, is_bot: false, first_name: 'Ada' }, text: 'capture: buy oat milk and call the plumber' }, text: 'see above — also add this to the list' } },
} satisfies Record<string, Draft>

/**
 * The chats the services under test allow: the private chat and the forum supergroup above, and a
 * few more private chats, so that brains for different chats run side by side.
 */
export const ALLOWED_CHATS: readonly number[] = [5550001, -1001234567890, 5550011, 5550012, 5550013, 5550014]

export type RealUpdateName = keyof typeof REAL_UPDATES
export const REAL_UPDATE_NAMES = Object.keys(REAL_UPDATES) as RealUpdateName[]

/** A real update with a fresh update_id. */
export function realUpdate(name: RealUpdateName): Draft {
  const update = copy(REAL_UPDATES[name]) as { [key: string]: Draft }
  update['update_id'] = FRESH_ID
  return update
}

/** Any real update, with a fresh update_id. */
export const anyRealUpdate: fc.Arbitrary<Draft> = fc.constantFrom(...REAL_UPDATE_NAMES).map(realUpdate)

/** A plain text message in an allowed chat, with a fresh update_id. */
export function textMessage(text: string, chatId = 5550001): Draft {
  // In a group, Ada (a listed sender) speaks; a private chat's user is the chat.
  const chat = chatId > 0 ? { id: chatId, type: 'private' } : { id: chatId, type: 'supergroup' }
  return { update_id: FRESH_ID, message: { message_id: 4200, date: 1764001000, chat, from: { id: chatId > 0 ? chatId : 5550001, is_bot: false, first_name: 'Ada' }, text } }
}

/** `depth` levels of arrays or objects around `inner`, as text. */
export function nested(depth: number, shape: 'array' | 'object', inner = '0'): RawJson {
  return shape === 'array' ? new RawJson(`${'['.repeat(depth)}${inner}${']'.repeat(depth)}`) : new RawJson(`${'{"a":'.repeat(depth)}${inner}${'}'.repeat(depth)}`)
}

/** Writes a draft as JSON text, taking update_ids from `nextId`. */
export function serialize(draft: Draft, nextId: () => number, indent?: string | number): string {
  const raws: string[] = []
  const token = `@@raw-${Math.random().toString(36).slice(2)}-`
  const text = JSON.stringify(
    draft,
    (_key, value: Draft) => {
      if (value instanceof FreshUpdateId) return nextId()
      if (value instanceof RawJson) return `${token}${raws.push(value.text) - 1}@@`
      return value
    },
    indent,
  )
  // JSON.stringify(undefined) is undefined; a draft is never undefined, but the type says it may be.
  return (text ?? '').replace(new RegExp(`"${token}(\\d+)@@"`, 'gu'), (_match, index: string) => raws[Number(index)] as string)
}

// ——— Arbitraries ———

// Characters that break naive text handling: NUL, lone surrogates, direction marks and overrides,
// joiners, BOM, line and paragraph separators, combining marks, flags, the highest code point.
const ODD_CHARACTERS = [
  '\u0000', '\u0007', '\u001b', '\uD800', '\uDBFF', '\uDC00', '\uDFFF', '\u200E', '\u200F', '\u202E', '\u2066', '\u2069',
  '\u200D', '\u200B', '\u2060', '\uFEFF', '\u2028', '\u2029', '\u0085', '\u00A0', '\uFFFD', '\uFFFF', '\u{10FFFF}',
  'e\u0301', '\u0301', '👩‍👩‍👧', '\u{1F1FA}\u{1F1F8}', '🏳️‍🌈', '"', '\\', '\n', '\r\n', '\t', '/', '</script>', 'İ', 'ß', 'ﷺ', '𒐫', 'مرحبا', '\u0000\u0000',
]
const oddCharacter = fc.constantFrom(...ODD_CHARACTERS)

/** Strings with odd Unicode: lone surrogates, RTL marks, zero-width joiners, NUL, anything. */
export const hostileString: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: fc.oneof(oddCharacter, fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 })), maxLength: 30 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.constantFrom('', ' ', '0', '-1', '5550001', 'null', 'true', '{}', '[]', 'NaN', 'Infinity', '__proto__', 'constructor'),
)

/** Numbers around every boundary that matters: the safe integer range, 32 and 64 bits, doubles. */
export const hostileNumber: fc.Arbitrary<number> = fc.oneof(
  fc.constantFrom(
    2 ** 53, 2 ** 53 + 2, -(2 ** 53), Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, -1, 0, -0, 0.5, -0.5, 1.5,
    1e308, -1e308, Number.MAX_VALUE, Number.MIN_VALUE, 2 ** 31, 2 ** 31 - 1, 2 ** 32, 2 ** 63, 2 ** 64, 1e21, 5550001, -1001234567890,
  ),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
)

/** Number literals a JSON parser must survive: overflow to Infinity, -0, precision loss, exponents. */
export const rawNumberLiteral: fc.Arbitrary<RawJson> = fc
  .constantFrom('1e400', '-1e400', '-0', '-0.0', '0e0', '1E2', '1.0', '100e-2', '9007199254740993', '123456789012345678901234567890', '4.9e-325', '0.1e1')
  .map((text) => new RawJson(text))

/** Any value a field might be replaced with. */
export const hostileValue: fc.Arbitrary<Draft> = fc.oneof(
  { arbitrary: fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<Draft>, weight: 3 },
  { arbitrary: fc.jsonValue({ maxDepth: 2, stringUnit: 'binary' }) as fc.Arbitrary<Draft>, weight: 1 },
  { arbitrary: hostileString, weight: 3 },
  { arbitrary: hostileNumber, weight: 3 },
  { arbitrary: rawNumberLiteral, weight: 1 },
  { arbitrary: fc.constantFrom<Draft>(null, true, false, [], {}, [null], { id: 5550001 }, { prototype: {} }), weight: 1 },
)

// Keys that mean something in an update, misspellings of them, and keys that mean something to JavaScript.
const hostileKey: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    'update_id', 'message', 'edited_message', 'channel_post', 'callback_query', 'chat', 'id', 'message_id', 'text', 'caption',
    'message_thread_id', 'is_topic_message', 'from', 'photo', 'voice', 'sticker', 'Message', 'TEXT', 'text\u0000', 'update_id ',
    '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', '',
  ),
  hostileString,
)

/** One change to a JSON tree; `at` picks the node (pre-order, modulo the tree's size). */
export type Mutation =
  | { readonly op: 'replace'; readonly at: number; readonly value: Draft }
  | { readonly op: 'delete'; readonly at: number }
  | { readonly op: 'add'; readonly at: number; readonly key: string; readonly value: Draft }
  | { readonly op: 'rename'; readonly at: number; readonly key: string }

export function mutationArbitrary(value: fc.Arbitrary<Draft>): fc.Arbitrary<Mutation> {
  const at = fc.nat()
  return fc.oneof(
    { arbitrary: fc.record({ op: fc.constant('replace' as const), at, value }), weight: 5 },
    { arbitrary: fc.record({ op: fc.constant('delete' as const), at }), weight: 2 },
    { arbitrary: fc.record({ op: fc.constant('add' as const), at, key: hostileKey, value }), weight: 2 },
    { arbitrary: fc.record({ op: fc.constant('rename' as const), at, key: hostileKey }), weight: 1 },
  )
}

interface Slot {
  readonly parent: Draft[] | { [key: string]: Draft } | undefined
  readonly key: string | number
  readonly node: Draft
}

function slotsOf(root: Draft): Slot[] {
  const slots: Slot[] = [{ parent: undefined, key: '', node: root }]
  for (let i = 0; i < slots.length; i++) {
    const { node } = slots[i] as Slot
    if (Array.isArray(node)) node.forEach((child, index) => slots.push({ parent: node, key: index, node: child }))
    else if (isRecord(node)) for (const key of Object.keys(node)) slots.push({ parent: node, key, node: node[key] as Draft })
  }
  return slots
}

/** Applies mutations to a copy of `draft`. */
export function mutate(draft: Draft, mutations: readonly Mutation[]): Draft {
  let root = copy(draft)
  for (const mutation of mutations) {
    const slots = slotsOf(root)
    const { parent, key, node } = slots[mutation.at % slots.length] as Slot
    switch (mutation.op) {
      case 'replace': {
        // A copy: generated values may be constants shared by every run, which a later mutation
        // would otherwise change (and could make cyclic) for all the runs after it.
        const value = copy(mutation.value)
        if (parent === undefined) root = value
        else if (Array.isArray(parent)) parent[key as number] = value
        else setOwn(parent, key as string, value)
        break
      }
      case 'delete':
        if (Array.isArray(parent)) parent.splice(key as number, 1)
        else if (parent !== undefined) delete parent[key as string]
        break
      case 'add':
        if (Array.isArray(node)) node.push(copy(mutation.value))
        else if (isRecord(node)) setOwn(node, mutation.key, copy(mutation.value))
        break
      case 'rename':
        if (parent !== undefined && !Array.isArray(parent)) {
          delete parent[key as string]
          setOwn(parent, mutation.key, node)
        }
        break
    }
  }
  return root
}

/** A real update with one to three fields anywhere in it replaced, removed, added or renamed. */
export const mutatedUpdate: fc.Arbitrary<Draft> = fc
  .tuple(anyRealUpdate, fc.array(mutationArbitrary(hostileValue), { minLength: 1, maxLength: 3 }))
  .map(([update, mutations]) => mutate(update, mutations))

// A field that is usually right and sometimes anything.
const mostly = <T extends Draft>(right: fc.Arbitrary<T>): fc.Arbitrary<Draft> =>
  fc.oneof({ arbitrary: right as fc.Arbitrary<Draft>, weight: 4 }, { arbitrary: hostileValue, weight: 1 })

/** Something shaped like a message, each field usually right: many are valid, many just miss. */
export const messageLike: fc.Arbitrary<Draft> = fc.record(
  {
    message_id: mostly(fc.integer({ min: 1, max: 2 ** 31 })),
    date: mostly(fc.integer({ min: 0, max: 2 ** 32 })),
    chat: mostly(fc.record({ id: mostly(fc.constantFrom(...ALLOWED_CHATS, 9990001, -4012345678)), type: mostly(fc.constantFrom('private', 'group', 'supergroup')) })),
    text: mostly(hostileString),
    caption: mostly(hostileString),
    message_thread_id: mostly(fc.integer({ min: 1, max: 100_000 })),
    is_topic_message: mostly(fc.boolean()),
  },
  { requiredKeys: [] },
)

/** Random JSON of any shape, and update-shaped junk with every field in doubt. */
export const randomBody: fc.Arbitrary<Draft> = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }) as fc.Arbitrary<Draft>,
  fc.jsonValue({ maxDepth: 3, stringUnit: 'grapheme' }) as fc.Arbitrary<Draft>,
  fc.record(
    {
      update_id: fc.oneof({ arbitrary: fc.constant<Draft>(FRESH_ID), weight: 3 }, { arbitrary: hostileValue, weight: 1 }),
      message: fc.oneof({ arbitrary: messageLike, weight: 3 }, { arbitrary: hostileValue, weight: 1 }),
      edited_message: messageLike,
      callback_query: hostileValue,
    },
    { requiredKeys: [] },
  ),
)

// ——— Requests ———

/** One header line: name and value. */
export type HeaderLine = readonly [name: string, value: string]

/** A webhook request, as sent: the body's bytes and the header lines that matter here. */
export interface WebhookRequest {
  readonly body: Buffer
  /** Content-Type header lines in order; none means no header. */
  readonly contentTypes: readonly string[]
  /** Secret header lines as [name, value]; several are several lines. */
  readonly secretHeaders: readonly HeaderLine[]
}

/** Telegram's secret header, as Telegram spells it (header names are case-insensitive). */
export const SECRET_HEADER_NAME = 'X-Telegram-Bot-Api-Secret-Token'

/** How the request reaches the service: `inject` hands header values over verbatim; real HTTP strips surrounding blanks. */
export type Transport = 'inject' | 'http'

/** What the service must do with a request. `accept` is a message it must store and schedule (200). */
export type Verdict =
  | { readonly status: 400 | 401 | 413 | 415; readonly why: string }
  | { readonly status: 200; readonly why: string; readonly accept?: ExpectedMessage }

export interface ExpectedMessage {
  readonly updateId: number
  readonly chatId: number
  readonly messageId: number
  /** The update as JSON.stringify writes it after JSON.parse; undefined when too deep to write. */
  readonly canonical: string | undefined
  /** A command ("/status"): the service may answer it itself instead of storing it. */
  readonly mayBypassInbox: boolean
  /** The text, for a plain text message a brain answers; undefined for media, commands and the like. */
  readonly plainText: string | undefined
}

export interface WebhookContract {
  readonly secret: string
  readonly allowedChats: ReadonlySet<number>
  /** The people who may talk (ALLOWED_USER_IDS): in a group, a message needs its sender here. */
  readonly allowedUsers: ReadonlySet<number>
  readonly bodyLimit: number
}

// Message fields the Bot API (10.1) calls service messages: Telegram's notes about the chat, never answered.
const SERVICE_KEYS = [
  'new_chat_members', 'left_chat_member', 'chat_owner_left', 'chat_owner_changed', 'new_chat_title', 'new_chat_photo', 'delete_chat_photo',
  'group_chat_created', 'supergroup_chat_created', 'channel_chat_created', 'message_auto_delete_timer_changed', 'migrate_to_chat_id',
  'migrate_from_chat_id', 'pinned_message', 'successful_payment', 'refunded_payment', 'users_shared', 'chat_shared', 'gift', 'unique_gift',
  'gift_upgrade_sent', 'connected_website', 'write_access_allowed', 'passport_data', 'proximity_alert_triggered', 'boost_added',
  'chat_background_set', 'checklist_tasks_done', 'checklist_tasks_added', 'direct_message_price_changed', 'forum_topic_created',
  'forum_topic_edited', 'forum_topic_closed', 'forum_topic_reopened', 'general_forum_topic_hidden', 'general_forum_topic_unhidden',
  'giveaway_created', 'giveaway_winners', 'giveaway_completed', 'managed_bot_created', 'paid_message_price_changed', 'poll_option_added',
  'poll_option_deleted', 'suggested_post_approved', 'suggested_post_approval_failed', 'suggested_post_declined', 'suggested_post_paid',
  'suggested_post_refunded', 'video_chat_scheduled', 'video_chat_started', 'video_chat_ended', 'video_chat_participants_invited', 'web_app_data',
]

const MEDIA_KEYS = ['photo', 'voice', 'audio', 'video', 'video_note', 'document', 'animation', 'sticker', 'location', 'venue', 'contact', 'poll', 'dice']
// Content a person sends that the service either hands to the brain or answers "can't handle".
const CONTENT_KEYS = [...MEDIA_KEYS, 'story', 'game', 'checklist', 'paid_media', 'invoice', 'giveaway']
// Deeper than this, JSON.stringify itself runs out of stack: such a body has no canonical text.
const CANONICAL_DEPTH = 1000
/** The service ignores updates nested deeper than this (README: hostile input). */
const MAX_TELEGRAM_DEPTH = 64

/**
 * How a correct webhook answers, from Telegram's contract and the README: the secret first (401,
 * before the body is read), then the transport (415 not JSON, 413 over the limit, 400 not JSON
 * text), then the Update contract (400 unless a JSON object with a non-negative safe-integer
 * update_id), and an authentic Update is answered 200 whatever it holds: ignored unless it is a
 * well-formed message (integer chat id, positive integer message id, text and caption strings if
 * present, integer thread id if present; null fields count as absent) from an allowed chat and,
 * in a group, a listed sender (a post as a chat, or via an inline bot, needs that chat or bot
 * listed), and is not a service message but something a person sends.
 *
 * Choices where the RFCs leave room, taken the lenient way a correct service may take them: the
 * media type is compared case-insensitively and its parameters ignored (RFC 8259 defines no
 * charset for JSON); a leading BOM is ignored (RFC 8259 §8.1 allows it); bytes that aren't UTF-8
 * decode to U+FFFD. Keys "__proto__", or "constructor" holding "prototype", are refused with 400.
 */
export function judge(request: WebhookRequest, contract: WebhookContract, transport: Transport): Verdict {
  const secrets = request.secretHeaders.filter(([name]) => name.toLowerCase() === SECRET_HEADER_NAME.toLowerCase())
  const given = secrets.map(([, value]) => (transport === 'http' ? value.replace(/^[ \t]+|[ \t]+$/gu, '') : value))
  if (given.length !== 1 || given[0] !== contract.secret) return { status: 401, why: 'no single, exact secret' }

  const contentType = request.contentTypes[0]
  if (contentType === undefined && request.body.length === 0) return { status: 400, why: 'no body' }
  if (contentType === undefined) return { status: 415, why: 'no content type' }
  const mediaType = (contentType.split(';')[0] ?? '').trim().toLowerCase()
  if (mediaType !== 'application/json') return { status: 415, why: `media type ${JSON.stringify(mediaType)}` }
  if (request.body.length > contract.bodyLimit) return { status: 413, why: `${request.body.length} bytes` }
  if (request.body.length === 0) return { status: 400, why: 'empty body' }

  let text = request.body.toString('utf8')
  if (text.startsWith('\uFEFF')) text = text.slice(1)
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    return { status: 400, why: 'not JSON' }
  }
  const { depth, poisoned } = inspect(body)
  if (poisoned) return { status: 400, why: 'prototype-poisoning key' }
  // Telegram's updates nest about a dozen levels; the service ignores anything past 64.
  const tooDeep = depth > MAX_TELEGRAM_DEPTH
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { status: 400, why: 'not an object' }
  const update = body as Record<string, unknown>
  const updateId = update['update_id']
  if (typeof updateId !== 'number' || !Number.isSafeInteger(updateId) || updateId < 0) return { status: 400, why: 'bad update_id' }

  if (tooDeep) return { status: 200, why: 'nested too deeply' }
  // Telegram leaves absent fields out; a null is taken as absent, at any depth.
  const cleaned = dropNulls(update) as Record<string, unknown>
  if (!Object.hasOwn(cleaned, 'message')) return { status: 200, why: 'not a message' }
  const message = cleaned['message']
  if (typeof message !== 'object' || message === null || Array.isArray(message)) return { status: 200, why: 'message not an object' }
  const fields = message as Record<string, unknown>
  const chat = fields['chat']
  const chatId = typeof chat === 'object' && chat !== null ? (chat as Record<string, unknown>)['id'] : undefined
  const messageId = fields['message_id']
  const { text: messageText, caption, message_thread_id: threadId } = fields
  const wellFormed =
    typeof chatId === 'number' && Number.isSafeInteger(chatId) &&
    typeof messageId === 'number' && Number.isSafeInteger(messageId) && messageId > 0 &&
    (messageText === undefined || typeof messageText === 'string') &&
    (caption === undefined || typeof caption === 'string') &&
    (threadId === undefined || Number.isSafeInteger(threadId))
  if (!wellFormed) return { status: 200, why: 'malformed message' }
  const listedChat = contract.allowedChats.has(chatId)
  const listedUser = (value: unknown): boolean =>
    typeof value === 'object' && value !== null && contract.allowedUsers.has((value as Record<string, unknown>)['id'] as number)
  const chatType = (chat as Record<string, unknown>)['type']
  if (chatType === undefined ? chatId > 0 : chatType === 'private') {
    if (!listedChat && !listedUser(fields['from'])) return { status: 200, why: 'private chat not allowed' }
  } else {
    if (!listedChat) return { status: 200, why: 'chat not allowed' }
    const senderChat = fields['sender_chat']
    if (senderChat !== undefined && !listedUser(senderChat)) return { status: 200, why: 'posted as a chat not listed' }
    if (fields['via_bot'] !== undefined && !listedUser(fields['via_bot'])) return { status: 200, why: 'via a bot not listed' }
    if (senderChat === undefined && !listedUser(fields['from'])) return { status: 200, why: 'sender not listed' }
  }
  // A service flag written false, or an id written 0, is no service message.
  if (SERVICE_KEYS.some((key) => Object.hasOwn(fields, key) && fields[key] !== false && fields[key] !== 0)) return { status: 200, why: 'service message' }
  const hasContent = typeof messageText === 'string' || typeof caption === 'string' || CONTENT_KEYS.some((key) => Object.hasOwn(fields, key))
  if (!hasContent) return { status: 200, why: 'nothing a person sends' }

  const isCommand = typeof messageText === 'string' && messageText.trim().startsWith('/')
  const isPlainText = typeof messageText === 'string' && !isCommand && !MEDIA_KEYS.some((key) => Object.hasOwn(fields, key))
  return {
    status: 200,
    why: 'message',
    accept: {
      updateId,
      chatId,
      messageId,
      canonical: depth < CANONICAL_DEPTH ? JSON.stringify(cleaned) : undefined,
      mayBypassInbox: isCommand,
      plainText: isPlainText ? messageText : undefined,
    },
  }
}

/** A copy without the object keys whose value is null (arrays keep their elements); for bodies at most 64 deep. */
function dropNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(dropNulls)
  if (typeof value !== 'object' || value === null) return value
  const result: Record<string, unknown> = {}
  for (const [key, field] of Object.entries(value)) {
    if (field !== null) Object.defineProperty(result, key, { value: dropNulls(field), enumerable: true, writable: true, configurable: true })
  }
  return result
}

/** Nesting depth, and whether a prototype-poisoning key is anywhere; iterative, for any depth. */
function inspect(root: unknown): { depth: number; poisoned: boolean } {
  let depth = 0
  let poisoned = false
  const stack: [unknown, number][] = [[root, 0]]
  while (stack.length > 0) {
    const [node, level] = stack.pop() as [unknown, number]
    if (typeof node !== 'object' || node === null) continue
    depth = Math.max(depth, level + 1)
    if (!Array.isArray(node)) {
      const constructorValue: unknown = Object.hasOwn(node, 'constructor') ? (node as Record<string, unknown>)['constructor'] : undefined
      if (Object.hasOwn(node, '__proto__')) poisoned = true
      if (typeof constructorValue === 'object' && constructorValue !== null && Object.hasOwn(constructorValue, 'prototype')) poisoned = true
    }
    for (const child of Object.values(node)) stack.push([child, level + 1])
  }
  return { depth, poisoned }
}

/** The update ids of stored messages, checked against what the oracle accepted, in order. */
export class AcceptedLedger {
  // Every accepted message, by update_id, in the order sent: duplicates included.
  readonly #byUpdate = new Map<number, ExpectedMessage[]>()
  count = 0

  record(expected: ExpectedMessage): void {
    const list = this.#byUpdate.get(expected.updateId) ?? []
    list.push(expected)
    this.#byUpdate.set(expected.updateId, list)
    this.count++
  }

  /** The message of each update_id that the service must have stored: the first that can't bypass the inbox. */
  has(updateId: number): boolean {
    return this.#byUpdate.has(updateId)
  }

  firstDeliveries(): ExpectedMessage[] {
    return [...this.#byUpdate.values()].flatMap((list) => list.find((message) => !message.mayBypassInbox) ?? [])
  }

  /**
   * Compares stored rows with what was accepted: every row is a message the oracle accepted (the
   * first of its update_id, or a command before it), and every message that must be stored is.
   * Returns the problems, empty when all is well.
   */
  audit(rows: readonly { updateId: number; chatId: number; messageId: number; updateJson: string }[]): string[] {
    const problems: string[] = []
    const seen = new Set<number>()
    for (const row of rows) {
      if (seen.has(row.updateId)) problems.push(`update ${row.updateId} stored twice`)
      seen.add(row.updateId)
      const list = this.#byUpdate.get(row.updateId)
      if (!list) {
        problems.push(`update ${row.updateId} stored but never accepted: ${row.updateJson.slice(0, 200)}`)
        continue
      }
      const firstRequired = list.findIndex((message) => !message.mayBypassInbox)
      const candidates = firstRequired === -1 ? list : list.slice(0, firstRequired + 1)
      const stored = canonicalOf(row.updateJson)
      const match = candidates.some(
        (message) =>
          message.chatId === row.chatId &&
          message.messageId === row.messageId &&
          (message.canonical === undefined || stored === undefined || message.canonical === stored),
      )
      if (!match) problems.push(`update ${row.updateId} stored as something else than was sent: ${row.updateJson.slice(0, 200)}`)
    }
    for (const message of this.firstDeliveries()) {
      if (!seen.has(message.updateId)) problems.push(`update ${message.updateId} accepted but not stored`)
    }
    return problems
  }
}

function canonicalOf(json: string): string | undefined {
  try {
    return JSON.stringify(JSON.parse(json))
  } catch {
    return undefined
  }
}

// ——— Raw HTTP ———

/** What came back on a raw connection: the first status line's code, or none (closed or timed out). */
export interface RawAnswer {
  readonly status: number | undefined
  readonly elapsedMs: number
  readonly head: string
}

/**
 * Writes `bytes` to a new connection and reads until the server closes it. `halfClose` ends the
 * writing side afterwards, as a client that gave up on a body would.
 */
export function sendRaw(url: string, bytes: Buffer, { halfClose = false, timeoutMs = 5000 } = {}): Promise<RawAnswer> {
  const { hostname, port } = new URL(url)
  const started = Date.now()
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), hostname)
    const chunks: Buffer[] = []
    const finish = (): void => {
      clearTimeout(timer)
      socket.destroy()
      const head = Buffer.concat(chunks).toString('latin1').split('\r\n')[0] ?? ''
      const match = /^HTTP\/1\.[01] (\d{3})/u.exec(head)
      resolve({ status: match ? Number(match[1]) : undefined, elapsedMs: Date.now() - started, head })
    }
    const timer = setTimeout(finish, timeoutMs)
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('error', finish)
    socket.on('close', finish)
    socket.write(bytes, () => {
      if (halfClose) socket.end()
    })
  })
}
