// The deterministic simulation world: the chassis core, a primary and a secondary RoutingEngine, the
// in-memory network with its far-end peers, and six SimLinks (RE<->RE both ways, each RE<->chassis
// both ways), all on one ManualClock in one thread. Every step picks one action with the seeded
// PRNG (deliver a random batch on one link, move time, an application or peer action, or a fault),
// lets microtasks settle, and checks the invariants of DESIGN.md. A schedule ends with a drain
// (faults off, every queue emptied) and the liveness checks: nothing accepted was lost, nothing
// waits forever.
//
// Faults: crash the primary (the chassis drains its link, the secondary gets every KKCM frame the
// old primary sent, then promoteInfo / promote / promoted, and a fresh secondary starts later),
// crash the secondary, hang either RE (a hung secondary is found by the primary's keepalive
// silence; a hung primary by the chassis supervisor after the dead interval, then handled as a
// crash), graceful switchover, unreplicate on either side, a slow secondary (acks stop: the ack
// timer fires), a stalled secondary application (its window closes: EAGAIN, then 'writable'), a
// peer that stops reading (the transport window fills), and bad input on any link
// (test/sim/badinput.ts). Acks are never lost: the rings are reliable. The invariant checks live
// in test/sim/invariants.ts.
//
// The ledger (Truth.ledger) is the surviving history of each connection: every record write()
// accepted, by sequence number, with the epoch of the RE that accepted it. At a takeover the records
// past the new primary's last replicated sequence are gone legitimately (accepted by the dead
// primary, never replicated, hence never transmitted); everything that remains must reach the
// transport exactly once, in order.

import { ChassisCore } from '../../engine/chassis/core.ts'
import { MemoryNetwork, type MemoryPeer, type MemoryUdp } from '../../engine/chassis/memory.ts'
import { ManualClock } from '../../engine/clock.ts'
import { Flag, MsgType, seqLe, type Header } from '../../engine/protocol/header.ts'
import { InitStep } from '../../engine/sdrl/flags.ts'
import type { SrPrimary } from '../../engine/sdrl/primary.ts'
import type { Addr } from '../../engine/socket/records.ts'
import { LISTEN_PORT, SERVE_PORT, type AppSock } from './app.ts'
import { makeChunk, readRecord, readRecords, type RecordId } from './content.ts'
import { injectBadInput, watchInjected } from './badinput.ts'
import { checkFinal, checkStep } from './invariants.ts'
import { SimLink, type LinkReceiver } from './link.ts'
import { ReNode, SimViolation, randomConfig, settle, type SimConfig, type Truth } from './node.ts'
import { Prng } from './prng.ts'

export { ReNode, SimViolation, type SimConfig, type Truth }

const TRACE = process.env.SIM_TRACE === '1'
const DRAIN_MAX_ROUNDS = 150
const DRAIN_QUIET_ROUNDS = 6
const UDP_ENGINE_PORT = 2000
const UDP_PEER_PORT = 3000

export class World {
  readonly seed: number
  readonly rng: Prng
  readonly cfg: SimConfig
  readonly clock = new ManualClock()
  readonly net: MemoryNetwork
  readonly chassis: ChassisCore
  primary!: ReNode
  secondary: ReNode | null = null
  readonly nodes: ReNode[] = []
  readonly truths: Truth[] = []
  readonly truthByPort = new Map<number, Truth>()
  readonly truthByHandle = new Map<number, Truth>()
  stepNo = 0
  failure: SimViolation | null = null
  private traceLines: string[] = []
  private nextEpoch = 1
  /** Per handle: highest seq the current secondary acknowledged in this replication round. */
  private secAcked = new Map<number, number>()
  /** Records the primary sent HELD, not yet seen at the transport ("handle:seq"). */
  private held = new Set<string>()
  /** Highest record the primary (or a new primary's RESUME) let go, per handle. */
  private priReleased = new Map<number, number>()
  /** Highest record a secondary holding it released (TX_RELEASE), per handle. */
  private secReleased = new Map<number, number>()
  private secondaryDueAt = 0
  private pendingKill: string | null = null
  private switchover: { startedStep: number; quiesced: null | 'pending' | boolean } | null = null
  private draining = false
  readonly injected = { delivered: 0 }
  readonly stats = { crashes: 0, switchovers: 0, secondaryCrashes: 0, hangs: 0, unreplicates: 0, takeovers: 0, legitLost: 0, stalls: 0, slow: 0, injections: 0 }

