// KSyncClient: the RE half of KSync, after the seed's KSyncEntry/KSyncObject. The routing app
// says what it wants (next hops, and routes through a next hop); the client turns that into Fib
// requests with the state machine of state.ts and keeps the Fib equal to it. Sans-IO: requests
// leave through the injected `send(batch)`, replies come back through `onAck(replies)`; time
// (the retry timer) comes from the injected clock.
//
// This file is the state machine: the app's calls, the Fib's replies, and the one transition()
// that moves an entry. Beside it: outbox.ts queues, sends, matches and retries the requests;
// index-pool.ts hands out indexes; stats.ts holds the counters; invariants.ts checks it all.
//
// Rules the client keeps:
// - One outstanding request per entry. What the app does meanwhile is deferred (NEED_SYNC,
//   DEL_DEFER_SYNC, RENEW_WAIT) and re-evaluated at the ack, coalesced to the latest content;
//   while a request only waits for an in-flight slot, its content is simply replaced.
// - Dependencies: a route is sent only once its next hop is in the Fib. A next hop that a route
//   names but the app has not added is a TEMP entry; the route waits in ADD_DEFER (or, when it is
//   already in the Fib with an older next hop, in CHANGE_DEFER, still forwarding).
// - Indexes: KSync allocates them from a bounded table per kind (index-pool.ts); an index is
//   reused only after the Fib acked the delete of its previous owner.
// - Reference counts: a next hop counts the routes whose Fib content, or outstanding add/change,
//   names it. Its delete waits (DEL_DEFER_REF) until that count is zero, so the Fib never loses a
//   next hop a route forwards through.
// - Bounds: at most `maxInFlight` requests in flight, `maxBatch` per send (outbox.ts). Every
//   defer, coalesce, retry and error has a counter (stats.ts).
// - Re-sync after failover (`resync: true`, with the epoch from Fib.beginAudit()): the fresh
//   client's adds carry INDEX_LEARN, and the Fib answers with the index it already holds for the
//   key (refreshing the entry in place); a key the Fib does not know (ENOENT) gets a new index,
//   the free one the Fib suggested if it can. A new index the Fib says is taken (EEXIST: a stale
//   entry not re-added yet) is set aside as foreign until auditEnded(). A next hop delete the Fib
//   refuses because stale routes still use it is parked until auditEnded() too.
// - Fencing: replies with ECLOSED mean a newer client owns the Fib; this one refuses every call.
// - Wire contract: requests may be applied in any order, but replies come back in the order the
//   Fib applied them (the KKCM ring is FIFO), so an index the Fib hands out is never still held
//   here by an entry whose delete ack is yet to come.

import { systemClock, type Clock } from '../clock.ts'
import { ErrorCode, NsrError, assert } from '../errors.ts'
import { Entry, KSyncPending, present, sameContent, view, type Content, type KSyncEntryView } from './entry.ts'
import { IndexPool } from './index-pool.ts'
import { checkInvariants } from './invariants.ts'
import { Outbox } from './outbox.ts'
import { KSyncState, isLegalTransition } from './state.ts'
import { newCounters, zeroStates, type KSyncClientStats } from './stats.ts'
import {
  INDEX_LEARN,
  KSyncKind,
  KSyncOp,
  KSyncReplyCode,
  nhKeyProblem,
  routeKeyProblem,
  validateReply,
  type KSyncData,
  type KSyncKey,
  type KSyncReply,
  type KSyncRequest,
  type NhKey,
  type RouteKey,
} from './wire.ts'

export { KSyncPending }
export type { KSyncEntryView, KSyncClientStats }

export const KSYNC_DEFAULT_MAX_NEXT_HOPS = 1 << 16
export const KSYNC_DEFAULT_MAX_ROUTES = 1 << 21
export const KSYNC_DEFAULT_MAX_IN_FLIGHT = 1024
export const KSYNC_DEFAULT_MAX_BATCH = 256
export const KSYNC_DEFAULT_RETRY_DELAY_MS = 100

