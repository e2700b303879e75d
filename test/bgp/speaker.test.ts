// Two BGP speakers over an in-process pipe: they reach Established and exchange routes (eBGP,
// iBGP, a 2-octet speaker with a 4-octet peer), the Loc-RIB change feed and events, withdrawals,
// errors answered with NOTIFICATION, pacing of bulk UPDATEs, loop detection, and that keepalives
// keep the session up for as long as time runs.

import { describe, expect, it } from 'vitest'
import { ManualClock } from '../../engine/clock.ts'
import { AS_TRANS, AttrType, ErrCode, MsgType, SegType, UpdateSub, formatPrefix, messageType } from '../../examples/bgp/codec.ts'
import { State } from '../../examples/bgp/fsm.ts'
import { generateRoutes } from '../../examples/bgp/peer.ts'
import type { RibChange } from '../../examples/bgp/rib.ts'
import { BgpSpeaker, type SpeakerOptions } from '../../examples/bgp/speaker.ts'
import { WK, attr, goodAttrs, ip, pfx, rawUpdate } from './fixtures.ts'
import { concat, prng, randomSplits } from './harness.ts'

type Opts = Omit<SpeakerOptions, 'clock' | 'send'>

/** Two speakers joined by a pipe that cuts each direction's stream into random chunks. */
class Pair {
  readonly clock = new ManualClock()
  readonly a: BgpSpeaker
  readonly b: BgpSpeaker
  readonly aChanges: RibChange[] = []
  readonly aSent: Uint8Array[] = []
  private readonly rand = prng(7)
  private aToB: Uint8Array[] = []
  private bToA: Uint8Array[] = []
  /** When set, a's send returns it (false asks a to pause bulk UPDATEs). */
  aWritable = true

  constructor(aOpts: Opts, bOpts: Opts) {
    this.a = new BgpSpeaker({
      ...aOpts,
      clock: this.clock,
      send: (m) => {
        this.aSent.push(m)
        this.aToB.push(m)
        return this.aWritable
      },
      onRibChange: (c) => this.aChanges.push(c),
    })
    this.b = new BgpSpeaker({ passive: true, ...bOpts, clock: this.clock, send: (m) => void this.bToA.push(m) })
  }

  up(): void {
    this.a.start()
    this.b.start()
    this.a.onConnected()
    this.b.onConnected()
    this.pump()
  }

  pump(): void {
    for (let i = 0; i < 1000 && (this.aToB.length || this.bToA.length); i++) {
      if (this.aToB.length) for (const c of randomSplits(concat(this.aToB.splice(0)), this.rand, 900)) this.b.onReceived(c)
      if (this.bToA.length) for (const c of randomSplits(concat(this.bToA.splice(0)), this.rand, 900)) this.a.onReceived(c)
    }
  }

  run(ms: number, stepMs = 500): void {
    for (let t = 0; t < ms; t += stepMs) {
      this.clock.advance(stepMs)
      this.pump()
    }
  }
}

const A: Opts = { localAs: 65001, peerAs: 65002, routerId: '10.0.0.1', announce: ['10.1.0.0/16', '10.2.0.0/16', '192.168.7.0/24'] }
const B: Opts = { localAs: 65002, peerAs: 65001, routerId: '10.0.0.2', localAddress: '172.16.0.2', announceKeys: generateRoutes(2000) }

