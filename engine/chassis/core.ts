// ChassisCore: the host-thread half of the engine, sans-IO. It owns the transport connections
// (so a connection outlives any RE), fans received data out to both REs (the PRL), accepts records
// for the transport only from the primary, and keeps, per connection, the sequence of the last
// record the transport accepted: after a failover the new primary resumes right after it, so no
// record goes out twice or never (invariant 2).
//
// Held records (the release point of replication, engine/sdrl/primary.ts): on a replicated socket
// the primary sends each record here flagged HELD before it replicates it, so the chassis has every
// record the secondary has. A held record waits in the connection's `held` queue, counted against
// the transport window, until a TX_RELEASE covers it: the secondary's (sent with its cumulative
// ack, straight here rather than through the primary) or the primary's (replication off or torn
// down). An unheld TX releases everything before it. At a takeover the new primary says how far its
// history goes (TX_RELEASE flagged RESUME): held records up to there are released, the rest, which
// the secondary never saw, are dropped. Held records never reach the transport unacknowledged
// (invariant 1), and the primary neither copies a record into its send buffer nor sends it twice.
//
// Receive fan-out (seed 4.1 b, invariants 3 and 5): each connection keeps one bounded queue of
// received chunks with two cursors; a chunk goes to the secondary first and to the primary only
// after that (the secondary never lags the primary). A chunk leaves an RE's cursor only while that
// RE has receive credit for the connection, and the OS socket is paused while the queue is above
// its window, so a slow reader on either RE closes the peer's TCP window instead of growing memory.
//
// Fan-out modes per connection, and transitions:
//   primary  --prl hold-->     hold      (handshake starting: deliver nothing, queue)
//   hold     --prl release-->  both      (handshake done: secondary cursor starts where primary's is)
//   hold|both --prl off / secondary lost--> primary
//   any      --promotion-->    primary   (new primary's cursor = old secondary's)

import { pack, unpack } from 'msgpackr'
// msgpackr decodes strings with TextDecoder, which refuses views of a SharedArrayBuffer: control
// payloads are read in place from a ring, so they are sliced (copied) before unpack().
import { Flag, MsgType, seqAdd, seqLe, seqLt, type Header } from '../protocol/header.ts'
import type { Addr } from '../socket/records.ts'
import { OutQueue, SlabPool, type Run } from './out-queue.ts'
import type { FrameSink } from '../re/sink.ts'
import { forEachRecord } from '../re/sink.ts'
import type { Transport, TransportConn, TransportListener } from './transport.ts'

export type FanMode = 'primary' | 'hold' | 'both'

interface Chunk {
  data: Uint8Array
  addr: Addr | null
  flags: number // FIN / RST for end-of-stream markers
  /** A joined stream chunk's own buffer: `data` is its first bytes (see received()). */
  room?: Uint8Array
}

export interface Conn {
  handle: number
  kind: 'tcp' | 'udp' | 'listen'
  transport: TransportConn | null
  listener: TransportListener | null
  /** Listener: replicate what it accepts. Accepted connection: a replication policy picked it. */
  replicateOnAccept: boolean
  /** The listener that accepted this connection (0: none). */
  listen: number
  /** Last record handed to the transport. */
  txSeq: number
  /** Last record received from the primary, held or not (>= txSeq). */
  lastSeq: number
  /** Highest record a TX_RELEASE (or an unheld TX) let go. */
  releasedSeq: number
  /**
   * Records from the primary not yet handed to the transport (lastSeq's tail beyond txSeq): held
   * ones, and released ones that leave at the end of their frame in runs; bytes counted in txOutstanding.
   */
  held: OutQueue
  /** A close that waits for the held records to be released. */
  closeAfterHeld: boolean
  /** Bytes held plus bytes the transport has not yet taken (bounded by the transport window). */
  txOutstanding: number
  mode: FanMode
  q: Chunk[] // received chunks; q[k] is chunk number qBase + k, and those before qHead are dropped
  qBase: number
  qHead: number // absolute number of the oldest chunk still queued
  qBytes: number
  priIdx: number // absolute index of the next chunk for the primary
  secIdx: number // absolute index of the next chunk for the secondary
  priOut: number // bytes delivered to the primary not yet credited back
  secOut: number
  paused: boolean
  /** The primary was told of this connection (connect/udp reply or 'accepted' committed): RX may follow. */
  announced: boolean
  closing: boolean
  ended: boolean
  local: Addr | null
  remote: Addr | null
}

