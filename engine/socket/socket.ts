// Socket: a live socket inside an RE. It owns the send side (records accepted by write(), not
// yet handed to the chassis) and the receive side (bytes or datagrams the chassis delivered, not
// yet read). When replicated, its `sr` extension (engine/sdrl/primary.ts) decides how records
// leave (SendGate): normally each goes to the chassis flagged HELD and then to the secondary, and
// the chassis keeps it from the transport until the secondary's ack releases it.
//
// Send-side cursors, all record sequence numbers on this socket (wrapping at 2^32):
//   ackSeq <= sentSeq <= sndSeq and txSeq <= sentSeq (while replication is functional)
//   sndSeq  last record write() accepted
//   sentSeq last record replicated to the secondary
//   ackSeq  last record the secondary acknowledged
//   txSeq   last record handed to the chassis (held there until released, when replicated)
// `snd` holds records txSeq+1 .. sndSeq. A write() that finds `snd` empty and room everywhere
// sends the record straight from the caller's buffer: it is never copied into the send buffer.
// Any other write() copies the record into `snd` and leaves the sending to one pump at the end of
// the task, which moves everything queued in it (a burst does not pay a failing pump per write).

import { EventEmitter } from 'node:events'
import { NsrError, assert, refusal } from '../errors.ts'
import { seqAdd, seqLe } from '../protocol/header.ts'
import { RecordQueue, type Addr, type QueuedRecord } from './records.ts'

export type SocketKind = 'tcp' | 'udp' | 'listen'

export interface SocketLimits {
  /** Send sockbuf high water mark: bytes accepted but not yet handed to the transport. */
  sndbufBytes: number
  /** 'writable' fires once free send space reaches this after an EAGAIN/ENOBUFS. */
  sndLowatBytes: number
  /** Receive sockbuf: the most unread bytes the chassis may deliver (the rx credit it holds). */
  rcvbufBytes: number
  /** Largest record a write() can ever accept. */
  maxRecordBytes: number
}

export const defaultSocketLimits: SocketLimits = {
  sndbufBytes: 1024 * 1024,
  sndLowatBytes: 256 * 1024,
  rcvbufBytes: 256 * 1024,
  maxRecordBytes: 64 * 1024,
}

/** What a socket needs from its RE: output to the chassis and to the replication layer. */
export interface SocketHost {
  /** Hands one record to the chassis (HELD: kept from the transport until released); false when the link is full. */
  transmit(sock: Socket, seq: number, data: Uint8Array, addr: Addr | null, held: boolean): boolean
  /** Returns receive credit to the chassis after the application read `bytes`. */
  rxConsumed(sock: Socket, bytes: number): void
  /** Asks the chassis to close (FIN after the last record) the transport connection. */
  closeTransport(sock: Socket): void
  /** Called when the chassis link was full: pump this socket again once it has room. */
  retryTransmit(sock: Socket): void
  /** Starts replication (the init handshake); resolves when functional. */
  replicate(sock: Socket): Promise<void>
  /** Tears replication down on both REs; pending records go to the transport. */
  unreplicate(sock: Socket): void
  /** True while a graceful switchover drains this RE: writes get EAGAIN. */
  readonly frozen: boolean
}

/** How records leave a socket, as its replication extension says (SendGate.txMode). */
export const TxMode = {
  /** Straight to the transport: no replication, or it failed. */
  FREE: 0,
  /** Through the extension (sendNow, pump): replicated, and held at the chassis until acked. */
  REPLICATED: 1,
  /** Nothing leaves (the handshake snapshots the socket, or a teardown notice is owed). */
  STOP: 2,
} as const
export type TxMode = (typeof TxMode)[keyof typeof TxMode]

/** The primary-side replication extension's view from the socket (engine/sdrl/primary.ts). */
export interface SendGate {
  /** Throws EAGAIN / ENOBUFS when replication state refuses a record of `len` bytes now. */
  admit(len: number): void
  txMode(): TxMode
  /** REPLICATED mode, nothing queued: sends record `seq` now from the caller's buffer, or returns false. */
  sendNow(seq: number, data: Uint8Array, addr: Addr | null): boolean
  /** REPLICATED mode: replicates and hands to the chassis what `snd` holds, as the links allow. */
  pump(): void
  /** The chassis has records up to `txSeq`. */
  transmitted(txSeq: number): void
  /** False while records wait for the secondary's ack (a close waits for them). */
  settled(): boolean
  /** Bytes of records accepted after the last acked one (held at the chassis or still queued here). */
  unackedBytes(): number
}