export interface KSyncClientOptions {
  /** Hands a batch of requests to the wire. Must not throw; may call onAck re-entrantly. */
  send: (batch: KSyncRequest[]) => void
  /** The Fib epoch this client writes under (0 for the first client; then Fib.beginAudit().epoch). */
  epoch?: number
  /** Re-sync an existing Fib: learn indexes from it until auditEnded(). */
  resync?: boolean
  /** Entry and index table sizes; must equal the Fib's. */
  maxNextHops?: number
  maxRoutes?: number
  maxInFlight?: number
  maxBatch?: number
  /** Delay before re-sending a request the Fib refused for another reason than an index clash. */
  retryDelayMs?: number
  clock?: Clock
  /** Called (once until it runs the flush) when requests become ready; without it, call flush() yourself. */
  schedule?: (flush: () => void) => void
  onEvent?: (event: KSyncEvent) => void
}

export type KSyncEvent =
  | { type: 'transition'; kind: KSyncKind; key: KSyncKey; from: KSyncState; to: KSyncState; reason: string }
  | { type: 'error'; kind: KSyncKind | null; key: KSyncKey | null; op: KSyncOp | null; code: string; reason: string }
  | { type: 'fenced'; reason: string }

const S = KSyncState
const P = KSyncPending
const { NH, ROUTE } = KSyncKind

function limit(v: number | undefined, dflt: number, name: string): number {
  const n = v ?? dflt
  if (!Number.isInteger(n) || n < 1) throw new NsrError(ErrorCode.EINVAL, `${name} must be a positive integer`)
  return n
}

export class KSyncClient {
  private readonly epochNo: number
  private learning: boolean
  private readonly maxNextHops: number
  private readonly maxRoutes: number
  private readonly onEvent: ((event: KSyncEvent) => void) | undefined
  private readonly nhs = new Map<KSyncKey, Entry>()
  private readonly routes = new Map<KSyncKey, Entry>()
  /** Entries to re-evaluate once the current call is done (next hop arrived, index freed). */
  private readonly woken: Entry[] = []
  private readonly indexes: IndexPool
  /** The requests: queue, in flight, retry, parked; and the fenced flag. */
  private readonly out: Outbox
  private settling = false
  private readonly stateCounts = zeroStates()
  private readonly errorsByCode: Record<string, number> = {}
  private readonly s = newCounters()

  constructor(options: KSyncClientOptions) {
    if (typeof options?.send !== 'function') throw new NsrError(ErrorCode.EINVAL, 'KSyncClient needs a send function')
    this.epochNo = options.epoch ?? 0
    if (this.epochNo >>> 0 !== this.epochNo) throw new NsrError(ErrorCode.EINVAL, 'epoch must be a u32')
    this.learning = options.resync === true
    this.maxNextHops = limit(options.maxNextHops, KSYNC_DEFAULT_MAX_NEXT_HOPS, 'maxNextHops')
    this.maxRoutes = limit(options.maxRoutes, KSYNC_DEFAULT_MAX_ROUTES, 'maxRoutes')
    const maxInFlight = limit(options.maxInFlight, KSYNC_DEFAULT_MAX_IN_FLIGHT, 'maxInFlight')
    const maxBatch = limit(options.maxBatch, KSYNC_DEFAULT_MAX_BATCH, 'maxBatch')
    this.onEvent = options.onEvent
    this.indexes = new IndexPool(this.maxNextHops, this.maxRoutes, this.woken)
    this.out = new Outbox(
      {
        send: options.send,
        schedule: options.schedule,
        epoch: this.epochNo,
        maxInFlight,
        maxBatch,
        retryDelayMs: options.retryDelayMs ?? KSYNC_DEFAULT_RETRY_DELAY_MS,
        clock: options.clock ?? systemClock,
      },
      this.s,
      {
        retry: (e) => this.retry(e),
        retried: () => {
          this.settle()
          this.out.flush()
        },
      },
    )
  }

  get epoch(): number {
    return this.epochNo
  }

  /** True while learning indexes from the Fib (between construction with `resync` and auditEnded()). */
  get resyncing(): boolean {
    return this.learning
  }

