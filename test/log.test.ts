import t from 'tap'
import { LogThrottle, REDACTED, redactor } from '../src/log.js'

t.test('redactor: every spelling of every secret, the longest first', async (t) => {
  const redact = redactor(['123456:ABC-def', 'hook_secret_0123456789', ''])
  t.equal(redact('GET http://x/bot123456:ABC-def/sendMessage'), `GET http://x/bot${REDACTED}/sendMessage`)
  t.equal(redact('url=http%3A%2F%2Fx%2Fbot123456%3AABC-def%2F'), `url=http%3A%2F%2Fx%2Fbot${REDACTED}%2F`, 'URL-encoded')
  t.equal(redact('a hook_secret_0123456789 and 123456:ABC-def'), `a ${REDACTED} and ${REDACTED}`)
  t.equal(redact('nothing to hide'), 'nothing to hide')
  t.equal(redactor([])('123456:ABC-def'), '123456:ABC-def', 'no secrets: the line as it is')
  const nested = redactor(['abc', 'abcdef'])
  t.equal(nested('xabcdefx'), `x${REDACTED}x`, 'a secret containing another is replaced whole')
})

t.test('LogThrottle: once per interval per key, a bounded number of keys, and the count held back', async (t) => {
  const throttle = new LogThrottle(60_000, 3)
  t.equal(throttle.admit('a', 0), 0, 'the first line of a key passes')
  t.equal(throttle.admit('a', 1000), false, 'the next within the interval is held back')
  t.equal(throttle.admit('a', 2000), false)
  t.equal(throttle.admit('b', 3000), 0)
  t.equal(throttle.admit('c', 4000), 0)
  t.equal(throttle.admit('d', 5000), false, 'past 3 keys an interval, new keys are held back too')
  t.equal(throttle.admit('a', 61_000), 2, 'a new interval lets it through, saying 2 were held back')
  t.equal(throttle.admit('a', 62_000), false)
  t.equal(throttle.admit('d', 62_000), 0, 'a new interval has room for new keys')
})
