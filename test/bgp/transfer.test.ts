// State transfer to a secondary that joins a running session (examples/bgp/transfer.ts): its snoop
// streams start at the replication cut, the snapshot comes later (through msgpackr, as over the
// KKCM), and it must end with exactly the primary's state: FSM, negotiated parameters, timers,
// RIBs, counters. Then it takes over with the peer seeing no second OPEN, no NOTIFICATION and
// every route exactly once, including messages the primary had queued but not written (owed), and
// through a chain of failovers where every new secondary joins mid-session.

import { pack, unpack } from 'msgpackr'
import { describe, expect, it } from 'vitest'
import { ManualClock } from '../../engine/clock.ts'
import { State } from '../../examples/bgp/fsm.ts'
import { EmbeddedPeer, generateRoutes } from '../../examples/bgp/peer.ts'
import { BgpSpeaker, type SpeakerOptions } from '../../examples/bgp/speaker.ts'
import { Follower, takeSnapshot, type SnapshotHead, type SnapshotRoutes, type TransferMessage } from '../../examples/bgp/transfer.ts'
import { concat, prng, randomSplits } from './harness.ts'

const speakerOpts: Omit<SpeakerOptions, 'clock' | 'send' | 'mode'> = {
  localAs: 65001,
  peerAs: 65002,
  routerId: '10.0.0.1',
  holdTimeS: 90,
  announceKeys: generateRoutes(3000, '20.0.0.0/24'),
}

/** One RE's application: a speaker, its queue of messages the socket refused (the owed ones). */
interface Re {
  speaker: BgpSpeaker
  follower: Follower | null
  outQ: Uint8Array[]
  /** Snoop streams held until the snapshot arrives: [seq, record] and [offset, bytes]. */
  heldSent: Array<[number, Uint8Array]>
  heldRecv: Array<[number, Uint8Array]>
}

/**
 * An active RE and the EmbeddedPeer on one connection, and a secondary that joins at any moment.
 * The connection's state is the socket's: records accepted (seq from 1) and received bytes read.
 */
class JoinNet {
  readonly clock = new ManualClock()
  readonly rand: () => number
  readonly peer: EmbeddedPeer
  primary: Re
  secondary: Re | null = null
  /** The socket refuses writes (EAGAIN): the application queues them. */
  blocked = false
  sndSeq = 0
  rcvOffset = 0
  /** Every record accepted (seq i+1 at i) and every received byte, for a join that reaches back. */
  private readonly recordLog: Uint8Array[] = []
  private readonly rxLog: Uint8Array[] = []
  private snapshotId = 0
  private toPeer: Uint8Array[] = []
  private toSpeaker: Uint8Array[] = []

  constructor(seed: number, peerRoutes = 5000) {
    this.rand = prng(seed)
    this.peer = new EmbeddedPeer({ as: 65002, peerAs: 65001, routerId: '10.0.0.2', localAddress: '172.16.0.2', holdTimeS: 30, routes: peerRoutes, clock: this.clock, send: (b) => this.toSpeaker.push(b) })
    this.primary = this.makeRe('active')
    this.primary.speaker.start()
    this.primary.speaker.onConnected()
    this.peer.onConnected()
  }

  private makeRe(mode: 'active' | 'snoop'): Re {
    const re: Re = { speaker: null as unknown as BgpSpeaker, follower: null, outQ: [], heldSent: [], heldRecv: [] }
    re.speaker = new BgpSpeaker({ ...speakerOpts, clock: this.clock, mode, send: (m) => this.send(re, m) })
    return re
  }

  /** The application's send: one message per record, queued while the socket refuses. */
  private send(re: Re, m: Uint8Array): boolean {
    if (re !== this.primary) return false // a dead primary's timers
    if (this.blocked || re.outQ.length > 0) {
      re.outQ.push(m)
      return false
    }
    this.accept(m)
    return true
  }

  private accept(m: Uint8Array): void {
    this.sndSeq++
    this.recordLog.push(m)
    const s = this.secondary
    if (s) {
      if (s.follower) s.follower.sent(this.sndSeq, m)
      else s.heldSent.push([this.sndSeq, m])
    }
    this.toPeer.push(m)
  }

  unblock(): void {
    this.blocked = false
    const re = this.primary
    while (re.outQ.length > 0) this.accept(re.outQ.shift()!)
    re.speaker.onWritable()
  }

