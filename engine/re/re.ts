// RoutingEngine: everything one RE runs, sans-IO. The application module's default export gets
// this object. It owns the RE's sockets (primary) or snoop pairs (secondary), dispatches the
// messages that arrive from the other RE (KKCM) and from the chassis, and emits frames through
// two FrameSinks. The worker entry (workers/) wires the sinks and sources to SharedArrayBuffer
// rings; the simulator (test/sim) wires them to in-memory queues and a ManualClock.
//
// Roles: 'primary' | 'secondary'. The only role change is promotion (secondary -> primary),
// driven by the chassis after the primary died or on a graceful switchover.
//
// Beside it: secondary-side.ts (what the secondary does with the primary's messages: snoop pairs,
// handshake answers, acks, flow control, held bytes and CONGESTED), takeover.ts (the live socket
// promotion builds from each snoop pair), stats.ts (the counter block and the stats() snapshot).

import { EventEmitter } from 'node:events'
import { pack, unpack } from 'msgpackr'
// msgpackr decodes strings with TextDecoder, which refuses views of a SharedArrayBuffer: control
// payloads are read in place from a ring, so they are sliced (copied) before unpack().
import { Timer, type Clock } from '../clock.ts'
import { ErrorCode, NsrError } from '../errors.ts'
import { Flag, MsgType, seqAdd, seqLe, type Header } from '../protocol/header.ts'
import { RecordQueue, Slab, type Addr } from '../socket/records.ts'
import { Socket, defaultSocketLimits, type SocketHost, type SocketKind, type SocketLimits } from '../socket/socket.ts'
import { SR, SRI } from '../sdrl/flags.ts'
import { SrPrimary, type PrimaryHost } from '../sdrl/primary.ts'
import { SnoopPair, type SocketParams } from '../sdrl/secondary.ts'
import { SecondarySide } from './secondary-side.ts'
import { dataSpan, type DataSpan, type FrameSink } from './sink.ts'
import { newReCounters, reStats, type ReCounters } from './stats.ts'
import { mergePair, type ChassisTxState } from './takeover.ts'

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
  sockets: Record<number, ChassisTxState>
}

interface Pending {
  resolve: (v: unknown) => void
  reject: (e: NsrError) => void
  /** Runs as the reply is dispatched, before any frame behind it (a new socket must exist before its first RX). */
  onReply?: (v: Record<string, unknown>) => unknown
}

