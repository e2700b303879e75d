// The simulation's application: one instance per RE, for both roles (a secondary's app becomes the
// primary's at promotion and keeps its state, as a real routing daemon does).
//
// As primary it listens (replicated) and connects through the memory transport, replicates its
// sockets, writes numbered records of random sizes (content from (handle, seq, epoch), and every
// accepted record goes into the world's ledger), and reads what the peers send, proving each
// peer's byte stream gap-free. As secondary it reads its snoop pairs at random paces (or stalls),
// checking the send snoop against the ledger and the receive snoop for gaps; after promotion it
// continues exactly where its snooping left off.

import { NsrError } from '../../engine/errors.ts'
import { seqAdd } from '../../engine/protocol/header.ts'
import type { SrPrimary } from '../../engine/sdrl/primary.ts'
import type { SnoopPair, SocketParams } from '../../engine/sdrl/secondary.ts'
import type { Socket } from '../../engine/socket/socket.ts'
import { makeRecord, readChunk, readChunks, readRecord, type ChunkId } from './content.ts'
import type { ReNode, Truth } from './node.ts'
import type { World } from './world.ts'

export const LISTEN_PORT = 179
export const SERVE_PORT = 1000

/** Where a reader is in a peer's byte stream. */
export interface RxCursor {
  /** Offset of the next byte expected; -1 until the first chunk (a snoop starts mid-stream). */
  next: number
  /** A snoop's rcvOffset from INIT_PARAMS: pre-existing data ends exactly there; -1 when none. */
  boundary: number
}

export interface AppSock {
  sock: Socket
  truth: Truth | null
  rx: RxCursor
  waitingWritable: boolean
  wantReplicate: boolean
}

export interface AppPair {
  pair: SnoopPair
  truth: Truth | null
  sendNext: number
  rx: RxCursor
}

function truthKind(ap: AppPair): string | null {
  return ap.truth ? ap.truth.kind : null
}

/** Checks one chunk against a cursor and advances it; returns a violation or null. */
export function advanceRx(cur: RxCursor, c: ChunkId, datagram: boolean): string | null {
  const end = c.offset + c.length
  if (datagram) {
    if (cur.next !== -1 && c.offset < cur.next) return `datagram at ${c.offset} repeats or reorders (next ${cur.next})`
    cur.next = end
    return null
  }
  if (cur.next === -1) {
    if (cur.boundary >= 0 && c.offset > cur.boundary) return `snoop starts at ${c.offset}, after its pre-existing boundary ${cur.boundary}: a gap`
  } else if (c.offset !== cur.next) {
    return `stream ${c.offset > cur.next ? 'gap' : 'repeat'}: expected offset ${cur.next}, got ${c.offset}`
  }
  if (cur.boundary >= 0 && c.offset < cur.boundary && end > cur.boundary) return `chunk ${c.offset}+${c.length} straddles the snoop boundary ${cur.boundary}`
  cur.next = end
  return null
}

export class App {
  readonly world: World
  readonly node: ReNode
  readonly socks = new Map<number, AppSock>()
  readonly pairs = new Map<number, AppPair>()
  listener: Socket | null = null
  /**
   * The listener's replication failed (an init or ack timeout, not an unreplicate): the RE
   * replicated it on its own (listen({ replicate: true })) and does not retry while the same
   * secondary stays up, so this application asks again, as it does for its other sockets.
   */
  listenerWantsReplicate = false
  /** Secondary: stops reading the send snoop (its window closes; the primary gets EAGAIN). */
  stalled = false
  readonly counters = { written: 0, eagain: 0, enobufs: 0, emsgsize: 0, readChunks: 0, snoopRecords: 0, snoopChunks: 0, writable: 0 }

  constructor(world: World, node: ReNode) {
    this.world = world
    this.node = node
    const re = node.re
    re.on('split', (pair: SnoopPair) => this.onSplit(pair))
    re.on('mastership', (e: { adopted: number[]; lost: number[] }) => this.onMastership(e.adopted))
  }

  // ---- primary role ----------------------------------------------------------------------------

  /** The first primary's start: a replicated listener. */
  start(): void {
    this.node.re.listen({ port: LISTEN_PORT, replicate: true }).then(
      (l) => this.adoptListener(l),
      (err: Error) => this.world.violation(`listen failed: ${err.message}`),
    )
  }

