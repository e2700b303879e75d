// SecondarySide: what a secondary RE does for replication. It creates and drops the snoop pairs
// (the RE owns the map), handles the primary's messages to it (REPLICATE, TXDONE, the INIT_*
// handshake, FUNCTIONAL, UNREPLICATE), answers them (INIT_ACK, INIT_NAK, coalesced ACKs carrying
// each pair's window, FLOWCTL when a window grew a lot, TX_RELEASE to the chassis for what it
// acknowledged), and keeps the RE-wide held bytes that raise and clear CONGESTED. RoutingEngine
// dispatches to it while it is the secondary; promotion clears it (takeover.ts merges the pairs).

import { unpack } from 'msgpackr'
// msgpackr decodes strings with TextDecoder, which refuses views of a SharedArrayBuffer: control
// payloads are read in place from a ring, so they are sliced (copied) before unpack().
import { Flag, MsgType, seqLt, type Header } from '../protocol/header.ts'
import type { Addr, Slab } from '../socket/records.ts'
import type { SocketLimits } from '../socket/socket.ts'
import { InitStep } from '../sdrl/flags.ts'
import { RefusedHandshakes, SnoopPair, type SocketParams } from '../sdrl/secondary.ts'
import { dataSpan, forEachRecord, type DataSpan, type FrameSink } from './sink.ts'
import type { ReCounters } from './stats.ts'

const MAX_CLOSED_HANDLES = 4096

/** The RE as its secondary side sees it: shared state, fixed settings, and a few hooks. */
export interface SecondaryHost {
  readonly pairs: Map<number, SnoopPair>
  readonly counters: ReCounters
  readonly limits: SocketLimits
  readonly snoopBufBytes: number
  readonly congestionBytes: number
  readonly chassis: FrameSink
  readonly slab: Slab
  /** The link to the primary, or null while none is attached. */
  peer(): FrameSink | null
  /** Counts and reports bad input (RoutingEngine's 'reject'). */
  reject(reason: string): void
  reportSync(): void
  addRxCredit(handle: number, bytes: number, window: number): void
  /** A pair began a new handshake: the RE emits 'split'. */
  split(pair: SnoopPair): void
}

export class SecondarySide {
  /** RE-wide bytes the pairs hold; above congestionBytes the RE flags CONGESTED (stats()). */
  heldBytes = 0
  congested = false
  private readonly host: SecondaryHost
  private readonly pairs: Map<number, SnoopPair>
  private readonly counters: ReCounters
  private readonly slab: Slab
  private readonly chassis: FrameSink
  private readonly acksDue = new Set<SnoopPair>()
  /** Connections the chassis closed (handles are never reused), newest last. */
  private readonly closedHandles = new Set<number>()
  /** Handshakes refused with INIT_NAK whose remaining frames are still on their way. */
  private readonly refusedInit = new RefusedHandshakes()
  private readonly span: DataSpan = { addr: null, start: 0, end: 0 }
  // The REPLICATE frame being taken apart, record by record.
  private repPair: SnoopPair | null = null
  private repHeader: Header | null = null
  private repBytes: Uint8Array | null = null
  private repWhy: string | null = null

  constructor(host: SecondaryHost) {
    this.host = host
    this.pairs = host.pairs
    this.counters = host.counters
    this.slab = host.slab
    this.chassis = host.chassis
  }

  // ---- messages from the primary ---------------------------------------------------------------

