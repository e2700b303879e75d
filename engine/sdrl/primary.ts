// Primary SDRL: the replication extension of one live socket on the primary RE (the seed's
// jsr_sock, primary half) and its side of the init handshake (IHA).
//
// States (SR_* bits, SRI_* sub-states) and every legal transition:
//   (none)                         --getHandle-->        SR_INIT_PRIMARY   / SRI_INITINPROGRESS
//   SR_INIT_PRIMARY/INITINPROGRESS --replicate, held-->  SRI_SENDPARAMS    (the whole handshake queued, see below)
//   SRI_SENDPARAMS                 --INIT_ACK PARAMS-->  +SRI_SENDRCVDATA
//   SRI_SENDRCVDATA                --INIT_ACK RCVDATA--> +SRI_SENDSNDDATA
//   SRI_SENDSNDDATA                --INIT_ACK SNDDATA--> SRI_DONE          (INITINPROGRESS cleared)
//   SRI_DONE                       --INIT_ACK DONE-->    SR_REP_PRIMARY|SR_REP_FUNCTIONAL (FUNCTIONAL sent)
//   SR_INIT_PRIMARY (any SRI_*)    --init timeout / peer lost / INIT_NAK--> SR_REP_PRIMARY (non-functional)
//   SR_REP_FUNCTIONAL              --ack timeout / peer lost / INIT_NAK--> SR_REP_PRIMARY (non-functional)
//   any                            --unreplicate / peer UNREPLICATE-->     torn down (sr = null)
// Writes fail with EAGAIN from getHandle until functional. Once non-functional, records flow to the
// transport without waiting for acks (invariant 6: losing the secondary never stops the primary).
//
// One round trip (the rule here): once the chassis holds received data, the primary sends the
// whole handshake at once, in order: INIT_PARAMS, the pre-existing receive data as INIT_RCVDATA
// then FIN, the send buffer as INIT_SNDDATA then FIN, INIT_DONE. The KKCM is FIFO per direction
// and the secondary takes these strictly in order, so nothing waits for an answer; the socket is
// functional one round trip after 'held' instead of four. All of it describes the instant of
// 'held': the parameters, the unread received data (the app may read on meanwhile) and the send
// buffer, which cannot change until functional (write() is refused and txMode() is STOP, so no
// record leaves `snd` and txSeq stands still; enterFunctional() asserts it). The secondary still
// acks every step, and the acks drive the sub-states above: each must be the next step (an
// out-of-order or repeated one is rejected with a reason and counted), so SRI_SEND* now says how
// far the secondary has confirmed, not what has been sent. Acking every step keeps the timer rule
// below meaningful for a large resync (the frames of one handshake may wait a long time for room
// on a shared link) and keeps the wire protocol as it was.
//
// The handshake timer (`initTimeout`, host.initTimeoutMs) bounds that EAGAIN: start() arms it, so
// the chassis's 'hold' reply and the answer to INIT_PARAMS share the first window; every accepted
// INIT_ACK before DONE re-arms it (progress resets it, so only a step that stalls a whole window
// fails, however long a resync of much pre-existing data takes in total); functional, fail and
// teardown stop it. When it pops while initializing, the handshake fails through fail('init-timeout'):
// replicate() rejects with ETIMEDOUT, the app hears 'replication' (non-functional), the secondary
// gets UNREPLICATE, held received data goes to the primary, and the socket carries on unreplicated.
// A dead or hung secondary is found sooner by keepalive silence (peer lost); this timer catches a
// live one that never answers a step, or a KKCM link that stays full.
//
// INIT_NAK: the secondary refused the handshake and dropped the pair; fail('secondary-refused')
// drops whatever of the handshake is still in the outbox. What already went out reaches a
// secondary without a pair: it drops those frames quietly until the handshake's end or a new
// round (secondary.ts, RefusedHandshakes).
//
// Rounds: every start() is a new round, sent in INIT_PARAMS's `ack` field; the secondary echoes it
// in each INIT_ACK and INIT_NAK. An answer of an earlier round (one that timed out while its acks
// were on the way, then replicate() again) is rejected as stale and moves nothing in this one.
//
// The release point (where a record waits for its ack): the chassis, not this RE. Each record goes
// to the chassis flagged HELD and right after that, in commit order, to the secondary as REPLICATE;
// the secondary's cumulative ack goes to the chassis too (TX_RELEASE), which then hands the records
// to the transport. So a record is copied once per link and never into a send buffer while the
// links have room, an ack costs this RE no per-record work, and the ack path skips a thread. The
// chassis has every record the secondary has, so REPLICATE's `ack` field (the last record the
// chassis has) lets the secondary drop its copy at once; after a takeover the new primary tells
// the chassis where its history ends, and held records beyond it are dropped (core.ts). When
// replication fails or is torn down, a TX_RELEASE from here lets every held record go; one that
// waits for room on the chassis link holds back the next round's handshake, or it would go out
// while that round is functional and let go records held for its secondary.
//
// Acks (the seed leaves cumulative acking open; the rule here): the secondary acks cumulatively
// (highest in-order seq) once per drained batch per socket, and at once for a REPLICATE flagged
// ACK_REQUIRED; the primary flags ACK_REQUIRED when its unacked bytes pass half the send buffer
// or half the advertised window, with at most one such record outstanding, so a filling buffer
// never waits for a batch to end and acks stay one per batch or round trip, not one per record.
//
// Flow control (seed 7.5 left it TBD; the rule here): every ACK and FLOWCTL carries `ack`, the
// stream offset just after record `ack` (in `seq`, modulo 2^32), and `credit`, the bytes the
// secondary can still hold for this socket counting everything up to `ack`. The primary's usable
// window is credit minus the bytes written after that offset, and write() admits a record only if
// it fits both that window and the primary's own send buffer.
// A CONGESTED flag (the secondary RE is over its memory budget) turns EAGAIN into ENOBUFS.

