// The chassis's real L4 transports: TCP over node:net and UDP over node:dgram, behind the Transport
// interface of transport.ts (the in-memory network in memory.ts keeps the same contract). The chassis
// (host thread) owns these OS sockets, so a connection outlives any RE.
//
// What the contract means here:
// - Receive backpressure: pause()/resume() stop and restart reading the OS socket. A paused TCP
//   socket reads at most its stream's high-water mark more, then the kernel buffer fills and the
//   peer's window closes. UDP has no window: a paused socket keeps a small bounded backlog (a kernel
//   receive buffer's worth) and drops past it, counted, as a full socket buffer would.
// - Receive buffers: Node reads a socket into a fresh 64 KiB buffer per read. On a host thread that
//   otherwise allocates little, those buffers outran its scavenges and every ~100 ms set off a full
//   mark-compact for external memory (32 in 4.5 s of the echo; V8's concurrent marking was ~15% of
//   the process's CPU). A TCP socket here reads instead into its transport's one buffer (Node's
//   onread), lent to the chassis for the length of events.data(): it copies what it keeps
//   (lendsReads). Node has no public way to ask that of an accepted socket, so its handle moves to
//   a new net.Socket that does (lendingSocket); on Bun and Deno, or on a handle that is not what
//   Node's is, sockets read as before.
// - Send: write(data, addr, done) calls `done` when the OS socket took the bytes (Node's write
//   callback), so the chassis's transport credit flows back at the pace of the peer. The bytes are
//   written as given (the chassis leaves them alone until `done`, and reuses them after it: both
//   transports here say keepsNothing); a TCP socket is corked for the rest of the task at its
//   first write, so what one task hands over leaves in one writev.
// - A UDP socket opened with a remote is connected (dgram connect()): the kernel takes only the
//   remote's datagrams and sends only to it; one addressed elsewhere is dropped (udpMisaddressed).
//   The remote's ICMP unreachables come back as errors (ECONNREFUSED...): transient, as in POSIX,
//   so they are counted (udpUnreachable) and the socket goes on.
// - A peer's FIN reaches events.end(); a reset or an OS error reaches events.error(code), once, and
//   nothing follows it. Sockets are half-open capable: a peer's FIN never closes our side.
// Nothing here throws at a caller for bad I/O; it is reported as an event and counted.

import dgram from 'node:dgram'
import net from 'node:net'
import { runtimeName } from '../runtime/worker.ts'
import type { Addr } from '../socket/records.ts'
import type { ConnEvents, Transport, TransportConn, TransportListener } from './transport.ts'

/** A paused UDP socket holds at most this many datagrams (and bytes) before dropping. */
export const UDP_BACKLOG_DATAGRAMS = 256
export const UDP_BACKLOG_BYTES = 256 * 1024

/** What a connected UDP socket reports for its remote's ICMP unreachables: the socket stays usable. */
const UDP_UNREACHABLE_CODES: ReadonlySet<string> = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH'])

/** Counters shared by every connection of one transport (drops, errors: each branch counted). */
export interface NetCounters {
  accepted: number
  connected: number
  connectFailures: number
  resets: number
  errors: number
  peerEnds: number
  writesAfterClose: number
  writeErrors: number
  rxAfterClose: number
  udpBacklogged: number
  udpDropped: number
  udpSendErrors: number
  /** Datagrams a connected UDP socket was given for another destination (dropped). */
  udpMisaddressed: number
  /** ICMP unreachables a connected UDP socket heard from its remote (not the end of the socket). */
  udpUnreachable: number
  serverErrors: number
}

function newCounters(): NetCounters {
  return {
    accepted: 0,
    connected: 0,
    connectFailures: 0,
    resets: 0,
    errors: 0,
    peerEnds: 0,
    writesAfterClose: 0,
    writeErrors: 0,
    rxAfterClose: 0,
    udpBacklogged: 0,
    udpDropped: 0,
    udpSendErrors: 0,
    udpMisaddressed: 0,
    udpUnreachable: 0,
    serverErrors: 0,
  }
}

/** The errno-style code of an OS error ('EIO' when it has none). */
export function errnoCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) ? code : 'EIO'
}

function codedError(err: unknown, what: string): Error {
  const code = errnoCode(err)
  return Object.assign(new Error(`${what}: ${(err as Error)?.message ?? String(err)}`), { code })
}

function view(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
}

function addrOf(address: string | undefined, port: number | undefined): Addr {
  return { address: address ?? '', port: port ?? 0 }
}

function sameAddr(a: Addr, b: Addr): boolean {
  return a.port === b.port && a.address === b.address
}

