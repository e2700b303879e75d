// Scale sanity: a table of KSYNC_SCALE_ROUTES routes over 1000 next hops is programmed, then
// re-synced by audit after a failover, and every count that would betray quadratic work stays
// linear: one request per entry, one queue visit per request, one wake-up per waiting route, no
// churn. It asserts counts, never time. The default (100,000) keeps the suite fast on two shared
// cores; KSYNC_SCALE_ROUTES=1000000 runs the full-table case (about 1 GB of heap: both clients
// and the Fib are alive at the end).

import { describe, expect, it } from 'vitest'
import { Fib } from '../../engine/ksync/fib.ts'
import { KSyncClient } from '../../engine/ksync/client.ts'
import type { KSyncReply, KSyncRequest } from '../../engine/ksync/wire.ts'

const ROUTES = Number(process.env.KSYNC_SCALE_ROUTES ?? 100_000)
const NEXT_HOPS = 1000

function prefix(i: number): string {
  return `${10 + (i >>> 16)}.${(i >>> 8) & 255}.${i & 255}.0/24`
}

/** A synchronous loopback: each batch is applied by the Fib and answered at once (re-entrant onAck). */
function connect(fib: Fib, options: { epoch?: number; resync?: boolean }) {
  let replies: KSyncReply[][] = []
  const client = new KSyncClient({
    send: (batch: KSyncRequest[]) => replies.push(fib.applyBatch(batch)),
    maxInFlight: 4096,
    maxBatch: 1024,
    ...options,
  })
  const pump = () => {
    client.flush()
    while (replies.length > 0) {
      const now = replies
      replies = []
      for (const r of now) client.onAck(r)
    }
  }
  return { client, pump }
}

function programAll(c: KSyncClient, pump: () => void, routesFirst: boolean) {
  const nhs = () => {
    for (let n = 0; n < NEXT_HOPS; n++) c.addNextHop(`192.0.${n >> 8}.${n & 255}`, { ifindex: n & 15 })
  }
  if (!routesFirst) nhs()
  for (let i = 0; i < ROUTES; i++) {
    c.addRoute(prefix(i), `192.0.${(i % NEXT_HOPS) >> 8}.${(i % NEXT_HOPS) & 255}`, i & 7)
    if ((i & 0xffff) === 0xffff) pump() // the app yields now and then
  }
  if (routesFirst) nhs()
  pump()
}

describe('KSync at scale', () => {
  it(`programs ${ROUTES} routes over ${NEXT_HOPS} next hops and re-syncs them after failover with no churn`, () => {
    const fib = new Fib()
    const first = connect(fib, {})
    programAll(first.client, first.pump, false)
    const total = ROUTES + NEXT_HOPS
    expect(first.client.quiescent).toBe(true)
    expect(first.client.stats()).toMatchObject({ requests: total, acks: total, errors: 0, routes: ROUTES, nextHops: NEXT_HOPS })
    expect(first.client.stats().queuePops).toBe(total)
    expect(fib.stats()).toMatchObject({ routes: ROUTES, nextHops: NEXT_HOPS, adds: total })

    // Failover: a fresh client re-adds everything, routes before their next hops (all wait).
    const { epoch } = fib.beginAudit()
    const second = connect(fib, { epoch, resync: true })
    programAll(second.client, second.pump, true)
    expect(second.client.quiescent).toBe(true)
    const s = second.client.stats()
    expect(s).toMatchObject({ requests: total, learns: total, learnMisses: 0, errors: 0, depWaits: ROUTES })
    expect(s.queuePops).toBe(total)
    expect(s.states.IN_SYNC).toBe(total)
    const audit = fib.endAudit()
    second.client.auditEnded()
    expect(audit.churn).toEqual({ adds: 0, changes: 0, deletes: 0, swept: 0, reAdds: 0 })
    expect(audit.refreshed).toBe(total)
    expect(audit.swept).toHaveLength(0)
    expect(second.client.entry('route', prefix(ROUTES - 1))?.index).toBe(ROUTES - 1)
    if (ROUTES <= 100_000) {
      second.client.invariants()
      fib.invariants()
    }
  }, 120_000)
})
