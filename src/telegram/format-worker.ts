// Formats one reply off the service's event loop (see format-off-loop.ts).
import fs from 'node:fs'
import os from 'node:os'
import { parentPort, workerData } from 'node:worker_threads'
import { formatReply } from './format.js'

lowerPriority()
parentPort?.postMessage(formatReply(workerData as string))

/**
 * Pathological Markdown keeps this thread busy until the time limit; at the lowest priority it
 * takes only CPU the event loop does not need, so webhooks are answered meanwhile. On Linux a
 * thread has its own id and nice value (/proc/thread-self names it); elsewhere this is skipped.
 */
function lowerPriority(): void {
  try {
    const threadId = Number(fs.readlinkSync('/proc/thread-self').split('/').at(-1))
    if (Number.isInteger(threadId) && threadId > 0) os.setPriority(threadId, os.constants.priority.PRIORITY_LOW)
  } catch {
    // Not Linux, or not allowed: the time limit still bounds the thread.
  }
}
