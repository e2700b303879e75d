// The simulation's pieces around the World (test/sim/world.ts): its random configuration, what it
// knows about each connection (Truth: the far end and the surviving history of records), and one
// RE as the world runs it (ReNode: the RoutingEngine, its links, its application, its clock).

import type { ChassisLimits } from '../../engine/chassis/core.ts'
import type { MemoryPeer, MemoryUdp } from '../../engine/chassis/memory.ts'
import type { Clock, ManualClock, TimerHandle } from '../../engine/clock.ts'
import { RoutingEngine } from '../../engine/re/re.ts'
import type { Addr } from '../../engine/socket/records.ts'
import type { SocketLimits } from '../../engine/socket/socket.ts'
import { App } from './app.ts'
import { SimLink, chassisReceiver, coreReceiver, peerReceiver, type LinkReceiver } from './link.ts'
import type { Prng } from './prng.ts'
import type { World } from './world.ts'

export interface SimConfig {
  linkBytes: number
  limits: SocketLimits
  chassis: ChassisLimits
  snoopBufBytes: number
  congestionBytes: number
  ackTimeoutMs: number
  initTimeoutMs: number
  keepaliveIntervalMs: number
  deadIntervalMs: number
  maxChunkBytes: number
  maxConns: number
}

export function randomConfig(rng: Prng): SimConfig {
  const maxRecordBytes = rng.pick([256, 1024])
  const sndbufBytes = maxRecordBytes * rng.pick([1, 2, 4, 8])
  const maxChunkBytes = rng.pick([64, 600])
  const cfg: SimConfig = {
    linkBytes: rng.pick([2 * (Math.max(maxRecordBytes, maxChunkBytes) + 128), 4096, 8192, 65536]),
    limits: { maxRecordBytes, sndbufBytes, sndLowatBytes: Math.max(maxRecordBytes, sndbufBytes >>> 2), rcvbufBytes: rng.pick([1024, 4096]) },
    // Joined RX chunks no bigger than a peer's write: the links are sized for those (no draw, so
    // every seed keeps its schedule).
    chassis: { rxWindowBytes: rng.pick([1024, 4096]), rxQueueBytes: rng.pick([2048, 8192]), txWindowBytes: rng.pick([maxRecordBytes, 4096, 65536]), rxJoinBytes: maxChunkBytes },
    snoopBufBytes: maxRecordBytes * rng.pick([1, 2, 8]),
    congestionBytes: rng.chance(0.2) ? maxRecordBytes * rng.pick([2, 4]) : 1 << 30,
    ackTimeoutMs: rng.pick([60, 120, 400, 2000]),
    initTimeoutMs: 0, // below
    keepaliveIntervalMs: 50,
    deadIntervalMs: 150,
    maxChunkBytes,
    maxConns: rng.int(1, 4),
  }
  // Derived, not drawn: one more draw would reshuffle every seed's schedule, and the regression
  // seeds quoted in the simulation would no longer replay what they name. 120 and 240 ms can pop
  // during a slow secondary (50-400 ms) or a secondary link that stays full.
  cfg.initTimeoutMs = cfg.ackTimeoutMs * 2
  return cfg
}

/** What the world knows about one connection: its far end and the surviving history of records. */
export interface Truth {
  id: number
  kind: 'tcp' | 'udp'
  /** Chassis handle, 0 until the primary's app has its socket. */
  handle: number
  /** Key in truthByPort: the engine-side local port (connect, udp) or the peer's port (accept). */
  port: number
  peer: MemoryPeer | null
  udp: MemoryUdp | null
  udpPeerAddr: Addr | null
  /** ledger[seq] = epoch * 65536 + length of the record accepted with that seq. */
  ledger: number[]
  ledgerLen: number
  /** Next seq the chassis must hand to the transport, and the peer must receive. */
  txNext: number
  peerNext: number
  /** Bytes the peer wrote (its stream offset). */
  rxWritten: number
  peerBlocked: boolean
  /** The peer stopped reading (MemoryPeer.pauseReading). */
  readPaused: boolean
  /** The connection ended (reset at a takeover, or never adopted): no liveness checks. */
  closed: boolean
  legitLost: number
}

/** A clock that stops firing an RE's timers once the RE hangs or dies. */
class GatedClock implements Clock {
  alive = true
  private readonly base: ManualClock
  constructor(base: ManualClock) {
    this.base = base
  }
  now(): number {
    return this.base.now()
  }
  schedule(delayMs: number, fn: () => void): TimerHandle {
    return this.base.schedule(delayMs, () => {
      if (this.alive) fn()
    })
  }
}

export class ReNode {
  readonly id: string
  readonly epoch: number
  readonly re: RoutingEngine
  readonly clock: GatedClock
  readonly toChassis: SimLink
  readonly fromChassis: SimLink
  toPeer: SimLink | null = null
  readonly app: App
  readonly peerRx: LinkReceiver
  readonly chassisRx: LinkReceiver
  readonly coreRx: LinkReceiver
  hung = false
  hungAt = 0
  dead = false
  slowUntil = 0

  constructor(world: World, epoch: number, role: 'primary' | 'secondary') {
    const cfg = world.cfg
    this.id = `re${epoch}`
    this.epoch = epoch
    this.clock = new GatedClock(world.clock)
    this.toChassis = new SimLink(`${this.id}>chassis`, cfg.linkBytes)
    this.fromChassis = new SimLink(`chassis>${this.id}`, cfg.linkBytes)
    this.re = new RoutingEngine(
      {
        id: this.id,
        role,
        clock: this.clock,
        limits: cfg.limits,
        snoopBufBytes: cfg.snoopBufBytes,
        congestionBytes: cfg.congestionBytes,
        ackTimeoutMs: cfg.ackTimeoutMs,
        initTimeoutMs: cfg.initTimeoutMs,
        keepaliveIntervalMs: cfg.keepaliveIntervalMs,
        deadIntervalMs: cfg.deadIntervalMs,
      },
      this.toChassis,
    )
    this.peerRx = peerReceiver(this.re)
    this.chassisRx = chassisReceiver(this.re)
    this.coreRx = coreReceiver(world.chassis, this.id)
    this.app = new App(world, this)
  }

  /** The worker is gone: nothing runs any more; what it committed stays readable. */
  kill(): void {
    this.dead = true
    this.clock.alive = false
    this.re.close()
    this.toChassis.senderDead = true
    this.fromChassis.receiverDead = true
    this.fromChassis.discard()
    if (this.toPeer) this.toPeer.senderDead = true
  }
}

export class SimViolation extends Error {
  override name = 'SimViolation'
}

/** Lets pending microtasks run (promise chains in the RE and the chassis, queueMicrotask batches). */
const SETTLE_TICKS = 10
export async function settle(): Promise<void> {
  for (let i = 0; i < SETTLE_TICKS; i++) await null
}