describe('two speakers over a pipe', () => {
  it('reach Established and exchange routes (eBGP)', () => {
    const p = new Pair(A, B)
    const states: string[] = []
    p.a.on('state', (c) => states.push(`${c.from}>${c.to}`))
    const added: string[] = []
    p.a.on('route-add', (e) => added.push(`${e.prefix} via ${e.nextHop}`))
    p.up()
    expect(states).toEqual(['Idle>Connect', 'Connect>OpenSent', 'OpenSent>OpenConfirm', 'OpenConfirm>Established'])
    expect([p.a.state, p.b.state]).toEqual([State.Established, State.Established])

    // a learned b's 2000 generated routes, next hop b's local address, AS_PATH [65002].
    expect(p.a.locRib.size).toBe(2000)
    expect(p.a.adjRibIn?.size).toBe(2000)
    expect(added[0]).toBe('100.0.0.0/24 via 172.16.0.2')
    expect(added[1999]).toBe('100.7.207.0/24 via 172.16.0.2')
    const r = p.a.lookup('100.0.42.0/24')!
    expect(r.nextHop).toBe('172.16.0.2')
    expect(r.attrs.asPath).toEqual([{ type: SegType.AS_SEQUENCE, asns: [65002] }])
    expect(r.attrs.localPref).toBeNull()
    expect(r.peer).toEqual({ routerId: ip('10.0.0.2'), as: 65002, ibgp: false })

    // The change feed: 2000 adds, each with its next hop.
    expect(p.aChanges.length).toBe(2000)
    expect(p.aChanges.every((c) => c.op === 'add' && c.nextHopAddress === '172.16.0.2')).toBe(true)
    expect(p.aChanges[5].prefix).toBe('100.0.5.0/24')

    // b learned a's three, next hop a's router id (no localAddress given).
    expect(p.b.locRib.size).toBe(3)
    expect(p.b.lookup('192.168.7.0/24')?.nextHop).toBe('10.0.0.1')
    expect(p.b.lookup('10.1.0.0/16')?.attrs.asPath).toEqual([{ type: SegType.AS_SEQUENCE, asns: [65001] }])

    const sa = p.a.stats()
    expect(sa.messagesOut).toEqual({ open: 1, update: 1, notification: 0, keepalive: 1 })
    expect(sa.messagesIn.update).toBe(Math.ceil(2000 / Math.floor((4096 - 23 - 25) / 4)))
    expect([sa.adjRibIn, sa.locRib, sa.advertised, sa.pendingAnnouncements, sa.establishedCount]).toEqual([2000, 2000, 3, 0, 1])
    expect(sa.updatesProcessed).toBe(sa.messagesIn.update)
    p.a.invariants()
    p.b.invariants()
  })

  it('iBGP: LOCAL_PREF 100 is sent, the AS_PATH is empty', () => {
    const p = new Pair({ ...A, peerAs: 65001 }, { ...B, localAs: 65001, announceKeys: generateRoutes(3) })
    p.up()
    const r = p.a.lookup('100.0.1.0/24')!
    expect(r.attrs.localPref).toBe(100)
    expect(r.attrs.asPath).toEqual([])
    expect(r.peer.ibgp).toBe(true)
  })

  it('a 2-octet speaker and a 4-octet peer: AS_TRANS on the wire, the real path rebuilt from AS4_PATH', () => {
    const p = new Pair({ ...A, as4: false, peerAs: AS_TRANS }, { ...B, localAs: 4200000000, announceKeys: generateRoutes(10) })
    p.up()
    expect(p.a.negotiated?.as4).toBe(false)
    expect(p.a.negotiated?.peerAs).toBe(AS_TRANS)
    expect(p.a.lookup('100.0.3.0/24')?.attrs.asPath).toEqual([{ type: SegType.AS_SEQUENCE, asns: [4200000000] }])
    expect(p.b.lookup('10.1.0.0/16')?.attrs.asPath).toEqual([{ type: SegType.AS_SEQUENCE, asns: [65001] }])
  })

  it('a Cease from the peer ends the session: Loc-RIB emptied through delete changes, events both ways', () => {
    const p = new Pair(A, B)
    const aNotes: string[] = []
    const bNotes: string[] = []
    p.a.on('notification', (n) => aNotes.push(`${n.dir} ${n.code}/${n.subcode}`))
    p.b.on('notification', (n) => bNotes.push(`${n.dir} ${n.code}/${n.subcode}`))
    let withdrawn = 0
    p.a.on('route-withdraw', () => withdrawn++)
    p.up()
    p.b.stop()
    p.pump()
    expect(p.a.state).toBe(State.Idle)
    expect(p.a.locRib.size).toBe(0)
    expect(withdrawn).toBe(2000)
    expect(p.aChanges.filter((c) => c.op === 'delete').length).toBe(2000)
    expect(aNotes).toEqual(['in 6/2'])
    expect(bNotes).toEqual(['out 6/2'])
  })

  it('received withdrawals and replacements reach the change feed as delete and change', () => {
    const p = new Pair(A, { ...B, announceKeys: generateRoutes(2) })
    p.up()
    p.aChanges.length = 0
    const nlri = [24, 100, 0, 1]
    p.a.onReceived(rawUpdate({ attrs: goodAttrs({ nextHop: attr(WK, AttrType.NEXT_HOP, [172, 16, 0, 9]) }), nlri }))
    p.a.onReceived(rawUpdate({ withdrawn: [24, 100, 0, 0], attrs: [], nlri: [] }))
    expect(p.aChanges.map((c) => `${c.op} ${c.prefix} ${c.nextHopAddress}`)).toEqual(['change 100.0.1.0/24 172.16.0.9', 'delete 100.0.0.0/24 null'])
    expect(p.aChanges[0].previous?.nextHop).toBe(ip('172.16.0.2'))
    expect(p.a.stats().prefixesWithdrawn).toBe(1)
  })

  it('a malformed UPDATE is answered with its NOTIFICATION and the session ends', () => {
    const p = new Pair(A, B)
    p.up()
    const bad = rawUpdate({ attrs: goodAttrs({ origin: attr(WK, AttrType.ORIGIN, [7]) }) })
    for (const c of randomSplits(bad, prng(3), 5)) p.a.onReceived(c)
    const last = p.aSent.at(-1)!
    expect(messageType(last)).toBe(MsgType.NOTIFICATION)
    expect([last[19], last[20]]).toEqual([ErrCode.UPDATE, UpdateSub.INVALID_ORIGIN])
    expect(Array.from(last.subarray(21))).toEqual([0x40, 1, 1, 7])
    expect(p.a.state).toBe(State.Idle)
    expect(p.a.stats().wireErrors).toBe(1)
    p.pump()
    expect(p.b.state).not.toBe(State.Established)
  })

  it('routes looping through our AS or pointing at our address are ignored', () => {
    const p = new Pair(A, { ...B, announceKeys: [] })
    p.up()
    p.a.onReceived(rawUpdate({ attrs: goodAttrs({ asPath: attr(WK, AttrType.AS_PATH, [2, 2, 0, 0, 0xfd, 0xea, 0, 0, 0xfd, 0xe9]) }), nlri: [8, 20] }))
    p.a.onReceived(rawUpdate({ attrs: goodAttrs({ nextHop: attr(WK, AttrType.NEXT_HOP, [10, 0, 0, 1]) }), nlri: [8, 21] }))
    expect(p.a.locRib.size).toBe(0)
    expect(p.a.stats().routesIgnored).toBe(2)
    expect(p.a.state).toBe(State.Established)
  })

  it('bulk UPDATEs pause when send returns false and resume on onWritable, each prefix sent once', () => {
    const keys = generateRoutes(3000, '20.0.0.0/24')
    const p = new Pair({ ...A, announce: [], announceKeys: keys }, { ...B, announceKeys: [] })
    p.aWritable = false
    p.up()
    expect(p.a.stats().messagesOut.update).toBe(1)
    const perUpdate = Math.floor((4096 - 23 - 20) / 4) // attributes: ORIGIN 4, AS_PATH 9, NEXT_HOP 7 bytes
    expect(p.a.stats().pendingAnnouncements).toBe(3000 - perUpdate)
    expect(p.a.stats().advertised).toBe(perUpdate)
    p.aWritable = true
    p.a.onWritable()
    p.pump()
    expect(p.a.stats().pendingAnnouncements).toBe(0)
    expect(p.b.locRib.size).toBe(3000)
    expect(p.b.stats().prefixesReceived).toBe(3000)
    expect(p.a.stats().messagesOut.update).toBe(3)
  })

  it('keepalives keep the session up: an hour on the clock, no hold timer expiry, one Established each', () => {
    const p = new Pair({ ...A, holdTimeS: 9 }, { ...B, holdTimeS: 30 })
    p.up()
    p.run(3_600_000, 1000)
    for (const s of [p.a, p.b]) {
      const st = s.stats()
      expect([st.state, st.establishedCount, st.holdExpired, st.messagesIn.notification]).toEqual([State.Established, 1, 0, 0])
      expect(st.messagesOut.keepalive).toBeGreaterThanOrEqual(3_600_000 / 3000)
    }
    expect(p.a.negotiated?.holdTimeS).toBe(9)
  })

  it('inputs are serialized: a pipe that delivers synchronously (re-entering the speaker) still works', () => {
    const clock = new ManualClock()
    let b: BgpSpeaker
    const a = new BgpSpeaker({ ...A, clock, send: (m) => b.onReceived(m) })
    b = new BgpSpeaker({ ...B, passive: true, clock, send: (m) => a.onReceived(m) })
    a.start()
    b.start()
    b.onConnected()
    a.onConnected()
    expect([a.state, b.state]).toEqual([State.Established, State.Established])
    expect([a.locRib.size, b.locRib.size]).toEqual([2000, 3])
    clock.advance(600_000)
    expect([a.state, b.state]).toEqual([State.Established, State.Established])
  })

  it('rejects bad configuration with EINVAL', () => {
    expect(() => new BgpSpeaker({ ...A, routerId: '10.0.0' })).toThrow(/EINVAL/)
    expect(() => new BgpSpeaker({ ...A, announce: ['10.0.0.1/8'] })).toThrow(/EINVAL/)
    expect(() => new BgpSpeaker({ ...A, holdTimeS: 2 })).toThrow(/EINVAL/)
    expect(() => new BgpSpeaker({ ...A, localAs: 4200000000, as4: false })).toThrow(/EINVAL/)
  })

  it('the change feed formats lazily and agrees with the Loc-RIB', () => {
    const p = new Pair(A, { ...B, announceKeys: generateRoutes(5, '100.64.0.0/10') })
    p.up()
    expect(p.aChanges.map((c) => c.prefix)).toEqual(['100.64.0.0/10', '100.128.0.0/10', '100.192.0.0/10', '101.0.0.0/10', '101.64.0.0/10'])
    for (const c of p.aChanges) expect(p.a.locRib.get(c.key)?.attrs).toBe(c.attrs)
    expect(formatPrefix(pfx('100.64.0.0/10'))).toBe('100.64.0.0/10')
  })
})
