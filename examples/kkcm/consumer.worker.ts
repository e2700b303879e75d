// KKCM demo, consumer worker: reads the records in place with a MessageReader, checks that the
// sequence numbers arrive in order and each payload matches its header, until the ring closes.

import { parentPort, workerData } from 'node:worker_threads'
import { openEndpoint } from '../../engine/kkcm/channel.ts'
import { MessageReader } from '../../engine/kkcm/message.ts'

const { sab } = workerData as { sab: SharedArrayBuffer }
// loaded: tell the host, and start when it says go (so start-up does not count in the rate)
await new Promise<void>((resolve) => {
  parentPort!.once('message', () => resolve())
  parentPort!.postMessage('ready')
})
const ep = openEndpoint(sab, 'b')
let expected = 0
let bad = 0
let bytes = 0
const reader = new MessageReader(ep.rx, (h, b, off) => {
  const view = ep.rx.view
  if (h.seq !== expected || view.getUint32(off, true) !== expected || b[off + h.length - 1] !== (expected & 255)) bad++
  expected = (expected + 1) >>> 0
  bytes += h.length
})
await reader.pump()
parentPort!.postMessage({ records: expected, bytes, bad, rejects: reader.rejects.total })
parentPort!.on('message', () => {})
