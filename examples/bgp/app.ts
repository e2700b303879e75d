// The BGP example's RE application: the same module runs in both routing engines.
//
//   primary    the speaker is active on a replicated connection to the peer: every BGP message
//              it sends is one write() (one record, so a takeover never tears a message); what the
//              connection receives feeds it. Loc-RIB changes go into the chassis FIB through
//              re.ksync (next hops, and routes through them). Once replication of the connection
//              is functional it sends the secondary a snapshot of its speaker (transfer.ts).
//   secondary  follows through the snoop pair: it waits for the snapshot, restores a snooping
//              speaker from it, then feeds it what the primary wrote (pair.send, whole records)
//              and what the peer sent (pair.recv), from the snapshot's cut on.
//   promotion  ('mastership') the snooping speaker takes over on the merged socket: messages the
//              old primary still owed are written first, then the takeover's KEEPALIVE; the FIB is
//              re-synced by audit from the Loc-RIB (an unchanged RIB costs no churn).
//
// Events for the host go out as app events (re.request({ op: 'app-event' })): state, routes,
// notification, snapshot-sent, synced, takeover, fib-resync, session-reset, stopped, status. The
// host sends chassis events: { ev: 'bgp-stop' } (Cease, then close), { ev: 'bgp-status' }.
//
// options (re.options): BgpAppOptions.

import type { RoutingEngine } from '../../engine/re/re.ts'
import type { SnoopPair } from '../../engine/sdrl/secondary.ts'
import type { Socket } from '../../engine/socket/socket.ts'
import { NsrError } from '../../engine/errors.ts'
import { formatIp, formatPrefix } from './codec.ts'
import { State } from './fsm.ts'
import { generateRoutes } from './peer.ts'
import type { RibChange } from './rib.ts'
import { BgpSpeaker } from './speaker.ts'
import { Follower, isTransferMessage, takeSnapshot, type SnapshotHead, type TransferMessage } from './transfer.ts'

export interface BgpAppOptions {
  peer: { host: string; port: number; transport?: 'tcp' | 'memory'; local?: string }
  localAs: number
  peerAs: number
  routerId: string
  /** Next hop of the originated routes; defaults to peer.local, then routerId. */
  localAddress?: string
  holdTimeS?: number
  connectRetryMs?: number
  /** Accept 127/8 next hops from the peer (a lab on one host's loopback). */
  loopbackNextHop?: boolean
  announce?: string[]
  /** Generated prefixes to originate as well: `count` of the size of `first`, consecutive. */
  generate?: { count: number; first: string }
  /** Program Loc-RIB changes into the chassis FIB (default true). */
  fib?: boolean
  /** Replicate the session's connection (default true; false runs without NSR, for comparison). */
  replicate?: boolean
  /** Routes per snapshot chunk. */
  snapshotChunkRoutes?: number
  /** Quiet time before a 'routes' report after the RIB changed. Default 250 ms. */
  reportMs?: number
}

/** Messages the socket refused at most (the speaker pauses bulk UPDATEs at the first). */
const MAX_OUT_QUEUE = 1024
/** Loc-RIB routes re-synced into the FIB per turn of the event loop after a takeover. */
const RESYNC_ROUTES_PER_TURN = 20_000
/** Retry delay when the KKCM to the secondary is full while sending a snapshot. */
const SNAPSHOT_RETRY_MS = 1

export type BgpAppEvent = Record<string, unknown> & { type: string }

class BgpApp {
  private readonly re: RoutingEngine
  private readonly o: BgpAppOptions
  private speaker: BgpSpeaker | null = null
  // primary
  private sock: Socket | null = null
  private connGen = 0
  private rxPos = 0
  private outQ: Uint8Array[] = []
  private snapshotId = 0
  private sending: { msgs: TransferMessage[]; i: number; t0: number } | null = null
  private stopping = false
  private readonly fib = new Map<number, number>() // prefix key -> next hop we asked re.ksync for
  private readonly nhRefs = new Map<number, number>()
  private reportTimer: { cancel(): void } | null = null
  private lastRibChangeAt = 0
  // secondary
  private pair: SnoopPair | null = null
  private follower: Follower | null = null
  private restoring: { id: number; speaker: BgpSpeaker; head: SnapshotHead; t0: number } | null = null

