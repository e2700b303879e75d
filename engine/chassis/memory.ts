// The in-memory transport: a loopback network inside the host thread, the embedded default. Tests,
// benchmarks and the demo drive its far ends (MemoryPeer) directly. It keeps TCP's contract where it
// matters to NSR: a byte stream in order, a bounded window (a paused reader stalls the writer, whose
// write() returns false until 'drain'), FIN and reset.

import { EventEmitter } from 'node:events'
import { NsrError } from '../errors.ts'
import type { Addr } from '../socket/records.ts'
import type { ConnEvents, Transport, TransportConn, TransportListener } from './transport.ts'

const PEER_WINDOW_BYTES = 256 * 1024
/** Most bytes one read hands the engine side (net.Socket reads 64 KiB at a time). */
const READ_BYTES = 64 * 1024
const noop = (): void => {}
const EMPTY = new Uint8Array(0)

function sameAddr(a: Addr, b: Addr): boolean {
  return a.port === b.port && a.address === b.address
}

/** The far end of an in-memory connection, in the test's or demo's hands. */
export class MemoryPeer extends EventEmitter {
  readonly remote: Addr
  /** Everything the engine side sent, in order (bounded only by what the test keeps). */
  received: Uint8Array[] = []
  receivedBytes = 0
  keepReceived = true
  ended = false
  reset = false
  private inner: MemoryConn | null = null
  private readPaused = false
  private unread: Array<{ data: Uint8Array; done: () => void }> = []
  // Bytes written and not yet taken by the engine side, from pending[pendingHead] on (an index, not
  // shift(): a paused engine side can leave tens of thousands of single lines here).
  private pending: Uint8Array[] = []
  private pendingHead = 0
  private pendingBytes = 0

  private readonly readBytes: number

  constructor(remote: Addr, readBytes = READ_BYTES) {
    super()
    this.remote = remote
    this.readBytes = readBytes
  }

  attach(conn: MemoryConn): void {
    this.inner = conn
  }

  /** Sends bytes to the engine side. Returns false when the window is full: wait for 'drain'. */
  write(data: Uint8Array): boolean {
    if (this.ended || this.reset) throw new NsrError('EPIPE', 'memory peer closed')
    const copy = data.slice()
    this.pending.push(copy)
    this.pendingBytes += copy.length
    this.flush()
    return this.pendingBytes < PEER_WINDOW_BYTES
  }

  flush(): void {
    const c = this.inner
    // Until the chassis has attached its handlers the bytes stay queued (they used to be dropped).
    if (!c || !c.events) return
    // this.pending is read afresh each turn: data() may resume the connection, flushing reentrantly.
    while (this.pendingHead < this.pending.length && !c.paused) {
      const d = this.takeRead()
      this.pendingBytes -= d.length
      // A lent read is a copy of its own (data() may flush again, reentrantly), spoilt after the call.
      const given = c.lendsReads ? d.slice() : d
      c.events.data(given, null)
      if (c.lendsReads) given.fill(0xee)
    }
    const pending = this.pending
    if (this.pendingHead === pending.length) {
      this.pending = []
      this.pendingHead = 0
    } else if (this.pendingHead > 1024 && this.pendingHead * 2 > pending.length) {
      this.pending = pending.slice(this.pendingHead)
      this.pendingHead = 0
    }
    if (this.pendingBytes < PEER_WINDOW_BYTES) this.emit('drain')
  }

  /**
   * The next read the engine side gets: one write, or, when writes queued up behind a paused
   * reader, as many as fit in readBytes joined, as a TCP socket's read returns what its receive
   * buffer holds. Handing a backlog of single lines over one by one kept the host thread busy for
   * tens of ms in one go each time the chassis resumed reading (seen at takeovers).
   */
  private takeRead(): Uint8Array {
    const pending = this.pending
    const first = pending[this.pendingHead]
    pending[this.pendingHead++] = EMPTY
    let end = this.pendingHead
    let n = first.length
    while (end < pending.length && n + pending[end].length <= this.readBytes) n += pending[end++].length
    if (end === this.pendingHead) return first
    const out = new Uint8Array(n)
    out.set(first, 0)
    let at = first.length
    for (let i = this.pendingHead; i < end; i++) {
      out.set(pending[i], at)
      at += pending[i].length
      pending[i] = EMPTY
    }
    this.pendingHead = end
    return out
  }

