// KSyncClient's indexes: one bounded IndexTable per kind, and per kind the FIFO of entries that
// wait for a free index. An entry takes the index the Fib suggested (a learn miss's hint) if it
// is free, else any free one; with none free it joins the waiters, and each released index wakes
// the first of them still waiting (into the client's `woken` list, re-evaluated by settle()).
//
// Rules it keeps:
// - An index is reused only after the Fib acked the delete of its previous owner: the client
//   releases it only then (or for an entry that never reached the Fib).
// - During a re-sync, an index the Fib says is taken by a stale entry is set aside as foreign
//   (IndexTable.markForeign) until releaseForeign() at the audit's end, which wakes every waiter.

import { assert } from '../errors.ts'
import { Fifo, type Entry } from './entry.ts'
import { IndexTable } from './index-table.ts'
import { KSyncState } from './state.ts'
import { KSyncKind } from './wire.ts'

const S = KSyncState
const { NH } = KSyncKind

export class IndexPool {
  private readonly nhIndexes: IndexTable<Entry>
  private readonly routeIndexes: IndexTable<Entry>
  private readonly nhIndexWaiters = new Fifo<Entry>()
  private readonly routeIndexWaiters = new Fifo<Entry>()
  /** The client's list of entries to re-evaluate once the current call is done. */
  private readonly woken: Entry[]

  constructor(maxNextHops: number, maxRoutes: number, woken: Entry[]) {
    this.nhIndexes = new IndexTable<Entry>(maxNextHops)
    this.routeIndexes = new IndexTable<Entry>(maxRoutes)
    this.woken = woken
  }

  table(kind: KSyncKind): IndexTable<Entry> {
    return kind === NH ? this.nhIndexes : this.routeIndexes
  }

  /**
   * Gives an entry without an index one: its hint if free, else any free one. False if none is
   * free: the entry then waits for one (waitingIndex, in its kind's waiter queue).
   */
  assign(e: Entry): boolean {
    const t = this.table(e.kind)
    const hint = e.hint
    e.hint = -1
    const i = t.isFree(hint) ? (t.take(hint, e), hint) : t.alloc(e)
    if (i < 0) {
      assert(e.fib === null, 'an entry in the Fib has an index')
      e.waitingIndex = true
      if (!e.inIndexQueue) {
        e.inIndexQueue = true
        this.waiters(e.kind).push(e)
      }
      return false
    }
    e.index = i
    return true
  }

  /** Returns the entry's index and wakes the first entry still waiting for one of its kind. */
  release(e: Entry): void {
    this.table(e.kind).release(e.index, e)
    e.index = -1
    const q = this.waiters(e.kind)
    for (let w = q.shift(); w !== undefined; w = q.shift()) {
      w.inIndexQueue = false
      if (w.waitingIndex && w.state === S.ADD_DEFER) {
        this.woken.push(w)
        return
      }
    }
  }

  /** The audit ended: indexes set aside as foreign are free again; every index waiter is woken. */
  releaseForeign(): void {
    const freed = this.nhIndexes.releaseForeign() + this.routeIndexes.releaseForeign()
    if (freed > 0) {
      for (const q of [this.nhIndexWaiters, this.routeIndexWaiters]) {
        for (let e = q.shift(); e !== undefined; e = q.shift()) {
          e.inIndexQueue = false
          if (e.waitingIndex) this.woken.push(e)
        }
      }
    }
  }

  /** Checks both tables, and that they own exactly the indexes live entries hold (counted by the caller). */
  invariants(nhIndexed: number, routeIndexed: number): void {
    this.nhIndexes.invariants()
    this.routeIndexes.invariants()
    assert(this.nhIndexes.used === nhIndexed && this.routeIndexes.used === routeIndexed, 'every owned index belongs to a live entry')
  }

  private waiters(kind: KSyncKind): Fifo<Entry> {
    return kind === NH ? this.nhIndexWaiters : this.routeIndexWaiters
  }
}