  constructor(seed: number) {
    this.seed = seed
    this.rng = new Prng(seed)
    this.cfg = randomConfig(this.rng)
    // A read joins queued writes up to the chunk size the links are sized for (as rxJoinBytes).
    this.net = new MemoryNetwork({ readBytes: this.cfg.maxChunkBytes })
    this.chassis = new ChassisCore({ memory: this.net }, this.cfg.chassis)
    this.chassis.onTransmit = (conn, seq, data) => this.onTransmit(conn.handle, seq, data)
    this.net.serve(SERVE_PORT, (peer) => this.addPeer('tcp', peer.remote.port, peer))
  }

  // ---- bookkeeping -----------------------------------------------------------------------------

  trace(msg: string): void {
    if (TRACE) console.log(`#${this.stepNo} t=${this.clock.now()} ${msg}`)
    this.traceLines.push(`#${this.stepNo} t=${this.clock.now()} ${msg}`)
    if (this.traceLines.length > 80) this.traceLines.splice(0, 40)
  }

  violation(msg: string): never {
    const err = new SimViolation(`${msg}\n  last events:\n    ${this.traceLines.slice(-25).join('\n    ')}`)
    if (!this.failure) this.failure = err
    throw err
  }

  private addPeer(kind: 'tcp' | 'udp', port: number, peer: MemoryPeer | null, udp: MemoryUdp | null = null, udpPeerAddr: Addr | null = null): Truth {
    const truth: Truth = {
      id: this.truths.length + 1,
      kind,
      handle: 0,
      port,
      peer,
      udp,
      udpPeerAddr,
      ledger: [],
      ledgerLen: 0,
      txNext: 1,
      peerNext: 1,
      rxWritten: 0,
      peerBlocked: false,
      readPaused: false,
      closed: false,
      legitLost: 0,
    }
    this.truths.push(truth)
    this.truthByPort.set(port, truth)
    if (peer) {
      peer.keepReceived = false
      peer.on('data', (data: Uint8Array) => this.onPeerData(truth, data))
      peer.on('end', () => {
        truth.closed = true
      })
      peer.on('drain', () => {
        truth.peerBlocked = false
      })
    }
    if (udp) udp.on('message', (data: Uint8Array, from: Addr) => this.onPeerDatagram(truth, data, from))
    this.trace(`peer ${truth.id} (${kind}) on port ${port}`)
    return truth
  }

  bind(truth: Truth, handle: number): void {
    if (truth.handle !== 0 && truth.handle !== handle) this.violation(`peer ${truth.id} bound to handle ${truth.handle} and ${handle}`)
    truth.handle = handle
    this.truthByHandle.set(handle, truth)
  }

  /** A record write() accepted joins the surviving history. */
  accepted(truth: Truth, seq: number, epoch: number, length: number): void {
    if (seq !== truth.ledgerLen + 1) this.violation(`peer ${truth.id}: write() accepted seq ${seq} after ${truth.ledgerLen}`)
    truth.ledger[seq] = epoch * 65536 + length
    truth.ledgerLen = seq
  }

  ledgerMismatch(truth: Truth, id: RecordId): string | null {
    if (id.seq < 1 || id.seq > truth.ledgerLen) return `record ${id.seq} is not in the surviving history (1..${truth.ledgerLen})`
    const want = truth.ledger[id.seq]
    if (want !== id.epoch * 65536 + id.length) return `record ${id.seq} is (epoch ${id.epoch}, ${id.length} bytes), the history says (epoch ${want >>> 16}, ${want & 0xffff} bytes)`
    return null
  }

  /** Invariant 2 at the transport: exactly the accepted records, in order, once. */
  private onTransmit(handle: number, seq: number, data: Uint8Array): void {
    const truth = this.truthByHandle.get(handle)
    if (!truth) return this.violation(`chassis transmitted on handle ${handle}, which no application socket owns`)
    if (seq !== truth.txNext) this.violation(`transport of peer ${truth.id}: record ${seq}, expected ${truth.txNext}`)
    if (this.held.delete(`${handle}:${seq}`)) {
      // Invariant 1: a held record reaches the transport only once acknowledged or let go.
      const acked = this.secReleased.get(handle)
      const released = this.priReleased.get(handle)
      if (!(acked !== undefined && seqLe(seq, acked)) && !(released !== undefined && seqLe(seq, released))) {
        this.violation(`invariant 1: held record ${seq} on handle ${handle} reached the transport, released by the secondary only up to ${acked ?? 'nothing'}`)
      }
    }
    const id = readRecord(data)
    if (typeof id === 'string') return this.violation(`transport of peer ${truth.id}: ${id}`)
    if (id.seq !== seq || id.handle !== handle) this.violation(`transport of peer ${truth.id}: TX seq ${seq} carries record (${id.handle},${id.seq})`)
    const why = this.ledgerMismatch(truth, id)
    if (why) this.violation(`transport of peer ${truth.id}: ${why}`)
    truth.txNext = seq + 1
  }

