// What both baselines hand the brain: the smallest envelope the test brain reads (see the README's
// brain protocol), and the two ways of waiting for it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import type { Update } from 'grammy/types'

/** The envelope fields test/fixtures/brain.mjs reads, for one text message. */
export function envelopeOf(update: Update): string {
  const message = update.message
  const text = message?.text ?? ''
  return JSON.stringify({
    version: 1,
    update_id: update.update_id,
    chat_id: message?.chat.id,
    message_id: message?.message_id,
    text,
    messages: [{ update_id: update.update_id, message_id: message?.message_id, text, edited: false, files: [] }],
    files: [],
    attempt: 1,
    redelivered: false,
    update,
  })
}

/** Runs the brain and blocks the whole process until it exits: the old loop's way. Returns stdout. */
export function runBrainBlocking(brain: string, update: Update): string {
  const result = spawnSync(brain, [], { input: envelopeOf(update), encoding: 'utf8' })
  return result.status === 0 ? result.stdout.trim() : `⚠️ brain exited ${result.status ?? result.signal}`
}

// Brains still running, so that a stopping baseline leaves none behind.
const running = new Set<ChildProcess>()

/** Kills the brains still running (on SIGTERM). */
export function killBrains(): void {
  for (const child of running) child.kill('SIGKILL')
}

/** Runs the brain and waits for it without blocking the event loop. Returns stdout. */
export function runBrainAwaited(brain: string, update: Update): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(brain, [], { stdio: ['pipe', 'pipe', 'ignore'] })
    running.add(child)
    child.once('exit', () => running.delete(child))
    let stdout = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.once('error', reject)
    child.once('close', (code, signal) => resolve(code === 0 ? stdout.trim() : `⚠️ brain exited ${code ?? signal}`))
    child.stdin.on('error', () => {})
    child.stdin.end(envelopeOf(update))
  })
}

export function requiredEnv(name: string): string {
  const value = process.env[name]
  if (!value) throw new Error(`baseline: ${name} is required`)
  return value
}