  private adoptListener(l: Socket): void {
    this.listener = l
    this.listenerWantsReplicate = false
    l.on('replication', (e: { functional: boolean; reason: string }) => {
      if (l !== this.listener) return
      if (!e.functional && e.reason !== 'unreplicate' && e.reason !== 'peer-unreplicate') this.listenerWantsReplicate = true
      if (e.functional) this.listenerWantsReplicate = false
    })
    l.on('connection', (sock: Socket) => {
      const truth = this.world.truthByPort.get(sock.remote?.port ?? -1)
      if (!truth) return this.world.violation(`accepted socket ${sock.handle} from an unknown peer ${JSON.stringify(sock.remote)}`)
      this.world.bind(truth, sock.handle)
      this.addSock(sock, truth, { next: 0, boundary: -1 })
    })
  }

  connect(): void {
    this.node.re.connect({ port: SERVE_PORT }).then(
      (sock) => {
        const truth = this.world.truthByPort.get(sock.local?.port ?? -1)
        if (!truth) return this.world.violation(`connected socket ${sock.handle} to an unknown peer`)
        this.world.bind(truth, sock.handle)
        this.addSock(sock, truth, { next: 0, boundary: -1 })
        sock.replicate().catch(() => {})
      },
      () => {},
    )
  }

  udp(truth: Truth): void {
    this.node.re.udp({ port: truth.port }).then(
      (sock) => {
        this.world.bind(truth, sock.handle)
        this.addSock(sock, truth, { next: -1, boundary: -1 })
        sock.replicate().catch(() => {})
      },
      (err: Error) => this.world.violation(`udp() failed: ${err.message}`),
    )
  }

  private addSock(sock: Socket, truth: Truth | null, rx: RxCursor): AppSock {
    const as: AppSock = { sock, truth, rx, waitingWritable: false, wantReplicate: false }
    this.socks.set(sock.handle, as)
    sock.on('writable', () => {
      as.waitingWritable = false
      this.counters.writable++
    })
    sock.on('replication', (e: { functional: boolean; reason: string }) => {
      if (!e.functional && e.reason !== 'unreplicate' && e.reason !== 'peer-unreplicate') as.wantReplicate = true
      if (e.functional) as.wantReplicate = false
    })
    sock.on('error', () => {})
    return as
  }

  /** Writes up to `n` records on `as`; stops at EAGAIN / ENOBUFS. Invariant 4: write() never waits. */
  write(as: AppSock, n: number, oversize: boolean): void {
    const w = this.world
    const truth = as.truth
    if (!truth || as.sock.kind === 'listen') return
    const max = as.sock.limits.maxRecordBytes
    for (let i = 0; i < n; i++) {
      const big = oversize && i === 0
      const len = big ? max + w.rng.int(1, 64) : w.rng.int(12, w.rng.chance(0.2) ? max : Math.min(max, 256))
      const seq = seqAdd(as.sock.sndSeq, 1)
      const rec = makeRecord(as.sock.handle, seq, this.node.epoch, len)
      let got: unknown
      try {
        got = as.sock.write(rec, truth.kind === 'udp' ? truth.udpPeerAddr! : undefined)
      } catch (err) {
        if (!(err instanceof NsrError)) return w.violation(`write() threw a non-NsrError: ${String(err)}`)
        if (err.code === 'EMSGSIZE') {
          if (!big) return w.violation(`EMSGSIZE for a ${len}-byte record (max ${max})`)
          this.counters.emsgsize++
          continue
        }
        if (big) return w.violation(`a ${len}-byte record got ${err.code}, not EMSGSIZE`)
        if (err.code === 'EAGAIN' || err.code === 'ENOBUFS') {
          if (err.code === 'EAGAIN') this.counters.eagain++
          else this.counters.enobufs++
          as.waitingWritable = true
          return
        }
        return w.violation(`write() on socket ${as.sock.handle} failed: ${err.message}`)
      }
      if (big) return w.violation(`write() accepted a ${len}-byte record over the ${max}-byte limit`)
      if (typeof got !== 'number') return w.violation('write() returned a non-number (did it wait?)')
      if (got !== seq) return w.violation(`write() returned seq ${got}, expected ${seq}`)
      w.accepted(truth, seq, this.node.epoch, len)
      this.counters.written++
    }
  }

  /** Reads up to `n` chunks on a live socket. */
  read(as: AppSock, n: number): void {
    for (let i = 0; i < n; i++) {
      const rec = as.sock.read()
      if (!rec) return
      this.counters.readChunks++
      this.checkChunk(as.truth, as.rx, rec.data, rec.addr, `primary ${this.node.id} socket ${as.sock.handle}`)
    }
  }