  /** A newer client owns the Fib (or the Fib answered nonsense): this one refuses every call. */
  get fenced(): boolean {
    return this.out.fenced
  }

  /**
   * Nothing queued, in flight or waiting for a retry: the Fib holds everything it can hold now
   * (next hop deletes parked until the audit ends do not count: the audit's end releases them).
   */
  get quiescent(): boolean {
    return this.out.inFlight === 0 && this.out.queued === 0 && this.out.retrying === 0
  }

  // ---- what the app wants -------------------------------------------------------------------

  addNextHop(key: NhKey, data: KSyncData = null): void {
    this.checkOpen()
    const problem = nhKeyProblem(key)
    if (problem) throw new NsrError(ErrorCode.EINVAL, problem)
    let e = this.nhs.get(key)
    if (e?.want) throw new NsrError(ErrorCode.EEXIST, `next hop ${String(key)} exists`)
    if (e === undefined) e = this.create(NH, key)
    this.wantAdd(e, { data, nh: null })
    this.settle()
  }

  changeNextHop(key: NhKey, data: KSyncData): void {
    this.checkOpen()
    this.wantChange(this.wanted(NH, key), { data, nh: null })
    this.settle()
  }

  deleteNextHop(key: NhKey): void {
    this.checkOpen()
    this.wantDelete(this.wanted(NH, key))
    this.settle()
  }

  addRoute(prefix: RouteKey, nh: NhKey, data: KSyncData = null): void {
    this.checkOpen()
    const problem = routeKeyProblem(prefix) ?? nhKeyProblem(nh)
    if (problem) throw new NsrError(ErrorCode.EINVAL, problem)
    let e = this.routes.get(prefix)
    if (e?.want) throw new NsrError(ErrorCode.EEXIST, `route ${prefix} exists`)
    if (e === undefined && this.routes.size >= this.maxRoutes) throw new NsrError(ErrorCode.ENOBUFS, `route table full (${this.maxRoutes})`)
    const target = this.nextHopFor(nh)
    if (e === undefined) e = this.create(ROUTE, prefix)
    this.wantAdd(e, { data, nh: target })
    this.settle()
  }

  changeRoute(prefix: RouteKey, nh: NhKey, data: KSyncData = null): void {
    this.checkOpen()
    const problem = nhKeyProblem(nh)
    if (problem) throw new NsrError(ErrorCode.EINVAL, problem)
    const e = this.wanted(ROUTE, prefix)
    this.wantChange(e, { data, nh: this.nextHopFor(nh) })
    this.settle()
  }

  deleteRoute(prefix: RouteKey): void {
    this.checkOpen()
    this.wantDelete(this.wanted(ROUTE, prefix))
    this.settle()
  }

  // ---- the wire ----------------------------------------------------------------------------

  /** Sends what is queued, up to the in-flight limit, in batches of maxBatch. Returns requests sent. */
  flush(): number {
    return this.out.flush()
  }

  /**
   * Replies from the Fib, batched any way, in the order the Fib applied the requests (the ring is
   * FIFO; requests themselves may be applied in any order). Unknown ids and malformed replies are
   * counted and dropped.
   */
  onAck(replies: readonly unknown[]): void {
    if (!Array.isArray(replies)) {
      this.s.badReplies++
      return
    }
    for (const raw of replies) {
      if (this.out.fenced) {
        this.s.repliesAfterFence++
        continue
      }
      const problem = validateReply(raw)
      if (problem !== null) {
        this.s.badReplies++
        this.event({ type: 'error', kind: null, key: null, op: null, code: ErrorCode.EBADMSG, reason: problem })
        continue
      }
      const r = raw as KSyncReply
      const e = this.out.takeInFlight(r.id)
      if (e === undefined) {
        this.s.staleReplies++
        continue
      }
      this.s.replies++
      const op = e.reqOp!
      e.reqOp = null
      this.out.setPending(e, P.NONE)
      if (op === KSyncOp.DELETE) this.onDeleteReply(e, r)
      else this.onSyncReply(e, op, r)
    }
    this.settle()
    this.out.flush()
  }

