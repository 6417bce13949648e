import { Worker } from 'node:worker_threads'
import t from 'tap'
import { anonymousOf } from '../../../bench/harness.js'
import { statusKb } from '../../helpers/proc.js'

// The memory benchmark splits the service's anonymous memory by who maps it; checked on this very
// process, which has a main arena and, once another thread has malloc'd, a thread arena.

t.test("a process's anonymous memory splits into malloc's main arena, its thread arenas and the rest", async (t) => {
  // A worker thread: a V8 isolate of its own, set up with malloc on its own thread, hence its own arena.
  const worker = new Worker('setTimeout(() => {}, 60_000)', { eval: true })
  await new Promise((resolve) => worker.once('online', resolve))
  t.teardown(() => worker.terminate())

  const split = anonymousOf(process.pid)
  const rssAnonMB = (statusKb(process.pid, 'RssAnon') * 1024) / 1e6
  const sum = split.mainArenaMB + split.threadArenasMB + split.otherMB
  t.comment(`main arena ${split.mainArenaMB.toFixed(1)} MB, thread arenas ${split.threadArenasMB.toFixed(1)} MB, rest ${split.otherMB.toFixed(1)} MB; RssAnon ${rssAnonMB.toFixed(1)} MB`)
  t.ok(split.mainArenaMB > 0, 'the main arena ([heap]) is found')
  t.ok(split.threadArenasMB > 0, 'the thread arenas (64 MiB-aligned heaps) are found')
  t.ok(split.otherMB > split.threadArenasMB, "V8's heap, outside the arenas, is the biggest part")
  // RssAnon also counts the copied-on-write pages of mapped files (libraries' data), left out of the split.
  t.ok(sum <= rssAnonMB + 1 && sum >= rssAnonMB - 8, `the parts (${sum.toFixed(1)} MB) add up to RssAnon (${rssAnonMB.toFixed(1)} MB) but for mapped files' private pages`)
})
