// RTT, postMessage side, pinger: posts a 64-byte Uint8Array to the peer worker and awaits its
// 16-byte answer; records each round trip in microseconds.

import { pairWorker, runPairWorker } from '../../lib/pair-worker.ts'
import type { RttData } from './ring-ping.ts'

runPairWorker(async () => {
  const w = pairWorker<RttData>()
  const { warmup, maxSamples, durationMs } = w.data
  const port = w.peer
  const frame = new Uint8Array(64)
  const samples = new Float64Array(maxSamples)
  let resolveAck: (() => void) | null = null
  port.on('message', () => resolveAck?.())
  await w.start()
  let n = 0
  let end = Number.POSITIVE_INFINITY
  for (let i = 0; n < maxSamples && performance.now() < end; i++) {
    if (i === warmup) end = performance.now() + durationMs
    const t = performance.now()
    const acked = new Promise<void>((r) => (resolveAck = r))
    port.postMessage(frame)
    await acked
    const us = (performance.now() - t) * 1000
    if (i >= warmup) samples[n++] = us
  }
  port.postMessage('end')
  port.close()
  w.report({ samples: samples.subarray(0, n) })
})