  onPeerMessage(h: Header, bytes: Uint8Array, off: number): void {
    switch (h.type) {
      case MsgType.REPLICATE: {
        const pair = this.pairs.get(h.handle)
        if (!pair) return this.host.reject('replicate-unknown-handle')
        const before = pair.heldBytes()
        // One record, or a batch of them (sink.ts): the first refusal stops the rest of the frame.
        this.repPair = pair
        this.repHeader = h
        this.repBytes = bytes
        this.repWhy = null
        const bad = forEachRecord(h, bytes, off, this.onReplicated)
        this.repPair = null
        this.repBytes = null
        const why = bad !== null ? `replicate-${bad}` : this.repWhy
        if (why) this.host.reject(why)
        this.heldBytes += pair.heldBytes() - before
        this.updateCongestion()
        if (pair.ackNow) this.sendAck(pair)
        this.acksDue.add(pair)
        return
      }
      case MsgType.TXDONE: {
        const pair = this.pairs.get(h.handle)
        if (!pair) return this.host.reject('txdone-unknown-handle')
        const before = pair.heldBytes()
        pair.trim(h.ack)
        this.heldBytes += pair.heldBytes() - before
        this.updateCongestion()
        this.maybeFlowctl(pair)
        return
      }
      case MsgType.INIT_PARAMS: {
        this.refusedInit.end(h.handle) // a new round: the tail of a refused one came before it
        // A complete pair is a live round's takeover state (a new round always follows UNREPLICATE):
        // a stray INIT_PARAMS must not replace it.
        if (this.pairs.get(h.handle)?.complete) return this.host.reject('params-unexpected')
        if (this.closedHandles.has(h.handle)) return this.nak(h.handle, 'params-closed-handle', h.ack)
        let params: SocketParams
        try {
          params = unpack(bytes.slice(off, off + h.length)) as SocketParams
        } catch {
          return this.nak(h.handle, 'params-undecodable', h.ack)
        }
        let pair = this.pairs.get(h.handle)
        const fresh = !pair || pair.params !== null
        if (!pair || pair.params) {
          if (pair) this.dropPair(pair)
          pair = this.newPair(h.handle)
          this.pairs.set(h.handle, pair)
        }
        pair.initRound = h.ack
        const why = pair.setParams(params)
        if (why) return this.nak(h.handle, why, h.ack)
        this.initAck(pair, InitStep.PARAMS)
        if (fresh || pair.listenerCount('params') === 0) {
          this.host.split(pair)
          if (params.parent) this.pairs.get(params.parent)?.emit('connection', pair)
        }
        pair.emit('params', params)
        return
      }
      case MsgType.INIT_RCVDATA:
      case MsgType.INIT_SNDDATA: {
        const pair = this.handshakePair(h.handle, false, 'initdata-unknown-handle')
        if (!pair) return
        const pl = dataSpan(h, bytes, off, this.span)
        if (!pl) return this.nak(h.handle, 'initdata-bad-address', pair.initRound)
        const addr = pl.addr
        const fin = (h.flags & Flag.FIN) !== 0
        const data = fin ? new Uint8Array(0) : this.slab.copy(bytes, pl.start, pl.end)
        const before = pair.heldBytes()
        const why = h.type === MsgType.INIT_RCVDATA ? pair.setRcvData(h.seq, data, addr, fin) : pair.setSndData(h.seq, data, addr, fin)
        this.heldBytes += pair.heldBytes() - before
        if (why) return this.refuseStep(pair, why)
        if (fin) this.initAck(pair, h.type === MsgType.INIT_RCVDATA ? InitStep.RCVDATA : InitStep.SNDDATA)
        return
      }
      case MsgType.INIT_DONE: {
        const pair = this.handshakePair(h.handle, true, 'done-unknown-handle')
        if (!pair) return
        const why = pair.done()
        if (why) return this.refuseStep(pair, why)
        this.initAck(pair, InitStep.DONE)
        return
      }
      case MsgType.FUNCTIONAL: {
        const pair = this.pairs.get(h.handle)
        if (!pair) return this.host.reject('functional-unknown-handle')
        const why = pair.functionalNow()
        if (why) return this.host.reject(why)
        pair.emit('functional')
        this.host.reportSync()
        return
      }
      case MsgType.UNREPLICATE: {
        this.refusedInit.end(h.handle)
        const pair = this.pairs.get(h.handle)
        if (!pair) return this.host.reject('unreplicate-unknown-handle')
        this.dropPair(pair)
        pair.emit('unreplicated')
        return
      }
      default:
        return this.host.reject(`secondary-unexpected-type-${h.type}`)
    }
  }

  private readonly onReplicated = (seq: number, start: number, end: number, addr: Addr | null): void => {
    if (this.repWhy !== null) return
    const h = this.repHeader!
    const bytes = this.repBytes!
    const data = this.slab.copy(bytes, start, end)
    this.repWhy = this.repPair!.replicate(seq, h.ack, data, addr, (h.flags & Flag.ACK_REQUIRED) !== 0)
  }