  /** A read on a stream peer: whole records, back to back (see readRecords). */
  private onPeerData(truth: Truth, data: Uint8Array): void {
    const ids = readRecords(data)
    if (typeof ids === 'string') return this.violation(`peer ${truth.id} received garbage: ${ids}`)
    for (const id of ids) this.onPeerRecord(truth, id)
  }

  private onPeerRecord(truth: Truth, id: RecordId): void {
    if (id.seq !== truth.peerNext) this.violation(`peer ${truth.id} received record ${id.seq}, expected ${truth.peerNext}`)
    const why = this.ledgerMismatch(truth, id)
    if (why) this.violation(`peer ${truth.id}: ${why}`)
    truth.peerNext = id.seq + 1
  }

  /** A datagram holds exactly one record. */
  private onPeerDatagram(truth: Truth, data: Uint8Array, from: Addr): void {
    if (from.port !== truth.port) this.violation(`udp peer ${truth.id} got a datagram from port ${from.port}, not ${truth.port}`)
    const id = readRecord(data)
    if (typeof id === 'string') return this.violation(`udp peer ${truth.id} received garbage: ${id}`)
    this.onPeerRecord(truth, id)
  }

  // ---- the REs ---------------------------------------------------------------------------------

  private newNode(role: 'primary' | 'secondary'): ReNode {
    const node = new ReNode(this, this.nextEpoch++, role)
    this.nodes.push(node)
    node.toChassis.onSend = (h) => this.onReToChassis(node, h)
    const cc = this.chassis.counters
    watchInjected(this, node.toChassis, () => cc.rejected + cc.txUnknownHandle)
    watchInjected(this, node.fromChassis, () => node.re.counters.rejected + node.re.counters.rxDropped)
    if (TRACE) {
      node.fromChassis.onSend = (h) => this.trace(`chassis>${node.id} type ${h.type} h${h.handle} seq ${h.seq} ack ${h.ack} len ${h.length}`)
      const orig = node.toChassis.onSend
      node.toChassis.onSend = (h, p, a) => {
        if (h.type !== MsgType.RX_CREDIT) this.trace(`${node.id}>chassis type ${h.type} h${h.handle} seq ${h.seq} len ${h.length}`)
        orig(h, p, a)
      }
    }
    node.re.on('replication-down', (e: { reason: string }) => {
      if (node === this.primary && !node.dead) this.pendingKill = `primary lost its peer: ${e.reason}`
    })
    return node
  }

  /**
   * Invariant 1, at the chassis link: while replication is functional a record goes to the chassis
   * either HELD (then checked at the transport, onTransmit) or already acknowledged; the primary
   * lets held records go only once replication is off (or as a new primary, up to its history);
   * a secondary releases only records it holds.
   */
  private onReToChassis(node: ReNode, h: Header): void {
    if (h.type === MsgType.TX_RELEASE) return this.onRelease(node, h)
    if (h.type !== MsgType.TX) return
    if (node !== this.primary) return this.violation(`${node.id}, not the primary, sent TX on handle ${h.handle}`)
    const sock = node.re.sockets.get(h.handle)
    const sr = sock?.sr as SrPrimary | null | undefined
    // A new primary may resend a record the old one sent held (the chassis dropped it at RESUME).
    if (h.flags & Flag.HELD) this.held.add(`${h.handle}:${h.seq}`)
    else this.held.delete(`${h.handle}:${h.seq}`)
    if (!sr?.functional && !(h.flags & Flag.HELD)) {
      // An unheld TX once replication is off lets every held record before it go (core.ts).
      const prev = this.priReleased.get(h.handle)
      if (prev === undefined || seqLe(prev, h.seq)) this.priReleased.set(h.handle, h.seq)
    }
    if (!sr) return
    if (sr.initializing) this.violation(`TX of record ${h.seq} on handle ${h.handle} while its replication initializes`)
    if (!sr.functional || h.flags & Flag.HELD) return
    const acked = this.secAcked.get(h.handle)
    if (acked === undefined || !seqLe(h.seq, acked)) {
      this.violation(`invariant 1: unheld TX of record ${h.seq} on handle ${h.handle} while the secondary acknowledged only ${acked ?? 'nothing'}`)
    }
  }

