// FibLink: the chassis end of KSync (engine/ksync). The Fib lives here, in the host thread, so it
// outlives every RE: forwarding never stops while routing engines die and come back.
//
// Wire: a KSYNC frame from an RE carries one msgpackr batch of KSyncRequests; the Fib applies it
// and one KSYNC_ACK frame carries the replies back, in the order the Fib applied them (the ring is
// FIFO; when it is full, replies queue in order and go out when room appears). Only the primary
// programs: a batch from any other RE is answered ECLOSED request by request, so a client there
// fences itself. Commands (CMD, msgpackr, answered by EVENT):
//   ksync-audit-end { epoch }  the new primary re-synced the Fib: sweep what it did not re-add.
//
// Failover (Chassis.primaryLost): beginAudit() after the dead primary's ring was drained (its
// last requests were applied under its own epoch), before the promotion; the epoch goes to the new
// primary with the promotion info, whose KSyncClient re-syncs under it (engine/re/ksync-link.ts)
// and then asks for the audit's end. Every audit's churn is kept for stats (the last few).

import { pack, unpack } from 'msgpackr'
import { Fib, type AuditResult, type FibChurn, type FibOptions } from '../ksync/fib.ts'
import { KSyncReplyCode, type KSyncReply } from '../ksync/wire.ts'
import { MsgType } from '../protocol/header.ts'
import type { FrameSink } from '../re/sink.ts'
import type { ChassisCore } from './core.ts'

/** Audits remembered for stats(). */
export const FIB_LINK_AUDITS_KEPT = 64
/** Reply frames queued for one RE while its ring is full; past it the RE is not reading and is dropped from. */
export const FIB_LINK_MAX_QUEUED_FRAMES = 4096

export interface FibAuditEvent {
  epoch: number
  /** Entries refreshed in place (re-added with identical content). */
  refreshed: number
  swept: number
  churn: FibChurn
  /** From beginAudit() to its end. */
  ms: number
}

export interface FibLinkOptions extends FibOptions {
  /** Called at the end of every audit. */
  onAudit?: (e: FibAuditEvent) => void
}

interface Outbox {
  reId: string
  sink: FrameSink
  frames: Uint8Array[]
  waiting: boolean
}

export class FibLink {
  readonly fib: Fib
  readonly audits: FibAuditEvent[] = []
  private readonly core: ChassisCore
  private readonly onAudit: ((e: FibAuditEvent) => void) | undefined
  private readonly outboxes = new Map<string, Outbox>()
  private auditStartedAt = 0
  readonly counters = {
    frames: 0,
    requests: 0,
    replyFrames: 0,
    /** Batches from an RE that is not the primary (answered ECLOSED). */
    notPrimary: 0,
    undecodable: 0,
    /** Reply frames dropped: their RE stopped being primary, or stopped reading. */
    repliesDropped: 0,
    queuedHighWater: 0,
    auditEndRefused: 0,
  }

  constructor(core: ChassisCore, options: FibLinkOptions = {}) {
    const { onAudit, ...fibOptions } = options
    this.core = core
    this.onAudit = onAudit
    this.fib = new Fib(fibOptions)
    // Frames of unknown types and unknown commands reach core.onCmd: take KSync's, pass the rest on.
    const next = core.onCmd
    core.onCmd = (reId, cmd) => this.onCmd(reId, cmd) ?? next(reId, cmd)
  }

  /**
   * Failover, once the new primary is the core's primary: a new epoch (the dead primary's requests
   * are fenced off) and every entry stale.
   */
  beginAudit(): { epoch: number } {
    for (const [id, box] of this.outboxes) {
      if (id === this.core.primary?.id) continue
      this.counters.repliesDropped += box.frames.length // owed to an RE that is gone
      this.outboxes.delete(id)
    }
    this.auditStartedAt = performance.now()
    return this.fib.beginAudit()
  }

