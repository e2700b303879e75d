// One-way throughput between two worker threads, frames of 64 B, 1 KiB and 16 KiB: the KKCM ring
// (copy in, read in place) against postMessage of a Uint8Array (structured clone), measured side
// by side for each size, alternating, best of ROUNDS runs each (on a shared two-core machine a run
// is only ever slowed down by interference, never sped up). Figures: kkcm.ring.msgs_per_s.<size>,
// kkcm.postmessage.msgs_per_s.<size>, kkcm.ring.gb_per_s.<size>, kkcm.ring_vs_postmessage.<size>
// (ratio of frames/s). For 64 B and 1 KiB the ring also runs with per-frame tail publication
// (publishBatchBytes 0), the alternative to batching by bytes: kkcm.ring_per_frame.msgs_per_s.<size>
// and kkcm.ring_batched_vs_per_frame.<size>.

import { Ring } from '../../engine/kkcm/ring.ts'
import { runWorkerPair } from '../lib/pair.ts'
import type { Progress } from '../lib/progress.ts'
import { fmtRate, sig } from '../lib/stats.ts'
import type { PmThroughputData } from './workers/pm-producer.ts'
import type { RingThroughputData } from './workers/ring-producer.ts'

export const SIZES = [64, 1024, 16384] as const
const PER_FRAME_SIZES: readonly number[] = [64, 1024]
// 4 MiB: on a loaded two-core machine every lap of the ring can cost a park and a wake on each
// side, so fewer, longer laps measured 25-40% faster than 1 MiB at 1-16 KiB frames.
const RING_CAPACITY_BYTES = 1 << 22
const DURATION_MS = 500
const ROUNDS = 3
/** Bytes of postMessage payload allowed in flight (the ring's own bound is its capacity). */
const PM_WINDOW_BYTES = 4 << 20

const url = (f: string): URL => new URL(`./workers/${f}`, import.meta.url)

interface ProducerResult {
  sent: number
  t0: number
}
interface ConsumerResult {
  received: number
  bad: number
  tEnd: number
}

function rate(p: ProducerResult, c: ConsumerResult, what: string): number {
  if (c.bad !== 0) throw new Error(`${what}: ${c.bad} frames out of order`)
  if (c.received !== p.sent) throw new Error(`${what}: sent ${p.sent}, received ${c.received}`)
  return (c.received / (c.tEnd - p.t0)) * 1000
}

export async function ringThroughput(
  size: number,
  opts: { durationMs?: number; capacityBytes?: number; publishBatchBytes?: number; spin?: RingThroughputData['spin'] } = {},
): Promise<number> {
  const ring = Ring.create(opts.capacityBytes ?? RING_CAPACITY_BYTES)
  const data: RingThroughputData = { sab: ring.sab, size, durationMs: opts.durationMs ?? DURATION_MS, publishBatchBytes: opts.publishBatchBytes, spin: opts.spin }
  const [p, c] = await runWorkerPair<ProducerResult, ConsumerResult>({ a: url('ring-producer.ts'), b: url('ring-consumer.ts'), data })
  return rate(p, c, `ring ${size} B`)
}

export async function postMessageThroughput(size: number, durationMs = DURATION_MS): Promise<number> {
  const window = Math.max(64, Math.min(4096, Math.floor(PM_WINDOW_BYTES / size)))
  const data: PmThroughputData = { size, durationMs, window }
  const [p, c] = await runWorkerPair<ProducerResult, ConsumerResult>({ a: url('pm-producer.ts'), b: url('pm-consumer.ts'), data })
  return rate(p, c, `postMessage ${size} B`)
}

export default async function throughput({ progress }: { progress: Progress }): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (const size of SIZES) {
    let ring = 0
    let pm = 0
    let perFrame = 0
    for (let round = 0; round < ROUNDS; round++) {
      const r = await ringThroughput(size)
      const p = await postMessageThroughput(size)
      const f = PER_FRAME_SIZES.includes(size) ? await ringThroughput(size, { publishBatchBytes: 0 }) : 0
      progress(
        `${size} B round ${round + 1}/${ROUNDS}: ring ${fmtRate(r, ' frames/s')} (${((r * size) / 1e9).toFixed(2)} GB/s), ` +
          `postMessage ${fmtRate(p, ' msgs/s')}` +
          (f ? `, ring publishing per frame ${fmtRate(f, ' frames/s')}` : ''),
      )
      ring = Math.max(ring, r)
      pm = Math.max(pm, p)
      perFrame = Math.max(perFrame, f)
    }
    if (perFrame > 0) {
      out[`kkcm.ring_per_frame.msgs_per_s.${size}`] = sig(perFrame)
      out[`kkcm.ring_batched_vs_per_frame.${size}`] = sig(ring / perFrame, 3)
    }
    progress(`${size} B best: ring ${fmtRate(ring, ' frames/s')}, postMessage ${fmtRate(pm, ' msgs/s')}: ring is ${(ring / pm).toFixed(1)}x`)
    out[`kkcm.ring.msgs_per_s.${size}`] = sig(ring)
    out[`kkcm.postmessage.msgs_per_s.${size}`] = sig(pm)
    out[`kkcm.ring.gb_per_s.${size}`] = sig((ring * size) / 1e9)
    out[`kkcm.ring_vs_postmessage.${size}`] = sig(ring / pm, 3)
  }
  return out
}