  /**
   * A fresh secondary's snoop streams start here: `backRecords` records and `backBytes` bytes
   * before the present (the handshake's pre-existing data), none of which it has read yet.
   */
  join(backRecords: number, backBytes: number): void {
    const s = this.makeRe('snoop')
    backRecords = Math.min(backRecords, this.sndSeq)
    for (let seq = this.sndSeq - backRecords + 1; seq <= this.sndSeq; seq++) s.heldSent.push([seq, this.recordLog[seq - 1]])
    const all = concat(this.rxLog)
    backBytes = Math.min(backBytes, all.length)
    const rx = all.subarray(all.length - backBytes)
    let off = this.rcvOffset - backBytes
    for (const c of randomSplits(rx, this.rand, 500)) {
      s.heldRecv.push([off, c])
      off += c.length
    }
    this.secondary = s
  }

  /** The primary snapshots now; the messages travel through msgpackr; the secondary applies them. */
  transfer(routesPerChunk = 1000): TransferMessage[] {
    const p = this.primary
    const msgs = takeSnapshot(++this.snapshotId, 7, p.speaker, { sndSeq: this.sndSeq, rcvOffset: this.rcvOffset, owed: p.outQ }, routesPerChunk)
    const wire = msgs.map((m) => unpack(pack(m)) as TransferMessage)
    const s = this.secondary!
    const head = wire[0] as SnapshotHead
    s.speaker.restore(head.speaker)
    for (const m of wire.slice(1)) s.speaker.importRoutes((m as SnapshotRoutes).chunk)
    expect(s.speaker.restoreComplete).toBe(true)
    s.follower = new Follower(s.speaker, head.cut)
    for (const [seq, r] of s.heldSent.splice(0)) s.follower.sent(seq, r)
    for (const [off, b] of s.heldRecv.splice(0)) s.follower.received(off, b)
    return wire
  }

  /** Delivers queued bytes both ways until quiet (or `rounds` rounds); the secondary sees its own splits. */
  /** The last pump() left the peer's stream cut mid-message (holdBackBytes). */
  heldBack = false

  pump(rounds = 10_000, holdBackBytes = 0): void {
    this.heldBack = false
    for (let r = 0; r < rounds; r++) {
      if (this.toPeer.length === 0 && this.toSpeaker.length === 0) return
      const toPeer = this.toPeer.splice(0)
      for (const b of toPeer) this.peer.onBytes(b)
      const toSpeaker = this.toSpeaker.splice(0)
      if (toSpeaker.length === 0) continue
      let stream = concat(toSpeaker)
      if (holdBackBytes > 0 && stream.length > holdBackBytes) {
        // The rest of the stream stays in flight: the primary's reader holds a partial message.
        this.toSpeaker.unshift(stream.slice(stream.length - holdBackBytes))
        this.heldBack = true
        stream = stream.subarray(0, stream.length - holdBackBytes)
      }
      this.rxLog.push(stream)
      const start = this.rcvOffset
      for (const c of randomSplits(stream, this.rand, 700)) {
        this.rcvOffset += c.length
        this.primary.speaker.onReceived(c)
      }
      const s = this.secondary
      if (!s) continue
      let off = start
      for (const c of randomSplits(stream, this.rand, 900)) {
        if (s.follower) s.follower.received(off, c)
        else s.heldRecv.push([off, c])
        off += c.length
      }
    }
  }

  run(ms: number, stepMs = 500): void {
    for (let t = 0; t < ms; t += stepMs) {
      this.clock.advance(Math.min(stepMs, ms - t))
      this.pump()
    }
  }

  /** The primary dies; the secondary becomes the primary (owed messages first, then its takeover). */
  takeover(): void {
    const s = this.secondary!
    expect(s.follower).not.toBeNull()
    this.primary.speaker.close()
    this.blocked = false
    s.outQ.push(...s.follower!.owedUnsent())
    this.primary = s
    this.secondary = null
    while (s.outQ.length > 0) this.accept(s.outQ.shift()!)
    s.speaker.takeover()
    this.pump()
  }
}

/** Byte arrays as plain arrays (msgpackr hands back Buffers where Uint8Arrays went in). */
function plain(x: unknown): unknown {
  if (x instanceof Uint8Array) return [...x]
  if (Array.isArray(x)) return x.map(plain)
  if (x && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, plain(v)]))
  return x
}
const json = (x: unknown): string => JSON.stringify(plain(x))