export interface RecordView {
  seq: number
  data: Uint8Array
  addr: Addr | null
}

export class Socket extends EventEmitter {
  readonly handle: number
  readonly kind: SocketKind
  local: Addr | null
  remote: Addr | null
  readonly limits: SocketLimits

  sndSeq = 0
  txSeq = 0
  snd = new RecordQueue()
  /** Transport credit: bytes this socket may still hand to the chassis (TX_CREDIT returns them). */
  txCredit = 0
  /** The most credit this socket was ever given: the connection's transport window as it knows it. */
  private txWindow = 0

  rcvSeq = 0
  rcv = new RecordQueue()
  rcvOffset = 0 // stream bytes received in total (PSRM: receive side)
  private rcvUnshifted = 0 // bytes at the head of rcv already credited to the chassis (unshift)
  sndOffset = 0 // stream bytes accepted in total (PSRM: send side)

  state: 'open' | 'closing' | 'closed' = 'open'
  peerEnded = false
  error: NsrError | null = null
  private wantWritable = false
  /** A pump is queued for the end of the task (write() behind a queue leaves the sending to it). */
  private pumpQueued = false
  private readonly deferredPump = (): void => {
    this.pumpQueued = false
    if (this.state !== 'closed') this.pump()
  }
  private readonly host: SocketHost
  /** Set while replication holds records back (primary SDRL). */
  gate: SendGate | null = null
  /** Set by a takeover until the chassis has heard where this socket resumes: nothing leaves. */
  txBlocked = false
  /** Replication extension (engine/sdrl/primary.ts), null when never replicated. */
  sr: unknown = null
  /** Listen socket this connection was accepted on, 0 if none. */
  parent = 0
  /**
   * The application's own state for this socket, read when a replication handshake snapshots it
   * (INIT_PARAMS): the secondary finds the result in its snoop pair's `params.app`, consistent
   * with the sequence numbers and offsets beside it (writes wait until the handshake ends). Any
   * value msgpackr encodes. The echo example keeps its line count here.
   */
  appState: (() => unknown) | null = null

  readonly counters = { eagain: 0, enobufs: 0, emsgsize: 0, recordsWritten: 0, recordsTransmitted: 0, bytesRead: 0 }

  constructor(host: SocketHost, handle: number, kind: SocketKind, limits: SocketLimits, local: Addr | null, remote: Addr | null) {
    super()
    this.host = host
    this.handle = handle
    this.kind = kind
    this.limits = limits
    this.local = local
    this.remote = remote
  }

  /** The replication handle: the chassis socket id, the same on both REs. */
  getHandle(): number {
    return this.handle
  }

  /** Replicates this socket to the secondary; resolves once replication is functional. */
  replicate(): Promise<void> {
    return this.host.replicate(this)
  }

  /** Stops replicating; records waiting for an ack go straight to the transport. */
  unreplicate(): void {
    this.host.unreplicate(this)
  }

  /**
   * Bytes the send sockbuf holds: records not yet handed to the chassis, and, when replicated,
   * records the chassis holds for the secondary's ack (the replication sockbuf). Both sets end at
   * sndSeq, so their union is the larger of the two.
   */
  sendBufBytes(): number {
    const unacked = this.gate ? this.gate.unackedBytes() : 0
    return unacked > this.snd.bytes ? unacked : this.snd.bytes
  }

  /** Free send space in bytes. */
  sendSpace(): number {
    return this.limits.sndbufBytes - this.sendBufBytes()
  }

