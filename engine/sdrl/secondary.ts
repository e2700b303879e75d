// Secondary SDRL: one replicated socket as the secondary RE sees it (the seed's jsr_sock,
// secondary half): a read-only snoop pair, the transport state a takeover needs (PSRM), and the
// secondary side of the init handshake.
//
// States and every legal transition:
//   (none)                  --INIT_PARAMS-->              SR_INIT_SECONDARY / SRI_INITINPROGRESS|SRI_SETPARAMS  (INIT_ACK PARAMS)
//   SRI_SETPARAMS           --INIT_RCVDATA (FIN)-->       +SRI_SETRCVDATA                                      (INIT_ACK RCVDATA)
//   SRI_SETRCVDATA          --INIT_SNDDATA (FIN)-->       +SRI_SETSNDDATA                                      (INIT_ACK SNDDATA)
//   SRI_SETSNDDATA          --INIT_DONE-->                SRI_DONE                                             (INIT_ACK DONE, with the window)
//   SRI_DONE                --FUNCTIONAL-->               SR_REP_SECONDARY|SR_REP_FUNCTIONAL
//   SR_REP_FUNCTIONAL       --REPLICATE / TXDONE-->       (same; records appended, PSRM advanced)
//   any                     --UNREPLICATE / unreplicate()--> torn down
//   SRI_DONE or FUNCTIONAL  --promotion (merge)-->        a live socket on the new primary
// A message arriving in any other state is rejected with a reason and counted; one that breaks a
// handshake in progress also gets INIT_NAK and the pair is dropped.
//
// The primary sends a whole handshake at once (primary.ts), so INIT_PARAMS to INIT_DONE arrive
// back to back; they are still taken one at a time, in order, and each step is acked on its own
// (the primary's sub-states and its handshake timer follow those acks). After an INIT_NAK the
// rest of that handshake is already on its way: RefusedHandshakes lets those frames be dropped
// quietly (counted, not rejected) instead of meeting a pair that is gone.
//
// Records are kept (`retained`) until the primary says the chassis has them (TXDONE, or the ack
// field of a REPLICATE): after a failover the new primary resends exactly those the chassis lacks.
// A replicated record reached the chassis before its REPLICATE was sent, so only pre-existing
// records from the handshake are ever retained. The window the secondary advertises is
// `snoopBufBytes` minus what it holds (retained plus unread), so its memory stays bounded.

import { EventEmitter } from 'node:events'
import { NsrError } from '../errors.ts'
import { seqAdd, seqLe } from '../protocol/header.ts'
import { RecordQueue, type Addr } from '../socket/records.ts'
import type { RecordView, SocketKind } from '../socket/socket.ts'
import { SR, SRI } from './flags.ts'

/** Socket parameters sent with INIT_PARAMS (msgpackr). */
export interface SocketParams {
  kind: SocketKind
  local: Addr | null
  remote: Addr | null
  parent: number
  sndSeq: number // last record the primary accepted
  txSeq: number // last record that reached the transport
  rcvSeq: number
  sndOffset: number
  rcvOffset: number
  /** Stream offset of the first unread received byte (where the secondary's receive snoop starts). */
  rcvReadOffset: number
  /** What the primary application's Socket.appState() returned at the snapshot, if it set one. */
  app?: unknown
}

const PARAM_COUNTERS = ['parent', 'sndSeq', 'txSeq', 'rcvSeq', 'sndOffset', 'rcvOffset', 'rcvReadOffset'] as const

function validAddr(a: unknown): boolean {
  if (a === null) return true
  const x = a as Addr
  return typeof a === 'object' && typeof x.address === 'string' && Number.isInteger(x.port) && x.port >= 0 && x.port <= 0xffff
}

/** INIT_PARAMS decoded to the shape SocketParams promises (msgpackr decodes whatever bytes came). */
export function validParams(p: unknown): p is SocketParams {
  if (typeof p !== 'object' || p === null) return false
  const x = p as SocketParams
  if (x.kind !== 'tcp' && x.kind !== 'udp' && x.kind !== 'listen') return false
  if (!validAddr(x.local) || !validAddr(x.remote)) return false
  return PARAM_COUNTERS.every((k) => Number.isSafeInteger(x[k]) && x[k] >= 0)
}

/** One read-only snoop socket: what the primary sent, or what it received. */
export class SnoopSocket extends EventEmitter {
  readonly flags: number
  readonly queue = new RecordQueue()
  /** Sequence of the last record appended (PSRM view). */
  seq = 0
  /** Stream bytes appended in total. */
  offset = 0
  /** Stream offset of the next byte read() returns (PSRM: lets a late-joining app find its place). */
  readOffset = 0
  /**
   * Bytes at the head of the queue the chassis never charged to this RE (pre-existing data came over
   * the KKCM, not as RX): reading them returns no receive credit.
   */
  unchargedBytes = 0
  ended = false
  private readablePending = false
  private readonly onRead: (bytes: number, charged: number) => void

  constructor(flags: number, onRead: (bytes: number, charged: number) => void) {
    super()
    this.flags = flags
    this.onRead = onRead
  }

