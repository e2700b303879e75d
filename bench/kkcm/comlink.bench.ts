// Request/response calls from the main thread into a worker: a comlink call (the control plane's
// mechanism) against the same call made as a frame and an ack on a KKCM channel, both measured by
// tinybench in one run, best of ROUNDS (thread placement on a shared two-core machine makes single
// runs bimodal). Figures: kkcm.comlink.calls_per_s, kkcm.ring.calls_per_s, kkcm.ring_vs_comlink.calls.

import { Bench } from 'tinybench'
import type { Worker } from 'node:worker_threads'
import { createChannelSab, openEndpoint } from '../../engine/kkcm/channel.ts'
import { spawnWorker } from '../../engine/runtime/worker.ts'
import { Comlink, nodeEndpoint } from '../lib/comlink.ts'
import { startPairWorker } from '../lib/pair.ts'
import type { Progress } from '../lib/progress.ts'
import { fmtRate, sig } from '../lib/stats.ts'
import type { ComlinkBenchApi } from './workers/comlink-server.ts'

const TIME_MS = 600
const ROUNDS = 2

export default async function comlink({ progress }: { progress: Progress }): Promise<Record<string, number>> {
  const server = spawnWorker(new URL('./workers/comlink-server.ts', import.meta.url), { name: 'comlink-server' })
  const api = Comlink.wrap<ComlinkBenchApi>(nodeEndpoint(server as Worker & Parameters<typeof nodeEndpoint>[0]))
  await api.ping(0) // loaded

  const sab = createChannelSab(1 << 16)
  const ep = openEndpoint(sab, 'a')
  const echo = await startPairWorker(new URL('./workers/ring-echo.ts', import.meta.url), { sab })
  const frame = new Uint8Array(64)
  const onAck = (): void => {}

  try {
    let c = 0
    let r = 0
    for (let round = 0; round < ROUNDS; round++) {
      const bench = new Bench({ time: TIME_MS, warmupTime: 100 })
      bench.add('comlink call', async () => {
        await api.ping(1)
      })
      bench.add('ring call', async () => {
        ep.tx.send(frame)
        while (ep.rx.drain(onAck) === 0) await ep.rx.readable()
      })
      await bench.run()
      const hz = (name: string): number => {
        const res = bench.getTask(name)?.result
        if (!res || res.state !== 'completed') throw new Error(`${name}: ${res?.state ?? 'no result'}`)
        return res.throughput.mean
      }
      c = Math.max(c, hz('comlink call'))
      r = Math.max(r, hz('ring call'))
    }
    progress(`comlink ${fmtRate(c, ' calls/s')}, ring ${fmtRate(r, ' calls/s')}`)
    return {
      'kkcm.comlink.calls_per_s': sig(c),
      'kkcm.ring.calls_per_s': sig(r),
      'kkcm.ring_vs_comlink.calls': sig(r / c, 3),
    }
  } finally {
    ep.close()
    api[Comlink.releaseProxy]()
    await Promise.all([server.terminate(), echo.terminate()])
  }
}
