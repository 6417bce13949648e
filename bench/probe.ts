// A /healthz poller in its own process, so that the load generator's busy event loop never shows up
// in the health check's latency. Prints one JSON line when done: {msg: "probe", latencies, failures}.
//   node build/bench/probe.js URL RATE_PER_S DURATION_S
import http from 'node:http'
import { performance } from 'node:perf_hooks'

const [url = '', rateText = '20', durationText = '10'] = process.argv.slice(2)
const periodMs = 1000 / Number(rateText)
const durationMs = Number(durationText) * 1000
// One kept-alive connection, as a monitoring agent keeps; a second opens only if a check overruns.
const agent = new http.Agent({ keepAlive: true })

function check(): Promise<number | undefined> {
  const started = performance.now()
  return new Promise((resolve) => {
    const request = http.get(url, { agent }, (response) => {
      response.resume()
      response.on('end', () => resolve(response.statusCode === 200 ? performance.now() - started : undefined))
    })
    request.on('error', () => resolve(undefined))
  })
}

const latencies: number[] = []
let failures = 0
const pending: Promise<void>[] = []
const start = performance.now()
for (let i = 0; ; i++) {
  const due = start + i * periodMs
  if (due - start >= durationMs) break
  const wait = due - performance.now()
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
  pending.push(
    check().then((ms) => {
      if (ms === undefined) failures++
      else latencies.push(ms)
    }),
  )
}
await Promise.all(pending)
agent.destroy()
process.stdout.write(`${JSON.stringify({ level: 30, msg: 'probe', time: Date.now(), latencies, failures })}\n`)
