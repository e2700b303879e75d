// Failover: a new primary's KSyncClient, knowing nothing, re-syncs the chassis Fib by audit. An
// unchanged Fib must see no churn at all and never lose a route on the way; a changed one gets
// exactly the difference.

import { describe, expect, it } from 'vitest'
import type { KSyncClient } from '../../engine/ksync/client.ts'
import type { NhKey } from '../../engine/ksync/wire.ts'
import { rig, type Rig } from './harness.ts'

interface RouteSpec {
  nh: NhKey
  data: { metric: number }
}

function table(nhCount: number, routeCount: number) {
  const nhs = new Map<NhKey, { ifindex: number }>()
  for (let i = 0; i < nhCount; i++) nhs.set(i % 2 === 0 ? `192.0.2.${i}` : 0x0a000000 + i, { ifindex: i % 7 })
  const nhKeys = [...nhs.keys()]
  const routes = new Map<string, RouteSpec>()
  for (let i = 0; i < routeCount; i++) routes.set(`10.${(i >> 8) & 255}.${i & 255}.0/24`, { nh: nhKeys[(i * 7) % nhCount], data: { metric: i % 5 } })
  return { nhs, routes }
}

function program(c: KSyncClient, t: ReturnType<typeof table>, order: 'nh-first' | 'routes-first' = 'nh-first') {
  const nhs = () => t.nhs.forEach((data, key) => c.addNextHop(key, data))
  if (order === 'nh-first') nhs()
  t.routes.forEach((r, prefix) => c.addRoute(prefix, r.nh, r.data))
  if (order === 'routes-first') nhs()
}

function indexesOf(c: KSyncClient): Map<string, number> {
  return new Map(c.entries().map((e) => [`${e.kind} ${String(e.key)}`, e.index]))
}

function failover(r: Rig): KSyncClient {
  const { epoch } = r.fib.beginAudit()
  return r.restart({ epoch, resync: true })
}

describe('KSync re-sync after failover', () => {
  for (const msgpack of [false, true]) {
    it(`with no routing change: no churn, same indexes, and no route ever leaves the Fib${msgpack ? ' (through msgpackr)' : ''}`, () => {
      const r = rig({ client: { maxInFlight: 64, maxBatch: 16 }, link: { msgpack } })
      const t = table(40, 1500)
      program(r.client, t)
      r.link.pump()
      const before = r.fib.snapshot()
      const oldIndexes = indexesOf(r.client)
      const fresh = failover(r)
      program(fresh, t, 'routes-first') // the worst order: every route waits for its next hop first
      fresh.flush()
      let steps = 0
      while (r.link.toFib.length > 0 || r.link.toClient.length > 0) {
        r.link.deliverToFib()
        r.link.deliverToClient()
        expect(r.fib.stats()).toMatchObject({ nextHops: 40, routes: 1500 })
        if (++steps % 25 === 0) fresh.invariants()
      }
      expect(fresh.quiescent).toBe(true)
      const audit = r.fib.endAudit()
      fresh.auditEnded()
      expect(audit).toEqual({ epoch: 1, swept: [], refreshed: 1540, churn: { adds: 0, changes: 0, deletes: 0, swept: 0, reAdds: 0 } })
      expect(r.fib.snapshot()).toEqual({ ...before, epoch: 1 })
      expect(indexesOf(fresh)).toEqual(oldIndexes)
      expect(fresh.stats()).toMatchObject({ requests: 1540, learns: 1540, learnMisses: 0, indexCollisions: 0, errors: 0 })
      expect(fresh.stats().states.IN_SYNC).toBe(1540)
      fresh.invariants()
      r.fib.invariants()
    })
  }

  it('with routing changes during the outage: only the difference is programmed, the rest is swept', () => {
    const r = rig({ client: { maxInFlight: 32, maxBatch: 8 } })
    const t = table(10, 200)
    program(r.client, t)
    r.link.pump()
    const nhKeys = [...t.nhs.keys()]
    const prefixes = [...t.routes.keys()]
    // What the new primary wants: next hop 9 and its routes gone, 10 routes gone, 10 re-weighted,
    // 10 moved to another next hop, 5 new ones.
    const goneNh = nhKeys[9]
    t.nhs.delete(goneNh)
    let gone = 0
    for (const [p, spec] of t.routes) if (spec.nh === goneNh) (t.routes.delete(p), gone++)
    const kept = [...t.routes.keys()]
    for (const p of kept.slice(0, 10)) t.routes.delete(p)
    for (const p of kept.slice(10, 20)) t.routes.set(p, { ...t.routes.get(p)!, data: { metric: 99 } })
    for (const p of kept.slice(20, 30)) t.routes.set(p, { nh: t.routes.get(p)!.nh === nhKeys[0] ? nhKeys[1] : nhKeys[0], data: t.routes.get(p)!.data })
    for (let i = 0; i < 5; i++) t.routes.set(`172.16.${i}.0/24`, { nh: nhKeys[2], data: { metric: 1 } })
    expect(prefixes.length - t.routes.size).toBe(gone + 10 - 5)

    const fresh = failover(r)
    program(fresh, t)
    r.link.pump()
    const audit = r.fib.endAudit()
    fresh.auditEnded()
    expect(audit.churn).toEqual({ adds: 5, changes: 20, deletes: 0, swept: gone + 10 + 1, reAdds: 0 })
    expect(audit.swept.filter((s) => s.kind === 'nh')).toEqual([{ kind: 'nh', index: 9, key: goneNh }])
    expect(fresh.stats()).toMatchObject({ learnMisses: 5, errors: 5, indexCollisions: 0 })
    // The Fib is exactly what the new primary wants.
    const snap = r.fib.snapshot()
    expect(snap.nextHops.map((e) => e.key).sort()).toEqual([...t.nhs.keys()].sort())
    expect(snap.routes).toHaveLength(t.routes.size)
    for (const e of snap.routes) {
      const want = t.routes.get(e.key as string)!
      expect(e.data).toEqual(want.data)
      expect(r.fib.at('nh', e.nh)?.key).toBe(want.nh)
    }
    // Business as usual afterwards: new entries get indexes that the sweep freed.
    fresh.addRoute('172.17.0.0/16', nhKeys[3])
    fresh.addNextHop('198.51.100.1')
    r.link.pump()
    expect(fresh.entry('nh', '198.51.100.1')?.index).toBe(9)
    expect(fresh.stats().resyncing).toBe(false)
    fresh.invariants()
    r.fib.invariants()
  })

  it('a second failover in the middle of the re-sync fences the first new primary; still no churn', () => {
    const r = rig({ client: { maxInFlight: 16, maxBatch: 4 } })
    const t = table(8, 100)
    program(r.client, t)
    r.link.pump()
    const before = r.fib.snapshot()
    const second = failover(r)
    program(second, t, 'routes-first')
    second.flush()
    r.link.deliverToFib() // some of its re-adds land, the rest is still in the ring
    const third = failover(r)
    r.link.client = second
    while (r.link.toFib.length > 0) r.link.deliverToFib()
    while (r.link.toClient.length > 0) r.link.deliverToClient()
    expect(second.fenced).toBe(true)
    r.link.client = third
    program(third, t)
    r.link.pump()
    const audit = r.fib.endAudit()
    third.auditEnded()
    expect(audit.swept).toEqual([])
    expect(audit.churn).toEqual({ adds: 0, changes: 0, deletes: 0, swept: 0, reAdds: 0 })
    expect(r.fib.snapshot()).toEqual({ ...before, epoch: 2 })
    third.invariants()
  })
})