/** What a lending TCP socket reads into: one buffer per transport, lent for one events.data() call. */
export const READ_BUFFER_BYTES = 64 * 1024

type OnRead = { buffer: Uint8Array; callback: (n: number, buf: Uint8Array) => boolean }

/**
 * An accepted socket, remade to read through `onread` (Node only: NetTransport checks the
 * runtime): its handle, still paused (pauseOnConnect), moves to a new net.Socket built with onread,
 * and the old one is destroyed without it. Null when the handle is not what Node's is: keep the
 * socket as it is.
 */
function lendingSocket(sock: net.Socket, onread: OnRead): net.Socket | null {
  const s = sock as net.Socket & { _handle?: { useUserBuffer?: unknown; readStop?: unknown } | null }
  const handle = s._handle
  if (!handle || typeof handle.useUserBuffer !== 'function' || typeof handle.readStop !== 'function') return null
  s._handle = null
  sock.destroy()
  const opts = { handle, allowHalfOpen: true, readable: true, writable: true, pauseOnCreate: true, onread }
  return new net.Socket(opts as net.SocketConstructorOpts)
}

/** A terminal event that happened before the chassis attached its handlers. */
type Terminal = { kind: 'end' } | { kind: 'error'; code: string; message: string }

// ---- TCP ---------------------------------------------------------------------------------------

export class TcpConn implements TransportConn {
  readonly local: Addr
  readonly remote: Addr
  private readonly sock: net.Socket
  private readonly counters: NetCounters
  private handlers: ConnEvents | null = null
  private pausedByChassis = false
  /** We ended or destroyed our side: nothing more is reported. */
  private closed = false
  /** The peer's FIN or an error was reported (or is waiting for handlers). */
  private finished = false
  private pendingTerminal: Terminal | null = null
  /** Corked until the end of the task (write()). */
  private corked = false
  /** Reads come through onread, in a buffer that is reused once events.data() returns. */
  readonly lendsReads: boolean

  /** `lendsReads`: `sock` reads through onread, whose callback calls lentRead(). */
  constructor(sock: net.Socket, counters: NetCounters, lendsReads = false) {
    this.sock = sock
    this.counters = counters
    this.lendsReads = lendsReads
    this.local = addrOf(sock.localAddress, sock.localPort)
    this.remote = addrOf(sock.remoteAddress, sock.remotePort)
    sock.setNoDelay(true)
    sock.on('end', () => this.terminal({ kind: 'end' }))
    sock.on('error', (err) => this.terminal({ kind: 'error', code: errnoCode(err), message: err.message }))
    // A close that follows neither FIN nor error (the OS dropped it) still ends the connection.
    sock.on('close', () => this.terminal({ kind: 'error', code: 'ECONNRESET', message: 'socket closed' }))
  }

  get events(): ConnEvents | null {
    return this.handlers
  }

  /** Set by the chassis once: reading starts then (never before anyone can take the data). */
  set events(ev: ConnEvents | null) {
    const first = this.handlers === null && ev !== null
    this.handlers = ev
    if (!first) return
    if (!this.lendsReads) this.sock.on('data', this.onBytes)
    if (this.pausedByChassis) this.sock.pause()
    else this.sock.resume()
    const t = this.pendingTerminal
    this.pendingTerminal = null
    if (t) this.deliverTerminal(t)
  }

  /** Bytes read (a 'data' chunk, or a lent view of the read buffer). Reading starts only once handlers are set. */
  readonly onBytes = (chunk: Uint8Array): void => {
    if (this.closed || this.finished) {
      this.counters.rxAfterClose++
      return
    }
    this.handlers?.data(chunk, null)
  }

  /**
   * onread's callback: hands the read on, and says whether to keep reading. A socket that reads
   * through onread has no stream buffer to fill, so pause() alone did not hold: the resume() before
   * it had queued a read(0) for the next tick, which started reading again (a test's paused socket
   * read on forever). Returning false stops it once more; what that one read got is delivered.
   */
  lentRead(chunk: Uint8Array): boolean {
    this.onBytes(chunk)
    return this.closed || !this.pausedByChassis
  }

  /** A write's bytes are Node's until its callback, and not after: the chassis may reuse them then. */
  readonly keepsNothing = true