  private checkChunk(truth: Truth | null, cur: RxCursor, data: Uint8Array, addr: { port: number } | null, where: string): void {
    const w = this.world
    if (!truth) return w.violation(`${where}: data on a socket with no peer`)
    // A datagram is one write; a stream read may be several, joined.
    const cs = truth.kind === 'udp' ? readChunk(data) : readChunks(data)
    if (typeof cs === 'string') return w.violation(`${where}: ${cs}`)
    for (const c of Array.isArray(cs) ? cs : [cs]) {
      if (c.peer !== truth.id) return w.violation(`${where}: chunk of peer ${c.peer} on the connection of peer ${truth.id}`)
      if (truth.kind === 'udp' && addr?.port !== truth.udpPeerAddr!.port) return w.violation(`${where}: datagram from ${JSON.stringify(addr)}`)
      const why = advanceRx(cur, c, truth.kind === 'udp')
      if (why) return w.violation(`${where}: ${why}`)
    }
  }

  replicate(as: AppSock): void {
    as.wantReplicate = false
    as.sock.replicate().catch(() => {})
  }

  replicateListener(): void {
    if (!this.listener) return
    this.listenerWantsReplicate = false
    this.listener.replicate().catch(() => {})
  }

  // ---- secondary role --------------------------------------------------------------------------

  private onSplit(pair: SnoopPair): void {
    const truth = this.world.truthByHandle.get(pair.handle) ?? null
    const ap: AppPair = { pair, truth, sendNext: -1, rx: { next: -1, boundary: -1 } }
    const setParams = (p: SocketParams) => {
      ap.sendNext = seqAdd(p.txSeq, 1)
      ap.rx.boundary = p.rcvOffset
      // The receive snoop starts at the primary's first unread byte (datagram streams may skip).
      if (truthKind(ap) === 'tcp') ap.rx.next = p.rcvReadOffset
      if (p.kind !== 'listen' && !ap.truth) this.world.violation(`secondary ${this.node.id}: split of handle ${pair.handle}, unknown to the world`)
    }
    if (pair.params) setParams(pair.params)
    else pair.once('params', setParams)
    pair.on('unreplicated', () => {
      if (this.pairs.get(pair.handle) === ap) this.pairs.delete(pair.handle)
    })
    this.pairs.set(pair.handle, ap)
  }

  readSend(ap: AppPair, n: number): void {
    const w = this.world
    for (let i = 0; i < n; i++) {
      const rec = ap.pair.send.read()
      if (!rec) return
      this.counters.snoopRecords++
      const where = `secondary ${this.node.id} send snoop ${ap.pair.handle}`
      const id = readRecord(rec.data)
      if (typeof id === 'string') return w.violation(`${where}: ${id}`)
      if (id.handle !== ap.pair.handle || id.seq !== rec.seq) return w.violation(`${where}: record (${id.handle},${id.seq}) arrived as seq ${rec.seq}`)
      if (ap.sendNext !== -1 && rec.seq !== ap.sendNext) return w.violation(`${where}: expected record ${ap.sendNext}, got ${rec.seq}`)
      ap.sendNext = seqAdd(rec.seq, 1)
      if (ap.truth) {
        const why = w.ledgerMismatch(ap.truth, id)
        if (why) return w.violation(`${where}: ${why}`)
        if (ap.truth.kind === 'udp' && rec.addr?.port !== ap.truth.udpPeerAddr!.port) return w.violation(`${where}: datagram record lost its address (${JSON.stringify(rec.addr)})`)
      }
    }
  }

  readRecv(ap: AppPair, n: number): void {
    for (let i = 0; i < n; i++) {
      const rec = ap.pair.recv.read()
      if (!rec) return
      this.counters.snoopChunks++
      this.checkChunk(ap.truth, ap.rx, rec.data, rec.addr, `secondary ${this.node.id} recv snoop ${ap.pair.handle}`)
    }
  }

  /** Promotion: every adopted pair becomes a live socket whose reads continue the snoop's. */
  private onMastership(adopted: number[]): void {
    const re = this.node.re
    this.listener = null
    for (const h of adopted) {
      const sock = re.merge(h)
      if (sock.kind === 'listen') {
        this.adoptListener(sock)
        continue
      }
      const ap = this.pairs.get(h)
      const truth = this.world.truthByHandle.get(h) ?? null
      this.addSock(sock, truth, ap ? { ...ap.rx } : { next: -1, boundary: -1 })
    }
    this.pairs.clear()
    this.stalled = false
    // The listener's replication had not finished: the chassis closes it; listen again.
    if (!this.listener) this.start()
  }

  /** Sockets whose replication state is functional, initializing or off (for fault picks). */
  sr(as: AppSock): SrPrimary | null {
    return as.sock.sr as SrPrimary | null
  }
}
