import t from 'tap'
import { rssCheck, rssTrendPer10Min } from '../../../bench/soak/soak.js'

const minutes = (m: number): number => m * 60_000

t.test('the soak reports RSS growth as MB per 10 minutes, fitted through noise', async (t) => {
  // 1 MB a minute with ±3 MB of alternating noise: 10 MB per 10 minutes.
  const leaking = Array.from({ length: 30 }, (_, i) => ({ atMs: minutes(i + 1), rssMb: 120 + i + (i % 2 === 0 ? 3 : -3) }))
  const trend = rssTrendPer10Min(leaking)
  t.ok(trend !== undefined && Math.abs(trend - 10) < 1, `a leak of 1 MB/min reads as ${trend?.toFixed(2)} MB per 10 min`)
  const flat = Array.from({ length: 30 }, (_, i) => ({ atMs: minutes(i + 1), rssMb: i % 2 === 0 ? 130 : 126 }))
  t.ok(Math.abs(rssTrendPer10Min(flat) ?? 99) < 0.5, 'a steady service reads as flat')
  t.equal(rssTrendPer10Min(leaking.slice(0, 2)), undefined, 'too few readings give no trend')
})

t.test('a long soak passes on a settled heap whatever point of the sawtooth it ends on, and fails on a leak', async (t) => {
  const hour = minutes(60)
  // Every 10 s: a sawtooth that climbs to a plateau in the first ten minutes, then only saws.
  const settled = Array.from({ length: 360 }, (_, i) => ({ atMs: (i + 1) * 10_000, rssMb: Math.min(210, 105 + i) + (i % 30 < 15 ? 0 : 8) }))
  const [settledSays, settledOk] = rssCheck(settled, hour, 218, 103, 218)
  t.ok(settledOk, settledSays)
  t.match(settledSays, /^RSS not rising in the second half/u)
  // 2 MB a minute, all the way: 20 MB per 10 minutes.
  const leaking = Array.from({ length: 360 }, (_, i) => ({ atMs: (i + 1) * 10_000, rssMb: 105 + (i / 6) * 2 }))
  const [leakSays, leakOk] = rssCheck(leaking, hour, 225, 103, 225)
  t.notOk(leakOk, leakSays)
  // A one-minute soak has too few late readings: it is judged by where it ends.
  const short = settled.slice(0, 6)
  t.same(rssCheck(short, minutes(1), 120, 103, 125), ['RSS near its warmed-up level: 120 MB (warm 103 MB, max 125 MB)', true])
  t.notOk(rssCheck(short, minutes(1), 200, 103, 200)[1], 'and fails far above the warm level')
})
