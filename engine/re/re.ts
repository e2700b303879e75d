// RoutingEngine: everything one RE runs, sans-IO. The application module's default export gets
// this object. It owns the RE's sockets (primary) or snoop pairs (secondary), dispatches the
// messages that arrive from the other RE (KKCM) and from the chassis, and emits frames through
// two FrameSinks. The worker entry (workers/) wires the sinks and sources to SharedArrayBuffer
// rings; the simulator (test/sim) wires them to in-memory queues and a ManualClock.
//
// Roles: 'primary' | 'secondary'. The only role change is promotion (secondary -> primary),
// driven by the chassis after the primary died or on a graceful switchover.

import { EventEmitter } from 'node:events'
import { pack, unpack } from 'msgpackr'
// msgpackr decodes strings with TextDecoder, which refuses views of a SharedArrayBuffer: control
// payloads are read in place from a ring, so they are sliced (copied) before unpack().
import { Timer, type Clock } from '../clock.ts'
import { ErrorCode, NsrError } from '../errors.ts'
import { Flag, MsgType, seqAdd, seqLe, seqLt, type Header } from '../protocol/header.ts'
import { RecordQueue, Slab, type Addr, type QueuedRecord } from '../socket/records.ts'
import { Socket, defaultSocketLimits, type SocketHost, type SocketKind, type SocketLimits } from '../socket/socket.ts'
import { InitStep, SR, SRI } from '../sdrl/flags.ts'
import { SrPrimary, type PrimaryHost } from '../sdrl/primary.ts'
import { RefusedHandshakes, SnoopPair, type SocketParams } from '../sdrl/secondary.ts'
import { decodeAddr, forEachRecord, type FrameSink } from './sink.ts'

export type Role = 'primary' | 'secondary'

export interface ReOptions {
  id: string
  role: Role
  clock: Clock
  limits?: Partial<SocketLimits>
  /** Per-socket bytes a secondary holds for the primary (its advertised window). */
  snoopBufBytes?: number
  /** RE-wide bytes a secondary may hold before it flags CONGESTED (writes get ENOBUFS). */
  congestionBytes?: number
  ackTimeoutMs?: number
  /** The most one init handshake step may wait for its INIT_ACK before the handshake fails. */
  initTimeoutMs?: number
  keepaliveIntervalMs?: number
  deadIntervalMs?: number
}

export const reDefaults = {
  snoopBufBytes: 2 * 1024 * 1024,
  congestionBytes: 256 * 1024 * 1024,
  ackTimeoutMs: 2000,
  // Per handshake step, and longer than the ack timeout: a step carries the socket's pre-existing
  // data (up to its send and receive buffers), and when a new secondary comes up every wanted socket
  // resyncs at once over the one KKCM link, so a step may queue behind all the others' data
  // (bench/failover: 1,000 sockets of 16 KiB resynced in 222 ms on the 2-core development machine;
  // 5 s leaves a loaded host 20x that). A dead or hung secondary is caught sooner by keepalive
  // silence (deadIntervalMs); this bounds a live one that stops answering, or a link that stays full.
  initTimeoutMs: 5000,
  keepaliveIntervalMs: 50,
  deadIntervalMs: 125,
}

/** What the chassis says about each socket when it promotes a secondary. */
export interface PromoteInfo {
  sockets: Record<number, { txSeq: number; txCredit: number }>
}

interface Pending {
  resolve: (v: unknown) => void
  reject: (e: NsrError) => void
  /** Runs as the reply is dispatched, before any frame behind it (a new socket must exist before its first RX). */
  onReply?: (v: Record<string, unknown>) => unknown
}

const RX_CREDIT_BATCH_DIVISOR = 4
const MAX_CLOSED_HANDLES = 4096

/** The error an RST chunk stands for: its payload is the transport's errno-style code. */
function rxError(handle: number, payload: Uint8Array): NsrError {
  let os = ''
  for (let i = 0; i < payload.length && i < 16; i++) os += String.fromCharCode(payload[i])
  const code = (/^E[A-Z0-9]+$/.test(os) && os in ErrorCode ? os : 'ECONNRESET') as ErrorCode
  return new NsrError(code, `socket ${handle}: connection ${os && os !== 'ECONNRESET' ? `failed (${os})` : 'reset'}`)
}

export class RoutingEngine extends EventEmitter implements SocketHost, PrimaryHost {
  readonly id: string
  role: Role
  readonly clock: Clock
  readonly limits: SocketLimits
  readonly ackTimeoutMs: number
  readonly initTimeoutMs: number
  readonly snoopBufBytes: number
  readonly congestionBytes: number
  readonly keepaliveIntervalMs: number
  readonly deadIntervalMs: number

