// The naive replicator a user might write instead of SDRL (bench only): one postMessage per record
// to the secondary, and the record goes on (to the host, standing in for the transport) when that
// record's own reply comes back. In-flight records are capped so memory stays bounded.
import { parentPort, workerData } from 'node:worker_threads'
import type { MessagePort } from 'node:worker_threads'

const { port, size, count, window } = workerData as { port: MessagePort; size: number; count: number; window: number }
const record = new Uint8Array(size).fill(0x2a)
const pending: Uint8Array[] = []
let total = 0 // records sent in all
let sent = 0 // records sent, counted from pending[0]
let head = 0
const pump = (): void => {
  while (total < count && sent - head < window) {
    const copy = record.slice()
    pending.push(copy)
    port.postMessage(copy)
    sent++
    total++
  }
}
port.on('message', () => {
  const rec = pending[head]
  pending[head++] = undefined as unknown as Uint8Array
  parentPort!.postMessage(rec)
  if (head > 4096 && head * 2 > pending.length) {
    pending.splice(0, head)
    sent -= head
    head = 0
  }
  pump()
})
parentPort!.once('message', () => pump())