  private onRelease(node: ReNode, h: Header): void {
    if (node === this.primary) {
      const sr = node.re.sockets.get(h.handle)?.sr as SrPrimary | null | undefined
      if (sr?.functional && !(h.flags & Flag.RESUME)) this.violation(`primary released held records on handle ${h.handle} while its replication is functional`)
      const prev = this.priReleased.get(h.handle)
      if (prev === undefined || seqLe(prev, h.seq)) this.priReleased.set(h.handle, h.seq)
      return
    }
    const pair = node.re.pairs.get(h.handle)
    if (!pair || !seqLe(h.seq, pair.seq)) this.violation(`${node.id} released record ${h.seq} on handle ${h.handle} holding only up to ${pair?.seq ?? 'nothing'}`)
    // Kept after that secondary dies: what it acknowledged was true when the chassis acted on it.
    const prev = this.secReleased.get(h.handle)
    if (prev === undefined || seqLe(prev, h.seq)) this.secReleased.set(h.handle, h.seq)
  }

  private onKkcmFromPrimary(h: Header): void {
    if (h.type === MsgType.INIT_PARAMS) this.secAcked.delete(h.handle)
  }

  private onKkcmFromSecondary(node: ReNode, h: Header): void {
    const isAck = h.type === MsgType.ACK || h.type === MsgType.FLOWCTL || (h.type === MsgType.INIT_ACK && h.seq === InitStep.DONE)
    if (!isAck || node !== this.secondary) return
    const pair = node.re.pairs.get(h.handle)
    if (!pair) return this.violation(`${node.id} acknowledged handle ${h.handle}, for which it holds no snoop pair`)
    // INIT_ACK DONE acks everything the handshake carried (its `ack` field is the round): the pair's seq.
    const acked = h.type === MsgType.INIT_ACK ? pair.seq : h.ack
    if (!seqLe(acked, pair.seq)) this.violation(`${node.id} acknowledged record ${acked} on handle ${h.handle} holding only up to ${pair.seq}`)
    const prev = this.secAcked.get(h.handle)
    if (prev === undefined || seqLe(prev, acked)) this.secAcked.set(h.handle, acked)
  }

  async boot(): Promise<void> {
    this.primary = this.newNode('primary')
    this.chassis.setPrimary(this.primary.id, this.primary.fromChassis)
    this.primary.app.start()
    this.startSecondary()
    for (let i = 0; i < 12 && !this.primary.app.listener; i++) await this.pumpAll()
    if (!this.primary.app.listener) this.violation('the listener never came up')
    const first = this.rng.int(1, this.cfg.maxConns)
    for (let i = 0; i < first; i++) this.openConnection()
    this.check()
  }

  startSecondary(): void {
    const P = this.primary
    const S = this.newNode('secondary')
    this.chassis.setSecondary(S.id, S.fromChassis)
    const p2s = new SimLink(`${P.id}>${S.id}`, this.cfg.linkBytes)
    const s2p = new SimLink(`${S.id}>${P.id}`, this.cfg.linkBytes)
    p2s.onSend = (h) => this.onKkcmFromPrimary(h)
    s2p.onSend = (h) => this.onKkcmFromSecondary(S, h)
    watchInjected(this, p2s, () => S.re.counters.rejected)
    watchInjected(this, s2p, () => P.re.counters.rejected)
    S.toPeer = s2p
    this.secondary = S
    this.secAcked.clear()
    S.re.attachPeer(s2p)
    // The real chassis awaits the new worker's start and an attachPeer RPC after setSecondary():
    // the primary learns of its peer a little later than the chassis does.
    this.pendingAttach = { node: S, link: p2s, dueStep: this.stepNo + (this.draining ? 0 : this.rng.int(0, 3)) }
    this.trace(`secondary ${S.id} up`)
  }

  private pendingAttach: { node: ReNode; link: SimLink; dueStep: number } | null = null

