import t from 'tap'
import { rssTrendPer10Min } from '../../../bench/soak/soak.js'

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