function view(s: BgpSpeaker) {
  const st = s.stats()
  const rib = new Map<number, string>()
  for (const k of s.locRib.keys()) rib.set(k, json(s.locRib.get(k)!.attrs))
  return {
    state: s.state,
    negotiated: json(s.negotiated),
    timers: s.timers(),
    rib: [...rib].sort((a, b) => a[0] - b[0]),
    adjRibIn: s.adjRibIn?.size ?? 0,
    advertised: [...s.advertisedKeys()].sort((a, b) => a - b),
    messagesIn: st.messagesIn,
    messagesOut: st.messagesOut,
    bytes: [st.bytesIn, st.bytesOut],
    updatesProcessed: st.updatesProcessed,
    establishedCount: st.establishedCount,
  }
}

function expectUnbroken(n: JoinNet, routes = 3000): void {
  const p = n.peer
  expect(p.sessionUp).toBe(true)
  expect(p.establishedSince).toBe(1)
  expect(p.opensReceived).toBe(1)
  expect(p.notificationsSeen).toBe(0)
  expect(p.speaker.stats().holdExpired).toBe(0)
  expect(p.receivedRoutes.size).toBe(routes)
  expect(p.speaker.stats().prefixesReceived).toBe(routes) // each prefix exactly once
}

describe('state transfer to a secondary that joins a running session', () => {
  it('joins in the middle of the initial exchange, with a partial message in the reader, and ends equal', () => {
    for (let seed = 1; seed <= 5; seed++) {
      const n = new JoinNet(seed)
      n.pump(1) // the OPENs, the peer's KEEPALIVE; our KEEPALIVE and UPDATEs on their way
      n.join(seed % 3, 40 * seed)
      // More traffic before the snapshot (the secondary holds it), the peer's stream cut mid-message.
      for (let i = 0; i < 5 && !n.heldBack; i++) n.pump(1, 7 * seed)
      expect(n.primary.speaker.state).toBe(State.Established)
      const wire = n.transfer(700)
      expect(wire.length).toBeGreaterThan(2) // routes in several chunks
      expect((wire[0] as SnapshotHead).speaker.rxPending.length).toBeGreaterThan(0)
      expect(view(n.secondary!.speaker)).toEqual(view(n.primary.speaker))
      n.pump()
      expect(view(n.secondary!.speaker)).toEqual(view(n.primary.speaker))
      expect(n.primary.speaker.locRib.size).toBe(5000)
      n.run(60_000)
      expect(view(n.secondary!.speaker)).toEqual(view(n.primary.speaker))
      n.secondary!.speaker.invariants()
      n.takeover()
      n.run(300_000)
      expectUnbroken(n)
      expect(n.primary.speaker.locRib.size).toBe(5000)
    }
  })

  it('carries messages the socket had not accepted yet (owed): written by the primary later, or by the new primary', () => {
    for (const primaryWritesThem of [true, false]) {
      const n = new JoinNet(11)
      n.blocked = true
      n.pump(3) // our KEEPALIVE and first UPDATE pile up in the application's queue
      expect(n.primary.outQ.length).toBeGreaterThan(0)
      n.join(0, 0)
      const wire = n.transfer()
      expect((wire[0] as SnapshotHead).cut.owed.length).toBe(n.primary.outQ.length)
      if (primaryWritesThem) {
        n.unblock()
        n.pump()
        expect(view(n.secondary!.speaker)).toEqual(view(n.primary.speaker))
        expect(n.secondary!.follower!.owedUnsent()).toEqual([])
      }
      n.takeover()
      n.run(120_000)
      expectUnbroken(n)
    }
  })

  it('survives a chain of failovers, each new secondary joining mid-session', () => {
    const n = new JoinNet(21)
    n.pump(4)
    for (let i = 0; i < 6; i++) {
      n.pump(1 + (i % 3))
      n.join(i % 3, 300 * i)
      n.transfer(512)
      n.run(7_000 + 1000 * i)
      expect(view(n.secondary!.speaker)).toEqual(view(n.primary.speaker))
      n.takeover()
    }
    n.run(200_000)
    expectUnbroken(n)
    expect(n.primary.speaker.locRib.size).toBe(5000)
  })

  it('a snapshot of an idle or connecting speaker restores too', () => {
    const n = new JoinNet(31)
    n.join(0, 0) // before anything was delivered: OPENs queued
    n.transfer()
    expect(n.secondary!.speaker.state).toBe(n.primary.speaker.state)
    n.pump()
    expect(view(n.secondary!.speaker)).toEqual(view(n.primary.speaker))
  })
})