  /** The chassis ended the audit (Fib.endAudit()): stop learning, and reuse indexes set aside as foreign. */
  auditEnded(): void {
    if (this.out.fenced) return
    this.learning = false
    this.out.releaseParked()
    this.indexes.releaseForeign()
    this.settle()
    this.out.scheduleFlush()
  }

  // ---- the state machine -------------------------------------------------------------------

  /** The one place an entry changes state. */
  private transition(e: Entry, from: KSyncState, to: KSyncState, reason: string): void {
    assert(e.state === from, `${e.kind} ${String(e.key)}: leaves ${from} but is ${e.state}`)
    assert(isLegalTransition(from, to), `${e.kind} ${String(e.key)}: ${from} -> ${to} is not a legal transition`)
    e.state = to
    e.reason = reason
    this.stateCounts[from]--
    if (to === S.FREE_WAIT) this.free(e)
    else this.stateCounts[to]++
    this.onEvent?.({ type: 'transition', kind: e.kind, key: e.key, from, to, reason })
    // A next hop that just became usable wakes the routes waiting for it.
    if (e.waiters !== null && e.waiters.size > 0 && present(e)) {
      for (const r of e.waiters) this.woken.push(r)
      e.waiters.clear()
    }
  }

  /** The app wants an entry it did not want. */
  private wantAdd(e: Entry, w: Content): void {
    assert(e.want === null, 'wantAdd on an unwanted entry')
    if (w.nh) w.nh.desireRefs++
    e.want = w
    switch (e.state) {
      case S.INIT:
      case S.TEMP:
      case S.DEL_DEFER_REF:
        return this.reconcile(e, 'added')
      case S.DEL_DEFER_SYNC:
        this.s.deferred++
        return this.transition(e, S.DEL_DEFER_SYNC, S.NEED_SYNC, 're-added while a request is in flight')
      case S.DEL_ACK_WAIT:
        if (e.pending === P.INFLIGHT) {
          this.s.deferred++
          return this.transition(e, S.DEL_ACK_WAIT, S.RENEW_WAIT, 're-added while its delete is in flight')
        }
        this.s.coalesced++
        this.out.setPending(e, P.NONE)
        return this.reconcile(e, 're-added before its delete was sent')
      default:
        assert(false, `wantAdd in ${e.state}`)
    }
  }

  /** The app changes what it wants. */
  private wantChange(e: Entry, w: Content): void {
    const old = e.want!
    if (sameContent(old, w)) {
      this.s.noopChanges++
      return
    }
    if (w.nh) w.nh.desireRefs++
    e.want = w
    switch (e.state) {
      case S.ADD_DEFER:
      case S.CHANGE_DEFER:
        this.unwait(e)
        this.reconcile(e, 'changed')
        break
      case S.IN_SYNC:
        this.reconcile(e, 'changed')
        break
      case S.SYNC_WAIT:
        if (e.pending === P.INFLIGHT) {
          this.s.deferred++
          this.transition(e, S.SYNC_WAIT, S.NEED_SYNC, 'changed while a request is in flight')
        } else if (e.pending === P.QUEUED) {
          // Re-pin the new content before letting go of the old, so a next hop both name stays put.
          this.s.coalesced++
          const pinned = e.sent
          e.sent = null
          this.out.setPending(e, P.NONE)
          this.reconcile(e, 'changed before its request was sent')
          if (pinned !== null && pinned.nh !== null) this.unref(pinned.nh)
        } else this.s.coalesced++ // RETRY: the retry sends the latest content
        break
      case S.NEED_SYNC:
      case S.RENEW_WAIT:
        this.s.coalesced++
        break
      default:
        assert(false, `wantChange in ${e.state}`)
    }
    if (old.nh) this.releaseDesire(old.nh)
  }