/** A dropped slot in Conn.q (kept until the array is compacted). */
const DROPPED: Chunk = { data: new Uint8Array(0), addr: null, flags: 0 }

/** A udp command's `remote`: absent (null) or a peer address; anything else is refused (EINVAL). */
function udpRemote(remote: unknown): Addr | null {
  if (remote === undefined || remote === null) return null
  const r = remote as Partial<Addr>
  if (typeof r.address === 'string' && r.address !== '' && Number.isInteger(r.port) && r.port! > 0 && r.port! <= 65535) return { address: r.address, port: r.port! }
  throw Object.assign(new Error('udp remote must be { address, port } with a port 1..65535'), { code: 'EINVAL' })
}

export interface ChassisLimits {
  rxWindowBytes: number // per connection per RE: unread bytes an RE may hold
  rxQueueBytes: number // per connection: received bytes queued in the chassis before pausing the OS socket
  // per connection: bytes the primary may have in the chassis at once, held for the secondary's ack
  // or in the transport; twice the default send buffer, so that a full buffer of unacked records
  // leaves as much again for the transport (at 1 MiB, records queued in the primary, copied).
  txWindowBytes: number
  // per connection: the largest stream chunk join() makes of received chunks no RE has yet (at most a
  // quarter of rxWindowBytes; 0: never join). Links must carry RX frames this big.
  rxJoinBytes: number
}

export const defaultChassisLimits: ChassisLimits = {
  rxWindowBytes: 256 * 1024,
  rxQueueBytes: 256 * 1024,
  txWindowBytes: 2 * 1024 * 1024,
  rxJoinBytes: 16 * 1024,
}

interface ReSlot {
  id: string
  sink: FrameSink
}

/** Socket lifecycle observer: the chassis fires engine/hooks from it (engine/chassis/conn-hooks.ts). */
export interface ConnObserver {
  /** A socket opened; returning true asks that the connection be replicated (a replication policy matched). */
  opened(c: Conn, reId: string, how: 'outgoing' | 'incoming' | 'listen' | 'udp'): boolean
  /** The socket went away: 'close' (an RE closed it), 'reset' (dropped at a takeover), or the peer's / OS error code. */
  closed(c: Conn, reason: string): void
}

export class ChassisCore {
  readonly conns = new Map<number, Conn>()
  readonly limits: ChassisLimits
  primary: ReSlot | null = null
  secondary: ReSlot | null = null
  private nextHandle = 1
  private readonly transports: Record<string, Transport>
  private txCreditDue = new Map<number, number>()
  /** Spare out-queue slabs, for connections whose transport keeps nothing after a write (OutQueue). */
  private readonly slabPool = new SlabPool()
  private txCreditQueued = false
  private waitingRoom = new Set<string>()
  private promoting = false
  /** Connections that existed when the promotion began (beginPromotion). */
  private promotionHandles: Set<number> | null = null
  /** Connections accepted while a secondary was being promoted: announced once it is primary. */
  private acceptedInPromotion: Conn[] = []
  private firstTxPending = false
  /** Called when the first record from a newly promoted primary reaches a transport. */
  onFirstTxAfterPromotion: (() => void) | null = null
  sync = { total: 0, functional: 0, peer: false }
  onSync: () => void = () => {}
  /** The primary stopped hearing the secondary's keepalives. */
  onSecondarySilent: () => void = () => {}
  onCmd: (reId: string, cmd: Record<string, unknown>) => Record<string, unknown> | null = () => null
  /** Observes every record handed to a transport (tests instrument invariant 1 here). */
  onTransmit: ((conn: Conn, seq: number, data: Uint8Array) => void) | null = null
  observer: ConnObserver | null = null
  readonly counters = {
    txRecords: 0,
    /** Transport writes: adjacent records of a stream connection leave in one (OutQueue). */
    txWrites: 0,
    txBytes: 0,
    txHeld: 0,
    txReleases: 0,
    txDroppedAtResume: 0,
    txDuplicates: 0,
    txGaps: 0,
    txFromSecondary: 0,
    txUnknownHandle: 0,
    rxChunks: 0,
    rxBytes: 0,
    rxPauses: 0,
    rxJoined: 0,
    /** Received chunks a transport lent (lendsReads) that had to be copied: an RE had no room for them yet. */
    rxCopied: 0,
    rejected: 0,
    resets: 0,
  }

