// The chassis forwarding table: the target KSync programs, owned by the host thread so it outlives
// any RE. Sans-IO: `apply(request)` answers each KSyncRequest with a KSyncReply, nothing else.
//
// Next hops and routes live in two tables indexed by their KSync index (and looked up by key). A
// route refers to its next hop by index; the Fib counts those references and refuses to delete a
// next hop that a route still uses, or to add a route whose next hop is missing.
//
// Re-sync after failover is an audit, not a flush:
//   beginAudit()  new epoch (older clients are fenced off: ECLOSED) and a new generation; every
//                 entry is now stale (O(1): an entry is stale while its generation is older).
//   add/change    of an entry clears its mark. An add of a key the Fib holds answers with the index
//                 it holds (that is how a fresh client learns indexes, see INDEX_LEARN); if the
//                 content is identical it is a refresh: no churn, forwarding untouched. A learn
//                 of a key it does not hold answers ENOENT with a free index to use instead.
//   endAudit()    sweeps what nobody re-added (routes first, then next hops) and returns it.
//
// Churn counters: adds, changes, deletes, swept, and re-adds (an add of a key deleted recently,
// remembered in a bounded ring of the last `maxDeletedKeysTracked` deletions).

import { NsrError, assert, ErrorCode } from '../errors.ts'
import {
  INDEX_LEARN,
  KSyncKind,
  KSyncOp,
  KSyncReplyCode,
  NO_NEXT_HOP,
  sameData,
  validateRequest,
  type KSyncData,
  type KSyncKey,
  type KSyncReply,
  type KSyncRequest,
} from './wire.ts'

export const FIB_DEFAULT_MAX_NEXT_HOPS = 1 << 16
export const FIB_DEFAULT_MAX_ROUTES = 1 << 21
export const FIB_DEFAULT_MAX_DELETED_KEYS_TRACKED = 1 << 16

export interface FibOptions {
  maxNextHops?: number
  maxRoutes?: number
  /** How many recent deletions are remembered to recognise a delete-then-re-add of the same key. */
  maxDeletedKeysTracked?: number
  /** Fault injection for tests: a code to refuse this (well-formed, current-epoch) request with, or null. */
  inject?: (req: KSyncRequest) => KSyncReplyCode | null
}

export interface FibChurn {
  adds: number
  changes: number
  deletes: number
  swept: number
  /** Adds of a key deleted (or swept) before: the churn an audit exists to avoid. */
  reAdds: number
}

export interface FibStats extends FibChurn {
  epoch: number
  auditing: boolean
  audits: number
  nextHops: number
  routes: number
  /** Entries still marked stale in the running audit (0 outside one). */
  stale: number
  requests: number
  /** Adds/changes with identical content: no churn. */
  refreshes: number
  /** Adds that answered with an index the Fib already held for the key. */
  learned: number
  /** Free indexes suggested with learn misses. */
  hints: number
  errors: number
  errorsByCode: Record<string, number>
  staleEpochRejects: number
  /** Stale next hops an audit could not sweep because a route still used them. */
  sweepSkippedReferenced: number
}

export interface FibEntryView {
  kind: KSyncKind
  index: number
  key: KSyncKey
  /** A route's next hop index; -1 for a next hop. */
  nh: number
  data: KSyncData
  /** Next hops: routes referencing it. */
  refs: number
  stale: boolean
}

export interface FibSnapshot {
  epoch: number
  nextHops: FibEntryView[]
  routes: FibEntryView[]
}

export interface SweptEntry {
  kind: KSyncKind
  index: number
  key: KSyncKey
}

export interface AuditResult {
  epoch: number
  swept: SweptEntry[]
  /** Entries re-added with identical content. */
  refreshed: number
  /** Churn during the audit (sweeping included). */
  churn: FibChurn
}

/** Entries by index: a plain array (indexes are small and dense), with a live count. */
class Slots {
  private readonly a: (FibEntry | undefined)[] = []
  private n = 0