import { NsrError, assert, refusal } from '../errors.ts'
import { Timer, type Clock } from '../clock.ts'
import { Flag, MsgType, seqAdd, seqDiff, seqLe, seqLt } from '../protocol/header.ts'
import { framePayloadBytes, type FrameSink } from '../re/sink.ts'
import type { Addr } from '../socket/records.ts'
import { TxMode, type SendGate, type Socket } from '../socket/socket.ts'
import { InitStep, SR, SRI } from './flags.ts'

export interface PrimaryHost {
  readonly clock: Clock
  readonly ackTimeoutMs: number
  /** The most a handshake step may wait for its INIT_ACK (the first step: for the chassis's 'hold' reply too). */
  readonly initTimeoutMs: number
  /** The KKCM sink to the secondary, or null when there is none. */
  peer(): FrameSink | null
  /** Sends a socket's init parameters (msgpackr) as INIT_PARAMS. */
  encodeParams(sock: Socket): Uint8Array
  /** Replication became functional, failed, or was torn down on this socket. */
  replicationChanged(sock: Socket, functional: boolean, reason: string): void
  /** Tells the chassis to hold, release or stop fanning out received data for this socket. */
  prl(sock: Socket, op: 'hold' | 'release' | 'off'): void
  /** Tells the chassis that every record it holds on this socket may reach the transport. */
  releaseHeld(sock: Socket): void
  /** True while that TX_RELEASE waits for room on the chassis link. */
  releaseOwed(sock: Socket): boolean
  readonly counters: { rejected: number; ackTimeouts: number; initTimeouts: number; initRetries: number }
}

type Step = () => boolean

const ACK_RTT_SAMPLE_EVERY = 64 // a power of two
const U32 = 4294967296
const ACK_RTT_SAMPLES = 1024

export class SrPrimary implements SendGate {
  readonly handle: number
  state: number = SR.SR_INIT_PRIMARY
  initState: number = SRI.SRI_INITINPROGRESS
  /** Last REPLICATE sent (the seed's sr_seq) and last ack received (sr_ack). */
  seq: number
  ack: number
  credit = 0
  congested = false
  /** Stream offset just after record `ack` (rebuilt in full from the 32 bits an ACK / FLOWCTL carries). */
  private ackOffset = 0
  /** The last record the secondary was told the chassis has (REPLICATE's ack field, TXDONE). */
  private txDoneSent = 0
  private readonly sock: Socket
  private readonly host: PrimaryHost
  private readonly ackTimer: Timer
  private readonly initTimer: Timer
  private outbox: Step[] = []
  private waitingRoom = false
  private held = false
  /** Handshake round, bumped by start(): a 'hold' reply from an earlier round must not start this one. */
  round = 0
  private txDoneOwed = false
  /** An UNREPLICATE the secondary must get before anything bypasses replication or a new round starts. */
  private stopOwed = false
  private afterStop: (() => void) | null = null
  /** sndSeq and txSeq at 'held': the send buffer the handshake described (unchanged until functional). */
  private heldSndSeq = 0
  private heldTxSeq = 0
  private onFunctional: Array<(err: NsrError | null) => void> = []
  // Ack round-trip sampling: one record in ACK_RTT_SAMPLE_EVERY is timed until the ack covering it.
  private rttSeq = 0
  /** The record sent with ACK_REQUIRED while one is outstanding (cleared when acked). */
  private ackRequiredSeq = 0
  private ackRequiredPending = false
  private rttAt = 0
  private rttNext = 0
  private readonly rttSamples = new Float64Array(ACK_RTT_SAMPLES)
  readonly stat = { replicated: 0, acks: 0, bytesReplicated: 0, ackRequired: 0, windowStalls: 0 }