  /** The app no longer wants the entry. */
  private wantDelete(e: Entry): void {
    const old = e.want!
    e.want = null
    switch (e.state) {
      case S.ADD_DEFER:
        this.unwait(e)
        this.drop(e, 'deleted')
        break
      case S.CHANGE_DEFER:
        this.unwait(e)
        this.startDelete(e, 'deleted')
        break
      case S.IN_SYNC:
        this.startDelete(e, 'deleted')
        break
      case S.SYNC_WAIT:
        if (e.pending === P.INFLIGHT) {
          this.s.deferred++
          this.transition(e, S.SYNC_WAIT, S.DEL_DEFER_SYNC, 'deleted while a request is in flight')
          break
        }
        this.s.coalesced++
        if (e.pending === P.QUEUED) this.unpinSent(e)
        this.out.setPending(e, P.NONE)
        if (e.fib !== null) this.startDelete(e, 'deleted before its change was sent')
        else this.drop(e, 'deleted before its add was sent')
        break
      case S.NEED_SYNC:
        this.s.deferred++
        this.transition(e, S.NEED_SYNC, S.DEL_DEFER_SYNC, 'deleted while a request is in flight')
        break
      case S.RENEW_WAIT:
        this.s.coalesced++
        this.transition(e, S.RENEW_WAIT, S.DEL_ACK_WAIT, 'deleted again before its renewal')
        break
      default:
        assert(false, `wantDelete in ${e.state}`)
    }
    if (old.nh) this.releaseDesire(old.nh)
  }

  /**
   * Brings a wanted entry with nothing outstanding towards what the app wants: IN_SYNC if the Fib
   * holds it already, a wait if a dependency or an index is missing, else SYNC_WAIT with the
   * request queued.
   */
  private reconcile(e: Entry, reason: string): void {
    const from = e.state
    const w = e.want
    assert(w !== null && e.pending === P.NONE && e.sent === null, 'reconcile a wanted entry with nothing outstanding')
    if (e.fib !== null && sameContent(e.fib, w)) return this.transition(e, from, S.IN_SYNC, reason)
    if (w.nh !== null && !present(w.nh)) {
      this.s.depWaits++
      if (e.fib === null && e.index >= 0) this.indexes.release(e) // not in the Fib: a waiting entry holds no index
      e.waitingOn = w.nh
      ;(w.nh.waiters ??= new Set()).add(e)
      return this.transition(e, from, e.fib !== null ? S.CHANGE_DEFER : S.ADD_DEFER, 'waits for its next hop')
    }
    if (e.index < 0 && !(this.learning && !e.probed) && !this.indexes.assign(e)) {
      this.s.indexWaits++
      return this.transition(e, from, S.ADD_DEFER, 'waits for a free index')
    }
    this.transition(e, from, S.SYNC_WAIT, reason)
    e.sent = w
    if (w.nh !== null) w.nh.refs++
    this.out.enqueue(e)
  }

  /** An unwanted entry in the Fib: delete it, unless routes still use it (a next hop). */
  private startDelete(e: Entry, reason: string): void {
    assert(e.want === null && e.fib !== null && e.pending === P.NONE, 'startDelete of an unwanted entry in the Fib')
    if (e.refs > 0) {
      this.s.refDeferredDeletes++
      return this.transition(e, e.state, S.DEL_DEFER_REF, 'deleted; routes still use it')
    }
    this.transition(e, e.state, S.DEL_ACK_WAIT, reason)
    this.out.enqueue(e)
  }

  /** An unwanted entry not in the Fib: back to TEMP if routes still name it, else released. */
  private drop(e: Entry, reason: string): void {
    assert(e.want === null && e.fib === null && e.pending === P.NONE, 'drop an unwanted entry out of the Fib')
    if (e.index >= 0) this.indexes.release(e)
    this.transition(e, e.state, e.desireRefs > 0 ? S.TEMP : S.FREE_WAIT, reason)
  }

