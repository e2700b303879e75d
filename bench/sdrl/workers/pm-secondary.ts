// The naive replicator's secondary (bench only): keeps each record and replies to it.
import { workerData } from 'node:worker_threads'
import type { MessagePort } from 'node:worker_threads'

const { port } = workerData as { port: MessagePort }
let kept = 0
port.on('message', (rec: Uint8Array) => {
  kept += rec.length
  port.postMessage(1)
})
