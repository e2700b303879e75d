// Host side of the BGP example on the in-memory transport, shared by the failover demo, the
// engine tests and the benchmarks: a Chassis running examples/bgp/app.ts in both REs, dialing an
// EmbeddedPeer (examples/bgp/peer.ts) served on the chassis's memory network, and the bookkeeping
// to drive failovers one at a time: wait until the secondary holds the session (its snapshot is
// applied), fail over (kill or switchover), wait until the new primary carried the session and the
// FIB audit ended, and report what happened.

import { EventEmitter } from 'node:events'
import { Chassis, type ChassisOptions, type FailoverEvent } from '../../engine/chassis/chassis.ts'
import type { FibAuditEvent } from '../../engine/chassis/fib-link.ts'
import { MemoryNetwork, type MemoryPeer } from '../../engine/chassis/memory.ts'
import { NsrError } from '../../engine/errors.ts'
import type { BgpAppEvent, BgpAppOptions } from './app.ts'
import { EmbeddedPeer, type EmbeddedPeerOptions } from './peer.ts'

export interface EmbeddedRigOptions {
  /** Prefixes the example originates (generated from 20.0.0.0/24). */
  announce: number
  /** Prefixes the embedded peer announces (generated from 100.0.0.0/24). */
  peerRoutes: number
  holdTimeS?: number
  /** The example's application options, over the defaults. */
  app?: Partial<BgpAppOptions>
  peer?: Partial<EmbeddedPeerOptions>
  chassis?: Partial<ChassisOptions>
}

export interface AppEventRecord {
  re: string
  primary: boolean
  event: BgpAppEvent
}

export interface FailoverReport {
  kind: 'kill' | 'switchover'
  failover: FailoverEvent
  audit: FibAuditEvent
  /** The new primary's takeover report (carried: the session went on). */
  takeover: BgpAppEvent
}

const PORT = 179
const POLL_MS = 5

export class EmbeddedRig extends EventEmitter {
  chassis!: Chassis
  readonly memory = new MemoryNetwork()
  peer: EmbeddedPeer | null = null
  /** Memory connections the example opened to the peer (NSR keeps it at 1). */
  connections = 0
  /** Absolute time (performance.timeOrigin based) the peer's session reached Established, 0 before. */
  peerEstablishedAt = 0
  readonly appEvents: AppEventRecord[] = []
  readonly audits: FibAuditEvent[] = []
  /** REs whose speaker holds the session restored from a snapshot, by id. */
  readonly synced = new Set<string>()
  readonly opts: EmbeddedRigOptions

  private constructor(opts: EmbeddedRigOptions) {
    super()
    this.opts = opts
    // Served before the REs start: the primary dials at once.
    this.memory.serve(PORT, (mp) => this.accept(mp))
  }

  static async start(opts: EmbeddedRigOptions): Promise<EmbeddedRig> {
    const rig = new EmbeddedRig(opts)
    const app: BgpAppOptions = {
      peer: { host: 'mem', port: PORT, transport: 'memory' },
      localAs: 65001,
      peerAs: 65002,
      routerId: '10.0.0.1',
      localAddress: '172.16.0.1',
      holdTimeS: opts.holdTimeS ?? 9,
      connectRetryMs: 1000,
      generate: opts.announce > 0 ? { count: opts.announce, first: '20.0.0.0/24' } : undefined,
      ...opts.app,
    }
    // Fault detection in these runs is by kill, not by heartbeat: a loaded machine must not
    // declare a busy RE hung.
    const chassis = await Chassis.start({
      app: new URL('./app.ts', import.meta.url),
      appOptions: app,
      transports: { memory: rig.memory },
      deadIntervalMs: 30_000,
      re: { deadIntervalMs: 30_000 },
      ...opts.chassis,
    })
    rig.chassis = chassis
    chassis.on('app-event', (e: AppEventRecord) => rig.onAppEvent(e))
    chassis.on('fib-audit', (e: FibAuditEvent) => {
      rig.audits.push(e)
      rig.emit('fib-audit', e)
    })
    // Events from before the listeners existed are gone: ask both REs where they stand.
    for (const re of [chassis.core.primary, chassis.core.secondary]) if (re) chassis.core.sendEvent(re, 0, { ev: 'bgp-status' })
    return rig
  }

