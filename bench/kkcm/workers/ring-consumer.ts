// Throughput, ring side, consumer: drains frames in place (zero copy), checking each frame's
// sequence stamp, until the producer closes the ring.

import { Ring } from '../../../engine/kkcm/ring.ts'
import { pairWorker, runPairWorker } from '../../lib/pair-worker.ts'
import { absNow } from '../../lib/stats.ts'
import type { RingThroughputData } from './ring-producer.ts'

runPairWorker(async () => {
  const w = pairWorker<RingThroughputData>()
  const ring = Ring.attach(w.data.sab, 0, w.data.spin)
  const words = new Uint32Array(ring.sab, ring.bytes.byteOffset, ring.capacity / 4)
  let expect = 0
  let bad = 0
  const onFrame = (_b: Uint8Array, off: number): void => {
    if (words[off >> 2] !== expect >>> 0) bad++
    expect++
  }
  await w.start()
  for (;;) {
    if (ring.drain(onFrame) > 0) continue
    if (ring.closed && ring.isEmpty()) break
    await ring.readable()
  }
  w.report({ received: expect, bad, tEnd: absNow() })
})
