// RTT, ring side, pinger: sends a 64-byte frame on side 'a' of a channel and waits (spin, then
// park) for the peer's 16-byte ack; records each round trip in microseconds.

import { openEndpoint } from '../../../engine/kkcm/channel.ts'
import { pairWorker, runPairWorker } from '../../lib/pair-worker.ts'

export interface RttData {
  sab?: SharedArrayBuffer
  warmup: number
  maxSamples: number
  durationMs: number
  /** Ring options for both sides (spin tuning); defaults when absent. */
  ring?: { spinUs?: number; spinFloorUs?: number }
}

runPairWorker(async () => {
  const w = pairWorker<RttData>()
  const { warmup, maxSamples, durationMs } = w.data
  const ep = openEndpoint(w.data.sab!, 'a', w.data.ring)
  const frame = new Uint8Array(64)
  const samples = new Float64Array(maxSamples)
  let acks = 0
  const onAck = (): void => {
    acks++
  }
  await w.start()
  let n = 0
  let end = Number.POSITIVE_INFINITY
  for (let i = 0; n < maxSamples && performance.now() < end; i++) {
    if (i === warmup) end = performance.now() + durationMs
    const t = performance.now()
    ep.tx.send(frame)
    while (ep.rx.drain(onAck) === 0) await ep.rx.readable()
    const us = (performance.now() - t) * 1000
    if (i >= warmup) samples[n++] = us
  }
  ep.close()
  w.report({ samples: samples.subarray(0, n), acks, parks: ep.rx.stats().parks })
})