  private onSyncReply(e: Entry, op: KSyncOp, r: KSyncReply): void {
    if (r.ok) {
      if (op === KSyncOp.ADD) {
        if (!this.adopt(e, r.index)) return
      } else if (r.index !== e.index) return this.protocolError(`change of ${String(e.key)} answered with index ${r.index}, not ${e.index}`)
      const sent = e.sent!
      const old = e.fib
      e.sent = null
      e.fib = sent // the outstanding pin on its next hop becomes the Fib's
      this.s.acks++
      switch (e.state) {
        case S.SYNC_WAIT:
          assert(e.want === sent, 'SYNC_WAIT acks what the app wants')
          this.transition(e, S.SYNC_WAIT, S.IN_SYNC, 'acked')
          break
        case S.NEED_SYNC:
          this.reconcile(e, 'acked; changed meanwhile')
          break
        case S.DEL_DEFER_SYNC:
          this.startDelete(e, 'acked; deleted meanwhile')
          break
        default:
          assert(false, `add/change reply in ${e.state}`)
      }
      // The next hop it forwarded through before lets go last, after anything re-pinned it.
      if (old !== null && old.nh !== null) this.unref(old.nh)
      return
    }
    // Refused. The pin on the next hop is released after the re-evaluation below (which may re-pin it).
    const pinned = e.sent
    e.sent = null
    try {
      this.onSyncRefused(e, op, r)
    } finally {
      if (pinned !== null && pinned.nh !== null) this.unref(pinned.nh)
    }
  }

  private onSyncRefused(e: Entry, op: KSyncOp, r: KSyncReply): void {
    const code = r.code!
    this.countError(code)
    if (code === KSyncReplyCode.ECLOSED) return this.fence(r.reason ?? 'the Fib epoch is over')
    let resendNow = false
    if (op === KSyncOp.ADD && code === KSyncReplyCode.ENOENT && e.reqIndex === INDEX_LEARN) {
      this.s.learnMisses++
      e.hint = r.index
      resendNow = true
    } else if (op === KSyncOp.ADD && code === KSyncReplyCode.EEXIST && e.reqIndex >= 0) {
      this.s.indexCollisions++
      if (e.index === e.reqIndex) {
        this.indexes.table(e.kind).markForeign(e.index, e)
        e.index = -1
      }
      resendNow = true
    } else this.event({ type: 'error', kind: e.kind, key: e.key, op, code, reason: r.reason ?? '' })
    switch (e.state) {
      case S.SYNC_WAIT:
      case S.NEED_SYNC:
        if (resendNow) {
          this.s.resends++
          return this.reconcile(e, `${op} refused (${code}); re-sent`)
        }
        this.out.scheduleRetry(e)
        if (e.state === S.NEED_SYNC) this.transition(e, S.NEED_SYNC, S.SYNC_WAIT, `${op} refused (${code}); retry with the latest content`)
        return
      case S.DEL_DEFER_SYNC:
        if (e.fib !== null) return this.startDelete(e, `${op} refused (${code}); deleted meanwhile`)
        return this.drop(e, `${op} refused (${code}); deleted meanwhile`)
      default:
        return assert(false, `add/change reply in ${e.state}`)
    }
  }

  private onDeleteReply(e: Entry, r: KSyncReply): void {
    if (!r.ok) {
      const code = r.code!
      this.countError(code)
      if (code === KSyncReplyCode.ECLOSED) return this.fence(r.reason ?? 'the Fib epoch is over')
      if (code === KSyncReplyCode.EINVAL && e.kind === NH && this.learning) {
        // Stale routes of the dead primary, which this client does not know, still use it; the
        // audit's sweep removes them. Wanted again: it is still in the Fib, as it should be.
        if (e.state === S.RENEW_WAIT) return this.reconcile(e, 'delete refused (stale routes use it); wanted again')
        this.s.parkedDeletes++
        this.out.park(e)
        return
      }
      if (code !== KSyncReplyCode.ENOENT) {
        this.event({ type: 'error', kind: e.kind, key: e.key, op: KSyncOp.DELETE, code, reason: r.reason ?? '' })
        return this.out.scheduleRetry(e)
      }
      this.s.deleteAlreadyGone++
    } else this.s.acks++
    const old = e.fib!
    e.fib = null
    if (old.nh !== null) this.unref(old.nh)
    this.indexes.release(e)
    e.probed = true // the Fib has no entry for this key now: a re-add needs no learning
    if (e.state === S.DEL_ACK_WAIT) return this.drop(e, 'delete acked')
    assert(e.state === S.RENEW_WAIT, `delete reply in ${e.state}`)
    this.reconcile(e, 'delete acked; re-adding')
  }