  constructor(sock: Socket, host: PrimaryHost) {
    this.sock = sock
    this.host = host
    this.handle = sock.handle
    this.seq = sock.sndSeq
    this.ack = sock.sndSeq
    this.ackTimer = new Timer(host.clock, `ackTimeout#${sock.handle}`, () => this.onAckTimeout())
    this.initTimer = new Timer(host.clock, `initTimeout#${sock.handle}`, () => this.onInitTimeout())
    sock.gate = this
    sock.sr = this
  }

  get functional(): boolean {
    return (this.state & SR.SR_REP_FUNCTIONAL) !== 0
  }

  get initializing(): boolean {
    return (this.state & SR.SR_INIT_PRIMARY) !== 0
  }

  /** Bytes of records accepted after `ack` (0 unless functional). */
  unackedBytes(): number {
    if (!this.functional) return 0
    return this.sock.sndOffset - this.ackOffset
  }

  /** Bytes the secondary can still take after everything written so far. */
  window(): number {
    return this.credit - this.unackedBytes()
  }

  // ---- SendGate --------------------------------------------------------------------------------

  admit(len: number): void {
    if (this.initializing) throw refusal('EAGAIN', `socket ${this.handle}: replication is initializing`)
    if (!this.functional) return
    if (this.congested) throw refusal('ENOBUFS', `socket ${this.handle}: the secondary is congested`)
    if (len > this.window()) {
      this.stat.windowStalls++
      throw refusal('EAGAIN', `socket ${this.handle}: secondary window ${this.window()} < ${len} bytes`)
    }
  }

  txMode(): TxMode {
    // Nothing leaves while the handshake snapshots, nor while the secondary is not yet told that
    // replication stopped (it would otherwise take over with a pair that misses these records).
    if (this.initializing || this.stopOwed) return TxMode.STOP
    return this.functional ? TxMode.REPLICATED : TxMode.FREE
  }

  /**
   * Record `seq` to the chassis HELD, then to the secondary, both or neither: both links are
   * checked before either is written. TX goes first so that the chassis has the record before
   * the secondary could be told so (REPLICATE's ack field).
   */
  private lockstep(seq: number, data: Uint8Array, addr: Addr | null): boolean {
    const sock = this.sock
    if (data.length > sock.txCredit) return false
    const peer = this.host.peer()
    if (!peer) return false // the peer is gone: fail() follows and lets the records go
    if (!this.roomFor(peer, data, addr) || !sock.txOne(seq, data, addr, true)) return false
    this.replicate(peer, seq, data, addr)
    return true
  }

  sendNow(seq: number, data: Uint8Array, addr: Addr | null): boolean {
    return this.seq === this.sock.txSeq && seq === seqAdd(this.seq, 1) && this.lockstep(seq, data, addr)
  }

  pump(): void {
    const sock = this.sock
    const snd = sock.snd
    const peer = this.host.peer()
    for (;;) {
      // In lockstep while both links and the transport credit allow: the common case.
      while (this.seq === sock.txSeq && snd.length) {
        const rec = snd.peek()!
        if (!this.lockstep(rec.seq, rec.data, rec.addr)) break
        snd.shift()
      }
      // Short of transport credit (a slow peer) or of room towards the chassis: replication runs
      // ahead, and the secondary keeps these records (REPLICATE's ack field says the chassis lacks them).
      while (peer && seqLt(this.seq, sock.sndSeq)) {
        const rec = snd.at(seqDiff(this.seq, sock.txSeq))!
        if (!this.roomFor(peer, rec.data, rec.addr)) break
        this.replicate(peer, rec.seq, rec.data, rec.addr)
      }
      // Catching up: records replicated ahead go to the chassis, held unless already acked.
      let caughtUp = false
      while (seqLt(sock.txSeq, this.seq)) {
        const rec = snd.peek()!
        if (!sock.txOne(rec.seq, rec.data, rec.addr, seqLt(this.ack, rec.seq))) break
        snd.shift()
        caughtUp = true
      }
      if (!caughtUp || this.seq !== sock.txSeq || snd.length === 0) return
    }
  }

