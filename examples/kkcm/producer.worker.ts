// KKCM demo, producer worker: writes REPLICATE records (a header and a 16..512-byte payload whose
// first word is the record's sequence number) on the channel's a->b ring until the ring closes.

import { parentPort, workerData } from 'node:worker_threads'
import { openEndpoint } from '../../engine/kkcm/channel.ts'
import { reserveMessage } from '../../engine/kkcm/message.ts'
import { RingResult } from '../../engine/kkcm/ring.ts'
import { MsgType } from '../../engine/protocol/header.ts'

const { sab } = workerData as { sab: SharedArrayBuffer }
// loaded: tell the host, and start when it says go (so start-up does not count in the rate)
await new Promise<void>((resolve) => {
  parentPort!.once('message', () => resolve())
  parentPort!.postMessage('ready')
})
const ep = openEndpoint(sab, 'a')
const tx = ep.tx
let seq = 0
let bytes = 0
let rnd = 0x2545f491
for (;;) {
  rnd ^= rnd << 13
  rnd ^= rnd >>> 17
  rnd ^= rnd << 5
  const len = 16 + ((rnd >>> 0) % 497)
  const off = reserveMessage(tx, MsgType.REPLICATE, 0, 1, seq, 0, 0, len)
  if (off === RingResult.CLOSED) break
  if (off === RingResult.FULL) {
    await tx.writable()
    continue
  }
  tx.view.setUint32(off, seq, true)
  tx.bytes.fill(seq & 255, off + 4, off + len)
  tx.commit()
  seq = (seq + 1) >>> 0
  bytes += len
}
parentPort!.postMessage({ records: seq, bytes })
parentPort!.on('message', () => {}) // stay up until the host terminates us