  /** Takes the index the Fib answered an add with. False (and fenced) if that cannot be right. */
  private adopt(e: Entry, j: number): boolean {
    if (e.index === j) return true
    const t = this.indexes.table(e.kind)
    if (j < 0 || j >= t.capacity) {
      this.protocolError(`${e.kind} ${String(e.key)} answered with index ${j}, outside the table`)
      return false
    }
    const owner = t.owner(j)
    if (owner !== null) {
      // Only a new entry of ours whose add at j has not succeeded can hold it (that add is queued,
      // waiting for a retry, or in flight and bound to be refused with EEXIST): the Fib is right.
      if (owner === e || owner.fib !== null || owner.pending === P.NONE || (owner.pending === P.INFLIGHT && owner.reqOp !== KSyncOp.ADD)) {
        this.protocolError(`${e.kind} ${String(e.key)} answered with index ${j}, which ${String(owner.key)} holds`)
        return false
      }
      t.release(j, owner)
      owner.index = -1
      this.s.indexTransfers++
    }
    if (e.index >= 0) this.indexes.release(e)
    t.take(j, e)
    e.index = j
    this.s.indexAdopted++
    if (owner !== null && owner.pending === P.QUEUED) {
      // Its queued add needs another index: re-evaluate it (a new index, or a wait for one).
      const pinned = owner.sent
      owner.sent = null
      this.out.setPending(owner, P.NONE)
      this.reconcile(owner, `index ${j} belongs to ${String(e.key)} in the Fib`)
      if (pinned !== null && pinned.nh !== null) this.unref(pinned.nh)
    }
    return true
  }

  // ---- references, waits, indexes ----------------------------------------------------------

  private nextHopFor(key: NhKey): Entry {
    const e = this.nhs.get(key)
    if (e !== undefined) return e
    if (this.nhs.size >= this.maxNextHops) throw new NsrError(ErrorCode.ENOBUFS, `next hop table full (${this.maxNextHops})`)
    const nh = this.create(NH, key)
    this.transition(nh, S.INIT, S.TEMP, 'named by a route')
    return nh
  }

  private create(kind: KSyncKind, key: KSyncKey): Entry {
    const map = kind === NH ? this.nhs : this.routes
    if (map.size >= (kind === NH ? this.maxNextHops : this.maxRoutes)) throw new NsrError(ErrorCode.ENOBUFS, `${kind} table full`)
    const e = new Entry(kind, key)
    map.set(key, e)
    this.stateCounts[S.INIT]++
    return e
  }

  private wanted(kind: KSyncKind, key: KSyncKey): Entry {
    const e = (kind === NH ? this.nhs : this.routes).get(key)
    if (e === undefined || e.want === null) throw new NsrError(ErrorCode.ENOENT, `no ${kind === NH ? 'next hop' : 'route'} ${String(key)}`)
    return e
  }

  private free(e: Entry): void {
    assert(
      e.want === null && e.fib === null && e.sent === null && e.pending === P.NONE && e.index < 0 && e.refs === 0 && e.desireRefs === 0,
      `${e.kind} ${String(e.key)} is released with nothing left`,
    )
    const map = e.kind === NH ? this.nhs : this.routes
    if (map.get(e.key) === e) map.delete(e.key)
    this.s.freed++
  }

  private unref(nh: Entry): void {
    assert(nh.refs > 0, 'unref of a referenced next hop')
    nh.refs--
    if (nh.refs === 0 && nh.state === S.DEL_DEFER_REF) {
      this.transition(nh, S.DEL_DEFER_REF, S.DEL_ACK_WAIT, 'last route let go')
      this.out.enqueue(nh)
    }
  }

  private releaseDesire(nh: Entry): void {
    assert(nh.desireRefs > 0, 'releaseDesire of a named next hop')
    nh.desireRefs--
    if (nh.desireRefs === 0 && nh.state === S.TEMP) this.transition(nh, S.TEMP, S.FREE_WAIT, 'no route names it')
  }