  constructor(re: RoutingEngine, o: BgpAppOptions) {
    this.re = re
    this.o = o
    re.on('split', (pair: SnoopPair) => this.follow(pair))
    re.on('peer-message', (m: unknown) => {
      if (isTransferMessage(m)) this.onTransfer(m)
    })
    re.on('mastership', (e: { adopted: number[] }) => this.takeover(e.adopted))
    re.on('chassis-event', (ev: Record<string, unknown>) => {
      if (ev.ev === 'bgp-stop') this.stop()
      else if (ev.ev === 'bgp-status') this.status()
    })
    if (re.role === 'primary') this.startSession()
  }

  private event(e: BgpAppEvent): void {
    void this.re.request({ op: 'app-event', event: e }).catch(() => {})
  }

  private makeSpeaker(mode: 'active' | 'snoop'): BgpSpeaker {
    const o = this.o
    const s = new BgpSpeaker({
      localAs: o.localAs,
      peerAs: o.peerAs,
      routerId: o.routerId,
      localAddress: o.localAddress ?? o.peer.local ?? o.routerId,
      holdTimeS: o.holdTimeS,
      connectRetryMs: o.connectRetryMs,
      loopbackNextHop: o.loopbackNextHop,
      announce: o.announce,
      announceKeys: o.generate ? generateRoutes(o.generate.count, o.generate.first) : undefined,
      clock: this.re.clock,
      mode,
      send: (m) => this.send(m),
      connect: () => this.connect(),
      disconnect: () => this.disconnect(),
      onRibChange: (c) => this.onRibChange(c),
    })
    s.on('state', (c) => {
      if (this.re.role === 'primary' && s === this.speaker) this.event({ type: 'state', from: c.from, to: c.to, reason: c.reason })
    })
    s.on('notification', (n) => {
      if (this.re.role === 'primary' && s === this.speaker) this.event({ type: 'notification', dir: n.dir, code: n.code, subcode: n.subcode })
    })
    return s
  }

  // ---- primary: the session ------------------------------------------------------------------

  private startSession(): void {
    this.speaker = this.makeSpeaker('active')
    this.speaker.start()
  }

  /** The speaker asks for a connection. */
  private connect(): void {
    const gen = ++this.connGen
    const p = this.o.peer
    this.re.connect({ host: p.host, port: p.port, transport: p.transport ?? 'memory', local: p.local }).then(
      (sock) => {
        if (gen !== this.connGen || this.re.role !== 'primary') return sock.close()
        this.follower = null // its cut belongs to the connection taken over, not to this one
        this.attach(sock)
        if (this.o.replicate === false) return this.connected(sock)
        // Replicated before the first byte is sent: the secondary's snapshot is then taken at once.
        sock.replicate().then(
          () => this.connected(sock),
          () => this.connected(sock), // no secondary now: replication starts when one is up
        )
      },
      (err: NsrError) => {
        if (gen === this.connGen) this.speaker?.onDisconnected(`connect: ${err.code ?? err.message}`)
      },
    )
  }

  private connected(sock: Socket): void {
    if (sock !== this.sock) return
    this.speaker!.onConnected()
    this.readSock()
  }

  /** The speaker asks to close the connection. */
  private disconnect(): void {
    this.connGen++
    const sock = this.sock
    this.sock = null
    this.outQ = []
    sock?.close()
  }

