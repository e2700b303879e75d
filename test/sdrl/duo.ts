// A hand-driven primary/secondary pair for the SDRL unit tests: the chassis core, the memory
// network, two RoutingEngines and the six SimLinks of the simulation (test/sim/link.ts), on a
// ManualClock. Nothing moves unless a test delivers a link or advances the clock, so each
// handshake transition and timer case can be reached and inspected one at a time.

import { ChassisCore, type ChassisLimits } from '../../engine/chassis/core.ts'
import { MemoryNetwork, type MemoryPeer } from '../../engine/chassis/memory.ts'
import { ManualClock } from '../../engine/clock.ts'
import { MsgType, type Header } from '../../engine/protocol/header.ts'
import { RoutingEngine, type ReOptions } from '../../engine/re/re.ts'
import type { SrPrimary } from '../../engine/sdrl/primary.ts'
import type { SnoopPair } from '../../engine/sdrl/secondary.ts'
import type { Socket, SocketLimits } from '../../engine/socket/socket.ts'
import { SimLink, chassisReceiver, coreReceiver, encodeFrame, peerReceiver, type LinkReceiver } from '../sim/link.ts'

export interface DuoOptions {
  limits?: Partial<SocketLimits>
  chassis?: Partial<ChassisLimits>
  linkBytes?: number
  re?: Partial<Omit<ReOptions, 'id' | 'role' | 'clock'>>
}

export const SERVE_PORT = 1000

export class Duo {
  readonly clock = new ManualClock()
  readonly net = new MemoryNetwork()
  readonly core: ChassisCore
  readonly p: RoutingEngine
  readonly s: RoutingEngine
  /** p>c, c>p, s>c, c>s, p>s (KKCM), s>p (KKCM). */
  readonly pc: SimLink
  readonly cp: SimLink
  readonly sc: SimLink
  readonly cs: SimLink
  readonly ps: SimLink
  readonly sp: SimLink
  readonly peers: MemoryPeer[] = []
  private readonly rx = new Map<SimLink, LinkReceiver>()

  constructor(opts: DuoOptions = {}) {
    const bytes = opts.linkBytes ?? 1 << 16
    this.core = new ChassisCore({ memory: this.net }, opts.chassis)
    this.pc = new SimLink('p>c', bytes)
    this.cp = new SimLink('c>p', bytes)
    this.sc = new SimLink('s>c', bytes)
    this.cs = new SimLink('c>s', bytes)
    this.ps = new SimLink('p>s', bytes)
    this.sp = new SimLink('s>p', bytes)
    const reOpts = { limits: opts.limits, deadIntervalMs: 1 << 20, ...opts.re }
    this.p = new RoutingEngine({ id: 'p', role: 'primary', clock: this.clock, ...reOpts }, this.pc)
    this.s = new RoutingEngine({ id: 's', role: 'secondary', clock: this.clock, ...reOpts }, this.sc)
    this.core.setPrimary('p', this.cp)
    this.core.setSecondary('s', this.cs)
    this.rx.set(this.pc, coreReceiver(this.core, 'p'))
    this.rx.set(this.sc, coreReceiver(this.core, 's'))
    this.rx.set(this.cp, chassisReceiver(this.p))
    this.rx.set(this.cs, chassisReceiver(this.s))
    this.rx.set(this.ps, peerReceiver(this.s))
    this.rx.set(this.sp, peerReceiver(this.p))
    this.net.serve(SERVE_PORT, (peer) => this.peers.push(peer))
    this.s.attachPeer(this.sp)
    this.p.attachPeer(this.ps)
  }

  /** Lets promise chains and queueMicrotask batches run. */
  async settle(): Promise<void> {
    for (let i = 0; i < 24; i++) await null
  }

  /** Delivers up to `n` frames of one link, then lets microtasks run and room callbacks fire. */
  async deliver(link: SimLink, n = 1 << 20): Promise<number> {
    const got = link.deliver(this.rx.get(link)!, n)
    await this.settle()
    for (const l of this.rx.keys()) l.notifyRoom()
    await this.settle()
    return got
  }