  readonly sockets = new Map<number, Socket>()
  readonly pairs = new Map<number, SnoopPair>()
  private peerSink: FrameSink | null = null
  /** TX_CREDIT that reached this RE between the chassis's beginPromotion and promote() (per handle). */
  private readonly earlyTxCredit = new Map<number, number>()
  private chassis: FrameSink
  private nextReq = 1
  private pending = new Map<number, Pending>()
  private cmdBacklog: Array<{ seq: number; payload: Uint8Array }> = []
  private cmdWaiting = false
  private rxCredit = new Map<number, number>()
  private rxCreditScheduled = false
  private acksDue = new Set<SnoopPair>()
  private congested = false
  private heldBytes = 0
  private lastPeerHeard = 0
  private readonly keepaliveTimer: Timer
  private readonly slab = new Slab()
  private readonly replicateWanted = new Set<number>()
  /** Secondary: connections the chassis closed (handles are never reused), newest last. */
  private readonly closedHandles = new Set<number>()
  /** Secondary: handshakes refused with INIT_NAK whose remaining frames are still on their way. */
  private readonly refusedInit = new RefusedHandshakes()
  private lastSyncReport = ''
  /** Set by quiesce(): every write() fails with EAGAIN (a graceful switchover is under way). */
  frozen = false
  /** Figures the application wants in stats() (benchmarks time their own calls here). */
  readonly appStats: Record<string, number> = {}
  /** Where the last promotion spent its time (the application's mastership handlers apart). */
  lastPromoteTrace = { mergeMs: 0, appMs: 0 }
  readonly counters = {
    rejected: 0,
    rejectReasons: {} as Record<string, number>,
    ackTimeouts: 0,
    initTimeouts: 0,
    initRetries: 0,
    peerMessages: 0,
    chassisMessages: 0,
    acksSent: 0,
    releasesSent: 0,
    flowctlSent: 0,
    keepalivesSent: 0,
    keepalivesHeard: 0,
    resumeGaps: 0,
    resentAfterTakeover: 0,
    lostAtTakeover: 0,
    unreadSentAtMerge: 0,
    rxDropped: 0,
    rxStale: 0,
    /** Secondary: frames of a handshake it had refused with INIT_NAK, dropped (RefusedHandshakes). */
    initDroppedAfterNak: 0,
    hookErrors: 0,
  }

  constructor(opts: ReOptions, chassis: FrameSink) {
    super()
    this.id = opts.id
    this.role = opts.role
    this.clock = opts.clock
    this.limits = { ...defaultSocketLimits, ...opts.limits }
    this.ackTimeoutMs = opts.ackTimeoutMs ?? reDefaults.ackTimeoutMs
    this.initTimeoutMs = opts.initTimeoutMs ?? reDefaults.initTimeoutMs
    this.snoopBufBytes = opts.snoopBufBytes ?? reDefaults.snoopBufBytes
    this.congestionBytes = opts.congestionBytes ?? reDefaults.congestionBytes
    this.keepaliveIntervalMs = opts.keepaliveIntervalMs ?? reDefaults.keepaliveIntervalMs
    this.deadIntervalMs = opts.deadIntervalMs ?? reDefaults.deadIntervalMs
    this.chassis = chassis
    this.keepaliveTimer = new Timer(this.clock, 'keepalive', () => this.onKeepaliveTick())
    this.keepaliveTimer.start(this.keepaliveIntervalMs)
    // An 'error' event with no listener would throw out of the dispatcher (invariant 7).
    this.on('error', () => {})
  }

  // ---- public API for applications -------------------------------------------------------------

  connect(opts: { host?: string; port: number; transport?: 'tcp' | 'memory'; local?: string }): Promise<Socket> {
    this.requirePrimary('connect')
    return this.request({ op: 'connect', host: opts.host ?? '127.0.0.1', port: opts.port, transport: opts.transport ?? 'memory', local: opts.local }, (r) => {
      const sock = this.adopt(r, 'tcp')
      if (r.replicate === true) this.autoReplicate(sock) // a chassis replication policy picked it
      return sock
    })
  }

  /** Replicates `sock` now, or as soon as a secondary is attached (replication policy). */
  private autoReplicate(sock: Socket): void {
    if (this.peerSink) void this.replicate(sock).catch(() => {})
    else this.replicateWanted.add(sock.handle)
  }

  listen(opts: { host?: string; port: number; transport?: 'tcp' | 'memory'; replicate?: boolean }): Promise<Socket> {
    this.requirePrimary('listen')
    const replicate = opts.replicate ?? true
    return this.request({ op: 'listen', host: opts.host ?? '127.0.0.1', port: opts.port, transport: opts.transport ?? 'memory', replicate }, (r) => {
      const sock = this.adopt(r, 'listen')
      if (replicate && this.peerSink) void this.replicate(sock).catch(() => {})
      else if (replicate) this.replicateWanted.add(sock.handle)
      return sock
    })
  }

  /** A UDP socket bound to host:port; with `remote`, connected to it (its default and only peer). */
  udp(opts: { host?: string; port: number; remote?: Addr; transport?: 'udp' | 'memory' }): Promise<Socket> {
    this.requirePrimary('udp')
    return this.request({ op: 'udp', host: opts.host ?? '127.0.0.1', port: opts.port, remote: opts.remote ?? null, transport: opts.transport ?? 'memory' }, (r) => this.adopt(r, 'udp'))
  }

  /** Secondary: the read-only snoop pair for `handle` (created now if the handshake has not begun). */
  split(handle: number): SnoopPair {
    if (this.role !== 'secondary') throw new NsrError('EINVAL', 'split() is for the secondary RE')
    let pair = this.pairs.get(handle)
    if (!pair) {
      pair = this.newPair(handle)
      this.pairs.set(handle, pair)
    }
    return pair
  }

  /** After promotion: the live socket merged from the snoop pair of `handle`. */
  merge(handle: number): Socket {
    const sock = this.sockets.get(handle)
    if (!sock) throw new NsrError('ENOENT', `no merged socket for handle ${handle}`)
    return sock
  }

  /** The application's own out-of-band message to the other RE (msgpackr). False when none or full. */
  sendToPeer(msg: unknown): boolean {
    if (!this.peerSink) return false
    return this.peerSink.send(MsgType.PEER_MSG, 0, 0, 0, 0, 0, pack(msg))
  }

  get hasPeer(): boolean {
    return this.peerSink !== null
  }

  // ---- SocketHost ------------------------------------------------------------------------------

