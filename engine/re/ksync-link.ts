// KSyncLink: the RE end of KSync. It gives the application `re.ksync`, a KSyncClient (engine/ksync)
// whose batches travel to the chassis Fib (engine/chassis/fib-link.ts) as KSYNC frames on the RE's
// chassis ring, and whose replies come back as KSYNC_ACK frames (the RE emits chassis frames of
// types it does not know as 'chassis-message').
//
// Who holds a client:
//   primary at boot     a client under epoch 0 (the chassis Fib starts there), nothing to re-sync;
//   secondary           none: only the primary programs the FIB (re.ksync is null);
//   promoted secondary  a fresh client under the epoch of the audit the chassis began at the
//                       failover (it comes with the promotion info), re-syncing: the application
//                       re-adds everything it wants, then calls endAudit(), which waits until the
//                       Fib has answered everything and asks the chassis to sweep what was not
//                       re-added. Unchanged entries are refreshed in place: no churn, no gap.

import { pack, unpack } from 'msgpackr'
// msgpackr decodes strings with TextDecoder, which refuses views of a SharedArrayBuffer: frames are
// read in place from a ring, so payloads are sliced (copied) before unpack().
import { NsrError } from '../errors.ts'
import { KSyncClient, type KSyncClientOptions, type KSyncEvent } from '../ksync/client.ts'
import type { KSyncRequest } from '../ksync/wire.ts'
import { MsgType, type Header } from '../protocol/header.ts'
import type { RoutingEngine } from './re.ts'
import type { FrameSink } from './sink.ts'

export const KSYNC_LINK_MAX_IN_FLIGHT = 8192
export const KSYNC_LINK_MAX_BATCH = 512

export type KSyncLinkOptions = Partial<Pick<KSyncClientOptions, 'maxNextHops' | 'maxRoutes' | 'maxInFlight' | 'maxBatch' | 'retryDelayMs'>>

/** What the chassis says about the audit it ended (FibLink's FibAuditEvent, over the wire). */
export interface AuditEnded {
  ended: boolean
  epoch: number
  refreshed?: number
  swept?: number
  churn?: { adds: number; changes: number; deletes: number; swept: number; reAdds: number }
  ms?: number
}

declare module './re.ts' {
  interface RoutingEngine {
    /** The KSync client that programs the chassis FIB: the primary's; null on the secondary (ksync-link.ts). */
    readonly ksync: KSyncClient | null
    /** The link behind `ksync`: endAudit() after a takeover's re-sync. */
    readonly ksyncLink: KSyncLink
  }
}

export class KSyncLink {
  private current: KSyncClient | null = null
  private readonly re: RoutingEngine
  private readonly sink: FrameSink
  private readonly opts: KSyncLinkOptions
  /** KSYNC frames waiting for room on the chassis ring, in order. */
  private backlog: Uint8Array[] = []
  private waitingRoom = false
  /** The epoch being re-synced (from the promotion) until endAudit() completes. */
  private auditEpoch: number | null = null
  private quiescentWaiters: Array<() => void> = []
  readonly counters = { frames: 0, ackFrames: 0, badAckFrames: 0, backlogHighWater: 0, errors: 0, fenced: 0, audits: 0 }

  constructor(re: RoutingEngine, sink: FrameSink, opts: KSyncLinkOptions = {}) {
    this.re = re
    this.sink = sink
    this.opts = opts
    re.on('chassis-message', (h: Header, bytes: Uint8Array, off: number) => {
      if (h.type === MsgType.KSYNC_ACK) this.onAckFrame(bytes.slice(off, off + h.length))
    })
    if (re.role === 'primary') this.current = this.makeClient(0, false)
  }

  get client(): KSyncClient | null {
    return this.current
  }

  /** True between a promotion and the end of its audit. */
  get resyncing(): boolean {
    return this.auditEpoch !== null
  }

  /** The RE is being promoted; `info` is the audit the chassis began (absent: no chassis Fib). */
  promoting(info: { epoch: number } | undefined): void {
    if (!info) return
    this.current = this.makeClient(info.epoch, true)
    this.auditEpoch = info.epoch
    this.backlog = [] // frames of no client: there was none on the secondary
  }