  append(seq: number, data: Uint8Array, addr: Addr | null): void {
    this.appendQuiet(seq, data, addr)
    this.flushReadable()
  }

  /** append() whose 'readable' waits for flushReadable() (once per batch of replicated records). */
  appendQuiet(seq: number, data: Uint8Array, addr: Addr | null): void {
    this.seq = seq
    this.offset += data.length
    this.queue.pushOwned(seq, data, addr)
    this.readablePending = true
  }

  flushReadable(): void {
    if (!this.readablePending) return
    this.readablePending = false
    if (this.queue.length) this.emit('readable')
  }

  /** Next record (send snoop) or received chunk (receive snoop); null when none is queued. */
  read(): RecordView | null {
    const rec = this.queue.shift()
    if (rec) {
      const n = rec.data.length
      const uncharged = Math.min(n, this.unchargedBytes)
      this.unchargedBytes -= uncharged
      this.readOffset += n
      this.onRead(n, n - uncharged)
    }
    return rec ?? null
  }

  write(): never {
    throw new NsrError('EINVAL', 'snoop sockets are read-only')
  }
}

export class SnoopPair extends EventEmitter {
  readonly handle: number
  state: number = SR.SR_INIT_SECONDARY
  initState: number = SRI.SRI_INITINPROGRESS
  params: SocketParams | null = null
  /** What the primary sent (records) and what it received. */
  readonly send: SnoopSocket
  readonly recv: SnoopSocket
  /** Records replicated and not yet known to have reached the transport. */
  readonly retained = new RecordQueue()
  txDoneSeq = 0
  /** PSRM: last record seq replicated (the seed's sr_seq) and last acked (sr_ack). */
  seq = 0
  ack = 0
  ackDue = false
  ackNow = false
  lastCredit = 0
  /** The primary's handshake round (INIT_PARAMS's `ack`), echoed in every INIT_ACK and INIT_NAK. */
  initRound = 0
  /** Stream offset just after record `ack`, modulo 2^32 (sent with every ACK and FLOWCTL). */
  ackOffset = 0
  /** Last ack the chassis was told (TX_RELEASE), and whether a retry waits for room. */
  released = 0
  releaseWaiting = false
  /** A FLOWCTL found the ring to the primary full and waits for room to be sent. */
  flowctlWaiting = false
  readonly stat = { records: 0, bytes: 0, rxChunks: 0, rxBytes: 0, trimmed: 0 }
  private readonly snoopBufBytes: number

  constructor(handle: number, snoopBufBytes: number, onSendRead: (pair: SnoopPair, n: number) => void, onRecvRead: (pair: SnoopPair, n: number, charged: number) => void) {
    super()
    this.handle = handle
    this.snoopBufBytes = snoopBufBytes
    this.send = new SnoopSocket(SR.SR_SECONDARY_SND_SOCK, (n) => onSendRead(this, n))
    this.recv = new SnoopSocket(SR.SR_SECONDARY_RCV_SOCK, (n, charged) => onRecvRead(this, n, charged))
  }

  get functional(): boolean {
    return (this.state & SR.SR_REP_FUNCTIONAL) !== 0
  }

  /** True once the pair holds everything a takeover needs. */
  get complete(): boolean {
    return this.functional || (this.initState & SRI.SRI_DONE) !== 0
  }

  /** Bytes this socket may still receive from the primary. */
  window(): number {
    return Math.max(0, this.snoopBufBytes - this.retained.bytes - this.send.queue.bytes)
  }

  heldBytes(): number {
    return this.retained.bytes + this.send.queue.bytes + this.recv.queue.bytes
  }

  // ---- init handshake, secondary side (each returns a reject reason or null) ------------------

  setParams(p: SocketParams): string | null {
    if (this.initState !== SRI.SRI_INITINPROGRESS) return 'params-unexpected'
    if (!validParams(p)) return 'params-invalid'
    this.params = p
    this.seq = p.txSeq
    this.ack = p.txSeq
    this.txDoneSeq = p.txSeq
    this.send.seq = p.txSeq
    this.send.offset = p.sndOffset
    this.send.readOffset = p.sndOffset
    this.recv.seq = p.rcvSeq
    this.recv.offset = p.rcvOffset
    this.recv.readOffset = p.rcvReadOffset
    this.initState |= SRI.SRI_SETPARAMS
    return null
  }

  setRcvData(seq: number, data: Uint8Array, addr: Addr | null, fin: boolean): string | null {
    if (!(this.initState & SRI.SRI_SETPARAMS) || this.initState & SRI.SRI_SETRCVDATA) return 'rcvdata-unexpected'
    if (fin) {
      this.initState |= SRI.SRI_SETRCVDATA
      return null
    }
    // Pre-existing receive data: unread on the primary; offsets were counted in the params.
    this.recv.queue.pushOwned(seq, data, addr)
    this.recv.unchargedBytes += data.length
    this.recv.emit('readable')
    return null
  }