  /** A live socket carries the session from now on (a new connection, or the merged one). */
  private attach(sock: Socket): void {
    this.sock = sock
    this.rxPos = sock.rcvOffset - sock.rcv.bytes
    sock.on('readable', () => {
      if (sock === this.sock && this.speaker!.state !== State.Connect && this.speaker!.state !== State.Active) this.readSock()
    })
    sock.on('writable', () => {
      if (sock === this.sock) this.flushOut()
    })
    sock.on('replication', (e: { functional: boolean }) => {
      if (sock === this.sock && e.functional) this.sendSnapshot()
    })
    const closed = (why: string) => {
      if (sock !== this.sock) return
      this.sock = null
      this.outQ = []
      sock.close()
      this.speaker?.onDisconnected(why)
    }
    sock.on('end', () => closed('peer closed the connection'))
    sock.on('error', (err: NsrError) => closed(`connection failed: ${err.code}`))
    sock.on('close', () => {
      if (this.stopping) this.event({ type: 'stopped' })
    })
  }

  private readSock(): void {
    const sock = this.sock
    if (!sock) return
    for (let r = sock.read(); r; r = sock.read()) {
      const off = this.rxPos
      this.rxPos += r.data.length
      // After a takeover the follower still skips what the snapshot covered (late chassis RX).
      if (this.follower) this.follower.received(off, r.data)
      else this.speaker!.onReceived(r.data)
      if (sock !== this.sock) return
    }
  }

  /** The speaker's output: one message per record; refused ones wait, in order. */
  private send(m: Uint8Array): boolean {
    const sock = this.sock
    if (!sock || this.re.role !== 'primary') return false
    if (this.outQ.length > 0) return this.queue(m)
    try {
      sock.write(m)
      return true
    } catch (err) {
      if (err instanceof NsrError && (err.code === 'EAGAIN' || err.code === 'ENOBUFS')) return this.queue(m)
      return false // the connection is going away; 'end' or 'error' follows
    }
  }

  private queue(m: Uint8Array): false {
    if (this.outQ.length >= MAX_OUT_QUEUE) throw new NsrError('ENOBUFS', 'BGP output queue overflow: the speaker did not pause')
    this.outQ.push(m)
    return false
  }

  private flushOut(): void {
    const sock = this.sock
    if (!sock) return
    while (this.outQ.length > 0) {
      try {
        sock.write(this.outQ[0])
      } catch (err) {
        if (err instanceof NsrError && (err.code === 'EAGAIN' || err.code === 'ENOBUFS')) return
        this.outQ = []
        return
      }
      this.outQ.shift()
    }
    this.speaker?.onWritable()
  }

  /** Replication of the session's socket is functional: the secondary gets the speaker's state. */
  private sendSnapshot(): void {
    const sock = this.sock
    const speaker = this.speaker
    if (!sock || !speaker || speaker.mode !== 'active') return
    const t0 = performance.now()
    const msgs = takeSnapshot(++this.snapshotId, sock.handle, speaker, { sndSeq: sock.sndSeq, rcvOffset: this.rxPos, owed: this.outQ }, this.o.snapshotChunkRoutes)
    this.sending = { msgs, i: 0, t0 }
    this.pumpSnapshot(this.sending)
  }

  private pumpSnapshot(s: NonNullable<BgpApp['sending']>): void {
    while (s === this.sending && s.i < s.msgs.length) {
      if (!this.re.hasPeer) return
      if (!this.re.sendToPeer(s.msgs[s.i])) {
        this.re.clock.schedule(SNAPSHOT_RETRY_MS, () => this.pumpSnapshot(s))
        return
      }
      s.i++
    }
    if (s !== this.sending) return
    this.sending = null
    const head = s.msgs[0] as SnapshotHead
    this.event({ type: 'snapshot-sent', routes: head.speaker.routes, messages: s.msgs.length, ms: performance.now() - s.t0 })
  }

