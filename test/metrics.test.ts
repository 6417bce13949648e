// GET /metrics of the real service process (against the emulator): the counters, histograms and
// gauges move with what happens, and Node's default metrics are there.
import t from 'tap'
import { SECRET, delay, eventually, readBrainLog, startStack, type Stack } from './helpers/service.js'

interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

/** Prometheus' text format, samples only. */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$/u.exec(line)
    if (!match) continue
    const labels: Record<string, string> = {}
    for (const [, key, value] of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/gu)) labels[key as string] = value as string
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) })
  }
  return samples
}

class Scrape {
  readonly samples: Sample[]
  constructor(readonly text: string) {
    this.samples = parseMetrics(text)
  }

  /** The sample with this name whose labels include `labels`; 0 when there is none (a counter not yet incremented). */
  value(name: string, labels: Record<string, string> = {}): number {
    const matching = this.samples.filter(
      (sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value),
    )
    if (matching.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${matching.length} samples`)
    return matching[0]?.value ?? 0
  }

  has(name: string): boolean {
    return this.samples.some((sample) => sample.name === name)
  }
}

async function scrape(stack: Stack): Promise<Scrape> {
  const response = await fetch(`${stack.svc.url}/metrics`)
  if (response.status !== 200) throw new Error(`GET /metrics answered ${response.status}`)
  return new Scrape(await response.text())
}

/** Scrapes until `check` holds; returns that scrape. */
async function scrapeUntil(stack: Stack, check: (scrape: Scrape) => boolean, what: string, timeoutMs = 15_000): Promise<Scrape> {
  const until = Date.now() + timeoutMs
  for (;;) {
    const current = await scrape(stack)
    if (check(current)) return current
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last scrape:\n${current.text}`)
    await delay(50)
  }
}

const postUpdate = (stack: Stack, update: unknown, secret: string): Promise<Response> =>
  fetch(`${stack.svc.url}/telegram/webhook`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-telegram-bot-api-secret-token': secret },
    body: JSON.stringify(update),
  })

const ACCEPTED = { outcome: 'accepted' }
const DUPLICATE = { outcome: 'duplicate' }
const BAD_SECRET = { outcome: 'rejected', reason: 'bad_secret' }

t.test('the metrics move with updates, brain runs, Telegram errors and the queue', async (t) => {
  const stack = await startStack()
  t.teardown(() => stack.close())
  const { emu } = stack
  const repliesTo = (chatId: number): number =>
    emu.callsOf('sendMessage').filter((call) => call.ok && call.params['chat_id'] === chatId).length

  const before = await scrape(stack)
  for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
    t.ok(before.has(name), `default metric ${name}`)
  }
  t.equal(before.value('coordinator_brains_running'), 0)
  t.equal(before.value('coordinator_messages_queued'), 0)

  // One message whose 👀 fails at Telegram (500), one that succeeds, one whose brain fails.
  emu.injectFault('setMessageReaction', { kind: 'server_error' }, { times: 1 })
  const faulted = emu.sendText({ chatId: 7001, text: 'first' })
  await eventually(() => repliesTo(7001) === 1, 15_000, 'the reply in chat 7001')
  const ok = emu.sendText({ chatId: 7001, text: 'second' })
  await eventually(() => repliesTo(7001) === 2, 15_000, 'the second reply in chat 7001')
  emu.sendText({ chatId: 7002, text: 'exit=3' })
  await scrapeUntil(stack, (current) => current.value('coordinator_brain_runs_total', { outcome: 'failed' }) > 0, 'a failed run')

  // The same update again (Telegram re-sending it), and a request without the right secret.
  t.equal((await postUpdate(stack, ok, SECRET)).status, 200, 'a duplicate is answered 200')
  t.equal((await postUpdate(stack, faulted, 'not-the-secret')).status, 401)

  // The last 👀 is confirmed asynchronously; wait for it rather than race it.
  const after = await scrapeUntil(stack, (current) => current.value('coordinator_ack_latency_seconds_count') - before.value('coordinator_ack_latency_seconds_count') >= 2, 'two 👀 timed')
  const delta = (name: string, labels: Record<string, string> = {}): number => after.value(name, labels) - before.value(name, labels)
  t.equal(delta('coordinator_updates_total', ACCEPTED), 3, 'three updates accepted')
  t.equal(delta('coordinator_updates_total', DUPLICATE), 1, 'one duplicate')
  t.equal(delta('coordinator_updates_total', BAD_SECRET), 1, 'one bad secret')
  t.equal(delta('coordinator_brain_runs_total', { outcome: 'done' }), 2, 'two runs done')
  t.ok(delta('coordinator_brain_runs_total', { outcome: 'failed' }) >= 1, 'the exit=3 run failed')
  const runs = delta('coordinator_brain_runs_total', { outcome: 'done' }) + delta('coordinator_brain_runs_total', { outcome: 'failed' })
  t.equal(delta('coordinator_brain_duration_seconds_count'), runs, 'every run timed')
  t.equal(after.value('coordinator_telegram_api_errors_total', { method: 'setMessageReaction', code: '500' }), 1, 'the failed 👀 is counted')
  t.equal(delta('coordinator_ack_latency_seconds_count'), 2, 'two 👀 confirmed (the failed one is not timed)')
  t.ok(after.value('coordinator_ack_latency_seconds_sum') > 0)
  // Three deliveries, the duplicate, the bad secret; scrapes are not webhook requests.
  t.equal(delta('coordinator_webhook_answer_seconds_count'), 5, 'every webhook request timed')
  t.equal(after.value('coordinator_webhook_answer_seconds_bucket', { le: '+Inf' }), after.value('coordinator_webhook_answer_seconds_count'))

  // The gauges, while a slow brain runs and another message of its chat waits behind it.
  const slow = emu.sendText({ chatId: 7003, text: 'sleep=4 slow' })
  const behindSentAt = Date.now()
  emu.sendText({ chatId: 7003, text: 'behind' })
  await eventually(() => readBrainLog(stack.brainLog).some((event) => event['ev'] === 'start' && event['update_id'] === slow.update_id), 15_000, 'the slow brain to start')
  const busy = await scrapeUntil(stack, (current) => current.value('coordinator_messages_queued') === 1, 'the second message queued', 5_000)
  t.equal(busy.value('coordinator_brains_running'), 1, 'one brain running')
  t.equal(busy.value('coordinator_messages_queued'), 1, 'one message waiting for it')
  // The waiting message ages while the slow brain runs: the gauge must grow with it, never past it.
  const aged = await scrapeUntil(stack, (current) => current.value('coordinator_oldest_queued_age_seconds') >= 1, 'the queued message to be a second old', 3_000)
  const age = aged.value('coordinator_oldest_queued_age_seconds')
  const trueAge = (Date.now() - behindSentAt) / 1000
  t.ok(age >= 1 && age <= trueAge + 0.5, `oldest queued age ${age} s, for a message sent ${trueAge.toFixed(2)} s ago`)

  await eventually(() => repliesTo(7003) === 2, 20_000, 'both replies in chat 7003')
  const idle = await scrapeUntil(stack, (current) => current.value('coordinator_brains_running') === 0, 'no brain running', 5_000)
  t.equal(idle.value('coordinator_messages_queued'), 0)
  t.equal(idle.value('coordinator_oldest_queued_age_seconds'), 0)
})