  constructor(transports: Record<string, Transport>, limits: Partial<ChassisLimits> = {}) {
    this.transports = transports
    this.limits = { ...defaultChassisLimits, ...limits }
  }

  setPrimary(id: string, sink: FrameSink): void {
    this.primary = { id, sink }
  }

  setSecondary(id: string, sink: FrameSink | null): void {
    this.secondary = sink ? { id, sink } : null
    // No secondary: nothing to hold received data for either ('hold' would starve the primary when
    // the secondary died before the primary started, or failed, that connection's handshake).
    if (!sink) for (const c of this.conns.values()) if (c.mode === 'both' || c.mode === 'hold') this.setMode(c, 'primary')
  }

  // ---- messages from an RE ---------------------------------------------------------------------

  onReMessage(reId: string, h: Header, bytes: Uint8Array, off: number): void {
    const fromPrimary = this.primary?.id === reId
    switch (h.type) {
      case MsgType.TX:
        if (!fromPrimary) {
          this.counters.txFromSecondary++
          return
        }
        return this.onTx(h, bytes, off)
      case MsgType.TX_RELEASE: {
        const c = this.conns.get(h.handle)
        if (!c) return
        if (fromPrimary) this.release(c, h.seq, (h.flags & Flag.RESUME) !== 0)
        else if (this.secondary?.id === reId && !(h.flags & Flag.RESUME)) this.release(c, h.seq, false)
        else this.counters.rejected++
        return
      }
      case MsgType.RX_CREDIT: {
        const c = this.conns.get(h.handle)
        if (!c) return
        if (fromPrimary) c.priOut = Math.max(0, c.priOut - h.credit)
        else if (this.secondary?.id === reId) c.secOut = Math.max(0, c.secOut - h.credit)
        this.pumpRx(c)
        return
      }
      case MsgType.CMD: {
        let cmd: Record<string, unknown>
        try {
          cmd = unpack(bytes.slice(off, off + h.length)) as Record<string, unknown>
        } catch {
          this.counters.rejected++
          return
        }
        void this.onCommand(reId, h.seq, cmd)
        return
      }
      default: {
        const r = this.onCmd(reId, { op: 'frame', type: h.type, payload: bytes.slice(off, off + h.length) })
        if (r === null) this.counters.rejected++
      }
    }
  }

  /** End of a drained batch from an RE: transport credit goes back in one frame per connection. */
  onReBatchEnd(): void {
    this.flushTxCredit()
  }

  private onTx(h: Header, bytes: Uint8Array, off: number): void {
    const c = this.conns.get(h.handle)
    if (!c || !c.transport) {
      this.counters.txUnknownHandle++
      return
    }
    this.txFlags = h.flags
    this.txConn = c
    this.txBytes = bytes
    const bad = forEachRecord(h, bytes, off, this.onTxRecord)
    this.txConn = null
    this.txBytes = null
    if (bad !== null) this.counters.rejected++
    // Records the frame released (unheld ones, and held ones before them) leave now, in runs.
    if (c.held.length && c.transport) this.flushHeld(c)
  }

  // The TX frame being taken apart (a batch calls onTxRecord once per record).
  private txConn: Conn | null = null
  private txBytes: Uint8Array | null = null
  private txFlags = 0

  private readonly onTxRecord = (seq: number, start: number, end: number, addr: Addr | null): void => {
    const c = this.txConn
    if (!c || !c.transport) {
      this.counters.txUnknownHandle++ // the transport went away within the batch
      return
    }
    const flags = this.txFlags
    if (seqLe(seq, c.lastSeq)) {
      this.counters.txDuplicates++
      return
    }
    if (seq !== seqAdd(c.lastSeq, 1)) this.counters.txGaps++
    const bytes = this.txBytes!
    c.lastSeq = seq
    c.txOutstanding += end - start
    if (flags & Flag.HELD && !seqLe(seq, c.releasedSeq)) {
      // Read in place from the ring: the queue keeps its own copy.
      c.held.push(seq, bytes, start, end, addr)
      this.counters.txHeld++
      return
    }
    // An unheld record releases everything before it (replication is off on this socket now).
    if (seqLt(c.releasedSeq, seq)) c.releasedSeq = seq
    // Copied out of the ring like a held one; the frame's end hands the released records over,
    // adjacent ones in one write (onTx).
    c.held.push(seq, bytes, start, end, addr)
  }

