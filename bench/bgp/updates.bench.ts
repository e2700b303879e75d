// UPDATE processing rate of the BGP example with and without NSR, side by side, on real RE workers
// and the in-memory transport. The EmbeddedPeer announces ROUTES prefixes (packed ~1,000 to an
// UPDATE) as soon as the session is up; the rate is UPDATEs processed into the primary's Loc-RIB
// per second, from the peer's Established to the last Loc-RIB change. Replicated: the connection is
// replicated to a secondary that snoops and processes every UPDATE too (received data reaches the
// secondary first). Unreplicated: the same application with replication off. FIB programming is
// off in both, so the figure is the BGP path itself, and so is the warm spare (its boot would
// overlap the measurement). Rounds alternate; medians are reported.
//   bgp.updates_per_s.replicated / .unreplicated, bgp.updates_per_s.replicated_vs_unreplicated
//   bgp.prefixes_per_s.replicated / .unreplicated
import { EmbeddedRig } from '../../examples/bgp/embedded.ts'
import type { Progress } from '../lib/progress.ts'
import { percentile, sig } from '../lib/stats.ts'

const ROUTES = Number(process.env.BGP_BENCH_UPDATE_ROUTES ?? 300_000)
const ROUNDS = Number(process.env.BGP_BENCH_ROUNDS ?? 3)

async function once(replicate: boolean): Promise<{ updatesPerS: number; prefixesPerS: number }> {
  // No warm spare: its boot and warm-up take a core for the better part of a second, which would
  // fall inside the measurement (the session comes up, and the routes flow, right after start).
  const rig = await EmbeddedRig.start({ announce: 0, peerRoutes: ROUTES, holdTimeS: 90, app: { replicate, fib: false, reportMs: 50 }, chassis: { spare: false } })
  try {
    await rig.until(() => (rig.lastPrimaryEvent('routes')?.locRib as number | undefined) === ROUTES, 'every route in the Loc-RIB', 300_000)
    const e = rig.lastPrimaryEvent('routes')!
    const s = ((e.lastChangeAt as number) - rig.peerEstablishedAt) / 1000
    if (!(s > 0) || rig.peer!.establishedSince !== 1) throw new Error(`bad measurement: ${JSON.stringify(e)} established at ${rig.peerEstablishedAt}`)
    return { updatesPerS: (e.updates as number) / s, prefixesPerS: ROUTES / s }
  } finally {
    await rig.close()
  }
}

const median = (xs: number[]): number => percentile(Float64Array.from(xs).sort(), 50)

export default async function updates({ progress }: { progress: Progress }): Promise<Record<string, number>> {
  const rep: Array<{ updatesPerS: number; prefixesPerS: number }> = []
  const unrep: Array<{ updatesPerS: number; prefixesPerS: number }> = []
  for (let r = 0; r < ROUNDS; r++) {
    for (const replicate of r % 2 === 0 ? [false, true] : [true, false]) {
      const x = await once(replicate)
      ;(replicate ? rep : unrep).push(x)
      progress(`round ${r + 1}/${ROUNDS} ${replicate ? 'replicated  ' : 'unreplicated'}: ${x.updatesPerS.toFixed(0)} UPDATEs/s, ${(x.prefixesPerS / 1000).toFixed(0)}k prefixes/s`)
    }
  }
  const ru = median(rep.map((x) => x.updatesPerS))
  const uu = median(unrep.map((x) => x.updatesPerS))
  return {
    'bgp.updates_per_s.replicated': sig(ru, 4),
    'bgp.updates_per_s.unreplicated': sig(uu, 4),
    'bgp.updates_per_s.replicated_vs_unreplicated': sig(ru / uu, 3),
    'bgp.prefixes_per_s.replicated': sig(median(rep.map((x) => x.prefixesPerS)), 4),
    'bgp.prefixes_per_s.unreplicated': sig(median(unrep.map((x) => x.prefixesPerS)), 4),
  }
}
