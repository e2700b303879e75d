// A KSync entry as the client holds it: what the app wants, what the Fib acked, what is
// outstanding, its index, and (next hops) the reference counts and the routes waiting for it.
// The fields are plain and mutable rather than a union per state, because a full table is a
// million of them; KSyncClient.invariants() checks, per state, which fields are meaningful.
// Also the client's FIFO and the read-only view handed out to callers.

import { sameData, type KSyncData, type KSyncKey, type KSyncKind, type KSyncOp, type NhKey } from './wire.ts'
import { KSyncState } from './state.ts'

/**
 * What an entry's request is doing: nothing outstanding; queued for an in-flight slot; in
 * flight; waiting for the retry timer; or (a next hop's delete during a re-sync) parked until the
 * audit ends, because routes the new primary does not know yet still use it in the Fib.
 */
export const KSyncPending = { NONE: 'none', QUEUED: 'queued', INFLIGHT: 'inflight', RETRY: 'retry', PARKED: 'parked' } as const
export type KSyncPending = (typeof KSyncPending)[keyof typeof KSyncPending]

export interface KSyncEntryView {
  kind: KSyncKind
  key: KSyncKey
  state: KSyncState
  /** Why it entered its state. */
  reason: string
  /** KSync index; -1 while it has none. */
  index: number
  pending: KSyncPending
  /** What the app wants; null when it does not want the entry. */
  want: { data: KSyncData; nh: NhKey | null } | null
  /** What the Fib holds as acked; null when not in the Fib. */
  fib: { data: KSyncData; nh: NhKey | null; nhIndex: number } | null
  /** Next hops: routes whose Fib content or outstanding request uses it. */
  refs: number
}

const S = KSyncState
const P = KSyncPending

/** What an entry holds: its data and, for a route, its next hop entry. Immutable. */
export interface Content {
  readonly data: KSyncData
  readonly nh: Entry | null
}

export class Entry {
  readonly kind: KSyncKind
  readonly key: KSyncKey
  state: KSyncState = S.INIT
  reason = 'created'
  want: Content | null = null
  fib: Content | null = null
  /** Content of the outstanding add/change (queued or in flight); pins its next hop. */
  sent: Content | null = null
  index = -1
  pending: KSyncPending = P.NONE
  inQueue = false
  inRetry = false
  reqId = 0
  reqOp: KSyncOp | null = null
  reqIndex = -1
  /** Re-sync: the Fib has been asked for this key's index already. */
  probed = false
  /** A free index the Fib suggested with a learn miss; -1 if none. */
  hint = -1
  // next hops
  refs = 0
  desireRefs = 0
  waiters: Set<Entry> | null = null
  // routes (and index waiters of both kinds)
  waitingOn: Entry | null = null
  waitingIndex = false
  inIndexQueue = false

  constructor(kind: KSyncKind, key: KSyncKey) {
    this.kind = kind
    this.key = key
  }
}

/** A FIFO with O(1) shift (head index, compacted as it drains). */
export class Fifo<T> {
  private items: (T | undefined)[] = []
  private head = 0

  get length(): number {
    return this.items.length - this.head
  }

  push(x: T): void {
    this.items.push(x)
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined
    const x = this.items[this.head]
    this.items[this.head++] = undefined
    if (this.head === this.items.length) {
      this.items = []
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return x
  }
}

/** A next hop routes can be sent against: acked into the Fib and not on its way out. */
export function present(nh: Entry): boolean {
  return nh.fib !== null && nh.state !== S.DEL_ACK_WAIT && nh.state !== S.RENEW_WAIT
}

export function sameContent(a: Content, b: Content): boolean {
  return a.nh === b.nh && sameData(a.data, b.data)
}

export function view(e: Entry): KSyncEntryView {
  return {
    kind: e.kind,
    key: e.key,
    state: e.state,
    reason: e.reason,
    index: e.index,
    pending: e.pending,
    want: e.want === null ? null : { data: e.want.data, nh: e.want.nh === null ? null : (e.want.nh.key as NhKey) },
    fib: e.fib === null ? null : { data: e.fib.data, nh: e.fib.nh === null ? null : (e.fib.nh.key as NhKey), nhIndex: e.fib.nh === null ? -1 : e.fib.nh.index },
    refs: e.refs,
  }
}