  /** TX_RELEASE: held records up to `seq` go to the transport; with `resume`, the rest are dropped. */
  private release(c: Conn, seq: number, resume: boolean): void {
    this.counters.txReleases++
    if (seqLt(c.releasedSeq, seq)) c.releasedSeq = seq
    if (c.held.length) this.flushHeld(c)
    if (!resume) return
    // A new primary's history ends at `seq`: what the old one sent after it, the secondary never saw.
    const dropped = c.held.bytes
    this.counters.txDroppedAtResume += c.held.dropAll()
    if (dropped) this.returnTxCredit(c, dropped)
    // A history beyond what the chassis has: records the old primary committed never arrived, and
    // the new primary will not resend them (it was told the chassis had them). Counted, never silent.
    if (seqLt(c.lastSeq, seq)) this.counters.txGaps++
    c.lastSeq = seqLt(seq, c.txSeq) ? c.txSeq : seq
    c.releasedSeq = c.lastSeq
    if (c.closeAfterHeld) c.closeAfterHeld = false // the new primary never asked for that close
  }

  /** Hands the released records (up to releasedSeq) to the transport, adjacent ones as one write. */
  private flushHeld(c: Conn): void {
    const held = c.held
    const hook = this.onTransmit
    const each = hook ? (seq: number, data: Uint8Array) => hook(c, seq, data) : undefined
    while (c.transport && held.takeRun(c.releasedSeq, each) > 0) this.transmit(c, held.run)
    if (!c.transport) return
    if (held.length === 0 && c.closeAfterHeld) {
      c.closeAfterHeld = false
      this.closeConn(c, false)
    }
  }

  /** Hands a run of records (one write) to the transport; their bytes are already counted in txOutstanding. */
  private transmit(c: Conn, run: Run): void {
    c.txSeq = run.last
    if (this.firstTxPending) {
      this.firstTxPending = false
      this.onFirstTxAfterPromotion?.()
    }
    const n = run.data.length
    this.counters.txRecords += run.count
    this.counters.txWrites++
    this.counters.txBytes += n
    const held = c.held
    const slab = run.slab
    c.transport!.write(run.data, run.addr, () => {
      this.returnTxCredit(c, n)
      held.done(slab)
    })
  }

  private returnTxCredit(c: Conn, n: number): void {
    c.txOutstanding -= n
    this.txCreditDue.set(c.handle, (this.txCreditDue.get(c.handle) ?? 0) + n)
    // A transport that takes the bytes later (a slow peer, a socket's write callback) frees room
    // outside any batch from the primary, which may be waiting for exactly this credit.
    if (!this.txCreditQueued) {
      this.txCreditQueued = true
      queueMicrotask(() => {
        this.txCreditQueued = false
        this.flushTxCredit()
      })
    }
  }

  private flushTxCredit(): void {
    const p = this.primary
    if (!p) return
    for (const [handle, n] of this.txCreditDue) {
      if (!p.sink.send(MsgType.TX_CREDIT, 0, handle, 0, 0, n, null)) {
        this.whenRoom(p, () => this.flushTxCredit())
        return
      }
      this.txCreditDue.delete(handle)
    }
    p.sink.flush()
  }

  // ---- commands (msgpackr) ---------------------------------------------------------------------

  private async onCommand(reId: string, reqId: number, cmd: Record<string, unknown>): Promise<void> {
    let reply: Record<string, unknown>
    try {
      reply = await this.command(reId, cmd)
    } catch (err) {
      const e = err as { code?: string; message?: string }
      reply = { ok: false, code: e.code && /^E[A-Z]+$/.test(e.code) ? e.code : 'EINVAL', message: e.message ?? String(err) }
    }
    const re = this.primary?.id === reId ? this.primary : this.secondary?.id === reId ? this.secondary : null
    const opened = reply.ok && (cmd.op === 'connect' || cmd.op === 'udp') ? Number(reply.handle) : 0
    if (re) this.sendEvent(re, reqId, reply, opened ? () => this.announced(opened) : undefined)
  }

  /** The event introducing connection `handle` is on the primary's link: its RX may follow it. */
  private announced(handle: number): void {
    const c = this.conns.get(handle)
    if (!c || c.announced) return
    c.announced = true
    this.pumpRx(c)
  }