  /** Cease to the peer, then close (the host is shutting down). */
  private stop(): void {
    if (this.re.role !== 'primary' || !this.speaker) return
    this.stopping = true
    const hadSession = this.sock !== null
    this.speaker.stop('administrative shutdown')
    if (!hadSession) this.event({ type: 'stopped' })
  }

  /** Where this RE stands (asked by a host that subscribed late). */
  private status(): void {
    const s = this.speaker
    const synced = this.re.role === 'secondary' ? this.follower !== null : s !== null
    this.event({ type: 'status', role: this.re.role, state: s?.state ?? null, synced, routes: s?.locRib.size ?? 0 })
  }

  // ---- primary: the FIB ----------------------------------------------------------------------

  private onRibChange(c: RibChange): void {
    if (this.re.role !== 'primary') return
    this.lastRibChangeAt = performance.timeOrigin + performance.now()
    this.syncRoute(c.key)
    if (!this.reportTimer) {
      this.reportTimer = this.re.clock.schedule(this.o.reportMs ?? 250, () => {
        this.reportTimer = null
        const st = this.speaker?.stats()
        if (st) {
          this.event({
            type: 'routes',
            locRib: st.locRib,
            received: st.prefixesReceived,
            withdrawn: st.prefixesWithdrawn,
            advertised: st.advertised,
            updates: st.updatesProcessed,
            // Absolute time (comparable across the threads of one process) of the last Loc-RIB change.
            lastChangeAt: this.lastRibChangeAt,
          })
        }
      })
    }
  }

  /** Makes the FIB's route for `key` what the Loc-RIB says (idempotent: takeover's re-sync walks every key through it). */
  private syncRoute(key: number): void {
    const k = this.re.ksync
    if (!k || this.o.fib === false || !this.speaker) return
    const want = this.speaker.locRib.get(key)?.attrs.nextHop ?? null
    const have = this.fib.get(key) ?? null
    if (want === have) return
    const prefix = formatPrefix(key)
    if (want !== null) this.refNh(want)
    if (have === null) k.addRoute(prefix, formatIp(want!))
    else if (want === null) k.deleteRoute(prefix)
    else k.changeRoute(prefix, formatIp(want))
    if (want === null) this.fib.delete(key)
    else this.fib.set(key, want)
    if (have !== null) this.unrefNh(have)
  }

  private refNh(nh: number): void {
    const n = this.nhRefs.get(nh) ?? 0
    this.nhRefs.set(nh, n + 1)
    if (n === 0) this.re.ksync!.addNextHop(formatIp(nh))
  }

  private unrefNh(nh: number): void {
    const n = this.nhRefs.get(nh)! - 1
    if (n > 0) return void this.nhRefs.set(nh, n)
    this.nhRefs.delete(nh)
    this.re.ksync!.deleteNextHop(formatIp(nh))
  }

  /** After a takeover: re-adds the whole Loc-RIB (a fresh client learns the FIB's indexes), then ends the audit. */
  private resyncFib(): void {
    this.fib.clear()
    this.nhRefs.clear()
    const speaker = this.speaker!
    const keys = [...speaker.locRib.keys()]
    const t0 = performance.now()
    let i = 0
    const step = (): void => {
      if (speaker !== this.speaker) return
      const end = Math.min(keys.length, i + RESYNC_ROUTES_PER_TURN)
      for (; i < end; i++) this.syncRoute(keys[i])
      if (i < keys.length) return void setImmediate(step)
      this.re.ksyncLink.endAudit().then(
        (r) => this.event({ type: 'fib-resync', routes: keys.length, ms: performance.now() - t0, audit: r as unknown as Record<string, unknown> }),
        (err: Error) => this.event({ type: 'fib-resync-failed', message: err.message }),
      )
    }
    setImmediate(step) // after the promotion returns: the takeover itself waits for none of this
  }

  // ---- secondary -----------------------------------------------------------------------------