  private accept(mp: MemoryPeer): void {
    this.connections++
    mp.keepReceived = false
    const o = this.opts
    const peer = new EmbeddedPeer({
      as: 65002,
      peerAs: 65001,
      routerId: '10.0.0.2',
      localAddress: '172.16.0.2',
      holdTimeS: o.holdTimeS ?? 9,
      routes: o.peerRoutes,
      ...o.peer,
      // The passive peer answers the example's OPEN (bytes prove the connection is up).
      send: (b) => void mp.write(b),
    })
    peer.speaker.on('state', (c) => {
      if (c.to === 'Established' && this.peerEstablishedAt === 0) this.peerEstablishedAt = performance.timeOrigin + performance.now()
    })
    mp.on('data', (d: Uint8Array) => peer.onBytes(d))
    mp.on('end', () => peer.onClosed())
    this.peer = peer
    this.emit('peer', peer)
  }

  private onAppEvent(e: AppEventRecord): void {
    this.appEvents.push(e)
    if (e.event.type === 'synced' || (e.event.type === 'status' && e.event.synced === true)) this.synced.add(e.re)
    this.emit('app-event', e)
  }

  /** Resolves when `pred` holds, polling; rejects after `timeoutMs` with `what`. */
  async until(pred: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    const t0 = performance.now()
    while (!pred()) {
      if (performance.now() - t0 > timeoutMs) throw new NsrError('ETIMEDOUT', `${what}: not after ${timeoutMs} ms`)
      await new Promise((r) => setTimeout(r, POLL_MS))
    }
  }

  /** The session is Established and every route is where it belongs: at the peer, in the FIB. */
  async converged(timeoutMs = 60_000): Promise<void> {
    const o = this.opts
    await this.until(
      () => {
        const p = this.peer
        return !!p && p.sessionUp && p.receivedRoutes.size === o.announce && this.chassis.ksync.fib.stats().routes === o.peerRoutes && !this.chassis.ksync.fib.auditing
      },
      'session up with every route exchanged and programmed',
      timeoutMs,
    )
  }

  /** A secondary is up, every replicated socket functional, and the secondary's speaker holds the session. */
  async redundant(timeoutMs = 60_000): Promise<string> {
    await this.until(() => this.chassis.isReady() && !!this.chassis.secondary && this.synced.has(this.chassis.secondary.id), 'secondary in sync', timeoutMs)
    return this.chassis.secondary!.id
  }

  /** One failover, from a redundant, converged state; resolves once the FIB audit ended. */
  async failover(kind: 'kill' | 'switchover', timeoutMs = 60_000): Promise<FailoverReport> {
    const from = this.chassis.primary!.id
    const audits = this.audits.length
    const events = this.appEvents.length
    if (kind === 'kill') await this.chassis.kill('primary')
    else await this.chassis.switchover({ timeoutMs })
    await this.until(() => this.chassis.failovers.length > 0 && this.chassis.failovers.at(-1)!.from === from, 'failover', timeoutMs)
    const failover = this.chassis.failovers.at(-1)!
    const takeover = (): AppEventRecord | undefined => this.appEvents.slice(events).find((e) => e.re === failover.to && e.event.type === 'takeover')
    await this.until(() => this.audits.length > audits && takeover() !== undefined, 'takeover and FIB audit', timeoutMs)
    return { kind, failover, audit: this.audits[audits], takeover: takeover()!.event }
  }

  /** The latest event of `type` from the primary, or undefined. */
  lastPrimaryEvent(type: string): BgpAppEvent | undefined {
    for (let i = this.appEvents.length - 1; i >= 0; i--) {
      const e = this.appEvents[i]
      if (e.primary && e.event.type === type) return e.event
    }
    return undefined
  }

  async close(): Promise<void> {
    await this.chassis.close()
  }
}

/** True when an audit changed nothing in the FIB. */
export function churnFree(a: FibAuditEvent): boolean {
  const c = a.churn
  return c.adds === 0 && c.changes === 0 && c.deletes === 0 && c.swept === 0 && c.reAdds === 0
}