  setSndData(seq: number, data: Uint8Array, addr: Addr | null, fin: boolean): string | null {
    if (!(this.initState & SRI.SRI_SETRCVDATA) || this.initState & SRI.SRI_SETSNDDATA) return 'snddata-unexpected'
    if (fin) {
      if (seq !== this.seq) return 'snddata-gap'
      this.initState |= SRI.SRI_SETSNDDATA
      return null
    }
    if (seq !== seqAdd(this.seq, 1)) return 'snddata-out-of-order'
    this.appendRecord(seq, data, addr)
    return null
  }

  done(): string | null {
    if (!(this.initState & SRI.SRI_SETSNDDATA) || this.initState & SRI.SRI_DONE) return 'done-unexpected'
    this.initState = SRI.SRI_DONE
    this.ack = this.seq
    return null
  }

  functionalNow(): string | null {
    if (!(this.initState & SRI.SRI_DONE) || this.functional) return 'functional-unexpected'
    this.state = SR.SR_REP_SECONDARY | SR.SR_REP_FUNCTIONAL
    return null
  }

  // ---- data replication ------------------------------------------------------------------------

  /** A REPLICATE record. Returns a reject reason or null. */
  replicate(seq: number, txDone: number, data: Uint8Array, addr: Addr | null, ackRequired: boolean): string | null {
    if (!this.functional) return 'replicate-not-functional'
    if (seq !== seqAdd(this.seq, 1)) return 'replicate-out-of-order'
    this.trim(txDone)
    // The chassis already has it (its TX went first): no copy to keep for a takeover, only the snoop's.
    const atChassis = seqLe(seq, txDone)
    this.appendRecord(seq, data, addr, !atChassis, true)
    if (atChassis) this.txDoneSeq = seq
    this.ackDue = true
    if (ackRequired) this.ackNow = true
    return null
  }

  private appendRecord(seq: number, data: Uint8Array, addr: Addr | null, retain = true, quiet = false): void {
    this.seq = seq
    if (retain) this.retained.pushOwned(seq, data, addr)
    if (quiet) this.send.appendQuiet(seq, data, addr)
    else this.send.append(seq, data, addr)
    this.stat.records++
    this.stat.bytes += data.length
  }

  /** The chassis has records up to `txSeq`: forget them (only those this pair holds). */
  trim(txSeq: number): void {
    if (!seqLe(txSeq, this.seq)) txSeq = this.seq
    if (seqLe(txSeq, this.txDoneSeq)) return
    this.txDoneSeq = txSeq
    for (;;) {
      const rec = this.retained.peek()
      if (!rec || !seqLe(rec.seq, txSeq)) break
      this.retained.shift()
      this.stat.trimmed++
    }
  }

  /** Data the primary received (delivered by the chassis to both REs). */
  received(data: Uint8Array, addr: Addr | null, end: boolean): void {
    if (end) {
      this.recv.ended = true
      this.recv.emit('end')
      return
    }
    this.recv.append(seqAdd(this.recv.seq, 1), data, addr)
    this.stat.rxChunks++
    this.stat.rxBytes += data.length
  }

  snapshot() {
    return {
      handle: this.handle,
      state: this.state,
      initState: this.initState,
      seq: this.seq,
      ack: this.ack,
      txDoneSeq: this.txDoneSeq,
      window: this.window(),
      retainedRecords: this.retained.length,
      retainedBytes: this.retained.bytes,
      unreadSentRecords: this.send.queue.length,
      unreadRecvBytes: this.recv.queue.bytes,
      ...this.stat,
    }
  }
}

/** The most refused handshakes remembered at once (the oldest is forgotten first). */
const MAX_REFUSED_HANDSHAKES = 4096

/**
 * Handles whose handshake in progress the secondary refused (INIT_NAK sent, pair dropped). The
 * frames of that handshake still to come (INIT_RCVDATA, INIT_SNDDATA, INIT_DONE: the primary sent
 * them before it could hear the NAK) are its tail: dropped, not taken for a new handshake nor
 * rejected. The mark ends with INIT_DONE (the handshake's last frame), or with INIT_PARAMS or
 * UNREPLICATE for the handle: FIFO order puts the whole tail before either. The primary may never
 * send the tail's end (its outbox is dropped when the NAK arrives), hence the bound.
 */
export class RefusedHandshakes {
  private readonly handles = new Set<number>()

  get size(): number {
    return this.handles.size
  }

  refused(handle: number): void {
    this.handles.delete(handle)
    this.handles.add(handle)
    if (this.handles.size > MAX_REFUSED_HANDSHAKES) this.handles.delete(this.handles.values().next().value!)
  }

  /** True when this init frame belongs to a refused handshake (INIT_DONE, its last, ends the mark). */
  tail(handle: number, done: boolean): boolean {
    if (!this.handles.has(handle)) return false
    if (done) this.handles.delete(handle)
    return true
  }

  /** A new round (INIT_PARAMS) or a teardown (UNREPLICATE): whatever came before is over. */
  end(handle: number): void {
    this.handles.delete(handle)
  }
}
