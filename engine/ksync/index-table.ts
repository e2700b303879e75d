// KSync's bounded index allocator, one per kind (next hops, routes). KSync, not the app, picks
// the index an entry has in the Fib; an index comes back to the pool only when the Fib has acked
// the entry's delete, and the most recently freed index is handed out first.
//
// A slot is free, owned (by one client entry), or foreign: the Fib said it holds something else
// there (EEXIST) that this client does not know, which happens only while a re-sync audit is
// open; foreign slots return to the pool when the audit ends (releaseForeign). Allocation is O(1)
// amortised: a stack of freed slots (checked lazily, since a slot can be claimed by `take` while
// it sits there) and a high-water mark for slots never used.
//
// The mark arrays grow with the highest index touched (doubling, up to capacity); past their length
// a slot is free. A client is made at every promotion: allocated whole (2 MiB each for the default
// 2M routes) they took up to 1 ms there, a collection at times, for apps that may never use the FIB.

import { assert } from '../errors.ts'

const FREE = 0
const OWNED = 1
const FOREIGN = 2
const INITIAL_MARKS = 1024

export class IndexTable<T extends object> {
  readonly capacity: number
  private readonly owners: (T | null)[] = []
  private mark: Uint8Array
  private stacked: Uint8Array
  private readonly freeStack: number[] = []
  private readonly foreignList: number[] = []
  private hwm = 0
  private ownedCount = 0

  constructor(capacity: number) {
    assert(Number.isInteger(capacity) && capacity > 0, 'index table capacity is a positive integer')
    this.capacity = capacity
    this.mark = new Uint8Array(Math.min(capacity, INITIAL_MARKS))
    this.stacked = new Uint8Array(this.mark.length)
  }

  get used(): number {
    return this.ownedCount
  }

  owner(i: number): T | null {
    return i >= 0 && i < this.owners.length ? this.owners[i] : null
  }

  isFree(i: number): boolean {
    return i >= 0 && i < this.capacity && (i >= this.mark.length || this.mark[i] === FREE)
  }

  isForeign(i: number): boolean {
    return i >= 0 && i < this.mark.length && this.mark[i] === FOREIGN
  }

  /** A free index for `owner`, or -1 when none is left. */
  alloc(owner: T): number {
    while (this.freeStack.length > 0) {
      const i = this.freeStack.pop()!
      this.stacked[i] = 0
      if (this.mark[i] === FREE) {
        this.claim(i, owner)
        return i
      }
    }
    while (this.hwm < this.capacity) {
      const i = this.hwm++
      if (i >= this.mark.length || this.mark[i] === FREE) {
        this.claim(i, owner)
        return i
      }
    }
    return -1
  }

  /** Claims a specific free or foreign index (the Fib said the owner's key lives there). */
  take(i: number, owner: T): void {
    assert(i >= 0 && i < this.capacity && (i >= this.mark.length || this.mark[i] !== OWNED), `index ${i} can be taken`)
    this.claim(i, owner)
  }

  /** Returns an owned index to the pool. */
  release(i: number, owner: T): void {
    assert(this.owner(i) === owner && this.mark[i] === OWNED, `index ${i} is released by its owner`)
    this.owners[i] = null
    this.mark[i] = FREE
    this.ownedCount--
    this.push(i)
  }

  /** The Fib holds an unknown entry at owned index `i`: set it aside until the audit ends. */
  markForeign(i: number, owner: T): void {
    assert(this.owner(i) === owner && this.mark[i] === OWNED, `index ${i} is marked foreign by its owner`)
    this.owners[i] = null
    this.mark[i] = FOREIGN
    this.ownedCount--
    this.foreignList.push(i)
  }

  /** Frees every slot still foreign (the audit swept whatever held them). Returns how many. */
  releaseForeign(): number {
    let n = 0
    for (const i of this.foreignList) {
      if (this.mark[i] !== FOREIGN) continue
      this.mark[i] = FREE
      this.push(i)
      n++
    }
    this.foreignList.length = 0
    return n
  }

  /** Owned slot count, checked against a walk of the marks. O(capacity touched). */
  invariants(): void {
    let owned = 0
    for (let i = 0; i < this.owners.length; i++) {
      const o = this.owners[i]
      assert((o !== null) === (this.mark[i] === OWNED), `index ${i}: owner matches mark`)
      if (o !== null) owned++
    }
    for (let i = this.owners.length; i < this.mark.length && i < this.hwm; i++) assert(this.mark[i] !== OWNED, `index ${i}: unowned past the owner array`)
    assert(this.stacked.length === this.mark.length && this.mark.length <= this.capacity, 'mark arrays within capacity')
    assert(owned === this.ownedCount, `owned count ${this.ownedCount} matches ${owned}`)
    assert(this.freeStack.length <= this.capacity, 'free stack bounded by capacity')
  }

  private claim(i: number, owner: T): void {
    if (i >= this.mark.length) this.grow(i)
    while (this.owners.length <= i) this.owners.push(null)
    this.owners[i] = owner
    this.mark[i] = OWNED
    this.ownedCount++
  }

  /** Makes the mark arrays cover index `i` (doubling, at most capacity). */
  private grow(i: number): void {
    let n = this.mark.length
    while (n <= i) n *= 2
    n = Math.min(n, this.capacity)
    const mark = new Uint8Array(n)
    mark.set(this.mark)
    const stacked = new Uint8Array(n)
    stacked.set(this.stacked)
    this.mark = mark
    this.stacked = stacked
  }

  private push(i: number): void {
    if (this.stacked[i] === 1) return
    this.stacked[i] = 1
    this.freeStack.push(i)
  }
}