  /** Runs the chassis links (both REs' command and data paths) until they are empty; the KKCM waits. */
  async chassisRound(): Promise<void> {
    for (let i = 0; i < 64; i++) {
      let n = 0
      for (const l of [this.pc, this.cp, this.sc, this.cs]) n += await this.deliver(l)
      if (n === 0) return
    }
    throw new Error('chassis links never went quiet')
  }

  /** Everything everywhere until every link is empty. */
  async run(skip: SimLink[] = []): Promise<void> {
    for (let i = 0; i < 256; i++) {
      let n = 0
      for (const l of this.rx.keys()) if (!skip.includes(l)) n += await this.deliver(l)
      if (n === 0) return
    }
    throw new Error('links never went quiet')
  }

  /** Commits one raw frame on `link` and delivers the link up to and including it. */
  async inject(link: SimLink, type: number, flags: number, handle: number, seq: number, ack: number, credit: number, payload: Uint8Array | null = null): Promise<void> {
    if (!link.inject(encodeFrame(type, flags, handle, seq, ack, credit, payload))) throw new Error(`${link.name} is full`)
    await this.deliver(link)
  }

  /**
   * Delivers one raw frame to `link`'s receiver ahead of the frames still queued on it, which stay
   * queued: the state a FIFO link reaches only between two of its frames, met by a stray one.
   */
  async injectAhead(link: SimLink, type: number, flags: number, handle: number, seq: number, ack: number, credit: number, payload: Uint8Array | null = null): Promise<void> {
    const side = new SimLink(`${link.name} (ahead)`, link.capacityBytes)
    if (!side.inject(encodeFrame(type, flags, handle, seq, ack, credit, payload))) throw new Error(`a frame too big for ${link.name}`)
    side.deliver(this.rx.get(link)!, 1)
    await this.settle()
  }

  /** A connected TCP socket on the primary (its far end is peers[last]). */
  async connect(): Promise<{ sock: Socket; peer: MemoryPeer }> {
    const req = this.p.connect({ port: SERVE_PORT })
    await this.chassisRound()
    const sock = await req
    return { sock, peer: this.peers[this.peers.length - 1] }
  }

  sr(sock: Socket): SrPrimary {
    return sock.sr as SrPrimary
  }

  pair(handle: number): SnoopPair | undefined {
    return this.s.pairs.get(handle)
  }

  /** Replicates `sock` all the way to functional on both sides. */
  async replicate(sock: Socket): Promise<void> {
    const done = sock.replicate()
    await this.run()
    await done
  }

  /** Drops the primary and promotes the secondary, as the chassis does after a crash. */
  async takeover(): Promise<{ adopted: number[]; lost: number[] }> {
    this.p.close()
    this.pc.senderDead = true
    this.ps.senderDead = true
    this.cp.receiverDead = true
    this.sp.receiverDead = true
    this.pc.deliverAll(this.rx.get(this.pc)!)
    await this.settle()
    this.ps.deliverAll(this.rx.get(this.ps)!)
    await this.settle()
    const info = this.core.beginPromotion('s', this.cs)
    const r = this.s.promote(info)
    this.core.promoted('s', this.cs, r.adopted, r.lost, r.uncharged)
    await this.settle()
    return r
  }

  /** Fills `link` with keepalives to its last byte: the next send on it waits for room. */
  static fill(link: SimLink): void {
    const keepalive = encodeFrame(MsgType.KEEPALIVE, 0, 0, 0, 0, 0)
    while (link.inject(keepalive));
  }

  /** Records the header of every frame sent on `link` from now on (chaining any observer already there). */
  static recorder(link: SimLink): Header[] {
    const seen: Header[] = []
    const prev = link.onSend
    link.onSend = (h, p, a) => {
      seen.push({ ...h })
      prev?.(h, p, a)
    }
    return seen
  }
}
