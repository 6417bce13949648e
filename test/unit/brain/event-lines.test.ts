import { pino } from 'pino'
import t from 'tap'
import { EVENT_LINE_LIMIT_BYTES, EVENT_VOLUME_LIMIT_BYTES, EventLines } from '../../../src/brain/event-lines.js'

/** EventLines with what it handed on and what it warned about. */
function lines() {
  const events: unknown[] = []
  const warnings: string[] = []
  const log = pino({ level: 'warn' }, { write: (line: string) => void warnings.push((JSON.parse(line) as { msg: string }).msg) })
  const parser = new EventLines((event) => events.push(event), log)
  return { parser, events, warnings }
}

/** A JSON event line of exactly `bytes` bytes, newline not counted. */
function lineOf(bytes: number): string {
  const empty = JSON.stringify({ type: 'progress', text: '' })
  return JSON.stringify({ type: 'progress', text: 'x'.repeat(bytes - empty.length) })
}

t.test('the README\'s 64 KiB: a line of exactly 64 KiB is an event, one byte more is skipped whole', async (t) => {
  t.equal(EVENT_LINE_LIMIT_BYTES, 64 * 1024)
  const { parser, events, warnings } = lines()
  const atLimit = lineOf(EVENT_LINE_LIMIT_BYTES)
  const overLimit = lineOf(EVENT_LINE_LIMIT_BYTES + 1)
  t.equal(Buffer.byteLength(atLimit), 65_536)
  // Written in small chunks, as a pipe delivers a long line.
  const input = Buffer.from(`${atLimit}\n${overLimit}\n{"type":"after"}\n`)
  for (let start = 0; start < input.length; start += 4096) parser.push(input.subarray(start, start + 4096))
  t.equal(events.length, 2)
  t.equal((events[0] as { text: string }).text.length, EVENT_LINE_LIMIT_BYTES - 29, 'the 64 KiB line, whole')
  t.same(events[1], { type: 'after' }, 'the line after the skipped one is read')
  t.same(warnings, ['progress line longer than 65536 bytes skipped'])
})

t.test('a line split anywhere, even inside a character, is one event', async (t) => {
  const line = Buffer.from('{"type":"progress","text":"🔧 ünïcode"}\n')
  for (let cut = 1; cut < line.length; cut++) {
    const { parser, events } = lines()
    parser.push(line.subarray(0, cut))
    parser.push(line.subarray(cut))
    t.same(events, [{ type: 'progress', text: '🔧 ünïcode' }], `cut at byte ${cut}`)
  }
})

t.test('the last line counts without its newline, once the stream ends', async (t) => {
  const { parser, events } = lines()
  parser.push(Buffer.from('{"type":"a"}\n{"type":"b"}'))
  t.same(events, [{ type: 'a' }])
  parser.end()
  t.same(events, [{ type: 'a' }, { type: 'b' }])
})

t.test('bad lines are skipped with a warning; blank lines silently; a throwing handler loses only its event', async (t) => {
  const { parser, events, warnings } = lines()
  const log = pino({ level: 'warn' }, { write: (line: string) => void warnings.push((JSON.parse(line) as { msg: string }).msg) })
  const throwing = new EventLines(() => {
    throw new Error('handler bug')
  }, log)
  parser.push(Buffer.from('not json\n[1,2]\n"text"\n\n   \n{"type":"ok"}\n'))
  throwing.push(Buffer.from('{"type":"boom"}\n'))
  t.same(events, [{ type: 'ok' }])
  t.same(warnings, [
    'progress line is not JSON; skipped',
    'progress line is not a JSON object; skipped',
    'progress line is not a JSON object; skipped',
    'progress event handler threw; event dropped',
  ])
})

t.test('at most 10 warnings an attempt, the tenth saying so', async (t) => {
  const { parser, warnings } = lines()
  parser.push(Buffer.from('bad\n'.repeat(25)))
  t.equal(warnings.length, 10)
  t.match(warnings[9], /further progress warnings for this attempt suppressed/u)
})

t.test('after 16 MiB of events, the rest of fd 3 is drained unread', async (t) => {
  t.equal(EVENT_VOLUME_LIMIT_BYTES, 16 * 1024 * 1024)
  const { parser, events, warnings } = lines()
  const line = Buffer.from(`${lineOf(EVENT_LINE_LIMIT_BYTES)}\n`)
  // 255 lines of 64 KiB and their newlines fit in 16 MiB; the 256th goes over.
  for (let count = 0; count < 256; count++) parser.push(line)
  t.equal(events.length, 255, 'every line within the 16 MiB')
  parser.push(Buffer.from('{"type":"late"}\n'))
  parser.end()
  t.equal(events.length, 255, 'nothing after it')
  t.same(warnings, ['more than 16777216 bytes of progress; ignoring the rest of fd 3'])
})