  /**
   * Accepts one whole record, or throws: EMSGSIZE (can never fit), EAGAIN (no room now; wait for
   * 'writable'), ENOBUFS (the secondary is congested), EPIPE / ENOTCONN (wrong state), EINVAL.
   * Never waits on the secondary. Returns the record's sequence number.
   */
  write(record: Uint8Array, addr?: Addr): number {
    if (!(record instanceof Uint8Array)) throw new NsrError('EINVAL', 'write() takes a Uint8Array record')
    if (this.kind === 'listen') throw new NsrError('EINVAL', 'cannot write on a listen socket')
    if (this.state !== 'open') throw new NsrError('EPIPE', `socket ${this.handle} is ${this.state}`)
    if (this.error) throw this.error
    if (this.kind === 'udp') {
      if (!addr && !this.remote) throw new NsrError('EINVAL', 'a datagram needs a destination address')
    } else if (addr) throw new NsrError('EINVAL', 'a stream record takes no address')
    const len = record.length
    if (len > this.limits.maxRecordBytes || len > this.limits.sndbufBytes) {
      this.counters.emsgsize++
      throw new NsrError('EMSGSIZE', `record of ${len} bytes exceeds the limit of ${Math.min(this.limits.maxRecordBytes, this.limits.sndbufBytes)}`)
    }
    // After EMSGSIZE: a record that can never fit must not be retried after 'writable'.
    if (this.host.frozen) return this.refuse('EAGAIN', 'a switchover is under way')
    if (this.sendBufBytes() + len > this.limits.sndbufBytes) return this.refuse('EAGAIN', `send buffer full (${this.sendBufBytes()}/${this.limits.sndbufBytes} bytes)`)
    if (this.gate) {
      try {
        this.gate.admit(len)
      } catch (err) {
        if (err instanceof NsrError && (err.code === 'EAGAIN' || err.code === 'ENOBUFS')) {
          this.wantWritable = true
          if (err.code === 'EAGAIN') this.counters.eagain++
          else this.counters.enobufs++
        }
        throw err
      }
    }
    const seq = (this.sndSeq = seqAdd(this.sndSeq, 1))
    this.sndOffset += len
    this.counters.recordsWritten++
    const to = addr ?? (this.kind === 'udp' ? this.remote : null)
    // Fast path: nothing queued ahead, so the record leaves now, from the caller's buffer.
    if (this.snd.length === 0 && !this.txBlocked) {
      const gate = this.gate
      const mode = gate ? gate.txMode() : TxMode.FREE
      if (mode === TxMode.FREE ? this.txOne(seq, record, to, false) : mode === TxMode.REPLICATED && gate!.sendNow(seq, record, to)) {
        gate?.transmitted(seq)
        return seq
      }
    }
    this.snd.push(seq, record, to)
    if (!this.pumpQueued) {
      this.pumpQueued = true
      queueMicrotask(this.deferredPump)
    }
    return seq
  }

  /**
   * Hands record `seq` (the one after txSeq) to the chassis, HELD or not. False when it has to
   * wait: for transport credit, or for room on the link (a retry is registered).
   */
  txOne(seq: number, data: Uint8Array, addr: Addr | null, held: boolean): boolean {
    if (data.length > this.txCredit) return false
    if (!this.host.transmit(this, seq, data, addr, held)) {
      this.host.retryTransmit(this)
      return false
    }
    this.txCredit -= data.length
    this.txSeq = seq
    this.counters.recordsTransmitted++
    return true
  }

  /** Hands queued records to the chassis (through the replication extension) while credit and the links allow. */
  pump(): void {
    const start = this.txSeq
    if (!this.txBlocked) {
      const gate = this.gate
      const mode = gate ? gate.txMode() : TxMode.FREE
      if (mode === TxMode.REPLICATED) gate!.pump()
      else if (mode === TxMode.FREE) {
        for (;;) {
          const rec = this.snd.peek()
          if (!rec) break
          assert(rec.seq === seqAdd(this.txSeq, 1), 'send queue out of step with txSeq')
          if (!this.txOne(rec.seq, rec.data, rec.addr, false)) break
          this.snd.shift()
        }
      }
    }
    if (this.txSeq !== start) this.gate?.transmitted(this.txSeq)
    if (this.state === 'closing' && this.snd.length === 0 && (!this.gate || this.gate.settled())) this.finishClose()
    this.maybeWritable()
  }

