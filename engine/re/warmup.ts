// Warm-up of a spare RE. A spare loads the engine and the application long before it is needed, but
// loading compiles almost nothing: V8 compiles a function when it is first called. So the first
// handshake a freshly activated secondary answered paid for compiling the secondary side (msgpackr's
// reader, SnoopPair, the ack path) on the spot: 15 ms for one INIT_PARAMS in a traced echo failover,
// while the socket's writes waited (EAGAIN) and its received data was held. The same holds for the
// primary side when this RE is promoted later.
//
// warmUp() runs the engine's own code through the paths a failover needs, in this thread, on a rig
// of its own that shares nothing with the real RE: a ChassisCore over a MemoryNetwork, a primary and
// a secondary RoutingEngine on a ManualClock (no timer is ever armed for real), and real KKCM rings
// between them, drained by hand. Each round listens with replication, accepts a connection, replicates
// it and a UDP socket through the handshake, streams records both ways while the secondary reads its
// snoop sockets, then kills the primary, promotes the secondary and streams on. Nothing of the rig
// outlives the call. The application's own handlers stay cold: only the app can warm them.

import { ChassisCore } from '../chassis/core.ts'
import { MemoryNetwork, type MemoryPeer } from '../chassis/memory.ts'
import { ManualClock } from '../clock.ts'
import { createChannelSab, openEndpoint } from '../kkcm/channel.ts'
import { flushRings, type Ring } from '../kkcm/ring.ts'
import type { Header } from '../protocol/header.ts'
import type { SrPrimary } from '../sdrl/primary.ts'
import type { SnoopPair } from '../sdrl/secondary.ts'
import type { Socket } from '../socket/socket.ts'
import { RoutingEngine } from './re.ts'
import { RingSink, drainNow } from './ring-sink.ts'

/** Rounds warmUp() runs by default: the first compiles, the next ones feed the inline caches. */
export const WARMUP_ROUNDS = 3
const RING_BYTES = 1 << 18
const RECORDS = 64
const RECORD_BYTES = 200
const TCP_PORT = 1
const UDP_PORT = 2
const UDP_PEER_PORT = 3

export interface WarmupReport {
  rounds: number
  ms: number
  /** Bytes the far ends received, all rounds together (a rig that moved nothing warmed nothing). */
  bytes: number
}

interface Link {
  ring: Ring
  onMessage: (h: Header, b: Uint8Array, o: number) => void
  onBatchEnd: () => void
  from: 'p' | 's' | 'c'
}

class Rig {
  readonly net = new MemoryNetwork()
  readonly core = new ChassisCore({ memory: this.net })
  readonly clock = new ManualClock()
  readonly p: RoutingEngine
  readonly s: RoutingEngine
  private readonly toS: RingSink
  private links: Link[]
  bytes = 0

  constructor() {
    const channel = () => {
      const sab = createChannelSab(RING_BYTES)
      return [openEndpoint(sab, 'a'), openEndpoint(sab, 'b')] as const
    }
    const [cp, pc] = channel()
    const [cs, sc] = channel()
    const [ps, sp] = channel()
    const opts = { clock: this.clock, deadIntervalMs: 1 << 30, ackTimeoutMs: 1 << 30, initTimeoutMs: 1 << 30 }
    this.p = new RoutingEngine({ ...opts, id: 'warm-p', role: 'primary' }, new RingSink(pc.tx))
    this.s = new RoutingEngine({ ...opts, id: 'warm-s', role: 'secondary' }, new RingSink(sc.tx))
    this.toS = new RingSink(cs.tx)
    this.core.setPrimary('warm-p', new RingSink(cp.tx))
    this.core.setSecondary('warm-s', this.toS)
    this.p.attachPeer(new RingSink(ps.tx))
    this.s.attachPeer(new RingSink(sp.tx))
    const core = this.core
    this.links = [
      { ring: cp.rx, onMessage: (h, b, o) => core.onReMessage('warm-p', h, b, o), onBatchEnd: () => core.onReBatchEnd(), from: 'p' },
      { ring: cs.rx, onMessage: (h, b, o) => core.onReMessage('warm-s', h, b, o), onBatchEnd: () => core.onReBatchEnd(), from: 's' },
      { ring: pc.rx, onMessage: (h, b, o) => this.p.onChassisMessage(h, b, o), onBatchEnd: () => this.p.onChassisBatchEnd(), from: 'c' },
      { ring: sc.rx, onMessage: (h, b, o) => this.s.onChassisMessage(h, b, o), onBatchEnd: () => this.s.onChassisBatchEnd(), from: 'c' },
      { ring: sp.rx, onMessage: (h, b, o) => this.s.onPeerMessage(h, b, o), onBatchEnd: () => this.s.onPeerBatchEnd(), from: 'p' },
      { ring: ps.rx, onMessage: (h, b, o) => this.p.onPeerMessage(h, b, o), onBatchEnd: () => this.p.onPeerBatchEnd(), from: 's' },
    ]
    // The secondary application: reads both snoop sockets of every pair as they fill.
    this.s.on('split', (pair: SnoopPair) => {
      pair.send.on('readable', () => {
        while (pair.send.read());
      })
      pair.recv.on('readable', () => {
        while (pair.recv.read());
      })
    })
  }