  /** A (new) snoop pair for the session's socket: wait for its snapshot, holding the snoop streams. */
  private follow(pair: SnoopPair): void {
    this.speaker?.close()
    this.speaker = null
    this.follower = null
    this.restoring = null
    this.pair = pair
    pair.send.on('readable', () => this.drainSnoop(pair))
    pair.recv.on('readable', () => this.drainSnoop(pair))
    pair.on('unreplicated', () => {
      if (this.pair !== pair) return
      this.pair = null
      this.follower = null
      this.speaker?.close()
      this.speaker = null
    })
  }

  private onTransfer(m: TransferMessage): void {
    if (this.re.role !== 'secondary') return
    if (m.t === 'bgp-snapshot') {
      if (!this.pair || m.handle !== this.pair.handle) return // a snapshot of a socket we do not follow
      this.speaker?.close()
      this.speaker = null
      this.follower = null
      const speaker = this.makeSpeaker('snoop')
      speaker.restore(m.speaker)
      this.restoring = { id: m.id, speaker, head: m, t0: performance.now() }
    } else {
      const r = this.restoring
      if (!r || m.id !== r.id) return
      r.speaker.importRoutes(m.chunk)
    }
    const r = this.restoring
    if (r && r.speaker.restoreComplete) this.synced(r)
  }

  private synced(r: NonNullable<BgpApp['restoring']>): void {
    this.restoring = null
    this.speaker = r.speaker
    const s = r.speaker
    // A replicated socket means the connection is up, even if the primary's speaker was not told yet.
    if (s.state === State.Connect || s.state === State.Active) s.onConnected()
    this.follower = new Follower(s, r.head.cut)
    if (this.pair) this.drainSnoop(this.pair)
    this.event({ type: 'synced', state: s.state, routes: s.locRib.size, ms: performance.now() - r.t0 })
  }

  /** Feeds the follower what the snoop pair holds (nothing until the snapshot is applied). */
  private drainSnoop(pair: SnoopPair): void {
    const f = this.follower
    if (!f || pair !== this.pair || this.re.role !== 'secondary') return
    for (let r = pair.send.read(); r; r = pair.send.read()) f.sent(r.seq, r.data)
    for (let r = pair.recv.read(); r; r = pair.recv.read()) f.received(pair.recv.readOffset - r.data.length, r.data)
  }

  // ---- promotion -----------------------------------------------------------------------------

  private takeover(adopted: number[]): void {
    const t0 = performance.now()
    const pair = this.pair
    this.pair = null
    this.restoring = null
    if (!pair || !adopted.includes(pair.handle)) {
      // No session to carry on: start one.
      this.speaker?.close()
      this.follower = null
      this.startSession()
      this.event({ type: 'takeover', carried: false, ms: performance.now() - t0 })
      return
    }
    const sock = this.re.merge(pair.handle)
    const f = this.follower
    if (!f) {
      // The snapshot never completed: this RE cannot carry the session on. Start a new one.
      this.speaker?.close()
      this.speaker = null
      sock.close()
      this.event({ type: 'session-reset', reason: 'the secondary had not received the snapshot' })
      this.startSession()
      return
    }
    // Records the old primary wrote that were not read yet: the merge keeps only what is unsent.
    for (let r = pair.send.read(); r; r = pair.send.read()) f.sent(r.seq, r.data)
    pair.send.removeAllListeners('readable')
    pair.recv.removeAllListeners('readable') // its unread chunks are in the merged socket now
    const speaker = f.speaker
    this.outQ = f.owedUnsent()
    this.attach(sock)
    speaker.takeover()
    this.flushOut()
    this.readSock()
    this.event({ type: 'takeover', carried: true, state: speaker.state, routes: speaker.locRib.size, owed: f.counters.owedSeen, ms: performance.now() - t0 })
    this.resyncFib()
  }
}

export default function app(re: RoutingEngine): void {
  new BgpApp(re, (re as unknown as { options: BgpAppOptions }).options)
}
