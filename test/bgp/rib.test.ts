// Adj-RIB-In and Loc-RIB: best-path selection step by step (LOCAL_PREF, AS_PATH length, ORIGIN,
// MED within a neighbour AS, eBGP over iBGP, router id), and the change feed as peers come and go.

import { describe, expect, it } from 'vitest'
import { Origin, SegType, type PathAttributes } from '../../examples/bgp/codec.ts'
import { AdjRibIn, LocRib, RibOp, compareRoutes, type RibPeer } from '../../examples/bgp/rib.ts'
import { ip, pfx } from './fixtures.ts'

function attrs(over: Partial<PathAttributes> = {}): PathAttributes {
  return { origin: Origin.IGP, asPath: [{ type: SegType.AS_SEQUENCE, asns: [65002] }], nextHop: ip('172.16.0.1'), med: null, localPref: null, atomicAggregate: false, other: [], ...over }
}

const ebgp1: RibPeer = { routerId: ip('10.0.0.2'), as: 65002, ibgp: false }
const ebgp2: RibPeer = { routerId: ip('10.0.0.3'), as: 65003, ibgp: false }
const ibgp: RibPeer = { routerId: ip('10.0.0.9'), as: 65001, ibgp: true }
const seq = (...asns: number[]) => [{ type: SegType.AS_SEQUENCE, asns }]

describe('best path', () => {
  it('highest LOCAL_PREF wins (iBGP only; eBGP LOCAL_PREF is ignored and counts as 100)', () => {
    expect(compareRoutes(ibgp, attrs({ localPref: 200, asPath: seq(1, 2, 3) }), ebgp1, attrs())).toBeLessThan(0)
    expect(compareRoutes(ibgp, attrs({ localPref: 50 }), ebgp1, attrs({ asPath: seq(1, 2, 3) }))).toBeGreaterThan(0)
    expect(compareRoutes(ebgp1, attrs({ localPref: 500, asPath: seq(1, 2) }), ebgp2, attrs({ asPath: seq(3) }))).toBeGreaterThan(0)
  })

  it('then the shortest AS_PATH, an AS_SET counting one', () => {
    const withSet = [{ type: SegType.AS_SEQUENCE, asns: [1] }, { type: SegType.AS_SET, asns: [7, 8, 9] }]
    expect(compareRoutes(ebgp1, attrs({ asPath: withSet }), ebgp2, attrs({ asPath: seq(1, 2, 3) }))).toBeLessThan(0)
  })

  it('then the lowest ORIGIN', () => {
    expect(compareRoutes(ebgp2, attrs({ origin: Origin.IGP }), ebgp1, attrs({ origin: Origin.INCOMPLETE }))).toBeLessThan(0)
  })

  it('then the lowest MED, only between routes from the same neighbour AS', () => {
    expect(compareRoutes(ebgp2, attrs({ med: 10 }), ebgp1, attrs({ med: 20 }))).toBeLessThan(0)
    // Different neighbour AS: MED is skipped, router id decides (10.0.0.2 < 10.0.0.3).
    expect(compareRoutes(ebgp2, attrs({ asPath: seq(65003), med: 10 }), ebgp1, attrs({ med: 20 }))).toBeGreaterThan(0)
  })

  it('then eBGP over iBGP, then the lowest router id', () => {
    expect(compareRoutes(ibgp, attrs(), ebgp2, attrs())).toBeGreaterThan(0)
    expect(compareRoutes(ebgp1, attrs(), ebgp2, attrs())).toBeLessThan(0)
  })
})

describe('Loc-RIB over several Adj-RIBs-In', () => {
  it('reports add, change and delete as peers announce, withdraw and go away', () => {
    const log: string[] = []
    const loc = new LocRib((op, key, best, a) => log.push(`${op} ${key === pfx('10.0.0.0/8') ? 'p' : key} ${best ? best.peer.routerId === ebgp1.routerId ? 'r1' : 'r2' : '-'} ${a?.nextHop ?? '-'}`))
    const r1 = new AdjRibIn(ebgp1)
    const r2 = new AdjRibIn(ebgp2)
    loc.addPeer(r1)
    loc.addPeer(r2)
    const p = pfx('10.0.0.0/8')
    loc.update(r2, p, attrs({ nextHop: 2 }))
    loc.update(r1, p, attrs({ nextHop: 1, asPath: seq(65002, 9) })) // longer: r2 stays best, no change
    loc.update(r1, p, attrs({ nextHop: 1 })) // now equal but lower router id: r1 wins
    loc.update(r1, p, null) // back to r2
    loc.update(r2, p, null) // gone
    loc.update(r2, p, null) // nothing to withdraw: silent
    expect(log).toEqual(['add p r2 2', 'change p r1 1', 'change p r2 2', 'delete p - -'])
    expect(loc.counters).toEqual({ adds: 1, changes: 2, deletes: 1 })

    loc.update(r1, p, attrs({ nextHop: 1 }))
    loc.update(r2, p, attrs({ nextHop: 2 }))
    log.length = 0
    loc.removePeer(r1)
    expect(log).toEqual(['change p r2 2'])
    expect(loc.get(p)?.peer).toBe(ebgp2)
    expect(r1.size).toBe(0)
  })

  it('a single peer takes the fast path: the route is the best', () => {
    const ops: string[] = []
    const loc = new LocRib((op) => ops.push(op))
    const r = new AdjRibIn(ebgp1)
    loc.addPeer(r)
    const a = attrs()
    for (let i = 0; i < 100; i++) loc.update(r, pfx(`10.0.${i}.0/24`), a)
    loc.update(r, pfx('10.0.5.0/24'), a) // same attributes object: not a change
    loc.update(r, pfx('10.0.6.0/24'), attrs())
    expect(loc.size).toBe(100)
    expect(ops.filter((o) => o === RibOp.ADD).length).toBe(100)
    expect(ops.filter((o) => o === RibOp.CHANGE).length).toBe(1)
  })
})