  write(data: Uint8Array, _addr: Addr | null, done: () => void): void {
    const s = this.sock
    if (this.closed || s.destroyed || s.writableEnded) {
      this.counters.writesAfterClose++
      return done()
    }
    // The chassis hands over runs of records in slabs it leaves alone until `done` (OutQueue), so
    // the bytes go as they are. The socket is corked for the rest of the task: every run handed over in it
    // leaves in one writev.
    if (!this.corked) {
      this.corked = true
      s.cork()
      queueMicrotask(this.uncork)
    }
    s.write(view(data), (err) => {
      if (err) this.counters.writeErrors++
      done()
    })
  }

  private readonly uncork = (): void => {
    this.corked = false
    this.sock.uncork()
  }

  pause(): void {
    this.pausedByChassis = true
    this.sock.pause()
  }

  resume(): void {
    this.pausedByChassis = false
    if (this.handlers) this.sock.resume()
  }

  end(): void {
    if (this.closed) return
    this.closed = true
    this.sock.end() // uncorks: what this task wrote goes before the FIN
    // Keep reading (and discarding) so the peer's FIN arrives and the socket can close.
    this.sock.resume()
  }

  destroy(): void {
    if (this.closed && this.sock.destroyed) return
    this.closed = true
    const s = this.sock as net.Socket & { resetAndDestroy?: () => void }
    if (typeof s.resetAndDestroy === 'function' && !s.destroyed) s.resetAndDestroy()
    else s.destroy()
  }

  private terminal(t: Terminal): void {
    if (this.finished) return
    this.finished = true
    if (t.kind === 'end') this.counters.peerEnds++
    else if (t.code === 'ECONNRESET') this.counters.resets++
    else this.counters.errors++
    if (this.closed) return
    if (!this.handlers) {
      this.pendingTerminal = t
      return
    }
    this.deliverTerminal(t)
  }

  private deliverTerminal(t: Terminal): void {
    if (t.kind === 'end') this.handlers?.end()
    else this.handlers?.error(t.code, t.message)
  }
}

// ---- UDP ---------------------------------------------------------------------------------------

export class UdpConn implements TransportConn {
  readonly local: Addr
  /** A connected socket's peer (its only destination and source); null: unconnected. */
  readonly remote: Addr | null
  private readonly sock: dgram.Socket
  private readonly counters: NetCounters
  private handlers: ConnEvents | null = null
  private paused = false
  private closed = false
  private backlog: Array<{ data: Buffer; addr: Addr }> = []
  private backlogBytes = 0

  /** `sock` is bound, and connected if `connected`. */
  constructor(sock: dgram.Socket, counters: NetCounters, connected = false) {
    this.sock = sock
    this.counters = counters
    const a = sock.address()
    this.local = addrOf(a.address, a.port)
    const r = connected ? sock.remoteAddress() : null
    this.remote = r ? addrOf(r.address, r.port) : null
    sock.on('message', (msg, rinfo) => this.onMessage(msg, { address: rinfo.address, port: rinfo.port }))
    sock.on('error', (err) => {
      const code = errnoCode(err)
      if (this.remote && UDP_UNREACHABLE_CODES.has(code)) {
        this.counters.udpUnreachable++
        return
      }
      this.counters.errors++
      if (!this.closed) this.handlers?.error(code, err.message)
    })
  }

  get events(): ConnEvents | null {
    return this.handlers
  }

  set events(ev: ConnEvents | null) {
    this.handlers = ev
    this.flushBacklog()
  }

  private onMessage(msg: Buffer, from: Addr): void {
    if (this.closed) return
    if (this.handlers && !this.paused && this.backlog.length === 0) return this.handlers.data(msg, from)
    if (this.backlog.length >= UDP_BACKLOG_DATAGRAMS || this.backlogBytes + msg.length > UDP_BACKLOG_BYTES) {
      this.counters.udpDropped++
      return
    }
    this.backlog.push({ data: msg, addr: from })
    this.backlogBytes += msg.length
    this.counters.udpBacklogged++
  }

  private flushBacklog(): void {
    while (this.backlog.length && this.handlers && !this.paused && !this.closed) {
      const d = this.backlog.shift()!
      this.backlogBytes -= d.data.length
      this.handlers.data(d.data, d.addr)
    }
  }

  /** A datagram's bytes are Node's until send()'s callback, and not after. */
  readonly keepsNothing = true

  write(data: Uint8Array, addr: Addr | null, done: () => void): void {
    if (this.closed || !(addr || this.remote)) {
      this.counters.writesAfterClose++
      return done()
    }
    const sent = (err: Error | null): void => {
      if (err) this.counters.udpSendErrors++
      done()
    }
    if (!this.remote) return this.sock.send(view(data), addr!.port, addr!.address, sent)
    // Node refuses a destination on a connected socket: the remote is implied, any other dropped.
    if (addr && !sameAddr(addr, this.remote)) {
      this.counters.udpMisaddressed++
      return done()
    }
    this.sock.send(view(data), sent)
  }

