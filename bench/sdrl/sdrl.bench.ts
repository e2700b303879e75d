// SDRL figures on real RE workers and the in-memory transport, each beside its baseline in the
// same run. The rates and write() costs leave out the first quarter of each stream (V8's warm-up,
// stream()):
//   sdrl.replicated.records_per_s.{64,1024}    records the peer receives per second, replicated
//   sdrl.unreplicated.records_per_s.{64,1024}  the same socket path with replication off
//   sdrl.postmessage_replicator.records_per_s.1024  one postMessage per record to the secondary,
//                                              forwarded on its reply (the naive design)
//   sdrl.ack_rtt_us.p50/.p99                   record replicated -> its cumulative ack, sampled
//   sdrl.write_call_ns.{replicated,unreplicated}  cost of one admitted write() call
import { MessageChannel } from 'node:worker_threads'
import { Chassis } from '../../engine/index.ts'
import { spawnWorker } from '../../engine/runtime/worker.ts'
import type { Progress } from '../lib/progress.ts'
import { sig } from '../lib/stats.ts'

const ROUNDS = 3
const COUNT: Record<number, number> = { 64: 1_200_000, 1024: 400_000 }
/** The share of each stream left out of its rate (see stream()). */
const WARMUP_SHARE = 0.25
/** Records of a `count`-record stream that fall in its warm-up. */
const warmupRecords = (count: number): number => Math.ceil(count * WARMUP_SHARE)

interface Run {
  perS: number
  writeNs: number
  rttP50: number
  rttP99: number
}

async function stream(replicate: boolean, size: number): Promise<Run> {
  const count = COUNT[size]
  const warmup = warmupRecords(count)
  const c = await Chassis.start({
    app: new URL('./app.ts', import.meta.url),
    appOptions: { port: 9000, replicate, size, count, warmup },
    re: { deadIntervalMs: 10_000 },
    deadIntervalMs: 10_000,
  })
  // The steady state: the warm spare the chassis boots at start is up (its boot and warm-up take a
  // core for the better part of a second, which fell inside the measurement before).
  const booting = performance.now()
  while (!c.spareReady) {
    if (performance.now() - booting > 30_000) throw new Error('the spare never came up')
    await new Promise((r) => setTimeout(r, 5))
  }
  const want = count * size
  // The clock starts once the first WARMUP_SHARE of the stream has arrived: until then V8 is still
  // compiling the paths (about a hundred TurboFan jobs on its background threads, which shared the
  // two cores with the stream), and the replicated side has a third thread's code to compile.
  const warmBytes = warmup * size
  let t0 = 0
  const peer = c.memory.dial(9000)
  peer.keepReceived = false
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`stream stalled at ${peer.receivedBytes}/${want} bytes`)), 120_000)
    const check = () => {
      if (!t0 && peer.receivedBytes >= warmBytes) t0 = performance.now()
      if (peer.receivedBytes >= want) {
        clearTimeout(t)
        resolve()
      }
    }
    peer.on('data', check)
  })
  const ms = performance.now() - t0
  const measured = count - warmup
  const s = await c.stats()
  const app = s.primary!.app
  const sock = s.primary!.sockets.find((x) => x.kind === 'tcp')
  const sr = sock?.sr as { ackRttUsP50?: number; ackRttUsP99?: number } | null
  await c.close()
  return { perS: measured / (ms / 1000), writeNs: app.writeNs / Math.max(1, app.writes), rttP50: sr?.ackRttUsP50 ?? 0, rttP99: sr?.ackRttUsP99 ?? 0 }
}

async function postMessageReplicator(size: number, count: number): Promise<number> {
  const { port1, port2 } = new MessageChannel()
  const sec = spawnWorker(new URL('./workers/pm-secondary.ts', import.meta.url), { workerData: { port: port2 }, transferList: [port2] })
  const pri = spawnWorker(new URL('./workers/pm-primary.ts', import.meta.url), { workerData: { port: port1, size, count, window: 1024 }, transferList: [port1] })
  let got = 0
  let t0 = 0
  const warm = warmupRecords(count)
  await new Promise<void>((resolve) => {
    pri.on('message', () => {
      if (++got === warm) t0 = performance.now() // as in stream(): warm-up left out
      if (got === count) resolve()
    })
    pri.postMessage('go')
  })
  const ms = performance.now() - t0
  await Promise.all([pri.terminate(), sec.terminate()])
  return (count - warm) / (ms / 1000)
}

const best = (xs: number[]) => Math.max(...xs)
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

export default async function run({ progress }: { progress: Progress }): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  const rtt50: number[] = []
  const rtt99: number[] = []
  for (const size of [64, 1024]) {
    const rep: Run[] = []
    const unrep: Run[] = []
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate so that machine noise falls on both sides alike.
      unrep.push(await stream(false, size))
      rep.push(await stream(true, size))
      progress(`${size} B round ${r + 1}/${ROUNDS}: replicated ${Math.round(rep.at(-1)!.perS)}/s, unreplicated ${Math.round(unrep.at(-1)!.perS)}/s`)
    }
    out[`sdrl.replicated.records_per_s.${size}`] = sig(best(rep.map((x) => x.perS)))
    out[`sdrl.unreplicated.records_per_s.${size}`] = sig(best(unrep.map((x) => x.perS)))
    out[`sdrl.replicated_vs_unreplicated.${size}`] = sig(best(rep.map((x) => x.perS)) / best(unrep.map((x) => x.perS)), 3)
    if (size === 64) {
      out['sdrl.write_call_ns.replicated'] = sig(median(rep.map((x) => x.writeNs)), 3)
      out['sdrl.write_call_ns.unreplicated'] = sig(median(unrep.map((x) => x.writeNs)), 3)
      out['sdrl.write_call.replicated_vs_unreplicated'] = sig(out['sdrl.write_call_ns.replicated'] / out['sdrl.write_call_ns.unreplicated'], 3)
    }
    for (const x of rep) {
      rtt50.push(x.rttP50)
      rtt99.push(x.rttP99)
    }
  }
  const pm: number[] = []
  for (let r = 0; r < ROUNDS; r++) {
    pm.push(await postMessageReplicator(1024, 100_000))
    progress(`postMessage replicator round ${r + 1}/${ROUNDS}: ${Math.round(pm.at(-1)!)}/s`)
  }
  out['sdrl.postmessage_replicator.records_per_s.1024'] = sig(best(pm))
  out['sdrl.replicated_vs_postmessage.1024'] = sig(out['sdrl.replicated.records_per_s.1024'] / out['sdrl.postmessage_replicator.records_per_s.1024'], 3)
  out['sdrl.ack_rtt_us.p50'] = sig(median(rtt50), 3)
  out['sdrl.ack_rtt_us.p99'] = sig(median(rtt99), 3)
  return out
}