  get size(): number {
    return this.n
  }

  get(i: number): FibEntry | undefined {
    return this.a[i]
  }

  has(i: number): boolean {
    return this.a[i] !== undefined
  }

  set(i: number, e: FibEntry): void {
    if (this.a[i] === undefined) this.n++
    this.a[i] = e
  }

  delete(i: number): void {
    if (this.a[i] === undefined) return
    this.a[i] = undefined
    this.n--
  }

  /** Live entries in index order; deleting the current one while iterating is fine. */
  *values(): IterableIterator<FibEntry> {
    for (let i = 0; i < this.a.length; i++) {
      const e = this.a[i]
      if (e !== undefined) yield e
    }
  }
}

class FibEntry {
  readonly kind: KSyncKind
  readonly index: number
  readonly key: KSyncKey
  nh: number
  data: KSyncData
  refs = 0
  gen: number

  constructor(kind: KSyncKind, index: number, key: KSyncKey, nh: number, data: KSyncData, gen: number) {
    this.kind = kind
    this.index = index
    this.key = key
    this.nh = nh
    this.data = data
    this.gen = gen
  }
}

interface FibTable {
  readonly kind: KSyncKind
  readonly capacity: number
  readonly byIndex: Slots
  readonly byKey: Map<KSyncKey, FibEntry>
  /** Ring of recently deleted keys, and each key's latest slot in it. */
  readonly deletedRing: (KSyncKey | undefined)[]
  readonly deletedAt: Map<KSyncKey, number>
  deletedNext: number
  /** One above the highest index ever added, and the next index to suggest on a learn miss. */
  hwm: number
  hintNext: number
}

function makeTable(kind: KSyncKind, capacity: number, ringSize: number): FibTable {
  return { kind, capacity, byIndex: new Slots(), byKey: new Map(), deletedRing: new Array(ringSize), deletedAt: new Map(), deletedNext: 0, hwm: 0, hintNext: 0 }
}

function churnOf(s: FibChurn): FibChurn {
  return { adds: s.adds, changes: s.changes, deletes: s.deletes, swept: s.swept, reAdds: s.reAdds }
}

function positiveInt(v: number | undefined, dflt: number, name: string): number {
  const n = v ?? dflt
  if (!Number.isInteger(n) || n < 1) throw new NsrError(ErrorCode.EINVAL, `${name} must be a positive integer`)
  return n
}

export class Fib {
  private readonly nhs: FibTable
  private readonly routes: FibTable
  private readonly inject: FibOptions['inject']
  private epochNo = 0
  /** Current generation; an entry whose gen is older is stale during an audit. */
  private gen = 0
  private auditOpen = false
  private staleCount = 0
  private auditBase: FibChurn = churnOf({ adds: 0, changes: 0, deletes: 0, swept: 0, reAdds: 0 })
  private auditRefreshed = 0
  private readonly s = {
    adds: 0,
    changes: 0,
    deletes: 0,
    swept: 0,
    reAdds: 0,
    audits: 0,
    requests: 0,
    refreshes: 0,
    learned: 0,
    hints: 0,
    errors: 0,
    staleEpochRejects: 0,
    sweepSkippedReferenced: 0,
  }
  private readonly errorsByCode: Record<string, number> = {}

  constructor(options: FibOptions = {}) {
    const ring = positiveInt(options.maxDeletedKeysTracked, FIB_DEFAULT_MAX_DELETED_KEYS_TRACKED, 'maxDeletedKeysTracked')
    this.nhs = makeTable(KSyncKind.NH, positiveInt(options.maxNextHops, FIB_DEFAULT_MAX_NEXT_HOPS, 'maxNextHops'), ring)
    this.routes = makeTable(KSyncKind.ROUTE, positiveInt(options.maxRoutes, FIB_DEFAULT_MAX_ROUTES, 'maxRoutes'), ring)
    this.inject = options.inject
  }