  /** Sets the transport credit the chassis gave (a new or adopted connection). */
  setTxCredit(bytes: number): void {
    this.txCredit = bytes
    if (bytes > this.txWindow) this.txWindow = bytes
  }

  /**
   * Emits 'writable' once room is back after a refused write: free send space of at least the low
   * water mark, and transport credit for all of it (or for the whole window, if smaller). Without
   * the second condition, the burst a 'writable' starts queues (copies) every record beyond the
   * credit: on a replicated socket the secondary's ack and the chassis's TX_CREDIT for the same
   * records come on different rings, and the ack, read first, used to start a burst against credit
   * not yet returned (replicated 64 B: 0.77-0.84M records/s before, 1.11-1.25M after).
   */
  maybeWritable(): void {
    if (!this.wantWritable || this.state !== 'open') return
    const space = this.sendSpace()
    if (space < Math.min(this.limits.sndLowatBytes, this.limits.sndbufBytes)) return
    if (this.txCredit < Math.min(space, this.txWindow)) return
    if (this.gate) {
      try {
        this.gate.admit(Math.min(this.limits.sndLowatBytes, this.limits.maxRecordBytes))
      } catch {
        return
      }
    }
    this.wantWritable = false
    this.emit('writable')
  }

  private refuse(code: 'EAGAIN' | 'ENOBUFS', why: string): never {
    this.wantWritable = true
    if (code === 'EAGAIN') this.counters.eagain++
    else this.counters.enobufs++
    throw refusal(code, why)
  }

  /** The chassis returned transport credit. */
  addTxCredit(bytes: number): void {
    this.txCredit += bytes
    if (this.txCredit > this.txWindow) this.txWindow = this.txCredit
    this.pump()
  }

  // ---- receive side -------------------------------------------------------------------------

  /** Data delivered by the chassis. */
  deliver(data: Uint8Array, addr: Addr | null): void {
    this.rcvSeq = seqAdd(this.rcvSeq, 1)
    this.rcvOffset += data.length
    this.rcv.pushOwned(this.rcvSeq, data, addr)
    this.emit('readable')
  }

  /** Reads one received chunk (TCP) or datagram (UDP); null when none is queued. */
  read(): RecordView | null {
    const rec = this.rcv.shift()
    if (!rec) return null
    const n = rec.data.length
    this.counters.bytesRead += n
    // Bytes put back by unshift() were credited when first read.
    const again = Math.min(n, this.rcvUnshifted)
    this.rcvUnshifted -= again
    if (n > again) this.host.rxConsumed(this, n - again)
    return rec
  }

  /**
   * Puts back, at the front of the receive buffer, data the application read but cannot use yet (a
   * partial line, a datagram it could not answer on EAGAIN), like a stream's unshift(). It stays
   * part of the socket's unread data, so a secondary that joins now gets it with the pre-existing
   * receive data, and the stream offset of the first unread byte (PSRM) is where the application
   * really stands.
   */
  unshift(rec: RecordView): void {
    if (!(rec.data instanceof Uint8Array)) throw new NsrError('EINVAL', 'unshift() takes a record with Uint8Array data')
    if (rec.data.length === 0) return
    this.rcv.unshiftOwned(rec.seq, rec.data, rec.addr)
    this.rcvUnshifted += rec.data.length
    this.counters.bytesRead -= rec.data.length
  }

  /** The peer closed (FIN) or the connection failed. */
  peerClosed(error: NsrError | null): void {
    if (error) this.error = error
    this.peerEnded = true
    this.emit(error ? 'error' : 'end', error ?? undefined)
  }

  // ---- close --------------------------------------------------------------------------------

  /** Closes after every accepted record reached the transport. */
  close(): void {
    if (this.state !== 'open') return
    this.state = 'closing'
    this.pump()
  }

  private finishClose(): void {
    this.state = 'closed'
    this.host.closeTransport(this)
    this.emit('close')
  }

  /** Records not yet transmitted with seq in (from, to]. */
  pendingAfter(from: number): QueuedRecord[] {
    const out: QueuedRecord[] = []
    for (const rec of this.snd) if (!seqLe(rec.seq, from)) out.push(rec)
    return out
  }
}