  private attachPending(): void {
    const pa = this.pendingAttach
    if (!pa || pa.dueStep > this.stepNo) return
    this.pendingAttach = null
    if (pa.node !== this.secondary || this.primary.hung) return
    this.primary.toPeer = pa.link
    this.primary.re.attachPeer(pa.link)
    this.trace(`primary ${this.primary.id} attached to ${pa.node.id}`)
  }

  private killSecondary(reason: string): void {
    const S = this.secondary
    if (!S) return
    this.trace(`secondary ${S.id} killed (${reason})`)
    this.pendingAttach = null
    S.kill()
    const P = this.primary
    if (P.toPeer) {
      P.toPeer.receiverDead = true
      P.toPeer.discard()
    }
    P.toPeer = null
    this.secondary = null
    this.secAcked.clear()
    this.chassis.setSecondary(S.id, null)
    P.re.peerLost(reason)
    this.secondaryDueAt = this.clock.now() + this.rng.int(5, 80)
  }

  /** The primary is gone (crash, supervisor kill, or the end of a graceful switchover). */
  private async takeover(graceful: boolean): Promise<void> {
    const P = this.primary
    const S = this.secondary
    if (!S || S.hung) this.violation('takeover without a live secondary')
    this.stats.takeovers++
    this.trace(`takeover ${P.id} -> ${S.id}${graceful ? ' (graceful)' : ''}`)
    P.kill()
    if (S.toPeer) S.toPeer.receiverDead = true
    // The chassis drains what the primary committed; the secondary gets every KKCM frame it sent.
    P.toChassis.deliverAll(P.coreRx)
    await settle()
    P.toPeer?.deliverAll(S.peerRx)
    await settle()
    this.raise()
    const mustAdopt: number[] = []
    const functionalAtCrash = new Set<number>()
    for (const [h, sock] of P.re.sockets) {
      const sr = sock.sr as SrPrimary | null
      if (sr?.functional) {
        functionalAtCrash.add(h)
        if (S.re.pairs.has(h)) mustAdopt.push(h)
      }
    }
    // As engine/chassis/chassis.ts does: fan-out switches first, the promote call runs while the
    // chassis keeps working (peers write, the new primary's earlier frames arrive), then promoted().
    const info = this.chassis.beginPromotion(S.id, S.fromChassis)
    this.primary = S
    this.secondary = null
    for (let i = this.rng.int(0, 3); i > 0; i--) {
      if (this.rng.chance(0.5)) this.peerWrite()
      else S.toChassis.deliver(S.coreRx, this.rng.int(1, 4))
      if (this.rng.chance(0.5)) S.fromChassis.deliver(S.chassisRx, this.rng.int(1, 4))
    }
    await settle()
    this.raise()
    const r = S.re.promote(info)
    this.chassis.promoted(S.id, S.fromChassis, r.adopted, r.lost, r.uncharged)
    S.toPeer = null
    this.secAcked.clear()
    for (const h of mustAdopt) if (!r.adopted.includes(h)) this.violation(`handle ${h} was replicated and functional, yet the takeover lost it`)
    const adopted = new Set(r.adopted)
    for (const truth of this.truths) {
      if (truth.closed) continue
      if (truth.handle === 0 || !adopted.has(truth.handle)) {
        truth.closed = true
        continue
      }
      const sock = S.re.sockets.get(truth.handle)!
      if (truth.txNext - 1 > sock.sndSeq) this.violation(`peer ${truth.id}: the transport sent record ${truth.txNext - 1}, the new primary resumes after ${sock.sndSeq}`)
      if (sock.sndSeq > truth.ledgerLen) this.violation(`peer ${truth.id}: the new primary claims record ${sock.sndSeq}, write() accepted only ${truth.ledgerLen}`)
      const gone = truth.ledgerLen - sock.sndSeq
      if (gone > 0) {
        if (graceful && functionalAtCrash.has(truth.handle)) this.violation(`peer ${truth.id}: a graceful switchover lost ${gone} accepted records`)
        truth.legitLost += gone
        this.stats.legitLost += gone
        truth.ledgerLen = sock.sndSeq
      }
    }
    this.secondaryDueAt = this.clock.now() + this.rng.int(0, 60)
  }

  // ---- the step --------------------------------------------------------------------------------