  /** The epoch a client must write under; bumped by every beginAudit(). */
  get epoch(): number {
    return this.epochNo
  }

  get auditing(): boolean {
    return this.auditOpen
  }

  /** Answers a batch in order. */
  applyBatch(requests: readonly unknown[]): KSyncReply[] {
    const replies = new Array<KSyncReply>(requests.length)
    for (let i = 0; i < requests.length; i++) replies[i] = this.apply(requests[i])
    return replies
  }

  /** Applies one request; never throws on bad input (it answers EINVAL). */
  apply(raw: unknown): KSyncReply {
    this.s.requests++
    const problem = validateRequest(raw)
    if (problem !== null) {
      const id = (raw as { id?: unknown } | null)?.id
      return this.fail(typeof id === 'number' && id >>> 0 === id ? id : 0, KSyncReplyCode.EINVAL, problem)
    }
    const req = raw as KSyncRequest
    if (req.epoch !== this.epochNo) {
      this.s.staleEpochRejects++
      return this.fail(req.id, KSyncReplyCode.ECLOSED, `epoch ${req.epoch} is over (now ${this.epochNo})`)
    }
    const t = req.kind === KSyncKind.NH ? this.nhs : this.routes
    if (req.index >= t.capacity) return this.fail(req.id, KSyncReplyCode.EINVAL, `index ${req.index} out of range`)
    const injected = this.inject?.(req) ?? null
    if (injected !== null) return this.fail(req.id, injected, 'injected fault')
    switch (req.op) {
      case KSyncOp.ADD:
        return this.add(t, req)
      case KSyncOp.CHANGE:
        return this.change(t, req)
      case KSyncOp.DELETE:
        return this.delete(t, req)
    }
  }

  private add(t: FibTable, req: KSyncRequest): KSyncReply {
    const existing = t.byKey.get(req.key)
    if (existing !== undefined) {
      // A key the Fib holds keeps its index, whatever the client proposed: the client adopts it.
      const problem = this.update(existing, req)
      if (problem !== null) return this.fail(req.id, KSyncReplyCode.ENOENT, problem)
      if (req.index !== existing.index) this.s.learned++
      return { id: req.id, ok: true, index: existing.index, code: null }
    }
    if (req.index === INDEX_LEARN) return this.fail(req.id, KSyncReplyCode.ENOENT, 'no entry for this key', this.suggest(t))
    const occupant = t.byIndex.get(req.index)
    if (occupant !== undefined) return this.fail(req.id, KSyncReplyCode.EEXIST, `index ${req.index} is held by another key`, req.index)
    let nhEntry: FibEntry | undefined
    if (t.kind === KSyncKind.ROUTE) {
      nhEntry = this.nhs.byIndex.get(req.nh)
      if (nhEntry === undefined) return this.fail(req.id, KSyncReplyCode.ENOENT, `next hop index ${req.nh} not present`)
      nhEntry.refs++
    }
    const e = new FibEntry(t.kind, req.index, req.key, req.nh, req.data, this.gen)
    t.byIndex.set(e.index, e)
    t.byKey.set(e.key, e)
    if (e.index >= t.hwm) t.hwm = e.index + 1
    this.s.adds++
    const slot = t.deletedAt.size > 0 ? t.deletedAt.get(req.key) : undefined
    if (slot !== undefined) {
      this.s.reAdds++
      t.deletedAt.delete(req.key)
      t.deletedRing[slot] = undefined
    }
    return { id: req.id, ok: true, index: e.index, code: null }
  }

  private change(t: FibTable, req: KSyncRequest): KSyncReply {
    const e = t.byIndex.get(req.index)
    if (e === undefined || e.key !== req.key) return this.fail(req.id, KSyncReplyCode.ENOENT, `no entry for this key at index ${req.index}`)
    const problem = this.update(e, req)
    if (problem !== null) return this.fail(req.id, KSyncReplyCode.ENOENT, problem)
    return { id: req.id, ok: true, index: e.index, code: null }
  }

