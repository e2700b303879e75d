// Round-trip time between two worker threads: a 64-byte frame out, a 16-byte ack back. The KKCM
// channel (spin briefly, then park) against postMessage, side by side. Figures:
// kkcm.ring.rtt_us.p50/p99, kkcm.postmessage.rtt_us.p50/p99, kkcm.postmessage_vs_ring.rtt_p50.

import { createChannelSab } from '../../engine/kkcm/channel.ts'
import { runWorkerPair } from '../lib/pair.ts'
import type { Progress } from '../lib/progress.ts'
import { sig, summarize } from '../lib/stats.ts'
import type { RttData } from './workers/ring-ping.ts'

const url = (f: string): URL => new URL(`./workers/${f}`, import.meta.url)
const CHANNEL_CAPACITY_BYTES = 1 << 16

export default async function rtt({ progress }: { progress: Progress }): Promise<Record<string, number>> {
  const ringData: RttData = { sab: createChannelSab(CHANNEL_CAPACITY_BYTES), warmup: 5000, maxSamples: 200_000, durationMs: 1500 }
  const [ringPing] = await runWorkerPair<{ samples: Float64Array; parks: number }>({ a: url('ring-ping.ts'), b: url('ring-echo.ts'), data: ringData })
  const ring = summarize(ringPing.samples)
  progress(`ring RTT: p50 ${ring.p50.toFixed(2)} us, p99 ${ring.p99.toFixed(2)} us over ${ring.count} round trips (${ringPing.parks} parks)`)

  const pmData: RttData = { warmup: 1000, maxSamples: 50_000, durationMs: 1500 }
  const [pmPing] = await runWorkerPair<{ samples: Float64Array }>({ a: url('pm-ping.ts'), b: url('pm-echo.ts'), data: pmData })
  const pm = summarize(pmPing.samples)
  progress(`postMessage RTT: p50 ${pm.p50.toFixed(2)} us, p99 ${pm.p99.toFixed(2)} us over ${pm.count} round trips`)

  return {
    'kkcm.ring.rtt_us.p50': sig(ring.p50, 3),
    'kkcm.ring.rtt_us.p99': sig(ring.p99, 3),
    'kkcm.postmessage.rtt_us.p50': sig(pm.p50, 3),
    'kkcm.postmessage.rtt_us.p99': sig(pm.p99, 3),
    'kkcm.postmessage_vs_ring.rtt_p50': sig(pm.p50 / ring.p50, 3),
  }
}
