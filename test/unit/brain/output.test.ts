import t from 'tap'
import { OutputHead, OutputTail } from '../../../src/brain/output.js'
import { STDERR_TAIL_BYTES, STDOUT_LIMIT_BYTES } from '../../../src/brain/run.js'

t.test("the README's limits: the reply is capped at 1 MiB, stderr keeps its last 8 KiB", async (t) => {
  t.equal(STDOUT_LIMIT_BYTES, 1024 * 1024)
  t.equal(STDERR_TAIL_BYTES, 8 * 1024)
})

t.test('OutputHead keeps the first bytes, counts them all, and says it cut', async (t) => {
  const head = new OutputHead(10)
  head.push(Buffer.from('hello '))
  t.equal(head.truncated, false)
  t.equal(head.text(), 'hello ')
  head.push(Buffer.from('world, and more'))
  t.equal(head.text(), 'hello worl')
  t.equal(head.totalBytes, 21)
  t.equal(head.truncated, true)
  head.push(Buffer.from('!'))
  t.equal(head.totalBytes, 22, 'the rest is counted, not kept')
})

t.test('OutputHead never ends in half a character', async (t) => {
  for (let limit = 1; limit <= 12; limit++) {
    const head = new OutputHead(limit)
    head.push(Buffer.from('aé🔧b😀'))
    const text = head.text()
    t.notMatch(text, /\uFFFD/u, `limit ${limit}: ${JSON.stringify(text)}`)
    t.ok(Buffer.byteLength(text) <= limit && 'aé🔧b😀'.startsWith(text))
  }
})

t.test('OutputTail keeps the last bytes of any number of chunks, never starting in half a character', async (t) => {
  const tail = new OutputTail(8)
  for (let i = 0; i < 1000; i++) tail.push(Buffer.from(`line ${i}\n`))
  t.equal(tail.text(), 'ine 999\n')
  for (let limit = 1; limit <= 12; limit++) {
    const cut = new OutputTail(limit)
    cut.push(Buffer.from('a😀é🔧'))
    const text = cut.text()
    t.notMatch(text, /\uFFFD/u, `limit ${limit}: ${JSON.stringify(text)}`)
    t.ok('a😀é🔧'.endsWith(text))
  }
  const short = new OutputTail(8)
  short.push(Buffer.from('ok'))
  t.equal(short.text(), 'ok', 'a short stream whole')
})
