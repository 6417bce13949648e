import t from 'tap'
import { Fifo } from '../../../src/dispatch/fifo.js'

t.test('first in, first out, with size and peek', async (t) => {
  const fifo = new Fifo<number>()
  t.equal(fifo.size, 0)
  t.equal(fifo.shift(), undefined, 'an empty line gives nothing')
  for (const n of [1, 2, 3]) fifo.push(n)
  t.equal(fifo.peek(), 1)
  t.equal(fifo.size, 3)
  t.same([fifo.shift(), fifo.shift()], [1, 2])
  fifo.push(4)
  t.same([fifo.shift(), fifo.shift(), fifo.shift()], [3, 4, undefined])
  t.equal(fifo.size, 0)
})

t.test('a long line keeps its order across compactions, and shift stays cheap', async (t) => {
  const fifo = new Fifo<number>()
  let next = 0
  while (next < 300_000) fifo.push(next++)
  const started = performance.now()
  let expected = 0
  let outOfOrder = 0
  // Take two, add one, so the front is dropped and compacted many times over while the line lives.
  while (fifo.size > 0) {
    for (let i = 0; i < 2 && fifo.size > 0; i++) if (fifo.shift() !== expected++) outOfOrder++
    if (next < 450_000) fifo.push(next++)
  }
  const tookMs = performance.now() - started
  t.equal(outOfOrder, 0, 'every item came out in the order it went in')
  t.equal(expected, 450_000, 'and every one came out')
  // An Array#shift line this long would move about 10^10 items; the FIFO takes milliseconds.
  t.ok(tookMs < 2000, `draining 450,000 items took ${tookMs.toFixed(0)} ms`)
})