  pause(): void {
    this.paused = true
  }

  resume(): void {
    this.paused = false
    this.flushBacklog()
  }

  end(): void {
    if (this.closed) return
    this.closed = true
    this.backlog = []
    this.backlogBytes = 0
    try {
      this.sock.close()
    } catch {
      // already closed
    }
  }

  destroy(): void {
    this.end()
  }
}

// ---- the transport -----------------------------------------------------------------------------

/** TCP and UDP over the host's OS sockets. One instance serves both; the chassis names it 'tcp' and 'udp'. */
export class NetTransport implements Transport {
  readonly name: string
  readonly counters: NetCounters = newCounters()
  /** Every lending TCP socket of this transport reads here; each read is handed on before the next. */
  private readonly readBuffer = new Uint8Array(READ_BUFFER_BYTES)
  /** TCP sockets read through onread (where the runtime allows; `lendReads: false` turns it off). */
  private readonly lending: boolean

  constructor(name = 'net', opts: { lendReads?: boolean } = {}) {
    this.name = name
    this.lending = runtimeName() === 'node' && (opts.lendReads ?? true)
  }

  /**
   * onread options whose reads go to `conn()`. The connection exists before any read: an accepted
   * one is made at once, an outgoing one at 'connect', and both stay paused until the chassis
   * attaches its handlers. (Were there none, that read would be lost and the socket would stop.)
   */
  private onread(conn: () => TcpConn | null): OnRead {
    return {
      buffer: this.readBuffer,
      callback: (n, buf) => conn()?.lentRead(buf.subarray(0, n)) ?? false,
    }
  }

  connect(host: string, port: number, local?: string): Promise<TransportConn> {
    return new Promise((resolve, reject) => {
      let conn: TcpConn | null = null
      const onread = this.lending ? this.onread(() => conn) : undefined
      const sock = net.connect({ host, port, localAddress: local, allowHalfOpen: true, onread })
      // Not reading until the chassis attaches its handlers: paused (onread), or no 'data' listener yet.
      if (onread) sock.pause()
      const fail = (err: Error): void => {
        this.counters.connectFailures++
        sock.destroy()
        reject(codedError(err, `connect ${host}:${port}`))
      }
      sock.once('error', fail)
      sock.once('connect', () => {
        sock.off('error', fail)
        this.counters.connected++
        conn = new TcpConn(sock, this.counters, !!onread)
        resolve(conn)
      })
    })
  }

  listen(host: string, port: number, onAccept: (conn: TransportConn) => void): Promise<TransportListener> {
    return new Promise((resolve, reject) => {
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (sock) => {
        this.counters.accepted++
        // A connection the peer reset before we saw it has no addresses: nothing to hand on.
        if (sock.remoteAddress === undefined) {
          sock.destroy()
          return
        }
        let conn: TcpConn | null = null
        const lending = this.lending ? lendingSocket(sock, this.onread(() => conn)) : null
        conn = lending ? new TcpConn(lending, this.counters, true) : new TcpConn(sock, this.counters)
        onAccept(conn)
      })
      const fail = (err: Error): void => reject(codedError(err, `listen ${host}:${port}`))
      server.once('error', fail)
      server.listen({ host, port }, () => {
        server.off('error', fail)
        // Accept errors (EMFILE...) later are counted; the listener stays up.
        server.on('error', () => void this.counters.serverErrors++)
        const a = server.address() as net.AddressInfo
        resolve({ local: addrOf(a.address, a.port), close: () => void server.close() })
      })
    })
  }

  udp(host: string, port: number, remote?: Addr | null): Promise<TransportConn> {
    return new Promise((resolve, reject) => {
      const sock = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4' })
      const fail = (err: Error): void => {
        try {
          sock.close()
        } catch {
          // never bound
        }
        reject(codedError(err, remote ? `udp ${host}:${port} connect ${remote.address}:${remote.port}` : `udp bind ${host}:${port}`))
      }
      sock.once('error', fail)
      const done = (): void => {
        sock.off('error', fail)
        resolve(new UdpConn(sock, this.counters, !!remote))
      }
      sock.bind(port, host, () => {
        if (!remote) return done()
        sock.once('connect', done) // a failure is an 'error' event: fail
        try {
          sock.connect(remote.port, remote.address)
        } catch (err) {
          fail(err as Error) // a bad port or address, thrown at once
        }
      })
    })
  }
}