  /** Brings an existing entry to the request's content; a refresh when identical. Clears the stale mark. */
  private update(e: FibEntry, req: KSyncRequest): string | null {
    const identical = e.nh === req.nh && sameData(e.data, req.data)
    if (!identical && e.kind === KSyncKind.ROUTE && e.nh !== req.nh) {
      const to = this.nhs.byIndex.get(req.nh)
      if (to === undefined) return `next hop index ${req.nh} not present`
      to.refs++
      const from = this.nhs.byIndex.get(e.nh)
      assert(from !== undefined && from.refs > 0, 'a route references a present next hop')
      from.refs--
      e.nh = req.nh
    }
    if (identical) {
      this.s.refreshes++
      if (this.auditOpen) this.auditRefreshed++
    } else {
      e.data = req.data
      this.s.changes++
    }
    this.touch(e)
    return null
  }

  private delete(t: FibTable, req: KSyncRequest): KSyncReply {
    const e = t.byIndex.get(req.index)
    if (e === undefined || e.key !== req.key) return this.fail(req.id, KSyncReplyCode.ENOENT, `no entry for this key at index ${req.index}`)
    if (e.refs > 0) return this.fail(req.id, KSyncReplyCode.EINVAL, `next hop still referenced by ${e.refs} routes`, e.index)
    this.remove(t, e)
    this.s.deletes++
    return { id: req.id, ok: true, index: e.index, code: null }
  }

  private remove(t: FibTable, e: FibEntry): void {
    if (this.isStale(e)) this.staleCount--
    t.byIndex.delete(e.index)
    t.byKey.delete(e.key)
    if (t.kind === KSyncKind.ROUTE) {
      const nh = this.nhs.byIndex.get(e.nh)
      assert(nh !== undefined && nh.refs > 0, 'a route references a present next hop')
      nh.refs--
    }
    // Remember the deletion; the ring slot it overwrites forgets the oldest one.
    const slot = t.deletedNext
    const old = t.deletedRing[slot]
    if (old !== undefined && t.deletedAt.get(old) === slot) t.deletedAt.delete(old)
    const prior = t.deletedAt.get(e.key)
    if (prior !== undefined) t.deletedRing[prior] = undefined
    t.deletedRing[slot] = e.key
    t.deletedAt.set(e.key, slot)
    t.deletedNext = (slot + 1) % t.deletedRing.length
  }

  /**
   * An index for a key the Fib does not know, sent with a learn miss: one above every index ever
   * used, so it is free, and never handed out twice. -1 once the table's top is reached (the
   * client then picks one itself and may meet EEXIST).
   */
  private suggest(t: FibTable): number {
    if (t.hintNext < t.hwm) t.hintNext = t.hwm
    if (t.hintNext >= t.capacity) return -1
    this.s.hints++
    return t.hintNext++
  }

  private touch(e: FibEntry): void {
    if (this.isStale(e)) this.staleCount--
    e.gen = this.gen
  }

  private isStale(e: FibEntry): boolean {
    return this.auditOpen && e.gen < this.gen
  }

  private fail(id: number, code: KSyncReplyCode, reason: string, index = -1): KSyncReply {
    this.s.errors++
    this.errorsByCode[code] = (this.errorsByCode[code] ?? 0) + 1
    return { id, ok: false, index, code, reason }
  }

  /**
   * Starts an audit: a new epoch (requests of older epochs are refused with ECLOSED from now on)
   * and every entry marked stale. Calling it during an audit restarts the audit (a second failover
   * before the first re-sync finished): what the aborted client refreshed is stale again.
   */
  beginAudit(): { epoch: number } {
    this.epochNo = (this.epochNo + 1) >>> 0
    this.gen++
    if (!this.auditOpen) {
      this.auditBase = churnOf(this.s)
      this.auditRefreshed = 0
    }
    this.auditOpen = true
    this.staleCount = this.nhs.byIndex.size + this.routes.byIndex.size
    this.s.audits++
    return { epoch: this.epochNo }
  }

