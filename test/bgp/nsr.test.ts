// Non-stop routing with the BGP speaker: a snooping secondary fed both directions (the primary's
// writes as whole records, the peer's bytes split differently) ends with the primary's state,
// negotiated parameters, timer deadlines and RIBs; takeover() then carries the session on with the
// EmbeddedPeer seeing no second OPEN, no NOTIFICATION and one Established, in Established and at
// every point of the handshake and of the initial announcements.

import { describe, expect, it } from 'vitest'
import { AttrType, ErrCode, MsgType, UpdateSub } from '../../examples/bgp/codec.ts'
import { State } from '../../examples/bgp/fsm.ts'
import { generateRoutes } from '../../examples/bgp/peer.ts'
import type { BgpSpeaker } from '../../examples/bgp/speaker.ts'
import { WK, attr, goodAttrs, rawUpdate } from './fixtures.ts'
import { Net, type NetOptions } from './harness.ts'

const base: NetOptions = {
  snoop: true,
  speaker: { localAs: 65001, peerAs: 65002, routerId: '10.0.0.1', holdTimeS: 90, announce: ['10.1.0.0/16', '10.2.0.0/16'] },
  peer: { as: 65002, peerAs: 65001, routerId: '10.0.0.2', localAddress: '172.16.0.2', holdTimeS: 30, routes: 5000 },
}

function net(over: { speaker?: Partial<NetOptions['speaker']>; peer?: Partial<NetOptions['peer']> } = {}, seed = 1): Net {
  const n = new Net({ ...base, speaker: { ...base.speaker, ...over.speaker }, peer: { ...base.peer, ...over.peer }, seed })
  n.primary.start()
  n.secondary!.start()
  return n
}

/** The Loc-RIB as text, one line per distinct attribute set: prefixes and their attributes, compact. */
function ribDigest(s: BgpSpeaker): string[] {
  const byAttrs = new Map<object, number[]>()
  for (const k of s.locRib.keys()) {
    const a = s.locRib.get(k)!.attrs
    let list = byAttrs.get(a)
    if (!list) byAttrs.set(a, (list = []))
    list.push(k)
  }
  return [...byAttrs].map(([a, keys]) => `${JSON.stringify(a)} ${keys.join(',')}`).sort()
}

/** Everything the secondary must share with the primary to take over. */
function view(s: BgpSpeaker) {
  const st = s.stats()
  return {
    state: s.state,
    negotiated: s.negotiated,
    timers: s.timers(),
    locRib: ribDigest(s),
    adjRibIn: s.adjRibIn?.size ?? 0,
    advertised: [...s.advertisedKeys()].sort(),
    messagesIn: st.messagesIn,
    messagesOut: st.messagesOut,
    bytes: [st.bytesIn, st.bytesOut],
    updatesProcessed: st.updatesProcessed,
    establishedCount: st.establishedCount,
  }
}

/** The peer's verdict: the session never blinked. */
function expectUnbroken(n: Net, routes = 2): void {
  const p = n.peer
  expect(p.sessionUp).toBe(true)
  expect(p.establishedSince).toBe(1)
  expect(p.opensReceived).toBe(1)
  expect(p.notificationsSeen).toBe(0)
  expect(p.speaker.stats().holdExpired).toBe(0)
  expect(p.receivedRoutes.size).toBe(routes)
  expect(p.speaker.stats().prefixesReceived).toBe(routes) // each prefix announced exactly once
  expect(n.clock.now() - p.lastMessageReceivedMs!).toBeLessThanOrEqual(10_000 + 1000) // keepalive = 30/3 s
}

describe('a snooping secondary', () => {
  it('ends with the primary state, negotiated parameters, timer deadlines and RIBs', () => {
    const n = net()
    n.connect()
    n.pump()
    expect(n.primary.state).toBe(State.Established)
    expect(n.primary.locRib.size).toBe(5000)
    expect(view(n.secondary!)).toEqual(view(n.primary))
    for (let i = 0; i < 6; i++) {
      n.run(7_300)
      expect(view(n.secondary!)).toEqual(view(n.primary))
    }
    expect(n.typesTo('secondary')).toEqual([])
    expect(n.secondary!.stats().mode).toBe('snoop')
    n.secondary!.invariants()
  })

  it('holds the peer OPEN until the record of ours arrives (both sides send OPEN at once)', () => {
    const n = net()
    n.holdReplication = true
    n.connect()
    n.deliverFromPeer() // the peer OPEN, before the secondary has the record of the primary OPEN
    expect(n.secondary!.state).toBe(State.Connect)
    expect(n.secondary!.stats().snoopDeferred).toBe(1)
    n.releaseReplication()
    expect(n.secondary!.state).toBe(State.OpenConfirm)
    n.pump()
    expect(view(n.secondary!)).toEqual(view(n.primary))
    expect(n.secondary!.stats().snoopAnomalies).toBe(0)
  })

  it('catches up when it reads the two snoop streams far out of step', () => {
    const n = net()
    n.holdReplication = true
    n.connect()
    n.pump() // the whole handshake and 5000 routes reach the secondary before any record of the primary
    expect(n.secondary!.state).toBe(State.Connect)
    n.releaseReplication()
    expect(view(n.secondary!)).toEqual(view(n.primary))
    expect(n.secondary!.stats().snoopAnomalies).toBe(0)
  })

  it('follows the primary into Idle on bad input from the peer, and owes nothing once the NOTIFICATION record is seen', () => {
    const n = net()
    const notes: string[] = []
    n.secondary!.on('notification', (e) => notes.push(`${e.dir} ${e.code}/${e.subcode}`))
    n.connect()
    n.pump()
    n.injectFromPeer(rawUpdate({ attrs: goodAttrs({ nextHop: attr(WK, AttrType.NEXT_HOP, [224, 0, 0, 1]) }) }))
    n.pump()
    expect(n.primary.state).not.toBe(State.Established)
    expect(n.secondary!.stats().state).toBe(n.primary.state)
    expect(notes).toEqual([`out ${ErrCode.UPDATE}/${UpdateSub.INVALID_NEXT_HOP}`])
    expect(n.secondary!.locRib.size).toBe(0)
  })
})