  private liveLinks(): Array<[SimLink, LinkReceiver]> {
    const out: Array<[SimLink, LinkReceiver]> = []
    const P = this.primary
    const S = this.secondary
    const now = this.clock.now()
    if (P.toChassis.length) out.push([P.toChassis, P.coreRx])
    if (!P.hung && P.fromChassis.length) out.push([P.fromChassis, P.chassisRx])
    if (S) {
      if (S.toChassis.length) out.push([S.toChassis, S.coreRx])
      if (!S.hung && S.fromChassis.length) out.push([S.fromChassis, S.chassisRx])
      if (!S.hung && S.slowUntil <= now && P.toPeer?.length) out.push([P.toPeer, S.peerRx])
      if (!P.hung && S.toPeer?.length) out.push([S.toPeer, P.peerRx])
    }
    return out
  }

  private notifyRoom(): void {
    for (const n of [this.primary, this.secondary]) {
      if (!n || n.hung) continue
      n.toChassis.notifyRoom()
      n.fromChassis.notifyRoom()
      n.toPeer?.notifyRoom()
    }
  }

  /** Delivers everything everywhere once (boot and drain). */
  private async pumpAll(): Promise<void> {
    for (const [link, rx] of this.liveLinks()) link.deliverAll(rx, this.rng.int(1, 32))
    this.notifyRoom()
    await settle()
    this.raise()
    await this.supervise()
  }

  raise(): void {
    if (this.failure) throw this.failure
  }

  async step(): Promise<void> {
    this.stepNo++
    this.act()
    this.raise()
    this.notifyRoom()
    await settle()
    this.raise()
    await this.supervise()
    this.check()
  }

  private act(): void {
    const rng = this.rng
    const P = this.primary
    const S = this.secondary
    const links = this.liveLinks()
    const faultsOk = !this.switchover && !P.hung && !(S && S.hung)
    const w = [
      links.length ? 40 : 0, // 0 deliver
      10, // 1 time
      P.hung ? 0 : 16, // 2 primary writes (EAGAIN while a switchover quiesces)
      P.hung ? 0 : 8, // 3 primary reads
      S && !S.hung ? 12 : 0, // 4 secondary reads
      8, // 5 peer writes
      this.truths.length < this.cfg.maxConns && !P.hung ? 2 : 0, // 6 new connection
      faultsOk && S ? 0.6 : 0, // 7 crash primary
      faultsOk && S ? 0.6 : 0, // 8 crash secondary
      faultsOk && S ? 0.5 : 0, // 9 hang one RE
      faultsOk && S ? 0.6 : 0, // 10 graceful switchover
      !P.hung ? 1 : 0, // 11 unreplicate / replicate again
      S && !S.hung ? 1 : 0, // 12 stall or unstall the secondary app
      faultsOk && S ? 0.4 : 0, // 13 slow secondary
      1, // 14 bad input
      2, // 15 a peer stops or resumes reading (its TCP window closes: the transport backs up)
    ]
    switch (rng.weighted(w)) {
      case 0: {
        const [link, rx] = rng.pick(links)
        link.deliver(rx, rng.chance(0.2) ? 1 << 20 : rng.int(1, 6))
        return
      }
      case 1:
        this.clock.advance(rng.int(1, 25))
        return
      case 2: {
        const as = this.pickSock(P)
        if (as) P.app.write(as, rng.int(1, 4), rng.chance(0.03))
        return
      }
      case 3: {
        const as = this.pickSock(P)
        if (as) P.app.read(as, rng.int(1, 4))
        return
      }
      case 4: {
        const pairs = [...S!.app.pairs.values()]
        if (!pairs.length) return
        const ap = rng.pick(pairs)
        if (rng.chance(0.5)) {
          if (!S!.app.stalled) S!.app.readSend(ap, rng.int(1, 6))
        } else S!.app.readRecv(ap, rng.int(1, 6))
        return
      }
      case 5:
        return this.peerWrite()
      case 6:
        return this.openConnection()
      case 7:
        this.stats.crashes++
        this.pendingCrash = true
        return
      case 8:
        this.stats.secondaryCrashes++
        return this.killSecondary('crash')
      case 9: {
        this.stats.hangs++
        const node = rng.chance(0.5) ? P : S!
        node.hung = true
        node.hungAt = this.clock.now()
        node.clock.alive = false
        this.trace(`${node.id} hangs`)
        return
      }
      case 10:
        this.stats.switchovers++
        this.switchover = { startedStep: this.stepNo, quiesced: null }
        this.trace('graceful switchover starts')
        return
      case 11:
        return this.toggleReplication()
      case 12:
        S!.app.stalled = !S!.app.stalled
        if (S!.app.stalled) this.stats.stalls++
        this.trace(`secondary app ${S!.app.stalled ? 'stalls' : 'resumes'}`)
        return
      case 13:
        this.stats.slow++
        S!.slowUntil = this.clock.now() + rng.int(50, 400)
        this.trace(`secondary slow until ${S!.slowUntil}`)
        return
      case 14:
        return injectBadInput(this)
      case 15: {
        const peers = this.truths.filter((t) => t.peer && !t.closed)
        if (!peers.length) return
        const t = rng.pick(peers)
        t.readPaused = !t.readPaused
        if (t.readPaused) t.peer!.pauseReading()
        else t.peer!.resumeReading()
        return
      }
    }
  }