  /** Ends the audit: sweeps every entry still stale (routes, then next hops) and returns them. */
  endAudit(): AuditResult {
    if (!this.auditOpen) throw new NsrError(ErrorCode.EINVAL, 'endAudit without beginAudit')
    const swept: SweptEntry[] = []
    for (const t of [this.routes, this.nhs]) {
      for (const e of t.byIndex.values()) {
        if (e.gen >= this.gen) continue
        if (e.refs > 0) {
          this.s.sweepSkippedReferenced++
          continue
        }
        this.remove(t, e)
        this.s.swept++
        swept.push({ kind: e.kind, index: e.index, key: e.key })
      }
    }
    const base = this.auditBase
    const churn: FibChurn = {
      adds: this.s.adds - base.adds,
      changes: this.s.changes - base.changes,
      deletes: this.s.deletes - base.deletes,
      swept: this.s.swept - base.swept,
      reAdds: this.s.reAdds - base.reAdds,
    }
    this.auditOpen = false
    this.staleCount = 0
    return { epoch: this.epochNo, swept, refreshed: this.auditRefreshed, churn }
  }

  stats(): FibStats {
    return {
      ...this.s,
      epoch: this.epochNo,
      auditing: this.auditOpen,
      nextHops: this.nhs.byIndex.size,
      routes: this.routes.byIndex.size,
      stale: this.staleCount,
      errorsByCode: { ...this.errorsByCode },
    }
  }

  lookup(kind: KSyncKind, key: KSyncKey): FibEntryView | undefined {
    const e = (kind === KSyncKind.NH ? this.nhs : this.routes).byKey.get(key)
    return e === undefined ? undefined : this.view(e)
  }

  at(kind: KSyncKind, index: number): FibEntryView | undefined {
    const e = (kind === KSyncKind.NH ? this.nhs : this.routes).byIndex.get(index)
    return e === undefined ? undefined : this.view(e)
  }

  /** Every entry, ordered by index. */
  snapshot(): FibSnapshot {
    const list = (t: FibTable) => [...t.byIndex.values()].map((e) => this.view(e))
    return { epoch: this.epochNo, nextHops: list(this.nhs), routes: list(this.routes) }
  }

  private view(e: FibEntry): FibEntryView {
    return { kind: e.kind, index: e.index, key: e.key, nh: e.nh, data: e.data, refs: e.refs, stale: this.isStale(e) }
  }

  /** Checks the tables agree with themselves; throws on the first violation. O(entries). */
  invariants(): void {
    const refs = new Map<number, number>()
    let stale = 0
    for (const t of [this.nhs, this.routes]) {
      assert(t.byIndex.size === t.byKey.size, `${t.kind}: index and key maps agree in size`)
      for (const e of t.byIndex.values()) {
        const index = e.index
        assert(t.byIndex.get(index) === e && index >= 0 && index < t.capacity, `${t.kind} ${index}: index in range and consistent`)
        assert(t.byKey.get(e.key) === e, `${t.kind} ${index}: key map points back`)
        if (this.isStale(e)) stale++
        if (t.kind === KSyncKind.ROUTE) {
          assert(this.nhs.byIndex.has(e.nh), `route ${String(e.key)}: next hop ${e.nh} present`)
          refs.set(e.nh, (refs.get(e.nh) ?? 0) + 1)
        } else assert(e.nh === NO_NEXT_HOP, `next hop ${String(e.key)}: no nh field`)
      }
    }
    for (const e of this.nhs.byIndex.values()) assert(e.refs === (refs.get(e.index) ?? 0), `next hop ${String(e.key)}: refs ${e.refs} counted right`)
    assert(stale === this.staleCount, `stale count ${this.staleCount} matches ${stale}`)
  }
}
