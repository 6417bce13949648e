import t from 'tap'
import { renderReport, type Section } from '../../../bench/report.js'
import { summarize, withMissing } from '../../../bench/stats.js'

const section = (met: boolean): Section => ({
  title: '👀 latency',
  method: 'measured',
  body: 'a table',
  targets: [{ target: '👀 p99 ≤ 20 ms', measured: '12 ms', met, whenMissed: 'In this run: 3 of 1000 missing.' }],
})
const render = (sections: Section[]): string => renderReport({ sections, command: 'npm run bench', elapsedS: 60, loadAverage: [0.5, 0.7] })

t.test('a report whose targets were all met says nothing of a miss', async (t) => {
  const report = render([section(true)])
  t.notMatch(report, /miss/iu)
  t.notMatch(report, /not met/u)
  t.match(report, /\| 👀 p99 ≤ 20 ms \|\s+12 ms \|\s+met \|/u)
})

t.test('a missed target is listed with the numbers its own run measured', async (t) => {
  const report = render([section(false)])
  t.match(report, /### Missed in this run\n\n- \*\*👀 p99 ≤ 20 ms\*\*: 12 ms\. In this run: 3 of 1000 missing\./u)
  t.match(report, /\*\*not met\*\*/u)
})

t.test('what went missing ranks as infinitely slow, and is shown beside the percentile', async (t) => {
  const fast = Array.from({ length: 990 }, () => 5)
  const lost = summarize(fast, 10)
  t.equal(lost.n, 1000)
  t.equal(lost.p99, 5, '10 of 1000 missing: the 99th percentile still falls on a value')
  t.equal(summarize(fast, 11).p99, Number.POSITIVE_INFINITY, '11 of 1000 missing: it falls on a missing one')
  t.equal(withMissing(lost, lost.p99), '5.00 ms (10 of 1000 missing)')
  t.equal(withMissing(summarize(fast, 11), Number.POSITIVE_INFINITY), '∞ (11 of 1001 missing)')
  t.equal(withMissing(summarize(fast), 5), '5.00 ms', 'nothing missing, nothing added')
})