  /** Room on the secondary's link for this record's REPLICATE; without it, a retry is registered. */
  private roomFor(peer: FrameSink, data: Uint8Array, addr: Addr | null): boolean {
    if (peer.room(framePayloadBytes(data, this.sock.kind === 'udp' ? addr : null))) return true
    this.waitRoom()
    return false
  }

  private replicate(peer: FrameSink, seq: number, data: Uint8Array, addr: Addr | null): void {
    const sock = this.sock
    let flags = addr && sock.kind === 'udp' ? Flag.DATAGRAM : 0
    // At most one ACK_REQUIRED outstanding: one forced ack per round trip keeps a filling buffer
    // moving, and the secondary's per-batch acks do the rest (flagging every record once past
    // half the buffer made the secondary ack each record: 0.2x the unreplicated rate).
    if (!this.ackRequiredPending) {
      const unacked = this.unackedBytes()
      if (unacked > sock.limits.sndbufBytes >>> 1 || unacked * 2 > this.credit) {
        flags |= Flag.ACK_REQUIRED
        this.ackRequiredPending = true
        this.ackRequiredSeq = seq
        this.stat.ackRequired++
      }
    }
    // `ack`: the last record the chassis has, so the secondary keeps a copy only of those after it.
    const txSeq = sock.txSeq
    if (!peer.send(MsgType.REPLICATE, flags, this.handle, seq, txSeq, 0, data, flags & Flag.DATAGRAM ? addr : null)) {
      throw new Error(`socket ${this.handle}: REPLICATE ${seq} refused after its room was checked`)
    }
    this.seq = seq
    this.txDoneSent = txSeq
    const st = this.stat
    st.replicated++
    st.bytesReplicated += data.length
    if (this.rttSeq === 0 && (st.replicated & (ACK_RTT_SAMPLE_EVERY - 1)) === 0) {
      this.rttSeq = seq
      this.rttAt = this.host.clock.now()
    }
    if (!this.ackTimer.running) {
      this.state |= SR.SR_ACK_PENDING
      this.ackTimer.start(this.host.ackTimeoutMs)
    }
  }

  settled(): boolean {
    return !this.functional || this.ack === this.sock.sndSeq
  }

  transmitted(txSeq: number): void {
    if (!this.functional || !seqLt(this.txDoneSent, txSeq)) return
    this.txDoneOwed = true
    this.sendTxDone()
  }

  /**
   * Lets the secondary drop records the chassis has (pre-existing ones, sent to the chassis after
   * the handshake; replicated ones say so in REPLICATE itself), which bounds its retained buffer.
   * Owed until sent: a TXDONE lost to a full link would leave the secondary's window shut for good.
   */
  private sendTxDone(): void {
    if (!this.txDoneOwed || !this.functional) return
    const peer = this.host.peer()
    if (!peer) return
    const txSeq = this.sock.txSeq
    if (peer.send(MsgType.TXDONE, 0, this.handle, this.seq, txSeq, 0, null)) {
      this.txDoneOwed = false
      this.txDoneSent = txSeq
    } else this.waitRoom()
  }

  // ---- acks ------------------------------------------------------------------------------------