  private unpinSent(e: Entry): void {
    const sent = e.sent
    e.sent = null
    if (sent !== null && sent.nh !== null) this.unref(sent.nh)
  }

  private unwait(e: Entry): void {
    if (e.waitingOn !== null) {
      e.waitingOn.waiters?.delete(e)
      e.waitingOn = null
    }
    e.waitingIndex = false
  }

  /** Re-evaluates woken entries, iteratively (a next hop can wake a million routes). */
  private settle(): void {
    if (this.settling) return
    this.settling = true
    try {
      for (let e = this.woken.pop(); e !== undefined; e = this.woken.pop()) {
        if (e.state === S.FREE_WAIT) continue
        if (e.waitingIndex) {
          e.waitingIndex = false
          if (e.state === S.ADD_DEFER) this.reconcile(e, 'an index came free')
          continue
        }
        const nh = e.waitingOn
        if (nh === null) continue
        if (!present(nh)) {
          ;(nh.waiters ??= new Set()).add(e) // gone again before its turn: keep waiting
          continue
        }
        e.waitingOn = null
        assert(e.state === S.ADD_DEFER || e.state === S.CHANGE_DEFER, `a waiting route is in ${e.state}`)
        this.reconcile(e, 'next hop arrived')
      }
    } finally {
      this.settling = false
    }
  }

  // ---- retrying, fencing -------------------------------------------------------------------

  /** The retry timer let go of the entry's request: send it again, with the latest content. */
  private retry(e: Entry): void {
    if (e.state === S.SYNC_WAIT) this.reconcile(e, 'retry')
    else {
      assert(e.state === S.DEL_ACK_WAIT || e.state === S.RENEW_WAIT, `retry in ${e.state}`)
      this.out.enqueue(e)
    }
  }

  private countError(code: string): void {
    this.s.errors++
    this.errorsByCode[code] = (this.errorsByCode[code] ?? 0) + 1
  }

  private protocolError(reason: string): void {
    this.s.protocolErrors++
    this.event({ type: 'error', kind: null, key: null, op: null, code: ErrorCode.EBADMSG, reason })
    this.fence(reason)
  }

  private fence(reason: string): void {
    if (this.out.fenced) return
    this.out.fence()
    this.event({ type: 'fenced', reason })
  }

  private checkOpen(): void {
    if (this.out.fenced) throw new NsrError(ErrorCode.ECLOSED, 'KSync client is fenced: a newer client owns the Fib')
  }

  private event(e: KSyncEvent): void {
    this.onEvent?.(e)
  }

  // ---- looking in --------------------------------------------------------------------------

  entry(kind: KSyncKind, key: KSyncKey): KSyncEntryView | undefined {
    const e = (kind === NH ? this.nhs : this.routes).get(key)
    return e === undefined ? undefined : view(e)
  }

  entries(kind?: KSyncKind): KSyncEntryView[] {
    const out: KSyncEntryView[] = []
    if (kind !== ROUTE) for (const e of this.nhs.values()) out.push(view(e))
    if (kind !== NH) for (const e of this.routes.values()) out.push(view(e))
    return out
  }

  stats(): KSyncClientStats {
    return {
      ...this.s,
      epoch: this.epochNo,
      resyncing: this.learning,
      fenced: this.out.fenced,
      nextHops: this.nhs.size,
      routes: this.routes.size,
      inFlight: this.out.inFlight,
      queued: this.out.queued,
      retrying: this.out.retrying,
      parked: this.out.parked,
      states: { ...this.stateCounts },
      errorsByCode: { ...this.errorsByCode },
    }
  }

  /** Checks every entry against its state and every count against a recount. O(entries). A fenced client is not checked. */
  invariants(): void {
    if (this.out.fenced) return
    checkInvariants({
      nhs: this.nhs,
      routes: this.routes,
      indexes: this.indexes,
      out: this.out,
      stateCounts: this.stateCounts,
      woken: this.woken,
      learning: this.learning,
    })
  }
}