  transmit(sock: Socket, seq: number, data: Uint8Array, addr: Addr | null, held: boolean): boolean {
    const flags = (sock.kind === 'udp' && addr ? Flag.DATAGRAM : 0) | (held ? Flag.HELD : 0)
    return this.chassis.send(MsgType.TX, flags, sock.handle, seq, 0, 0, data, flags & Flag.DATAGRAM ? addr : null)
  }

  /**
   * After a takeover: tells the chassis this socket's history ends at sock.txSeq (held records up
   * to there go out, the rest are dropped). Nothing leaves the socket before that is on the link.
   */
  private sendResume(sock: Socket): void {
    if (this.chassis.send(MsgType.TX_RELEASE, Flag.RESUME, sock.handle, sock.txSeq, 0, 0, null)) {
      sock.txBlocked = false
      return
    }
    sock.txBlocked = true
    this.chassis.whenRoom(() => {
      this.sendResume(sock)
      sock.pump()
    })
  }

  /** Replication is off on `sock`: every record the chassis holds for it may go (retried until sent). */
  releaseHeld(sock: Socket): void {
    if (this.role !== 'primary') return
    if (!this.chassis.send(MsgType.TX_RELEASE, 0, sock.handle, sock.txSeq, 0, 0, null)) this.chassis.whenRoom(() => this.releaseHeld(sock))
  }

  retryTransmit(sock: Socket): void {
    this.chassis.whenRoom(() => sock.pump())
  }

  rxConsumed(sock: Socket, bytes: number): void {
    this.addRxCredit(sock.handle, bytes, sock.limits.rcvbufBytes)
  }

  closeTransport(sock: Socket): void {
    this.sockets.delete(sock.handle)
    this.replicateWanted.delete(sock.handle)
    // Every record reached the transport. The secondary drops its snoop pair when the chassis tells
    // it the connection closed ('closed', after every chunk received on it: the end of stream or a
    // reset reaches the pair first), so a closed connection is never adopted at a takeover.
    if (sock.sr) (sock.sr as SrPrimary).teardown('unreplicate', false)
    void this.request({ op: 'close', handle: sock.handle }).catch(() => {})
  }

  replicate(sock: Socket): Promise<void> {
    if (this.role !== 'primary') return Promise.reject(new NsrError('EINVAL', 'replicate() is for the primary RE'))
    this.replicateWanted.add(sock.handle)
    const sr = sock.sr as SrPrimary | null
    if (sr && (sr.functional || sr.initializing)) return sr.whenFunctional()
    if (!this.peerSink) return Promise.reject(new NsrError('ENOTCONN', 'no secondary RE is up; replication starts when one is'))
    const ext = sr ?? new SrPrimary(sock, this)
    return ext.start()
  }

  unreplicate(sock: Socket | SnoopPair): void {
    if (sock instanceof SnoopPair) return this.unsplit(sock)
    this.replicateWanted.delete(sock.handle)
    const sr = sock.sr as SrPrimary | null
    if (sr) sr.teardown('unreplicate', true)
  }

  /** Secondary: stops snooping on `pair` and tells the primary, which tears replication down too. */
  private unsplit(pair: SnoopPair): void {
    if (this.pairs.get(pair.handle) !== pair) return
    this.dropPair(pair)
    const tell = (): void => {
      if (this.peerSink && !this.peerSink.send(MsgType.UNREPLICATE, 0, pair.handle, 0, 0, 0, null)) this.peerSink.whenRoom(tell)
    }
    tell()
    pair.emit('unreplicated')
  }

  // ---- PrimaryHost -----------------------------------------------------------------------------

  peer(): FrameSink | null {
    return this.peerSink
  }

  encodeParams(sock: Socket): Uint8Array {
    const p: SocketParams = {
      kind: sock.kind,
      local: sock.local,
      remote: sock.remote,
      parent: sock.parent,
      sndSeq: sock.sndSeq,
      txSeq: sock.txSeq,
      rcvSeq: sock.rcvSeq,
      sndOffset: sock.sndOffset - sock.snd.bytes,
      rcvOffset: sock.rcvOffset,
      rcvReadOffset: sock.rcvOffset - sock.rcv.bytes,
    }
    return pack(p)
  }

  replicationChanged(sock: Socket, functional: boolean, reason: string): void {
    sock.emit('replication', { functional, reason })
    if (!functional && reason !== 'unreplicate' && reason !== 'peer-unreplicate') this.emit('replication-error', { handle: sock.handle, reason })
    this.reportSync()
  }

  prl(sock: Socket, op: 'hold' | 'release' | 'off'): void {
    const req = this.request({ op: 'prl', handle: sock.handle, mode: op })
    if (op === 'hold') {
      // The reply belongs to the round that asked: a late one (its round failed, a new round asked
      // again) would snapshot while the chassis is not holding.
      const round = (sock.sr as SrPrimary | null)?.round
      const current = (): SrPrimary | null => {
        const sr = sock.sr as SrPrimary | null
        return sr && sr.round === round ? sr : null
      }
      req.then(
        () => current()?.onHeld(round),
        (err) => current()?.fail(`prl-hold: ${err.message}`),
      )
    } else req.catch(() => {})
  }

  // ---- KKCM peer attach/detach ------------------------------------------------------------------

  /** A (new) secondary is reachable through `sink`. Replication restarts on every socket that wants it. */
  attachPeer(sink: FrameSink): void {
    this.peerSink = sink
    this.lastPeerHeard = this.clock.now()
    if (this.role !== 'primary') return
    for (const handle of this.replicateWanted) {
      const sock = this.sockets.get(handle)
      if (sock) void this.replicate(sock).catch(() => {})
    }
    this.emit('secondary-up')
    this.reportSync()
  }