  /** Moves frames on every ring until all are empty; lets promise chains run between passes. */
  async settle(): Promise<void> {
    for (let pass = 0, quiet = 0; pass < 256; pass++) {
      flushRings()
      let n = 0
      for (const l of this.links) n += drainNow(l.ring, l.onMessage, l.onBatchEnd)
      for (let i = 0; i < 8; i++) await null
      quiet = n === 0 ? quiet + 1 : 0
      if (quiet === 2) return
    }
    throw new Error('warm-up: the rig never went quiet')
  }

  async round(): Promise<void> {
    const accepted: Socket[] = []
    const listener = this.p.listen({ port: TCP_PORT, replicate: true })
    await this.settle()
    ;(await listener).on('connection', (sock: Socket) => accepted.push(sock))
    // Data before and during the handshakes: pre-existing receive and send data take their paths.
    const record = new Uint8Array(RECORD_BYTES).fill(0x62)
    const peer = this.net.dial(TCP_PORT)
    peer.keepReceived = false
    peer.on('data', (d: Uint8Array) => (this.bytes += d.length))
    peer.write(record)
    const udpReq = this.p.udp({ port: UDP_PORT })
    await this.settle()
    const udp = await udpReq
    const udpPeer = this.net.udpPeer(UDP_PEER_PORT)
    udpPeer.on('message', (d: Uint8Array) => (this.bytes += d.length))
    udpPeer.send(record, { address: this.net.host, port: UDP_PORT })
    udp.write(record, { address: this.net.host, port: UDP_PEER_PORT })
    const replicated = udp.replicate()
    await this.settle()
    await replicated
    const sock = accepted[0]
    if (!sock) throw new Error('warm-up: no connection was accepted')
    if (!(sock.sr as SrPrimary | null)?.functional || !(udp.sr as SrPrimary | null)?.functional) throw new Error('warm-up: replication did not become functional')
    await this.stream(sock, peer, udp, udpPeer)
    // The primary dies; the secondary takes over every socket, as after a crash.
    this.p.close()
    this.links = this.links.filter((l) => l.from !== 'p')
    const info = this.core.beginPromotion('warm-s', this.toS)
    const r = this.s.promote(info)
    this.core.promoted('warm-s', this.toS, r.adopted, r.lost, r.uncharged)
    await this.settle()
    const live = (handle: number): Socket => {
      const s = this.s.sockets.get(handle)
      if (!s) throw new Error(`warm-up: socket ${handle} was not merged`)
      return s
    }
    await this.stream(live(sock.handle), peer, live(udp.handle), udpPeer)
    peer.end()
    await this.settle()
    this.s.close()
  }

  /** Records out and in on the connection and the UDP socket, read on the primary side. */
  private async stream(sock: Socket, peer: MemoryPeer, udp: Socket, udpPeer: ReturnType<MemoryNetwork['udpPeer']>): Promise<void> {
    const record = new Uint8Array(RECORD_BYTES).fill(0x61)
    const to = { address: this.net.host, port: UDP_PEER_PORT }
    for (let i = 0; i < RECORDS; i++) {
      sock.write(record)
      udp.write(record, to)
      peer.write(record)
      udpPeer.send(record, { address: this.net.host, port: UDP_PORT })
      if (i % 16 === 15) {
        await this.settle()
        while (sock.read());
        while (udp.read());
      }
    }
    await this.settle()
  }
}

/** Runs `rounds` rounds of the failover paths on a private rig (see the file comment). */
export async function warmUp(rounds = WARMUP_ROUNDS): Promise<WarmupReport> {
  const t0 = performance.now()
  let bytes = 0
  for (let r = 0; r < rounds; r++) {
    const rig = new Rig()
    await rig.round()
    bytes += rig.bytes
  }
  return { rounds, ms: performance.now() - t0, bytes }
}