  /** FIN from the peer. */
  end(): void {
    if (this.ended) return
    this.ended = true
    this.inner?.events?.end()
  }

  destroy(): void {
    this.reset = true
    this.inner?.events?.error('ECONNRESET', 'peer reset')
  }

  /** Called by the engine side; `done` frees the engine's transport window (see pauseReading). */
  deliver(data: Uint8Array, done: () => void = noop): void {
    if (this.readPaused) {
      this.unread.push({ data, done })
      return
    }
    if (this.keepReceived) this.received.push(data)
    this.receivedBytes += data.length
    this.emit('data', data)
    done()
  }

  /**
   * A slow reader: what the engine sends waits here, and the engine's transport window stays
   * taken (a TCP peer's window closing), until resumeReading().
   */
  pauseReading(): void {
    this.readPaused = true
  }

  resumeReading(): void {
    this.readPaused = false
    const unread = this.unread
    this.unread = []
    for (const u of unread) this.deliver(u.data, u.done)
  }

  remoteEnded(): void {
    this.emit('end')
  }

  text(): string {
    return Buffer.concat(this.received).toString('latin1')
  }
}

export class MemoryConn implements TransportConn {
  readonly local: Addr
  readonly remote: Addr | null
  private handlers: ConnEvents | null = null
  get events(): ConnEvents | null {
    return this.handlers
  }
  /** Attaching handlers delivers what the peer wrote before (on a microtask: no reentrancy). */
  set events(e: ConnEvents | null) {
    this.handlers = e
    if (e) queueMicrotask(() => this.peer?.flush())
  }
  paused = false
  closed = false
  private readonly peer: MemoryPeer | null
  private readonly dgram: MemoryUdp | null
  /** Stream reads are overwritten after events.data() (MemoryNetworkOptions.lendReads). */
  readonly lendsReads: boolean

  constructor(local: Addr, remote: Addr | null, peer: MemoryPeer | null, dgram: MemoryUdp | null = null, lendsReads = false) {
    this.local = local
    this.remote = remote
    this.peer = peer
    this.dgram = dgram
    this.lendsReads = lendsReads
  }

  write(data: Uint8Array, addr: Addr | null, done: () => void): void {
    if (this.closed) return done()
    if (this.dgram) {
      const to = addr ?? this.remote
      // A connected datagram socket sends only to its remote (as net.ts does): any other is dropped.
      if (!this.remote || (to && sameAddr(to, this.remote))) this.dgram.net.sendDatagram(this.local, to, data)
    } else if (this.peer) return this.peer.deliver(data, done)
    done()
  }

  pause(): void {
    this.paused = true
  }

  resume(): void {
    this.paused = false
    this.peer?.flush()
  }

  end(): void {
    if (this.closed) return
    this.closed = true
    this.peer?.remoteEnded()
    this.dgram?.net.unbindUdp(this.local.port)
  }

  destroy(): void {
    this.end()
  }
}

/** A datagram endpoint on the memory network (a test's UDP peer, or a bound engine socket). */
export class MemoryUdp extends EventEmitter {
  readonly net: MemoryNetwork
  readonly local: Addr
  conn: MemoryConn | null = null
  received: Array<{ data: Uint8Array; from: Addr }> = []

  constructor(net: MemoryNetwork, local: Addr) {
    super()
    this.net = net
    this.local = local
  }

  send(data: Uint8Array, to: Addr): void {
    this.net.sendDatagram(this.local, to, data.slice())
  }

  deliver(data: Uint8Array, from: Addr): void {
    if (this.conn) {
      if (this.conn.remote && !sameAddr(from, this.conn.remote)) return // connected: its remote's datagrams only
      if (!this.conn.paused) this.conn.events?.data(data, from)
      return
    }
    this.received.push({ data, from })
    this.emit('message', data, from)
  }
}