  /** The other RE is gone (worker exit, or keepalive silence). */
  peerLost(reason: string): void {
    if (!this.peerSink) return
    this.peerSink = null
    if (this.role === 'primary') {
      for (const sock of this.sockets.values()) {
        const sr = sock.sr as SrPrimary | null
        if (sr && sr.state !== 0 && (sr.functional || sr.initializing)) sr.fail(`peer-lost: ${reason}`)
        else sr?.peerGone()
      }
      this.emit('replication-down', { reason })
      // A secondary this RE stopped hearing must not live on with pairs nobody replicates to any
      // more (a later takeover would adopt them): the chassis retires it and starts a fresh one.
      if (reason === 'keepalive-silence') void this.request({ op: 'secondary-silent' }).catch(() => {})
    }
    this.reportSync()
  }

  // ---- dispatch: messages from the other RE ----------------------------------------------------

  onPeerMessage(h: Header, bytes: Uint8Array, off: number): void {
    this.counters.peerMessages++
    try {
      // Either role: liveness and the application's own messages.
      if (h.type === MsgType.KEEPALIVE) this.counters.keepalivesHeard++
      else if (h.type === MsgType.PEER_MSG) this.peerMsg(bytes, off, h.length)
      else if (this.role === 'primary') this.primaryPeerMessage(h, bytes, off)
      else this.secondaryPeerMessage(h, bytes, off)
    } catch (err) {
      this.reject(`peer-handler-threw: ${(err as Error).message}`)
    }
  }

  /**
   * End of one drained batch of KKCM messages: the application hears of the records replicated in
   * it (one 'readable' per pair and batch, not per record), then coalesced acks go out, carrying
   * the room its reads freed.
   */
  onPeerBatchEnd(): void {
    this.lastPeerHeard = this.clock.now() // liveness: once per batch, not per message
    for (const pair of this.acksDue) {
      if (this.pairs.get(pair.handle) === pair) pair.send.flushReadable()
    }
    for (const pair of this.acksDue) if (pair.ackDue) this.sendAck(pair)
    this.acksDue.clear()
    this.peerSink?.flush()
  }

  private primaryPeerMessage(h: Header, bytes: Uint8Array, off: number): void {
    switch (h.type) {
      case MsgType.ACK:
      case MsgType.FLOWCTL: {
        const sr = this.srOf(h.handle)
        if (!sr) return this.reject('ack-unknown-handle')
        const why = sr.onAck(h.ack, h.seq, h.credit, (h.flags & Flag.CONGESTED) !== 0)
        if (why) this.reject(why)
        return
      }
      case MsgType.INIT_ACK: {
        const sr = this.srOf(h.handle)
        if (!sr) return this.reject('init-ack-unknown-handle')
        const why = sr.onInitAck(h.seq, h.credit, h.ack)
        if (why) this.reject(why)
        return
      }
      case MsgType.INIT_NAK: {
        const sr = this.srOf(h.handle)
        if (!sr) return this.reject('init-nak-unknown-handle')
        if (!sr.initializing) return this.reject('init-nak-not-initializing')
        if (h.ack !== sr.round >>> 0) return this.reject('init-nak-stale-round')
        sr.fail('secondary-refused')
        return
      }
      case MsgType.UNREPLICATE: {
        const sock = this.sockets.get(h.handle)
        const sr = this.srOf(h.handle)
        if (!sock || !sr) return this.reject('unreplicate-unknown-handle')
        this.replicateWanted.delete(h.handle)
        sr.teardown('peer-unreplicate', false)
        return
      }
      default:
        return this.reject(`primary-unexpected-type-${h.type}`)
    }
  }