  /** End of a KKCM batch (RoutingEngine.onPeerBatchEnd): 'readable' per pair, then coalesced acks. */
  flushAcks(): void {
    for (const pair of this.acksDue) {
      if (this.pairs.get(pair.handle) === pair) pair.send.flushReadable()
    }
    for (const pair of this.acksDue) if (pair.ackDue) this.sendAck(pair)
    this.acksDue.clear()
  }

  // ---- messages from the chassis ---------------------------------------------------------------

  /** RX for `pair` (a chunk, or its end of stream or reset when `ended`): held until read. */
  received(pair: SnoopPair, data: Uint8Array, addr: Addr | null, ended: boolean): void {
    const before = pair.heldBytes()
    pair.received(data, addr, ended)
    this.heldBytes += pair.heldBytes() - before
    this.updateCongestion()
  }

  /** The chassis closed connection `handle`: its pair goes, and a handshake for it is refused. */
  chassisClosed(handle: number): void {
    const pair = this.pairs.get(handle)
    if (pair) {
      this.dropPair(pair)
      pair.emit('unreplicated')
    }
    // A handshake frame for it may still be on its way over the KKCM: refuse it then.
    this.closedHandles.add(handle)
    if (this.closedHandles.size > MAX_CLOSED_HANDLES) this.closedHandles.delete(this.closedHandles.values().next().value!)
  }

  // ---- pairs -----------------------------------------------------------------------------------

  newPair(handle: number): SnoopPair {
    // Reads of a pair that was dropped (or merged) no longer count: dropPair() took its bytes off.
    const onRead = (pair: SnoopPair, n: number) => {
      if (this.pairs.get(pair.handle) !== pair) return
      this.heldBytes -= n
      this.updateCongestion()
      this.maybeFlowctl(pair)
    }
    const onRecvRead = (pair: SnoopPair, n: number, charged: number) => {
      if (this.pairs.get(pair.handle) !== pair) return
      this.heldBytes -= n
      // Unread received data counts toward CONGESTED: reading it may clear the flag.
      this.updateCongestion()
      // Credit only what the chassis charged to this RE (RX), not pre-existing data from the primary.
      if (charged > 0) this.host.addRxCredit(pair.handle, charged, this.host.limits.rcvbufBytes)
    }
    return new SnoopPair(handle, this.host.snoopBufBytes, onRead, onRecvRead)
  }

  dropPair(pair: SnoopPair): void {
    this.heldBytes -= pair.heldBytes()
    this.pairs.delete(pair.handle)
    this.acksDue.delete(pair)
    this.updateCongestion()
    this.host.reportSync()
  }

  /** Promotion merged or lost every pair: nothing is held or owed any more. */
  promoted(): void {
    this.acksDue.clear()
    this.heldBytes = 0
    this.congested = false
  }

  // ---- answers to the primary ------------------------------------------------------------------

  private initAck(pair: SnoopPair, step: InitStep): void {
    // A retry that waited for room may find the pair dropped (UNREPLICATE, a NAK, a new round): its
    // answer is moot, and the primary would reject it (that round is over).
    if (this.pairs.get(pair.handle) !== pair) return
    const credit = step === InitStep.DONE ? pair.window() : 0
    if (step === InitStep.DONE) pair.lastCredit = credit
    const peer = this.host.peer()
    if (!peer?.send(MsgType.INIT_ACK, 0, pair.handle, step, pair.initRound, credit, null)) peer?.whenRoom(() => this.initAck(pair, step))
  }

  /** Refuses the handshake of `round` (the primary's, from its INIT_PARAMS) on `handle`. */
  private nak(handle: number, why: string, round: number): void {
    this.host.reject(why)
    // Retried until sent: without it the primary would wait a whole handshake timeout to find out.
    const tell = (): void => {
      const peer = this.host.peer()
      if (peer && !peer.send(MsgType.INIT_NAK, 0, handle, 0, round, 0, null)) peer.whenRoom(tell)
    }
    tell()
    const pair = this.pairs.get(handle)
    if (pair) this.dropPair(pair)
    this.refusedInit.refused(handle) // the rest of this handshake is on its way: drop it quietly
  }