  /** ACK or FLOWCTL from the secondary (`ackOffset`: stream offset after `ack`, mod 2^32). Returns a reject reason or null. */
  onAck(ack: number, ackOffset: number, credit: number, congested: boolean): string | null {
    if (!this.functional) return 'not-functional'
    if (seqLt(this.seq, ack)) return 'ack-beyond-sent'
    if (seqLt(ack, this.ack)) return 'ack-regressed'
    const sock = this.sock
    if (ack !== this.ack) {
      // The 32 bits carried place the offset within 4 GiB behind sndOffset (unacked bytes are far fewer).
      let unacked = ((sock.sndOffset % U32) - ackOffset) % U32
      if (unacked < 0) unacked += U32
      if (unacked > this.unackedBytes()) return 'ack-offset-regressed'
      this.ackOffset = sock.sndOffset - unacked
      this.ack = ack
      if (this.ackRequiredPending && !seqLt(ack, this.ackRequiredSeq)) this.ackRequiredPending = false
      this.stat.acks++
      this.state &= ~SR.SR_ACK_PENDING
      if (this.rttSeq !== 0 && seqLe(this.rttSeq, ack)) {
        this.rttSamples[this.rttNext++ % ACK_RTT_SAMPLES] = this.host.clock.now() - this.rttAt
        this.rttSeq = 0
      }
    }
    this.credit = credit
    this.congested = congested
    sock.pump()
    return null
  }

  /** Seed 7.6: a whole timer window with records outstanding and no ack fails replication. */
  private onAckTimeout(): void {
    if (!this.functional) return
    if (this.state & SR.SR_ACK_PENDING) {
      this.host.counters.ackTimeouts++
      this.fail('ack-timeout')
      return
    }
    if (seqLt(this.ack, this.seq)) {
      this.state |= SR.SR_ACK_PENDING
      this.ackTimer.start(this.host.ackTimeoutMs)
    }
  }

  // ---- the init handshake (IHA, primary side) --------------------------------------------------

  /** Starts the handshake. Resolves once replication is functional. */
  start(): Promise<void> {
    const done = new Promise<void>((resolve, reject) => this.onFunctional.push((err) => (err ? reject(err) : resolve())))
    if (!this.host.peer()) {
      this.settle(new NsrError('ENOTCONN', `socket ${this.handle}: no secondary RE to replicate to`))
      return done
    }
    this.state = SR.SR_INIT_PRIMARY
    this.initState = SRI.SRI_INITINPROGRESS
    this.held = false
    this.ackRequiredPending = false
    this.round++
    // A room callback registered on a previous peer's sink never comes: do not wait for it.
    this.waitingRoom = false
    this.txDoneOwed = false
    // Flow-control state belongs to the previous round's secondary (a stale CONGESTED would refuse
    // every write with ENOBUFS, and no ack would ever come to clear it).
    this.congested = false
    this.credit = 0
    this.armInitTimer() // the 'hold' reply counts against the first step's window
    this.host.prl(this.sock, 'hold')
    return done
  }

  /** Resolves when the handshake under way completes (a second replicate() joins, never restarts it). */
  whenFunctional(): Promise<void> {
    if (this.functional) return Promise.resolve()
    return new Promise<void>((resolve, reject) => this.onFunctional.push((err) => (err ? reject(err) : resolve())))
  }

  /**
   * The chassis holds received data now, and everything it delivered earlier is in the rcv buffer:
   * the whole handshake goes out, in order, describing this instant (see the file comment).
   */
  onHeld(round = this.round): void {
    if (!this.initializing || this.held || round !== this.round) return
    this.held = true
    const sock = this.sock
    // Copies of both queues: the outbox may wait for room, and the app may read on meanwhile.
    const rcv = [...sock.rcv]
    const snd = [...sock.snd]
    const rcvSeq = sock.rcvSeq
    const sndSeq = (this.heldSndSeq = sock.sndSeq)
    this.heldTxSeq = sock.txSeq
    const params = this.host.encodeParams(sock)
    this.push(() => this.send(MsgType.INIT_PARAMS, 0, 0, params, null, this.round >>> 0))
    for (const rec of rcv) {
      const flags = rec.addr ? Flag.DATAGRAM : 0
      this.push(() => this.send(MsgType.INIT_RCVDATA, flags, rec.seq, rec.data, rec.addr))
    }
    this.push(() => this.send(MsgType.INIT_RCVDATA, Flag.FIN, rcvSeq, null))
    for (const rec of snd) {
      const flags = rec.addr && sock.kind === 'udp' ? Flag.DATAGRAM : 0
      this.push(() => this.send(MsgType.INIT_SNDDATA, flags, rec.seq, rec.data, flags ? rec.addr : null))
    }
    this.push(() => this.send(MsgType.INIT_SNDDATA, Flag.FIN, sndSeq, null))
    this.push(() => this.send(MsgType.INIT_DONE, 0, sndSeq, null))
    this.initState |= SRI.SRI_SENDPARAMS
  }