  private secondaryPeerMessage(h: Header, bytes: Uint8Array, off: number): void {
    switch (h.type) {
      case MsgType.REPLICATE: {
        const pair = this.pairs.get(h.handle)
        if (!pair) return this.reject('replicate-unknown-handle')
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
        if (why) this.reject(why)
        this.heldBytes += pair.heldBytes() - before
        this.updateCongestion()
        if (pair.ackNow) this.sendAck(pair)
        this.acksDue.add(pair)
        return
      }
      case MsgType.TXDONE: {
        const pair = this.pairs.get(h.handle)
        if (!pair) return this.reject('txdone-unknown-handle')
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
        if (this.pairs.get(h.handle)?.complete) return this.reject('params-unexpected')
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
          this.emit('split', pair)
          if (params.parent) this.pairs.get(params.parent)?.emit('connection', pair)
        }
        pair.emit('params', params)
        return
      }
      case MsgType.INIT_RCVDATA:
      case MsgType.INIT_SNDDATA: {
        if (this.refusedInit.tail(h.handle, false)) {
          this.counters.initDroppedAfterNak++
          return
        }
        const pair = this.pairs.get(h.handle)
        if (!pair) return this.reject('initdata-unknown-handle')
        const pl = this.payload(h, bytes, off)
        if (!pl) return this.nak(h.handle, 'initdata-bad-address', pair.initRound)
        const addr = pl.addr
        const fin = (h.flags & Flag.FIN) !== 0
        const data = fin ? new Uint8Array(0) : this.slab.copy(bytes.subarray(pl.start, pl.end))
        const before = pair.heldBytes()
        const why = h.type === MsgType.INIT_RCVDATA ? pair.setRcvData(h.seq, data, addr, fin) : pair.setSndData(h.seq, data, addr, fin)
        this.heldBytes += pair.heldBytes() - before
        // A stray init message cannot undo a complete pair (it would drop a takeover's state): only
        // a handshake in progress is refused with INIT_NAK.
        if (why) return pair.complete ? this.reject(why) : this.nak(h.handle, why, pair.initRound)
        if (fin) this.initAck(pair, h.type === MsgType.INIT_RCVDATA ? InitStep.RCVDATA : InitStep.SNDDATA)
        return
      }
      case MsgType.INIT_DONE: {
        if (this.refusedInit.tail(h.handle, true)) {
          this.counters.initDroppedAfterNak++
          return
        }
        const pair = this.pairs.get(h.handle)
        if (!pair) return this.reject('done-unknown-handle')
        const why = pair.done()
        if (why) return pair.complete ? this.reject(why) : this.nak(h.handle, why, pair.initRound)
        this.initAck(pair, InitStep.DONE)
        return
      }
      case MsgType.FUNCTIONAL: {
        const pair = this.pairs.get(h.handle)
        if (!pair) return this.reject('functional-unknown-handle')
        const why = pair.functionalNow()
        if (why) return this.reject(why)
        pair.emit('functional')
        this.reportSync()
        return
      }
      case MsgType.UNREPLICATE: {
        this.refusedInit.end(h.handle)
        const pair = this.pairs.get(h.handle)
        if (!pair) return this.reject('unreplicate-unknown-handle')
        this.dropPair(pair)
        pair.emit('unreplicated')
        return
      }
      default:
        return this.reject(`secondary-unexpected-type-${h.type}`)
    }
  }

  private readonly pl: { addr: Addr | null; start: number; end: number } = { addr: null, start: 0, end: 0 }

  /**
   * Where a message's data lies: after the address prefix when DATAGRAM is flagged. Fills and
   * returns one reused object (hot path), or null when the prefix is malformed.
   */
  // The REPLICATE frame being taken apart, record by record.
  private repPair: SnoopPair | null = null
  private repHeader: Header | null = null
  private repBytes: Uint8Array | null = null
  private repWhy: string | null = null

  private readonly onReplicated = (seq: number, start: number, end: number, addr: Addr | null): void => {
    if (this.repWhy !== null) return
    const h = this.repHeader!
    const bytes = this.repBytes!
    const data = this.slab.copy(bytes.subarray(start, end))
    this.repWhy = this.repPair!.replicate(seq, h.ack, data, addr, (h.flags & Flag.ACK_REQUIRED) !== 0)
  }

  private payload(h: Header, bytes: Uint8Array, off: number): { addr: Addr | null; start: number; end: number } | null {
    const pl = this.pl
    pl.addr = null
    pl.start = off
    pl.end = off + h.length
    if (h.flags & Flag.DATAGRAM) {
      const d = decodeAddr(bytes, off, pl.end)
      if (!d) return null
      pl.addr = d.addr
      pl.start = d.next
    }
    return pl
  }

  private peerMsg(bytes: Uint8Array, off: number, len: number): void {
    let msg: unknown
    try {
      msg = unpack(bytes.slice(off, off + len))
    } catch {
      return this.reject('peer-msg-undecodable')
    }
    this.emit('peer-message', msg)
  }

  private initAck(pair: SnoopPair, step: InitStep): void {
    const credit = step === InitStep.DONE ? pair.window() : 0
    if (step === InitStep.DONE) pair.lastCredit = credit
    if (!this.peerSink?.send(MsgType.INIT_ACK, 0, pair.handle, step, pair.initRound, credit, null)) this.peerSink?.whenRoom(() => this.initAck(pair, step))
  }

  /** Refuses the handshake of `round` (the primary's, from its INIT_PARAMS) on `handle`. */
  private nak(handle: number, why: string, round: number): void {
    this.reject(why)
    // Retried until sent: without it the primary would wait a whole handshake timeout to find out.
    const tell = (): void => {
      if (this.peerSink && !this.peerSink.send(MsgType.INIT_NAK, 0, handle, 0, round, 0, null)) this.peerSink.whenRoom(tell)
    }
    tell()
    const pair = this.pairs.get(handle)
    if (pair) this.dropPair(pair)
    this.refusedInit.refused(handle) // the rest of this handshake is on its way: drop it quietly
  }

  private sendAck(pair: SnoopPair): void {
    pair.ackNow = false
    if (!this.peerSink || !pair.functional) return
    const credit = pair.window()
    const flags = this.congested ? Flag.CONGESTED : 0
    const offset = pair.send.offset % 4294967296
    if (this.peerSink.send(MsgType.ACK, flags, pair.handle, offset, pair.seq, credit, null)) {
      pair.ack = pair.seq
      pair.ackOffset = offset
      pair.lastCredit = credit
      pair.ackDue = false
      this.counters.acksSent++
      this.sendRelease(pair)
    } else this.peerSink.whenRoom(() => this.sendAck(pair))
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
    if (!this.peerSink || !pair.functional) return
    const w = pair.window()
    if (w - pair.lastCredit < this.snoopBufBytes / 8 && !(pair.lastCredit < this.limits.maxRecordBytes && w >= this.limits.maxRecordBytes)) return
    const flags = this.congested ? Flag.CONGESTED : 0
    if (this.peerSink.send(MsgType.FLOWCTL, flags, pair.handle, pair.ackOffset, pair.ack, w, null)) {
      pair.lastCredit = w
      this.counters.flowctlSent++
    }
  }

  private updateCongestion(): void {
    const was = this.congested
    if (!was && this.heldBytes > this.congestionBytes) this.congested = true
    else if (was && this.heldBytes < this.congestionBytes / 2) this.congested = false
    if (was && !this.congested) for (const pair of this.pairs.values()) this.sendAck(pair)
  }

  private newPair(handle: number): SnoopPair {
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
      if (charged > 0) this.addRxCredit(pair.handle, charged, this.limits.rcvbufBytes)
    }
    return new SnoopPair(handle, this.snoopBufBytes, onRead, onRecvRead)
  }

  private dropPair(pair: SnoopPair): void {
    this.heldBytes -= pair.heldBytes()
    this.pairs.delete(pair.handle)
    this.acksDue.delete(pair)
    this.updateCongestion()
    this.reportSync()
  }

  private srOf(handle: number): SrPrimary | null {
    const sock = this.sockets.get(handle)
    return sock ? (sock.sr as SrPrimary | null) : null
  }

  private reject(reason: string): void {
    this.counters.rejected++
    this.counters.rejectReasons[reason] = (this.counters.rejectReasons[reason] ?? 0) + 1
    this.emit('reject', reason)
  }

  // ---- dispatch: messages from the chassis -----------------------------------------------------

  onChassisMessage(h: Header, bytes: Uint8Array, off: number): void {
    this.counters.chassisMessages++
    try {
      switch (h.type) {
        case MsgType.RX:
          return this.onRx(h, bytes, off)
        case MsgType.TX_CREDIT: {
          const sock = this.sockets.get(h.handle)
          if (sock) sock.addTxCredit(h.credit)
          else if (this.role === 'secondary' && this.pairs.has(h.handle)) {
            // Transport credit goes only to the primary: a secondary gets it once the chassis has
            // begun promoting it, before promote() runs here. It belongs to the socket it will merge
            // (dropping it leaked the window: a stall after the takeover).
            this.earlyTxCredit.set(h.handle, (this.earlyTxCredit.get(h.handle) ?? 0) + h.credit)
          }
          return
        }
        case MsgType.EVENT:
          return this.onEvent(h, bytes, off)
        default:
          this.emit('chassis-message', h, bytes, off)
      }
    } catch (err) {
      this.reject(`chassis-handler-threw: ${(err as Error).message}`)
    }
  }

  onChassisBatchEnd(): void {
    this.chassis.flush()
  }

  private onRx(h: Header, bytes: Uint8Array, off: number): void {
    const pl = this.payload(h, bytes, off)
    if (!pl) return this.reject('rx-bad-address')
    const { addr, start, end } = pl
    // FIN carries nothing; RST carries the transport's errno-style code (ECONNRESET when empty).
    const rst = (h.flags & Flag.RST) !== 0
    const ended = rst || ((h.flags & Flag.FIN) !== 0 && end === start)
    if (this.role === 'primary') {
      const sock = this.sockets.get(h.handle)
      if (!sock) {
        this.counters.rxDropped++
        return
      }
      if (seqLe(h.seq, sock.rcvSeq)) {
        // Sent to this RE while it was the secondary, for an earlier replication round, and read
        // only after its promotion: the socket already has it, from that round's pre-existing data.
        this.counters.rxStale++
        return
      }
      if (ended) return sock.peerClosed(rst ? rxError(h.handle, bytes.subarray(start, end)) : null)
      sock.deliver(this.slab.copy(bytes.subarray(start, end)), addr)
    } else {
      const pair = this.pairs.get(h.handle)
      if (!pair) {
        this.counters.rxDropped++
        return
      }
      if (h.seq !== seqAdd(pair.recv.seq, 1) || !(pair.complete || pair.initState & SRI.SRI_SETRCVDATA)) {
        // Sent for an earlier replication round of this handle (the chassis link is not ordered with
        // the KKCM): this pair's pre-existing data has it, or the chassis sends it again in order
        // once the handshake releases fan-out (never before the pre-existing data is in).
        this.counters.rxStale++
        return
      }
      const before = pair.heldBytes()
      pair.received(ended ? new Uint8Array(0) : this.slab.copy(bytes.subarray(start, end)), addr, ended)
      this.heldBytes += pair.heldBytes() - before
      this.updateCongestion()
      if (rst) pair.recv.emit('reset', rxError(h.handle, bytes.subarray(start, end)))
    }
  }

  private onEvent(h: Header, bytes: Uint8Array, off: number): void {
    let ev: Record<string, unknown>
    try {
      ev = unpack(bytes.slice(off, off + h.length)) as Record<string, unknown>
    } catch {
      return this.reject('event-undecodable')
    }
    if (h.ack !== 0) {
      const p = this.pending.get(h.ack)
      if (!p) return this.reject('event-unknown-request')
      this.pending.delete(h.ack)
      if (ev.ok) {
        try {
          p.resolve(p.onReply ? p.onReply(ev) : ev)
        } catch (err) {
          p.reject(err instanceof NsrError ? err : new NsrError('EINVAL', (err as Error).message))
        }
      } else p.reject(new NsrError((ev.code as NsrError['code']) ?? 'EINVAL', String(ev.message ?? 'chassis refused')))
      return
    }
    if (ev.ev === 'accepted' && this.role === 'primary') {
      const listener = this.sockets.get(ev.listen as number)
      const sock = this.adopt(ev, 'tcp')
      sock.parent = (ev.listen as number) ?? 0
      let replicating = false
      // A replicated listener's connections, and those a chassis replication policy picked.
      const wanted = ev.replicate === true || (listener !== undefined && this.replicateWanted.has(listener.handle))
      if (wanted && this.peerSink) {
        replicating = true
        void this.replicate(sock).catch(() => {})
      } else if (wanted) this.replicateWanted.add(sock.handle)
      // The chassis holds a replicated listener's new connection for the handshake; when none starts
      // now (the listener was unreplicated, or no secondary is attached yet), release it, or the
      // primary would never receive on it. A later handshake holds it again.
      if (ev.held && !replicating) void this.request({ op: 'prl', handle: sock.handle, mode: 'off' }).catch(() => {})
      // After the microtasks already queued: when the listen() reply and this event arrive in one
      // batch, the application's listen().then() must run (and subscribe) before 'connection'.
      if (listener) {
        queueMicrotask(() => {
          try {
            listener.emit('connection', sock)
          } catch {
            this.counters.hookErrors++
          }
        })
      }
      return
    }
    if (ev.ev === 'replicate' && this.role === 'primary') {
      // A replication policy installed on the chassis picked a socket that is already open.
      const sock = this.sockets.get(ev.handle as number)
      if (sock && !sock.sr) this.autoReplicate(sock)
      return
    }
    if (ev.ev === 'closed' && this.role === 'secondary') {
      const handle = ev.handle as number
      const pair = this.pairs.get(handle)
      if (pair) {
        this.dropPair(pair)
        pair.emit('unreplicated')
      }
      // A handshake frame for it may still be on its way over the KKCM: refuse it then.
      this.closedHandles.add(handle)
      if (this.closedHandles.size > MAX_CLOSED_HANDLES) this.closedHandles.delete(this.closedHandles.values().next().value!)
      return
    }
    if (ev.ev === 'closed') {
      const sock = this.sockets.get(ev.handle as number)
      if (sock) {
        // The chassis has no such connection (closed while a takeover was under way): it can no
        // longer be replicated, and must not hold chassis.ready() back.
        this.replicateWanted.delete(sock.handle)
        if (sock.sr) (sock.sr as SrPrimary).teardown('unreplicate', false)
        this.reportSync()
        sock.peerClosed(ev.code ? new NsrError(ev.code as NsrError['code'], String(ev.message ?? 'closed')) : null)
      }
      return
    }
    this.emit('chassis-event', ev)
  }

  private adopt(r: Record<string, unknown>, kind: SocketKind): Socket {
    const sock = new Socket(this, r.handle as number, kind, this.limits, (r.local as Addr) ?? null, (r.remote as Addr) ?? null)
    sock.txCredit = (r.txCredit as number) ?? 0
    this.sockets.set(sock.handle, sock)
    return sock
  }

  // ---- requests to the chassis (msgpackr CMD, reply EVENT with ack = request id) ---------------

  request(cmd: Record<string, unknown>): Promise<Record<string, unknown>>
  request<T>(cmd: Record<string, unknown>, onReply: (r: Record<string, unknown>) => T): Promise<T>
  request(cmd: Record<string, unknown>, onReply?: (r: Record<string, unknown>) => unknown): Promise<unknown> {
    const seq = this.nextReq
    this.nextReq = this.nextReq === 0x7fffffff ? 1 : this.nextReq + 1
    const payload = pack(cmd)
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject, onReply })
      this.cmdBacklog.push({ seq, payload })
      this.flushCmds()
    })
  }

  private flushCmds(): void {
    while (this.cmdBacklog.length) {
      const c = this.cmdBacklog[0]
      if (!this.chassis.send(MsgType.CMD, 0, 0, c.seq, 0, 0, c.payload)) {
        if (!this.cmdWaiting) {
          this.cmdWaiting = true
          this.chassis.whenRoom(() => {
            this.cmdWaiting = false
            this.flushCmds()
          })
        }
        return
      }
      this.cmdBacklog.shift()
    }
    this.chassis.flush()
  }

  private addRxCredit(handle: number, bytes: number, window: number): void {
    const total = (this.rxCredit.get(handle) ?? 0) + bytes
    this.rxCredit.set(handle, total)
    if (total >= window / RX_CREDIT_BATCH_DIVISOR) this.flushRxCredit()
    else if (!this.rxCreditScheduled) {
      this.rxCreditScheduled = true
      queueMicrotask(() => this.flushRxCredit())
    }
  }

  private flushRxCredit(): void {
    this.rxCreditScheduled = false
    for (const [handle, n] of this.rxCredit) {
      if (n === 0) continue
      if (!this.chassis.send(MsgType.RX_CREDIT, 0, handle, 0, 0, n, null)) {
        this.chassis.whenRoom(() => this.flushRxCredit())
        return
      }
      this.rxCredit.delete(handle)
    }
    this.chassis.flush()
  }

  /** Tells the chassis how many replicated sockets are functional (drives chassis.ready()). */
  reportSync(): void {
    if (this.role !== 'primary') return
    let total = 0
    let functional = 0
    for (const handle of this.replicateWanted) {
      if (!this.sockets.has(handle)) continue
      total++
      if ((this.srOf(handle)?.state ?? 0) & SR.SR_REP_FUNCTIONAL) functional++
    }
    const key = `${total}/${functional}/${this.peerSink ? 1 : 0}`
    if (key === this.lastSyncReport) return
    this.lastSyncReport = key
    void this.request({ op: 'sync', total, functional, peer: this.peerSink !== null }).catch(() => {})
  }

  // ---- keepalive -------------------------------------------------------------------------------

  private onKeepaliveTick(): void {
    this.keepaliveTimer.start(this.keepaliveIntervalMs)
    this.emit('tick')
    if (!this.peerSink) return
    if (this.peerSink.send(MsgType.KEEPALIVE, 0, 0, 0, 0, 0, null)) this.counters.keepalivesSent++
    this.peerSink.flush()
    if (this.clock.now() - this.lastPeerHeard > this.deadIntervalMs && this.role === 'primary') this.peerLost('keepalive-silence')
  }

  // ---- promotion (secondary -> primary) --------------------------------------------------------

  /**
   * Becomes the primary. The caller has drained every message the old primary left in the KKCM.
   * Each complete snoop pair merges into a live socket (seed 7.4 A) that resumes transmission right
   * after the last record the chassis accepted. Returns the handles adopted and those lost.
   */
  promote(info: PromoteInfo): { adopted: number[]; lost: number[]; uncharged: Record<number, number> } {
    if (this.role !== 'secondary') throw new NsrError('EINVAL', `RE ${this.id} is already primary`)
    const tPromote = this.clock.now()
    this.onPeerBatchEnd()
    this.role = 'primary'
    this.peerSink = null
    this.acksDue.clear()
    const adopted: number[] = []
    const lost: number[] = []
    const uncharged: Record<number, number> = {}
    const merged: Socket[] = []
    for (const pair of [...this.pairs.values()]) {
      this.pairs.delete(pair.handle)
      const p = pair.params
      if (!pair.complete || !p) {
        lost.push(pair.handle)
        this.counters.lostAtTakeover++
        continue
      }
      // `txSeq` from the chassis: the last record it has (held or sent). This RE's history ends at
      // pair.seq. It resumes after the smaller one: the chassis drops held records it never saw
      // (the old primary died between their TX and REPLICATE), and it resends what the chassis
      // lacks (pre-existing records it got in the handshake).
      const t = info.sockets[pair.handle] ?? { txSeq: pair.txDoneSeq, txCredit: 0 }
      const sock = new Socket(this, pair.handle, p.kind, this.limits, p.local, p.remote)
      sock.parent = p.parent
      sock.txCredit = t.txCredit + (this.earlyTxCredit.get(pair.handle) ?? 0)
      sock.sndSeq = pair.seq
      sock.sndOffset = pair.send.offset
      let resume = seqLt(pair.seq, t.txSeq) ? pair.seq : t.txSeq
      if (seqLt(resume, pair.txDoneSeq)) {
        // The chassis lacks a record this RE was told it had: cannot happen while the chassis adopts
        // every frame a dead primary committed (TX goes before REPLICATE).
        this.counters.resumeGaps++
        this.emit('resume-gap', { handle: pair.handle, chassisTxSeq: t.txSeq, txDoneSeq: pair.txDoneSeq, seq: pair.seq })
        resume = pair.txDoneSeq
      }
      sock.txSeq = resume
      // The live socket adopts the snoop queues as they are (no per-record copy): what the chassis
      // has is dropped from the front, the rest is resent.
      const retained = pair.retained
      while (retained.length && seqLe(retained.peek()!.seq, resume)) retained.shift()
      sock.snd = retained
      this.counters.resentAfterTakeover += retained.length
      this.sendResume(sock)
      sock.rcv = pair.recv.queue
      // Pre-existing data never charged to this RE: the chassis charges it now (promoted()), and
      // the live socket credits every byte it reads.
      if (pair.recv.unchargedBytes > 0) uncharged[pair.handle] = pair.recv.unchargedBytes
      sock.rcvSeq = pair.recv.seq
      sock.rcvOffset = pair.recv.offset
      if (pair.recv.ended) sock.peerEnded = true
      this.counters.unreadSentAtMerge += pair.send.queue.length
      this.sockets.set(sock.handle, sock)
      this.replicateWanted.add(sock.handle)
      adopted.push(sock.handle)
      merged.push(sock)
      // Resend now, publishing at once: the first record reaches the transport before the other
      // sockets are even merged (takeover time is death to that first record).
      sock.pump()
      this.chassis.flush()
    }
    this.earlyTxCredit.clear()
    this.heldBytes = 0
    this.congested = false
    const tMerged = this.clock.now()
    this.emit('mastership', { adopted, lost })
    this.lastPromoteTrace = { mergeMs: tMerged - tPromote, appMs: this.clock.now() - tMerged }
    this.reportSync()
    return { adopted, lost, uncharged }
  }

  /**
   * Graceful switchover, primary side: writes are refused (EAGAIN) from now on, and this resolves
   * once the secondary has acknowledged every record (true) or after `timeoutMs` (false). The
   * chassis then retires this RE and promotes the secondary, so nothing is lost.
   */
  quiesce(timeoutMs: number): Promise<boolean> {
    this.frozen = true
    const settled = (): boolean => {
      for (const sock of this.sockets.values()) {
        const sr = sock.sr as SrPrimary | null
        if (sr && sr.functional && sr.ack !== sock.sndSeq) return false
      }
      return true
    }
    const deadline = this.clock.now() + timeoutMs
    return new Promise((resolve) => {
      const check = (): void => {
        this.peerSink?.flush()
        if (settled()) return resolve(true)
        if (this.clock.now() >= deadline) return resolve(false)
        this.clock.schedule(1, check)
      }
      check()
    })
  }

  /** A switchover that could not complete: writes are accepted again. */
  thaw(): void {
    if (!this.frozen) return
    this.frozen = false
    for (const sock of this.sockets.values()) sock.maybeWritable()
  }

  private requirePrimary(what: string): void {
    if (this.role !== 'primary') throw new NsrError('EINVAL', `${what}() is for the primary RE; the secondary follows through split()`)
  }

  stats() {
    const sockets = [...this.sockets.values()].map((s) => ({
      handle: s.handle,
      kind: s.kind,
      state: s.state,
      sndSeq: s.sndSeq,
      txSeq: s.txSeq,
      pendingRecords: s.snd.length,
      pendingBytes: s.snd.bytes,
      unreadBytes: s.rcv.bytes,
      sr: s.sr ? (s.sr as SrPrimary).snapshot() : null,
      ...s.counters,
    }))
    const pairs = [...this.pairs.values()].map((p) => p.snapshot())
    return { id: this.id, role: this.role, peer: this.peerSink !== null, congested: this.congested, heldBytes: this.heldBytes, sockets, pairs, counters: { ...this.counters }, app: { ...this.appStats } }
  }

  close(): void {
    this.keepaliveTimer.stop()
  }
}

export { RecordQueue }
