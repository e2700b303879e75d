import { Ring } from '../../engine/kkcm/ring.ts'
import { runWorkerPair } from '../lib/pair.ts'
const url = (f: string) => new URL(`./workers/${f}`, import.meta.url)
const batches = process.argv[2].split(',').map(Number), sizes = (process.argv[3] ?? '64,1024,16384').split(',').map(Number)
const rounds = Number(process.argv[4] ?? 3)
for (const size of sizes) {
  const best = new Map<number, number>()
  for (let r = 0; r < rounds; r++) for (const b of batches) {
    const ring = Ring.create(1 << 20)
    const [p, c] = await runWorkerPair<any, any>({ a: url('ring-producer.ts'), b: url('ring-consumer.ts'), data: { sab: ring.sab, size, durationMs: 400, publishBatchBytes: b } })
    const rate = c.received / (c.tEnd - p.t0) * 1000
    best.set(b, Math.max(best.get(b) ?? 0, rate))
  }
  console.log(`size ${size}: ` + [...best].map(([b, r]) => `batch ${b}: ${(r / 1e6).toFixed(2)}M/s ${(r * size / 1e9).toFixed(1)}GB/s`).join(' | '))
}