  private async command(reId: string, cmd: Record<string, unknown>): Promise<Record<string, unknown>> {
    const isPrimary = this.primary?.id === reId
    switch (cmd.op) {
      case 'connect': {
        this.mustBePrimary(isPrimary, 'connect')
        const t = this.transport(cmd.transport)
        const tc = await t.connect(String(cmd.host), Number(cmd.port), cmd.local as string | undefined)
        const c = this.addConn('tcp', tc, null)
        const replicate = this.observer?.opened(c, reId, 'outgoing') === true
        return { ok: true, handle: c.handle, local: tc.local, remote: tc.remote, txCredit: this.limits.txWindowBytes, replicate }
      }
      case 'udp': {
        this.mustBePrimary(isPrimary, 'udp')
        const t = this.transport(cmd.transport === 'udp' ? 'udp' : cmd.transport)
        // With a remote the socket is connected: that address is its default and only peer.
        const tc = await t.udp(String(cmd.host), Number(cmd.port), udpRemote(cmd.remote))
        const c = this.addConn('udp', tc, null)
        this.observer?.opened(c, reId, 'udp')
        return { ok: true, handle: c.handle, local: tc.local, remote: tc.remote, txCredit: this.limits.txWindowBytes }
      }
      case 'listen': {
        this.mustBePrimary(isPrimary, 'listen')
        const t = this.transport(cmd.transport)
        const handle = this.nextHandle++
        const listener = await t.listen(String(cmd.host), Number(cmd.port), (tc) => this.accepted(handle, tc))
        const c = this.addConn('listen', null, listener, handle)
        c.replicateOnAccept = cmd.replicate === true
        this.observer?.opened(c, reId, 'listen')
        return { ok: true, handle: c.handle, local: listener.local, remote: null, txCredit: 0 }
      }
      case 'close': {
        const c = this.conns.get(Number(cmd.handle))
        if (!c) return { ok: true }
        // Held records go first: the close waits until they are released (or dropped at a takeover).
        if (c.held.length) c.closeAfterHeld = true
        else this.closeConn(c, false)
        return { ok: true }
      }
      case 'prl': {
        const c = this.conns.get(Number(cmd.handle))
        if (!c) return { ok: false, code: 'ENOENT', message: `no connection ${String(cmd.handle)}` }
        // A release finds no hold when the secondary it was meant for died meanwhile (its loss
        // ended the hold): it must not fan out to whichever secondary came up since.
        if (cmd.mode === 'release' && c.mode !== 'hold') return { ok: true }
        const mode = cmd.mode === 'hold' ? 'hold' : cmd.mode === 'release' ? (this.secondary ? 'both' : 'primary') : 'primary'
        this.setMode(c, mode)
        this.onSync() // readiness depends on no connection being held
        return { ok: true }
      }
      case 'secondary-silent': {
        if (isPrimary) this.onSecondarySilent()
        return { ok: true }
      }
      case 'sync': {
        if (isPrimary) {
          this.sync = { total: Number(cmd.total), functional: Number(cmd.functional), peer: cmd.peer === true }
          this.onSync()
        }
        return { ok: true }
      }
      default: {
        const r = this.onCmd(reId, cmd)
        if (r) return r
        return { ok: false, code: 'EINVAL', message: `unknown command ${String(cmd.op)}` }
      }
    }
  }

  private mustBePrimary(isPrimary: boolean, what: string): void {
    if (!isPrimary) throw Object.assign(new Error(`${what}: only the primary RE opens transports`), { code: 'EINVAL' })
  }

  private transport(name: unknown): Transport {
    const t = this.transports[String(name ?? 'memory')]
    if (!t) throw Object.assign(new Error(`no transport '${String(name)}' in this chassis`), { code: 'EINVAL' })
    return t
  }

  sendEvent(re: ReSlot, reqId: number, ev: Record<string, unknown>, onSent?: () => void): void {
    const payload = pack(ev)
    if (!re.sink.send(MsgType.EVENT, 0, 0, 0, reqId, 0, payload)) {
      this.whenRoom(re, () => this.sendEvent(re, reqId, ev, onSent))
      return
    }
    re.sink.flush()
    onSent?.()
  }

  private whenRoom(re: ReSlot, cb: () => void): void {
    re.sink.whenRoom(cb)
  }

  // ---- connections -----------------------------------------------------------------------------