  /** INIT_ACK for `step`: it must be the next step the secondary confirms. Returns a reject reason or null. */
  onInitAck(step: number, credit = this.credit, round = this.round >>> 0): string | null {
    if (!this.initializing) return 'init-ack-not-initializing'
    // An ack of an earlier round (one that timed out, its acks still on the way) moves nothing.
    if (round !== this.round >>> 0) return 'init-ack-stale-round'
    switch (step) {
      case InitStep.PARAMS:
        if (this.initState !== (SRI.SRI_INITINPROGRESS | SRI.SRI_SENDPARAMS)) return 'init-ack-params-unexpected'
        this.initState |= SRI.SRI_SENDRCVDATA
        break
      case InitStep.RCVDATA:
        if (!(this.initState & SRI.SRI_SENDRCVDATA) || this.initState & SRI.SRI_SENDSNDDATA) return 'init-ack-rcvdata-unexpected'
        this.initState |= SRI.SRI_SENDSNDDATA
        break
      case InitStep.SNDDATA:
        if (!(this.initState & SRI.SRI_SENDSNDDATA) || this.initState & SRI.SRI_DONE) return 'init-ack-snddata-unexpected'
        this.initState = SRI.SRI_DONE | (this.initState & ~SRI.SRI_INITINPROGRESS)
        break
      case InitStep.DONE:
        if (!(this.initState & SRI.SRI_DONE)) return 'init-ack-done-unexpected'
        this.credit = credit // the secondary's whole window for this socket (a refused ack changes nothing)
        this.enterFunctional()
        return null
      default:
        return 'init-ack-bad-step'
    }
    this.armInitTimer() // progress: a whole window again for the next step
    return null
  }

  /** INIT_NAK: the secondary refused the handshake of `round`. Returns a reject reason or null. */
  onInitNak(round: number): string | null {
    if (!this.initializing) return 'init-nak-not-initializing'
    if (round !== this.round >>> 0) return 'init-nak-stale-round'
    this.fail('secondary-refused')
    return null
  }

  /** (Re)arms the handshake timer: a whole initTimeoutMs for the step just begun. */
  private armInitTimer(): void {
    this.initTimer.start(this.host.initTimeoutMs)
  }

  /** A whole initTimeoutMs passed with no INIT_ACK (nor, before INIT_PARAMS, the 'hold' reply). */
  private onInitTimeout(): void {
    if (!this.initializing) return
    this.host.counters.initTimeouts++
    this.fail('init-timeout')
  }

  private enterFunctional(): void {
    const sock = this.sock
    assert(sock.sndSeq === this.heldSndSeq && sock.txSeq === this.heldTxSeq, `socket ${this.handle}: the send buffer changed during the handshake`)
    this.initTimer.stop()
    this.state = SR.SR_REP_PRIMARY | SR.SR_REP_FUNCTIONAL
    // Everything in the send buffer went over as pre-existing send data (at 'held') and was acked.
    this.seq = sock.sndSeq
    this.ack = sock.sndSeq
    this.ackOffset = sock.sndOffset
    this.txDoneSent = sock.txSeq
    this.push(() => this.send(MsgType.FUNCTIONAL, 0, sock.sndSeq, null))
    this.host.prl(sock, 'release')
    this.host.replicationChanged(sock, true, 'functional')
    this.settle(null)
    sock.pump()
  }

  /** Credit advertised with the secondary's DONE ack (its full window for this socket). */
  setInitialCredit(credit: number): void {
    this.credit = credit
  }

  // ---- failure and teardown --------------------------------------------------------------------

  /** Replication failed (ack or init timeout, peer lost, init refused): reinject and carry on alone. */
  fail(reason: string): void {
    const wasInit = this.initializing
    this.ackTimer.stop()
    this.initTimer.stop()
    this.outbox = []
    this.state = SR.SR_REP_PRIMARY
    this.initState = 0
    this.ack = this.sock.sndSeq
    this.seq = this.sock.sndSeq
    this.ackOffset = this.sock.sndOffset
    const finish = (): void => {
      if (!this.initializing) this.host.prl(this.sock, 'off') // unless a new round already holds
      this.host.releaseHeld(this.sock)
      this.sock.pump()
    }
    // The secondary must drop its pair (it misses what follows); after INIT_NAK it already did.
    if (reason === 'secondary-refused') finish()
    else this.stopPeer(finish)
    const code = wasInit && reason !== 'init-timeout' ? 'ECLOSED' : 'ETIMEDOUT'
    this.settle(new NsrError(code, `socket ${this.handle}: replication failed (${reason})`))
    this.host.replicationChanged(this.sock, false, reason)
  }