describe('takeover', () => {
  it('in Established: a KEEPALIVE at once, no OPEN, and the session stays up for an hour', () => {
    const n = net()
    n.connect()
    n.pump()
    n.run(12_345)
    const sentBefore = n.secondary!.stats().messagesOut
    n.takeover()
    expect(n.typesTo('secondary')).toEqual([MsgType.KEEPALIVE])
    expect(n.secondary!.stats().messagesOut).toEqual({ ...sentBefore, keepalive: sentBefore.keepalive + 1 })
    expect(n.secondary!.timers().keepaliveMs).toBe(n.clock.now() + 10_000)
    expect(n.secondary!.timers().holdMs).toBe(n.clock.now() + 30_000)
    n.run(3_600_000, 1000)
    expectUnbroken(n)
    expect(n.typesTo('secondary').filter((t) => t !== MsgType.KEEPALIVE)).toEqual([])
    const s = n.secondary!.stats()
    expect([s.state, s.mode, s.locRib, s.establishedCount, s.holdExpired]).toEqual([State.Established, 'active', 5000, 1, 0])
    n.secondary!.invariants()
  })

  it('right after the primary sent its OPEN, before the peer OPEN arrives: carries on the handshake', () => {
    const n = net()
    n.primaryWriteBudget = 1 // the OPEN, then the primary dies
    n.connect()
    expect(n.secondary!.state).toBe(State.OpenSent)
    n.takeover()
    expect(n.secondary!.state).toBe(State.Established)
    expect(n.typesTo('secondary')[0]).toBe(MsgType.KEEPALIVE)
    expect(n.typesTo('primary')).toEqual([MsgType.OPEN])
    n.run(600_000, 1000)
    expectUnbroken(n)
  })

  it('in OpenConfirm, the primary KEEPALIVE sent: another KEEPALIVE is harmless', () => {
    const n = net()
    n.primaryWriteBudget = 2 // OPEN, KEEPALIVE
    n.connect()
    n.pump()
    expect(n.typesTo('primary')).toEqual([MsgType.OPEN, MsgType.KEEPALIVE])
    expect(n.secondary!.state).toBe(State.Established) // the peer's KEEPALIVE came too
    n.takeover()
    n.run(600_000, 1000)
    expectUnbroken(n)
  })

  it('the primary died before its KEEPALIVE left: the secondary (Established on the peer KEEPALIVE) sends it', () => {
    const n = net({ peer: { routes: 50 } })
    n.primaryWriteBudget = 1
    n.connect()
    n.pump() // the peer OPEN and KEEPALIVE reach the (dead) primary and the secondary
    expect(n.secondary!.state).toBe(State.Established)
    expect(n.peer.speaker.state).toBe(State.OpenConfirm)
    n.takeover()
    expect(n.typesTo('secondary').slice(0, 2)).toEqual([MsgType.KEEPALIVE, MsgType.UPDATE])
    expect(n.peer.sessionUp).toBe(true)
    n.run(600_000, 1000)
    expectUnbroken(n)
    expect(n.secondary!.locRib.size).toBe(50)
  })

  it('in Connect with the connection up, before any OPEN left: the secondary sends the first OPEN', () => {
    const n = net()
    n.primaryWriteBudget = 0
    n.connect()
    expect(n.secondary!.state).toBe(State.Connect)
    n.takeover()
    expect(n.typesTo('secondary')[0]).toBe(MsgType.OPEN)
    n.run(600_000, 1000)
    expectUnbroken(n)
  })

  it('in the middle of the initial announcements: the rest is sent, each prefix once', () => {
    const keys = generateRoutes(4000, '20.0.0.0/24')
    const n = net({ speaker: { announce: [], announceKeys: keys } })
    n.primaryWriteBudget = 3 // OPEN, KEEPALIVE, the first UPDATE
    n.connect()
    n.pump()
    const first = n.secondary!.stats().advertised
    expect(first).toBeGreaterThan(900)
    expect(first).toBeLessThan(4000)
    n.takeover()
    expect(n.typesTo('secondary')[0]).toBe(MsgType.KEEPALIVE)
    expect(n.typesTo('secondary').filter((t) => t === MsgType.UPDATE).length).toBe(3)
    n.run(60_000, 1000)
    expectUnbroken(n, 4000)
  })

  it('at every message boundary of the handshake and announcements (seeded splits)', () => {
    for (let budget = 0; budget <= 6; budget++) {
      const n = net({ speaker: { announceKeys: generateRoutes(3000, '30.0.0.0/24') }, peer: { routes: 300 } }, 100 + budget)
      n.primaryWriteBudget = budget
      n.connect()
      n.pump()
      n.takeover()
      n.run(120_000, 1000)
      expectUnbroken(n, 3002)
      expect(n.secondary!.locRib.size).toBe(300)
    }
  })
})