  private addConn(kind: Conn['kind'], tc: TransportConn | null, listener: TransportListener | null, handle = this.nextHandle++): Conn {
    const c: Conn = {
      handle,
      kind,
      transport: tc,
      listener,
      replicateOnAccept: false,
      listen: 0,
      txSeq: 0,
      lastSeq: 0,
      releasedSeq: 0,
      held: new OutQueue(kind !== 'udp', tc?.keepsNothing ? this.slabPool : null),
      closeAfterHeld: false,
      txOutstanding: 0,
      mode: 'primary',
      q: [],
      qBase: 0,
      qHead: 0,
      qBytes: 0,
      priIdx: 0,
      secIdx: 0,
      priOut: 0,
      secOut: 0,
      paused: false,
      announced: false,
      closing: false,
      ended: false,
      local: tc?.local ?? listener?.local ?? null,
      remote: tc?.remote ?? null,
    }
    this.conns.set(handle, c)
    if (tc) {
      tc.events = {
        data: (data, addr) => this.received(c, data, addr, 0),
        end: () => this.received(c, new Uint8Array(0), null, Flag.FIN),
        error: (code) => this.received(c, new Uint8Array(0), null, Flag.RST, code),
      }
    }
    return c
  }

  private accepted(listenHandle: number, tc: TransportConn): void {
    const l = this.conns.get(listenHandle)
    const p = this.primary
    if (!l || !p) {
      tc.destroy()
      return
    }
    const c = this.addConn('tcp', tc, null)
    c.listen = listenHandle
    c.replicateOnAccept = this.observer?.opened(c, p.id, 'incoming') === true
    // A replicated listener's connections (or ones a replication policy picked) are replicated from
    // their first byte: hold until the handshake completes.
    if ((l.replicateOnAccept || c.replicateOnAccept) && this.secondary) c.mode = 'hold'
    // While a secondary is being promoted it cannot take the news yet: promoted() gives it.
    if (this.promoting) this.acceptedInPromotion.push(c)
    else this.announceAccepted(c, p)
  }

  /** Tells the primary about an accepted connection; its received data may follow. */
  private announceAccepted(c: Conn, p: ReSlot): void {
    const ev = { ev: 'accepted', listen: c.listen, handle: c.handle, local: c.local, remote: c.remote, txCredit: this.limits.txWindowBytes - c.txOutstanding }
    this.sendEvent(p, 0, { ...ev, held: c.mode === 'hold', replicate: c.replicateOnAccept }, () => this.announced(c.handle))
  }

  private received(c: Conn, data: Uint8Array, addr: Addr | null, flags: number, code?: string): void {
    if (c.ended) return
    if (flags) {
      c.ended = true
      if (flags & Flag.RST) {
        this.counters.resets++
        this.observer?.closed(c, code ?? 'ECONNRESET')
        // The REs get the errno-style code as the RST chunk's payload.
        if (code) data = new TextEncoder().encode(code)
      }
    }
    let queued: Chunk | null = null
    if (!this.join(c, data, addr, flags)) c.q.push((queued = { data, addr, flags }))
    c.qBytes += data.length
    this.counters.rxChunks++
    this.counters.rxBytes += data.length
    this.pumpRx(c)
    // Lent bytes (TransportConn.lendsReads) still queued for an RE are copied; joined ones already were.
    if (queued && c.transport?.lendsReads && c.q[c.q.length - 1] === queued) {
      queued.data = queued.data.slice()
      this.counters.rxCopied++
    }
  }

  /**
   * Appends stream bytes to the last queued chunk when no RE has it yet (chunk numbers are fixed
   * before any delivery, so both REs see the same chunks) and the two fit in rxJoinBytes and in a
   * quarter of the RE window. A peer writing single lines made one chunk each, and a backlog of them
   * (an RE stalled, as at a takeover) went out as tens of thousands of tiny RX frames in one go: a
   * takeover trace showed the host thread busy 35 ms so.
   */
  private join(c: Conn, data: Uint8Array, addr: Addr | null, flags: number): boolean {
    const q = c.q
    const last = q.length > 0 ? q[q.length - 1] : null
    if (!last || flags !== 0 || last.flags !== 0 || addr || last.addr || c.kind !== 'tcp') return false
    const len = last.data.length
    const n = data.length
    // A quarter of the window at most: a joined chunk never waits for an almost empty window.
    const cap = Math.min(this.limits.rxJoinBytes, this.limits.rxWindowBytes >>> 2)
    if (n === 0 || len === 0 || len + n > cap) return false
    const idx = c.qBase + q.length - 1
    if (idx < c.priIdx || idx < c.secIdx) return false // an RE has it (or is past it)
    let room = last.room
    if (!room) {
      room = new Uint8Array(cap)
      room.set(last.data)
      last.room = room
    }
    room.set(data, len)
    last.data = room.subarray(0, len + n)
    this.counters.rxJoined++
    return true
  }