const RX_CREDIT_BATCH_DIVISOR = 4

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
  private lastPeerHeard = 0
  private readonly keepaliveTimer: Timer
  private readonly slab = new Slab()
  private readonly span: DataSpan = { addr: null, start: 0, end: 0 }
  private readonly replicateWanted = new Set<number>()
  /** Sockets whose TX_RELEASE waits for room on the chassis link (their next handshake waits for it). */
  private readonly releasesOwed = new Set<Socket>()
  private releaseWaiting = false
  /** The snoop pairs' handshakes, acks, flow control and held bytes (secondary-side.ts). */
  private readonly secondary: SecondarySide
  private lastSyncReport = ''
  /** Set by quiesce(): every write() fails with EAGAIN (a graceful switchover is under way). */
  frozen = false
  /** Figures the application wants in stats() (benchmarks time their own calls here). */
  readonly appStats: Record<string, number> = {}
  /** Where the last promotion spent its time (the application's mastership handlers apart). */
  lastPromoteTrace = { mergeMs: 0, appMs: 0 }
  readonly counters: ReCounters = newReCounters()

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
    this.secondary = new SecondarySide({
      pairs: this.pairs,
      counters: this.counters,
      limits: this.limits,
      snoopBufBytes: this.snoopBufBytes,
      congestionBytes: this.congestionBytes,
      chassis,
      slab: this.slab,
      peer: () => this.peerSink,
      reject: (reason) => this.reject(reason),
      reportSync: () => this.reportSync(),
      addRxCredit: (handle, bytes, window) => this.addRxCredit(handle, bytes, window),
      split: (pair) => this.emit('split', pair),
    })
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
      pair = this.secondary.newPair(handle)
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

  /** Replication is off on `sock`: every record the chassis holds for it may go (owed until sent). */
  releaseHeld(sock: Socket): void {
    if (this.role !== 'primary') return
    this.releasesOwed.add(sock)
    this.flushReleases()
  }

  releaseOwed(sock: Socket): boolean {
    return this.releasesOwed.has(sock)
  }

  private flushReleases(): void {
    for (const sock of this.releasesOwed) {
      // txSeq as of now is right: no record leaves held while this is owed (no handshake goes out).
      if (!this.chassis.send(MsgType.TX_RELEASE, 0, sock.handle, sock.txSeq, 0, 0, null)) {
        if (!this.releaseWaiting) {
          this.releaseWaiting = true
          this.chassis.whenRoom(() => {
            this.releaseWaiting = false
            this.flushReleases()
          })
        }
        return
      }
      this.releasesOwed.delete(sock)
      ;(sock.sr as SrPrimary | null)?.released()
    }
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
    this.secondary.dropPair(pair)
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
    if (sock.appState) {
      // The application's callback: one that throws is reported and leaves `app` out, never
      // breaks the handshake (the secondary application sees no state, as with none set).
      try {
        p.app = sock.appState()
      } catch (err) {
        this.counters.appStateErrors++
        this.emit('error', err)
      }
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
      else this.secondary.onPeerMessage(h, bytes, off)
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
    this.secondary.flushAcks()
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
        const why = sr.onInitNak(h.ack)
        if (why) this.reject(why)
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

  private peerMsg(bytes: Uint8Array, off: number, len: number): void {
    let msg: unknown
    try {
      msg = unpack(bytes.slice(off, off + len))
    } catch {
      return this.reject('peer-msg-undecodable')
    }
    this.emit('peer-message', msg)
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
    const pl = dataSpan(h, bytes, off, this.span)
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
      sock.deliver(this.slab.copy(bytes, start, end), addr)
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
      this.secondary.received(pair, ended ? new Uint8Array(0) : this.slab.copy(bytes, start, end), addr, ended)
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
      this.secondary.chassisClosed(ev.handle as number)
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
    sock.setTxCredit((r.txCredit as number) ?? 0)
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
   * after the last record the chassis accepted; then `beforeMastership` runs (the rest of the
   * promotion that the app may need, such as the new FIB client), then 'mastership' is emitted.
   * Sockets go first: takeover time runs from the old primary's death to the first record at the
   * transport. Returns the handles adopted and those lost.
   */
  promote(info: PromoteInfo, beforeMastership?: () => void): { adopted: number[]; lost: number[]; uncharged: Record<number, number> } {
    if (this.role !== 'secondary') throw new NsrError('EINVAL', `RE ${this.id} is already primary`)
    const tPromote = this.clock.now()
    this.onPeerBatchEnd()
    this.role = 'primary'
    this.peerSink = null
    const adopted: number[] = []
    const lost: number[] = []
    const uncharged: Record<number, number> = {}
    for (const pair of [...this.pairs.values()]) {
      this.pairs.delete(pair.handle)
      const p = pair.params
      if (!pair.complete || !p) {
        lost.push(pair.handle)
        this.counters.lostAtTakeover++
        continue
      }
      const t = info.sockets[pair.handle] ?? { txSeq: pair.txDoneSeq, txCredit: 0 }
      const sock = mergePair(this, this.chassis, pair, p, t, this.earlyTxCredit.get(pair.handle) ?? 0)
      // Pre-existing data never charged to this RE: the chassis charges it now (promoted()), and
      // the live socket credits every byte it reads.
      if (pair.recv.unchargedBytes > 0) uncharged[pair.handle] = pair.recv.unchargedBytes
      this.sockets.set(sock.handle, sock)
      this.replicateWanted.add(sock.handle)
      adopted.push(sock.handle)
      // Resend now, publishing at once: the first record reaches the transport before the other
      // sockets are even merged (takeover time is death to that first record).
      sock.pump()
      this.chassis.flush()
    }
    this.earlyTxCredit.clear()
    this.secondary.promoted()
    const tMerged = this.clock.now()
    beforeMastership?.()
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
    const { congested, heldBytes } = this.secondary
    return reStats({ id: this.id, role: this.role, peer: this.peerSink !== null, congested, heldBytes, sockets: this.sockets, pairs: this.pairs, counters: this.counters, appStats: this.appStats })
  }

  close(): void {
    this.keepaliveTimer.stop()
  }
}

export { RecordQueue }