  /**
   * The pair an INIT_RCVDATA / INIT_SNDDATA / INIT_DONE (`last`) is for, or null: the tail of a
   * refused handshake is dropped quietly (counted), an unknown handle rejected with `unknown`.
   */
  private handshakePair(handle: number, last: boolean, unknown: string): SnoopPair | null {
    if (this.refusedInit.tail(handle, last)) {
      this.counters.initDroppedAfterNak++
      return null
    }
    const pair = this.pairs.get(handle)
    if (!pair) this.host.reject(unknown)
    return pair ?? null
  }

  /**
   * A handshake step the pair refused. A stray init message cannot undo a complete pair (it would
   * drop a takeover's state): only a handshake in progress is refused with INIT_NAK.
   */
  private refuseStep(pair: SnoopPair, why: string): void {
    if (pair.complete) this.host.reject(why)
    else this.nak(pair.handle, why, pair.initRound)
  }

  private sendAck(pair: SnoopPair): void {
    pair.ackNow = false
    const peer = this.host.peer()
    // A retry that waited for room may find the pair dropped: an ACK names no round, so it would ack
    // and credit whatever the primary runs on this handle now (nothing, or the next round).
    if (!peer || !pair.functional || this.pairs.get(pair.handle) !== pair) return
    const credit = pair.window()
    const flags = this.congested ? Flag.CONGESTED : 0
    const offset = pair.send.offset % 4294967296
    if (peer.send(MsgType.ACK, flags, pair.handle, offset, pair.seq, credit, null)) {
      pair.ack = pair.seq
      pair.ackOffset = offset
      pair.lastCredit = credit
      pair.ackDue = false
      this.counters.acksSent++
      this.sendRelease(pair)
    } else peer.whenRoom(() => this.sendAck(pair))
  }

  /**
   * The chassis may send what this RE acknowledged: told here directly, not through the primary,
   * so the release skips a thread. Owed until sent (a full link retries with the latest ack).
   */
  private sendRelease(pair: SnoopPair): void {
    if (this.pairs.get(pair.handle) !== pair || !seqLt(pair.released, pair.ack)) return
    if (this.chassis.send(MsgType.TX_RELEASE, 0, pair.handle, pair.ack, 0, 0, null)) {
      pair.released = pair.ack
      this.counters.releasesSent++
    } else if (!pair.releaseWaiting) {
      pair.releaseWaiting = true
      this.chassis.whenRoom(() => {
        pair.releaseWaiting = false
        this.sendRelease(pair)
      })
    }
  }

  /** After the app read snoop data or records were trimmed: advertise a window that grew a lot. */
  private maybeFlowctl(pair: SnoopPair): void {
    const peer = this.host.peer()
    if (!peer || !pair.functional) return
    const w = pair.window()
    const maxRecordBytes = this.host.limits.maxRecordBytes
    if (w - pair.lastCredit < this.host.snoopBufBytes / 8 && !(pair.lastCredit < maxRecordBytes && w >= maxRecordBytes)) return
    const flags = this.congested ? Flag.CONGESTED : 0
    if (peer.send(MsgType.FLOWCTL, flags, pair.handle, pair.ackOffset, pair.ack, w, null)) {
      pair.lastCredit = w
      this.counters.flowctlSent++
    } else if (!pair.flowctlWaiting) {
      // Retried once the ring has room: the read that grew the window may be the last thing that
      // happens on this socket, and a primary that never hears of it stays stalled for good.
      pair.flowctlWaiting = true
      peer.whenRoom(() => {
        pair.flowctlWaiting = false
        if (this.pairs.get(pair.handle) === pair) this.maybeFlowctl(pair)
      })
    }
  }

  private updateCongestion(): void {
    const was = this.congested
    if (!was && this.heldBytes > this.host.congestionBytes) this.congested = true
    else if (was && this.heldBytes < this.host.congestionBytes / 2) this.congested = false
    if (was && !this.congested) for (const pair of this.pairs.values()) this.sendAck(pair)
  }
}
