// Throughput, ring side, producer: copies frames of `size` bytes into the ring (stamping each
// with its sequence number) as fast as the ring takes them, for `durationMs`, then closes it.

import { Ring } from '../../../engine/kkcm/ring.ts'
import { pairWorker, runPairWorker } from '../../lib/pair-worker.ts'
import { absNow } from '../../lib/stats.ts'

export interface RingThroughputData {
  sab: SharedArrayBuffer
  size: number
  durationMs: number
  /** Producer's publish batch (RingOptions.publishBatchBytes); the ring's default when absent. */
  publishBatchBytes?: number
  /** Spin tuning for both sides; defaults when absent. */
  spin?: { spinUs?: number; spinFloorUs?: number }
}

runPairWorker(async () => {
  const w = pairWorker<RingThroughputData>()
  const { size, durationMs } = w.data
  const ring = Ring.attach(w.data.sab, 0, { publishBatchBytes: w.data.publishBatchBytes, ...w.data.spin })
  const src = new Uint8Array(size).map((_, i) => (i * 7) & 255)
  const srcWords = new Uint32Array(src.buffer)
  await w.start()
  const t0 = absNow()
  const end = performance.now() + durationMs
  let n = 0
  for (;;) {
    for (let k = 0; k < 256; k++) {
      srcWords[0] = n
      let off = ring.reserve(size)
      while (off < 0) {
        await ring.writable()
        off = ring.reserve(size)
      }
      ring.bytes.set(src, off)
      ring.commit()
      n++
    }
    if (performance.now() >= end) break
  }
  ring.close()
  w.report({ sent: n, t0, full: ring.stats().full, parks: ring.stats().parks })
})