export interface MemoryNetworkOptions {
  /** Most bytes one read hands the engine side from a peer's queued writes (default 64 KiB). */
  readBytes?: number
  /**
   * Stream reads are lent, as a TCP socket's in net.ts are (TransportConn.lendsReads): each read's
   * bytes are overwritten (0xee) once events.data() returns, so a chassis that kept a view of them
   * instead of a copy delivers garbage. For tests.
   */
  lendReads?: boolean
}

export class MemoryNetwork implements Transport {
  readonly name = 'memory'
  private readonly readBytes: number
  private listeners = new Map<number, (conn: MemoryConn) => void>()
  private servers = new Map<number, (peer: MemoryPeer) => void>()
  private udps = new Map<number, MemoryUdp>()
  private nextEphemeral = 40000
  readonly host = 'mem'

  private readonly lendReads: boolean

  constructor(opts: MemoryNetworkOptions = {}) {
    this.readBytes = opts.readBytes ?? READ_BYTES
    this.lendReads = opts.lendReads ?? false
  }

  // ---- the engine side (chassis) ---------------------------------------------------------------

  async connect(_host: string, port: number): Promise<TransportConn> {
    const serve = this.servers.get(port)
    if (!serve) throw Object.assign(new Error(`memory: connection refused on port ${port}`), { code: 'ECONNREFUSED' })
    const local = { address: this.host, port: this.nextEphemeral++ }
    const peer = new MemoryPeer(local, this.readBytes)
    const conn = new MemoryConn(local, { address: this.host, port }, peer, null, this.lendReads)
    peer.attach(conn)
    queueMicrotask(() => serve(peer))
    return conn
  }

  async listen(_host: string, port: number, onAccept: (conn: TransportConn) => void): Promise<TransportListener> {
    if (this.listeners.has(port)) throw Object.assign(new Error(`memory: port ${port} in use`), { code: 'EADDRINUSE' })
    this.listeners.set(port, onAccept as (conn: MemoryConn) => void)
    return { local: { address: this.host, port }, close: () => this.listeners.delete(port) }
  }

  async udp(_host: string, port: number, remote?: Addr | null): Promise<TransportConn> {
    if (this.udps.has(port)) throw Object.assign(new Error(`memory: udp port ${port} in use`), { code: 'EADDRINUSE' })
    const ep = new MemoryUdp(this, { address: this.host, port })
    const conn = new MemoryConn(ep.local, remote ? { address: this.host, port: remote.port } : null, null, ep)
    ep.conn = conn
    this.udps.set(port, ep)
    return conn
  }

  // ---- the far side (tests, demo) --------------------------------------------------------------

  /** Connects a peer to an engine listener on `port`. */
  dial(port: number): MemoryPeer {
    const accept = this.listeners.get(port)
    if (!accept) throw new NsrError('ECONNREFUSED', `memory: nothing listens on port ${port}`)
    const remote = { address: this.host, port: this.nextEphemeral++ }
    const peer = new MemoryPeer(remote, this.readBytes)
    const conn = new MemoryConn({ address: this.host, port }, remote, peer, null, this.lendReads)
    peer.attach(conn)
    accept(conn)
    return peer
  }

  /** Serves engine connect()s to `port`. */
  serve(port: number, onPeer: (peer: MemoryPeer) => void): void {
    this.servers.set(port, onPeer)
  }

  /** A datagram endpoint for the far side. */
  udpPeer(port: number): MemoryUdp {
    const ep = new MemoryUdp(this, { address: this.host, port })
    this.udps.set(port, ep)
    return ep
  }

  sendDatagram(from: Addr, to: Addr | null, data: Uint8Array): void {
    if (!to) return
    this.udps.get(to.port)?.deliver(data, from)
  }

  unbindUdp(port: number): void {
    this.udps.delete(port)
  }

  isListening(port: number): boolean {
    return this.listeners.has(port)
  }
}