  /**
   * Tells the secondary to drop its pair for this socket, then runs `then`. Until the notice is on
   * the link, records stay held and no init frame goes out (FIFO order on the KKCM does the rest).
   */
  private stopPeer(then: () => void): void {
    const peer = this.host.peer()
    if (peer && !peer.send(MsgType.UNREPLICATE, 0, this.handle, 0, 0, 0, null)) {
      this.stopOwed = true
      this.afterStop = then
      this.waitRoom()
      return
    }
    this.stopOwed = false
    this.afterStop = null
    then()
  }

  /** The peer is gone: an owed notice is moot, and room callbacks on its sink never come. */
  peerGone(): void {
    this.waitingRoom = false
    if (this.stopOwed) this.stopPeer(this.afterStop!)
  }

  /** Graceful teardown: pending records go to the transport, the extension goes away. */
  teardown(reason: string, tellPeer: boolean): void {
    this.ackTimer.stop()
    this.initTimer.stop()
    this.outbox = []
    this.state = 0
    this.initState = 0
    const finish = (): void => {
      if (this.state !== 0) return // replicate() started a new round on this extension meanwhile
      this.sock.gate = null
      this.sock.sr = null
      this.host.prl(this.sock, 'off')
      this.host.releaseHeld(this.sock)
      this.sock.pump()
    }
    if (tellPeer) this.stopPeer(finish)
    else finish()
    this.settle(new NsrError('ECLOSED', `socket ${this.handle}: replication torn down (${reason})`))
    this.host.replicationChanged(this.sock, false, reason)
  }

  private settle(err: NsrError | null): void {
    const waiters = this.onFunctional
    this.onFunctional = []
    for (const w of waiters) w(err)
  }

  // ---- outbox of init frames (bounded by the socket's own buffers) -----------------------------

  private send(type: number, flags: number, seq: number, data: Uint8Array | null, addr?: Parameters<FrameSink['send']>[7], ack = 0): boolean {
    const peer = this.host.peer()
    if (!peer) return true // dropped: the peer is gone and fail() follows
    return peer.send(type, flags, this.handle, seq, ack, 0, data, addr)
  }

  private push(step: Step): void {
    this.outbox.push(step)
    this.flushOutbox()
  }

  /** The TX_RELEASE this socket owed the chassis went out: a handshake waiting for it may go. */
  released(): void {
    this.flushOutbox()
  }

  private flushOutbox(): void {
    if (this.stopOwed) return // the previous round's UNREPLICATE goes first
    if (this.host.releaseOwed(this.sock)) return // and its TX_RELEASE (see the file comment)
    while (this.outbox.length) {
      if (!this.outbox[0]()) {
        this.host.counters.initRetries++
        this.waitRoom()
        return
      }
      this.outbox.shift()
    }
  }

  private waitRoom(): void {
    if (this.waitingRoom) return
    const peer = this.host.peer()
    if (!peer) return
    this.waitingRoom = true
    peer.whenRoom(() => {
      this.waitingRoom = false
      if (this.stopOwed) this.stopPeer(this.afterStop!)
      this.flushOutbox()
      this.sock.pump()
      this.sendTxDone()
    })
  }

  snapshot() {
    return {
      state: this.state,
      initState: this.initState,
      seq: this.seq,
      ack: this.ack,
      window: this.window(),
      congested: this.congested,
      unackedBytes: this.unackedBytes(),
      ...this.stat,
      ...this.ackRtt(),
    }
  }

  /** Record-to-ack round trip over the last ACK_RTT_SAMPLES samples, in microseconds. */
  ackRtt(): { ackRttUsP50: number; ackRttUsP99: number; ackRttSamples: number } {
    const n = Math.min(this.rttNext, ACK_RTT_SAMPLES)
    if (n === 0) return { ackRttUsP50: 0, ackRttUsP99: 0, ackRttSamples: 0 }
    const xs = Array.from(this.rttSamples.subarray(0, n)).sort((a, b) => a - b)
    const at = (p: number) => Math.round(xs[Math.min(n - 1, Math.floor((p / 100) * n))] * 1000 * 10) / 10
    return { ackRttUsP50: at(50), ackRttUsP99: at(99), ackRttSamples: n }
  }
}
