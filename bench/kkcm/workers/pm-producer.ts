// Throughput, postMessage side, producer: posts `size`-byte Uint8Arrays (structured clone, one
// copy) to the peer worker for `durationMs`, keeping at most a window of unacknowledged messages
// in flight so memory stays bounded, then posts 'end'.

import { pairWorker, runPairWorker } from '../../lib/pair-worker.ts'
import { absNow } from '../../lib/stats.ts'

export interface PmThroughputData {
  size: number
  durationMs: number
  window: number
}

runPairWorker(async () => {
  const w = pairWorker<PmThroughputData>()
  const { size, durationMs, window } = w.data
  const port = w.peer
  const src = new Uint8Array(size).map((_, i) => (i * 7) & 255)
  const srcWords = new Uint32Array(src.buffer)
  let acked = 0
  let wake: (() => void) | null = null
  port.on('message', (m: number) => {
    acked = m
    if (wake) {
      const f = wake
      wake = null
      f()
    }
  })
  await w.start()
  const t0 = absNow()
  const end = performance.now() + durationMs
  let n = 0
  for (;;) {
    while (n - acked >= window) await new Promise<void>((r) => (wake = r))
    srcWords[0] = n
    port.postMessage(src)
    n++
    if ((n & 255) === 0 && performance.now() >= end) break
  }
  port.postMessage('end')
  port.close()
  w.report({ sent: n, t0 })
})