  private pendingCrash = false

  private pickSock(node: ReNode): AppSock | null {
    const socks = [...node.app.socks.values()].filter((s) => s.truth && !s.truth.closed)
    return socks.length ? this.rng.pick(socks) : null
  }

  private openConnection(): void {
    const k = this.rng.int(0, 2)
    if (k === 0) {
      if (!this.net.isListening(LISTEN_PORT)) return
      const peer = this.net.dial(LISTEN_PORT)
      this.addPeer('tcp', peer.remote.port, peer)
    } else if (k === 1) {
      this.primary.app.connect()
    } else {
      const n = this.truths.length
      const udp = this.net.udpPeer(UDP_PEER_PORT + n)
      const truth = this.addPeer('udp', UDP_ENGINE_PORT + n, null, udp, udp.local)
      this.primary.app.udp(truth)
    }
  }

  private peerWrite(): void {
    const open = this.truths.filter((t) => !t.closed && !t.peerBlocked && (t.kind === 'udp' ? t.handle !== 0 : true))
    if (!open.length) return
    const t = this.rng.pick(open)
    const n = this.rng.int(1, 3)
    for (let i = 0; i < n; i++) {
      const len = this.rng.int(8, this.cfg.maxChunkBytes)
      const chunk = makeChunk(t.id, t.rxWritten, len)
      if (t.kind === 'udp') {
        t.udp!.send(chunk, { address: 'mem', port: t.port })
        t.rxWritten += len
        continue
      }
      t.rxWritten += len
      if (!t.peer!.write(chunk)) {
        t.peerBlocked = true
        return
      }
    }
  }

  private toggleReplication(): void {
    const P = this.primary
    const S = this.secondary
    const rng = this.rng
    const socks = [...P.app.socks.values()]
    const onSecondary = S && !S.hung && rng.chance(0.3)
    if (onSecondary) {
      const pairs = [...S.app.pairs.values()].filter((ap) => ap.pair.functional)
      if (!pairs.length) return
      const ap = rng.pick(pairs)
      this.stats.unreplicates++
      this.trace(`secondary unreplicates ${ap.pair.handle}`)
      S.re.unreplicate(ap.pair)
      return
    }
    const live = socks.filter((s) => (s.sock.sr as SrPrimary | null)?.functional)
    const off = socks.filter((s) => {
      const sr = s.sock.sr as SrPrimary | null
      return !sr || (!sr.functional && !sr.initializing)
    })
    if (off.length && (rng.chance(0.6) || !live.length)) {
      const as = rng.pick(off)
      this.trace(`replicate ${as.sock.handle}`)
      P.app.replicate(as)
    } else if (live.length) {
      const as = rng.pick(live)
      this.stats.unreplicates++
      this.trace(`primary unreplicates ${as.sock.handle}`)
      as.sock.unreplicate()
    }
  }

