// BGP takeover with a large RIB, on real RE workers and the in-memory transport (examples/bgp/app.ts
// against an EmbeddedPeer). The peer announces ROUTES prefixes; once they are in the Loc-RIB and the
// chassis FIB and a secondary holds the session (snapshot applied), the primary is killed KILLS
// times. Each failover must carry the session (the peer stays Established once, nothing withdrawn)
// and the whole RIB, and its FIB audit must end without churn; a figure is only reported for a run
// that kept all of that. Beside it, the same run with a small RIB is the baseline.
//   bgp.failover.rib_routes                    the Loc-RIB carried across every failover
//   bgp.failover.takeover_ms.p50 / .p99        primary death -> first record of the new primary at
//                                              the transport (its KEEPALIVE), with that RIB
//   bgp.failover.baseline.takeover_ms.p99      the same with BASELINE_ROUTES routes
//   bgp.failover.takeover_p99_vs_baseline      the ratio (what a big RIB costs the takeover)
//   bgp.failover.fib_resync_ms.p50             takeover -> FIB audit ended (all routes re-synced)
//   bgp.failover.snapshot_ms.p50               state transfer of the RIB to a fresh secondary
// BGP_BENCH_ROUTES (default 1,000,000) and BGP_BENCH_KILLS (default 5) scale it.
import { churnFree, EmbeddedRig } from '../../examples/bgp/embedded.ts'
import type { Progress } from '../lib/progress.ts'
import { percentile, sig } from '../lib/stats.ts'

const ROUTES = Number(process.env.BGP_BENCH_ROUTES ?? 1_000_000)
const KILLS = Number(process.env.BGP_BENCH_KILLS ?? 5)
const BASELINE_ROUTES = 1000
const LONG_MS = 900_000

interface Run {
  takeoverMs: number[]
  resyncMs: number[]
  snapshotMs: number[]
}

async function run(routes: number, progress: Progress): Promise<Run> {
  const rig = await EmbeddedRig.start({ announce: 1000, peerRoutes: routes, holdTimeS: 90 })
  const out: Run = { takeoverMs: [], resyncMs: [], snapshotMs: [] }
  try {
    const t0 = performance.now()
    await rig.converged(LONG_MS)
    progress(`${routes} routes in the RIB and the FIB in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    for (let k = 0; k < KILLS; k++) {
      await rig.redundant(LONG_MS)
      const r = await rig.failover('kill', LONG_MS)
      const p = rig.peer!
      const ok =
        r.takeover.carried === true &&
        r.takeover.routes === routes &&
        churnFree(r.audit) &&
        p.sessionUp &&
        p.establishedSince === 1 &&
        p.notificationsSeen === 0 &&
        rig.chassis.ksync.fib.stats().routes === routes
      if (!ok) throw new Error(`failover ${k + 1} with ${routes} routes did not keep the session, the RIB and the FIB: ${JSON.stringify({ takeover: r.takeover, audit: r.audit, peer: p.stats() })}`)
      out.takeoverMs.push(r.failover.takeoverMs)
      out.resyncMs.push(r.audit.ms)
      progress(`kill ${k + 1}/${KILLS}: takeover ${r.failover.takeoverMs.toFixed(1)} ms, FIB re-synced in ${(r.audit.ms / 1000).toFixed(1)} s, churn 0`)
    }
    await rig.redundant(LONG_MS)
    for (const e of rig.appEvents) if (e.event.type === 'synced' && (e.event.routes as number) === routes) out.snapshotMs.push(e.event.ms as number)
  } finally {
    await rig.close()
  }
  return out
}

const p50 = (xs: number[]): number => percentile(Float64Array.from(xs).sort(), 50)
const p99 = (xs: number[]): number => percentile(Float64Array.from(xs).sort(), 99)

export default async function failover({ progress }: { progress: Progress }): Promise<Record<string, number>> {
  const base = await run(BASELINE_ROUTES, progress)
  const big = await run(ROUTES, progress)
  return {
    'bgp.failover.rib_routes': ROUTES,
    'bgp.failover.takeover_ms.p50': sig(p50(big.takeoverMs), 3),
    'bgp.failover.takeover_ms.p99': sig(p99(big.takeoverMs), 3),
    'bgp.failover.baseline.takeover_ms.p99': sig(p99(base.takeoverMs), 3),
    'bgp.failover.takeover_p99_vs_baseline': sig(p99(big.takeoverMs) / p99(base.takeoverMs), 3),
    'bgp.failover.fib_resync_ms.p50': sig(p50(big.resyncMs), 3),
    'bgp.failover.snapshot_ms.p50': sig(p50(big.snapshotMs), 3),
  }
}