  private onCmd(reId: string, cmd: Record<string, unknown>): Record<string, unknown> | null {
    if (cmd.op === 'frame') {
      if (cmd.type !== MsgType.KSYNC) return null
      this.onBatch(reId, cmd.payload as Uint8Array)
      return { ok: true }
    }
    if (cmd.op === 'ksync-audit-end') return this.endAudit(reId, Number(cmd.epoch))
    return null
  }

  private onBatch(reId: string, payload: Uint8Array): void {
    this.counters.frames++
    let batch: unknown
    try {
      batch = unpack(payload)
    } catch {
      batch = null
    }
    if (!Array.isArray(batch)) {
      // No ids to answer: the client's requests time out into its retry path.
      this.counters.undecodable++
      return
    }
    this.counters.requests += batch.length
    const primary = this.core.primary
    let replies: KSyncReply[]
    if (primary?.id === reId) replies = this.fib.applyBatch(batch)
    else {
      this.counters.notPrimary++
      replies = batch.map((r) => ({ id: Number((r as { id?: unknown })?.id) >>> 0, ok: false, index: -1, code: KSyncReplyCode.ECLOSED, reason: 'only the primary RE programs the FIB' }))
    }
    const sink = primary?.id === reId ? primary.sink : this.core.secondary?.id === reId ? this.core.secondary.sink : null
    if (!sink) {
      this.counters.repliesDropped++
      return
    }
    this.send(reId, sink, pack(replies))
  }

  /** Sends one reply frame to `reId`, behind any queued for it. */
  private send(reId: string, sink: FrameSink, frame: Uint8Array): void {
    let box = this.outboxes.get(reId)
    if (box && box.sink !== sink) {
      this.counters.repliesDropped += box.frames.length
      this.outboxes.delete(reId)
      box = undefined
    }
    if (!box) {
      if (sink.send(MsgType.KSYNC_ACK, 0, 0, 0, 0, 0, frame)) {
        this.counters.replyFrames++
        sink.flush()
        return
      }
      box = { reId, sink, frames: [], waiting: false }
      this.outboxes.set(reId, box)
    }
    if (box.frames.length >= FIB_LINK_MAX_QUEUED_FRAMES) {
      this.counters.repliesDropped++
      return
    }
    box.frames.push(frame)
    if (box.frames.length > this.counters.queuedHighWater) this.counters.queuedHighWater = box.frames.length
    this.flushLater(box)
  }

  private flushLater(box: Outbox): void {
    if (box.waiting) return
    box.waiting = true
    box.sink.whenRoom(() => {
      box.waiting = false
      if (this.outboxes.get(box.reId) !== box) return
      while (box.frames.length > 0) {
        if (!box.sink.send(MsgType.KSYNC_ACK, 0, 0, 0, 0, 0, box.frames[0])) return this.flushLater(box)
        box.frames.shift()
        this.counters.replyFrames++
      }
      this.outboxes.delete(box.reId)
      box.sink.flush()
    })
  }

  private endAudit(reId: string, epoch: number): Record<string, unknown> {
    if (this.core.primary?.id !== reId || epoch !== this.fib.epoch) {
      this.counters.auditEndRefused++
      return { ok: false, code: 'ECLOSED', message: `audit end from ${reId} for epoch ${epoch}: not the primary, or epoch ${this.fib.epoch} is current` }
    }
    if (!this.fib.auditing) return { ok: true, ended: false, epoch }
    const r: AuditResult = this.fib.endAudit()
    const e: FibAuditEvent = { epoch: r.epoch, refreshed: r.refreshed, swept: r.swept.length, churn: r.churn, ms: performance.now() - this.auditStartedAt }
    this.audits.push(e)
    if (this.audits.length > FIB_LINK_AUDITS_KEPT) this.audits.shift()
    this.onAudit?.(e)
    return { ok: true, ended: true, ...e }
  }

  stats() {
    return { ...this.fib.stats(), link: { ...this.counters }, audits: this.audits.slice(-8) }
  }
}