  private setMode(c: Conn, mode: FanMode): void {
    const was = c.mode
    if (was === mode) return
    if (mode === 'both') {
      // The secondary got everything the primary had through the handshake's pre-existing data.
      c.secIdx = c.priIdx
      c.secOut = 0
    }
    c.mode = mode
    this.pumpRx(c)
  }

  /** Delivers queued chunks: secondary first, then the primary up to the secondary's cursor. */
  pumpRx(c: Conn): void {
    const end = c.qBase + c.q.length
    if (!c.announced) {
      // Nothing yet: RX must not overtake the event that tells the primary about this connection.
    } else if (c.mode === 'both' && this.secondary) {
      c.secIdx = this.deliver(c, this.secondary, c.secIdx, end, 'secOut')
      c.priIdx = this.deliver(c, this.primary!, c.priIdx, c.secIdx, 'priOut')
    } else if (c.mode === 'primary' && this.primary) {
      c.priIdx = this.deliver(c, this.primary, c.priIdx, end, 'priOut')
    }
    // Drop chunks every RE that needs them has.
    const low = c.mode === 'both' ? Math.min(c.priIdx, c.secIdx) : c.priIdx
    // By index, not shift(): a queue of many small chunks (a peer's single lines) made each drop
    // O(queue), and a stalled RE's backlog turned this loop quadratic (the host thread was seen
    // busy here for seconds at a takeover).
    const q = c.q
    while (c.qHead < low && c.qHead < end) {
      const k = c.qHead - c.qBase
      c.qBytes -= q[k].data.length
      q[k] = DROPPED
      c.qHead++
    }
    const dead = c.qHead - c.qBase
    if (dead > 1024 && dead * 2 > q.length) {
      c.q = q.slice(dead)
      c.qBase = c.qHead
    }
    const t = c.transport
    if (!t) return
    if (!c.paused && c.qBytes >= this.limits.rxQueueBytes) {
      c.paused = true
      this.counters.rxPauses++
      t.pause()
    } else if (c.paused && c.qBytes < this.limits.rxQueueBytes / 2) {
      c.paused = false
      t.resume()
    }
  }

  private deliver(c: Conn, re: ReSlot, from: number, to: number, out: 'priOut' | 'secOut'): number {
    let i = from
    while (i < to) {
      const ch = c.q[i - c.qBase]
      const n = ch.data.length
      // A chunk larger than the whole window goes once the window is empty: it would never go
      // otherwise (a window set below the transport's read size, 64 KiB for TCP, hung the stream).
      if (n > 0 && c[out] > 0 && c[out] + n > this.limits.rxWindowBytes) break
      const flags = ch.flags | (ch.addr ? Flag.DATAGRAM : 0)
      // seq: the chunk's number on this connection from 1, the RE's rcvSeq once delivered; a snoop
      // pair drops copies from an earlier replication round by it.
      if (!re.sink.send(MsgType.RX, flags, c.handle, (i + 1) >>> 0, 0, 0, ch.data, ch.addr)) {
        if (!this.waitingRoom.has(re.id)) {
          this.waitingRoom.add(re.id)
          re.sink.whenRoom(() => {
            this.waitingRoom.delete(re.id)
            for (const cc of this.conns.values()) this.pumpRx(cc)
          })
        }
        break
      }
      c[out] += n
      i++
    }
    if (i !== from) re.sink.flush()
    return i
  }

  closeConn(c: Conn, reset: boolean): void {
    if (c.closing) return
    c.closing = true
    this.observer?.closed(c, reset ? 'reset' : 'close')
    // After every chunk fanned out on it (same ring): the secondary drops its snoop pair.
    if (this.secondary) this.sendEvent(this.secondary, 0, { ev: 'closed', handle: c.handle })
    if (c.listener) c.listener.close()
    if (c.transport) {
      if (reset) c.transport.destroy()
      else c.transport.end()
    }
    this.conns.delete(c.handle)
  }

  // ---- failover ----------------------------------------------------------------------------------

  /**
   * The primary is gone and its ring fully drained. Returns what the new primary needs per socket:
   * the last record the transport accepted, and the transport credit it may use.
   */
  promoteInfo(): { sockets: Record<number, { txSeq: number; txCredit: number }> } {
    const sockets: Record<number, { txSeq: number; txCredit: number }> = {}
    for (const c of this.conns.values()) {
      // Held records count: the new primary resumes after the last record the chassis has (it
      // releases or drops the held ones with its RESUME).
      sockets[c.handle] = { txSeq: c.lastSeq, txCredit: c.transport ? this.limits.txWindowBytes - c.txOutstanding : 0 }
    }
    this.txCreditDue.clear()
    return { sockets }
  }