  /**
   * After a takeover, once the application has re-added everything it wants in the FIB: waits
   * until the Fib has answered every request, then has the chassis end the audit (sweeping what
   * was not re-added). Resolves with what the chassis reports; `ended: false` when no audit runs.
   */
  async endAudit(): Promise<AuditEnded> {
    const epoch = this.auditEpoch
    const c = this.current
    if (epoch === null || !c) return { ended: false, epoch: c?.epoch ?? 0 }
    await this.whenQuiescent()
    if (this.current !== c) throw new NsrError('ECLOSED', 'a newer client owns the FIB')
    const r = (await this.re.request({ op: 'ksync-audit-end', epoch })) as unknown as AuditEnded
    if (this.current === c) {
      this.auditEpoch = null
      c.auditEnded()
    }
    this.counters.audits++
    return r
  }

  /** Resolves once the client has nothing queued, in flight or waiting for a retry. */
  whenQuiescent(): Promise<void> {
    const c = this.current
    if (!c || (c.quiescent && this.backlog.length === 0)) return Promise.resolve()
    return new Promise((resolve) => this.quiescentWaiters.push(resolve))
  }

  private makeClient(epoch: number, resync: boolean): KSyncClient {
    return new KSyncClient({
      maxInFlight: KSYNC_LINK_MAX_IN_FLIGHT,
      maxBatch: KSYNC_LINK_MAX_BATCH,
      ...this.opts,
      epoch,
      resync,
      clock: this.re.clock,
      send: (batch) => this.send(batch),
      schedule: (flush) => queueMicrotask(flush),
      onEvent: (e: KSyncEvent) => {
        if (e.type === 'error') this.counters.errors++
        else if (e.type === 'fenced') this.counters.fenced++
        if (e.type !== 'transition') this.re.emit('ksync-event', e)
      },
    })
  }

  private send(batch: KSyncRequest[]): void {
    const frame = pack(batch)
    this.counters.frames++
    if (this.backlog.length === 0 && this.sink.send(MsgType.KSYNC, 0, 0, 0, 0, 0, frame)) {
      this.sink.flush()
      return
    }
    this.backlog.push(frame)
    if (this.backlog.length > this.counters.backlogHighWater) this.counters.backlogHighWater = this.backlog.length
    this.flushLater()
  }

  private flushLater(): void {
    if (this.waitingRoom) return
    this.waitingRoom = true
    this.sink.whenRoom(() => {
      this.waitingRoom = false
      while (this.backlog.length > 0) {
        if (!this.sink.send(MsgType.KSYNC, 0, 0, 0, 0, 0, this.backlog[0])) return this.flushLater()
        this.backlog.shift()
      }
      this.sink.flush()
    })
  }

  private onAckFrame(payload: Uint8Array): void {
    let replies: unknown
    try {
      replies = unpack(payload)
    } catch {
      replies = null
    }
    if (!Array.isArray(replies) || !this.current) {
      this.counters.badAckFrames++
      return
    }
    this.counters.ackFrames++
    this.current.onAck(replies)
    if (this.quiescentWaiters.length > 0 && this.current.quiescent && this.backlog.length === 0) {
      const ws = this.quiescentWaiters
      this.quiescentWaiters = []
      for (const w of ws) w()
    }
  }

  stats() {
    return { ...this.counters, resyncing: this.resyncing, backlog: this.backlog.length, client: this.current?.stats() ?? null }
  }
}

/** Wires KSync into an RE (the worker entry does it): `re.ksync` and `re.ksyncLink` appear. */
export function attachKSync(re: RoutingEngine, chassisSink: FrameSink, opts: KSyncLinkOptions = {}): KSyncLink {
  const link = new KSyncLink(re, chassisSink, opts)
  Object.defineProperty(re, 'ksync', { get: () => link.client, configurable: true })
  Object.defineProperty(re, 'ksyncLink', { value: link, configurable: true })
  return link
}
