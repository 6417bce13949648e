// Formats one big reply off the service's event loop (see formatOffLoop in client.ts).
import { parentPort, workerData } from 'node:worker_threads'
import { formatReply } from './format.js'

parentPort?.postMessage(formatReply(workerData as string))