  /**
   * Real-thread promotion, step 1 (the dead primary's ring already drained): the secondary becomes
   * the primary for fan-out and TX at once, so records it resends while merging are accepted.
   * Returns what the promote call needs.
   */
  beginPromotion(id: string, sink: FrameSink): { sockets: Record<number, { txSeq: number; txCredit: number }> } {
    const info = this.promoteInfo()
    this.switchFanout(id, sink)
    // Only these can be left behind by the old primary: what the new one opens meanwhile (its
    // mastership handlers may connect at once) is kept by promoted().
    this.promotionHandles = new Set(this.conns.keys())
    return info
  }

  private switchFanout(id: string, sink: FrameSink): void {
    this.primary = { id, sink }
    this.secondary = null
    for (const c of this.conns.values()) {
      if (c.mode !== 'both') continue
      // The new primary has exactly what the old secondary had, and owes credit for its unread part.
      c.priIdx = c.secIdx
      c.priOut = c.secOut
      c.secOut = 0
      c.mode = 'primary'
    }
    this.promoting = true
    this.firstTxPending = true
  }

  /**
   * Step 2 (or the only step, in the simulator): the new primary `id` adopted these sockets; the
   * rest cannot be taken over (their handshake never finished) and are reset. `uncharged` (from
   * promote()) is, per socket, the pre-existing received data the new primary holds unread: it came
   * over the KKCM, so it was never charged to that RE, and is charged now (the RE credits it when read).
   */
  promoted(id: string, sink: FrameSink, adopted: number[], _lost: number[], uncharged?: Record<number, number>): void {
    if (!this.promoting || this.primary?.id !== id) this.switchFanout(id, sink)
    this.promoting = false
    this.firstTxPending = false
    const keep = new Set(adopted)
    const before = this.promotionHandles
    this.promotionHandles = null
    // Accepted connections the dead primary was given nothing of and sent nothing on (it may never
    // have heard of them: accepted while it died) go to the new primary as newly accepted.
    const fresh = this.acceptedInPromotion.splice(0)
    for (const c of [...this.conns.values()]) {
      if (!keep.has(c.handle) && (before === null || before.has(c.handle))) {
        if (c.listen !== 0 && c.lastSeq === 0 && c.priIdx === 0 && c.mode !== 'both') {
          c.mode = 'primary'
          c.priOut = 0
          c.announced = false
          fresh.push(c)
        } else this.closeConn(c, true)
        continue
      }
      if (c.mode === 'hold') {
        // The handshake had not released fan-out: the new primary holds only pre-existing data,
        // which came over the KKCM and is not charged to it; what the dead primary owed is moot.
        c.mode = 'primary'
        c.priOut = 0
      }
      if (uncharged && uncharged[c.handle]) c.priOut += uncharged[c.handle]
      this.pumpRx(c)
    }
    for (const c of fresh) {
      if (c.closing) continue
      if (this.conns.has(c.listen)) this.announceAccepted(c, this.primary!)
      else this.closeConn(c, true) // its listener was not taken over
    }
    // A socket the new primary adopted whose connection is gone (the dead primary closed it just
    // before it died): the new primary must not keep it.
    for (const h of adopted) {
      if (!this.conns.has(h)) this.sendEvent(this.primary!, 0, { ev: 'closed', handle: h, code: 'ECLOSED', message: 'connection closed during the takeover' })
    }
    this.sync = { total: adopted.length, functional: 0, peer: false }
    this.onSync()
  }

  stats() {
    return {
      connections: [...this.conns.values()].map((c) => ({
        handle: c.handle,
        kind: c.kind,
        mode: c.mode,
        txSeq: c.txSeq,
        lastSeq: c.lastSeq,
        heldRecords: c.held.length,
        heldBytes: c.held.bytes,
        txOutstanding: c.txOutstanding,
        rxQueuedBytes: c.qBytes,
        paused: c.paused,
      })),
      sync: { ...this.sync },
      counters: { ...this.counters },
      /** Out-queue slabs handed out again instead of allocated (TCP and UDP connections). */
      slabsReused: this.slabPool.reused,
    }
  }
}