  /** The chassis supervisor and the fault bookkeeping between steps. */
  private async supervise(): Promise<void> {
    this.attachPending()
    const P = this.primary
    let S = this.secondary
    const now = this.clock.now()
    if (this.pendingKill) {
      const why = this.pendingKill
      this.pendingKill = null
      if (S) this.killSecondary(why)
      // Regression (seed 4196191711): a switchover under way must see the secondary is gone.
      S = this.secondary
    }
    if (this.pendingCrash) {
      this.pendingCrash = false
      if (this.secondary && !this.secondary.hung) {
        this.trace(`primary ${P.id} crashes`)
        await this.takeover(false)
      }
    } else if (P.hung && now - P.hungAt >= this.cfg.deadIntervalMs) {
      this.trace(`supervisor: primary ${P.id} silent for ${now - P.hungAt} ms`)
      if (S && !S.hung) await this.takeover(false)
      else this.violation('both REs are down')
    } else if (this.switchover) {
      // As Chassis.switchover(): wait until ready, quiesce the primary, then retire it.
      const sw = this.switchover
      if (!S || S.hung) {
        // Chassis.switchover() would fail here; the primary carries on (it must not stay frozen).
        this.trace('graceful switchover abandoned: no secondary')
        this.switchover = null
        P.re.frozen = false
      } else if (sw.quiesced === null) {
        if (this.ready()) {
          sw.quiesced = 'pending'
          this.trace('switchover: quiesce')
          void P.re.quiesce(2000).then((ok) => {
            if (this.switchover === sw) sw.quiesced = ok
          })
        } else if (this.stepNo - sw.startedStep > 60) {
          this.trace('graceful switchover abandoned: never ready')
          this.switchover = null
        }
      } else if (sw.quiesced !== 'pending') {
        this.switchover = null
        await this.takeover(sw.quiesced)
      }
    }
    if (!this.secondary && !this.primary.hung && this.clock.now() >= this.secondaryDueAt && (this.draining || this.rng.chance(0.5))) {
      this.startSecondary()
    }
    await settle()
    this.raise()
  }

  /** Chassis.isReady(): a secondary is up and every replicated socket is functional. */
  private ready(): boolean {
    const s = this.chassis.sync
    return s.peer && s.functional === s.total
  }

  // ---- invariants (test/sim/invariants.ts) ---------------------------------------------------------

  check(): void {
    checkStep(this)
  }

  // ---- the end of a schedule ---------------------------------------------------------------------

  async drain(): Promise<void> {
    this.draining = true
    // A switchover that has not frozen the primary yet is dropped; one that has runs to the end.
    if (this.switchover?.quiesced === null) this.switchover = null
    const rng = this.rng
    // Resolve faults in progress: hangs end in kills, slowness and stalls end.
    for (let i = 0; i < 40 && (this.primary.hung || this.secondary?.hung); i++) {
      this.stepNo++
      this.clock.advance(25)
      await this.pumpAll()
      this.check()
    }
    if (this.primary.hung || this.secondary?.hung) this.violation('a hung RE was never dealt with')
    if (this.secondary) {
      this.secondary.slowUntil = 0
      this.secondary.app.stalled = false
    }
    for (const t of this.truths) {
      if (t.readPaused) t.peer!.resumeReading()
      t.readPaused = false
    }
    if (!this.secondary && rng.chance(0.7)) this.secondaryDueAt = 0
    // Until nothing moves for a while (or a cap): links empty, nobody waiting for room, no reads.
    let quiet = 0
    let lastSig = -1
    for (let i = 0; i < DRAIN_MAX_ROUNDS && quiet < DRAIN_QUIET_ROUNDS; i++) {
      this.stepNo++
      await this.pumpAll()
      const P = this.primary
      for (const as of P.app.socks.values()) {
        P.app.read(as, 1 << 20)
        if (as.wantReplicate && this.secondary) P.app.replicate(as)
      }
      if (P.app.listenerWantsReplicate && this.secondary) P.app.replicateListener()
      const S = this.secondary
      if (S) {
        for (const ap of S.app.pairs.values()) {
          S.app.readSend(ap, 1 << 20)
          S.app.readRecv(ap, 1 << 20)
        }
      }
      const sig = this.activity()
      const idle = sig === lastSig && this.liveLinks().length === 0 && !this.switchover && !this.pendingAttach && !this.waitingForRoom()
      quiet = idle ? quiet + 1 : 0
      lastSig = sig
      this.clock.advance(10)
      await settle()
      this.check()
    }
    if (quiet < DRAIN_QUIET_ROUNDS) this.violation(`the drain never settled in ${DRAIN_MAX_ROUNDS} rounds`)
    this.finalChecks()
  }

  private activity(): number {
    const S = this.secondary
    const c = this.chassis.counters
    const a = this.primary.app.counters
    return a.readChunks + a.writable + c.txRecords + c.rxChunks + (S ? S.app.counters.snoopRecords + S.app.counters.snoopChunks + S.re.pairs.size : 0)
  }

  private waitingForRoom(): boolean {
    for (const n of [this.primary, this.secondary]) {
      if (n && (n.toChassis.waitingForRoom || n.fromChassis.waitingForRoom || (n.toPeer?.waitingForRoom ?? 0))) return true
    }
    return false
  }

  private finalChecks(): void {
    checkFinal(this)
  }
}
