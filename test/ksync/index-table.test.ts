// The index allocator against a model, over random operations on a table larger than its initial
// mark arrays (1024 slots): slots claimed anywhere, near the capacity first, must grow the arrays
// and keep every free, owned and foreign slot what the model says.

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { IndexTable } from '../../engine/ksync/index-table.ts'

const CAPACITY = 3000

type Op = { kind: 'alloc' } | { kind: 'take'; i: number } | { kind: 'release'; pick: number } | { kind: 'foreign'; pick: number } | { kind: 'sweep' }

const op: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.constant({ kind: 'alloc' as const }), weight: 4 },
  { arbitrary: fc.integer({ min: 0, max: CAPACITY - 1 }).map((i) => ({ kind: 'take' as const, i })), weight: 3 },
  { arbitrary: fc.nat().map((pick) => ({ kind: 'release' as const, pick })), weight: 3 },
  { arbitrary: fc.nat().map((pick) => ({ kind: 'foreign' as const, pick })), weight: 1 },
  { arbitrary: fc.constant({ kind: 'sweep' as const }), weight: 1 },
)

describe('IndexTable', () => {
  it('agrees with a model of free, owned and foreign slots while its mark arrays grow', () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 400, size: 'max' }), (ops) => {
        const t = new IndexTable<{ id: number }>(CAPACITY)
        const owned = new Map<number, { id: number }>()
        const foreign = new Set<number>()
        let id = 0
        for (const o of ops) {
          if (o.kind === 'alloc') {
            const owner = { id: id++ }
            const i = t.alloc(owner)
            expect(i).toBeGreaterThanOrEqual(0)
            expect(owned.has(i) || foreign.has(i)).toBe(false)
            owned.set(i, owner)
          } else if (o.kind === 'take') {
            if (owned.has(o.i)) continue
            const owner = { id: id++ }
            t.take(o.i, owner)
            foreign.delete(o.i)
            owned.set(o.i, owner)
          } else if (o.kind === 'release' || o.kind === 'foreign') {
            if (owned.size === 0) continue
            const [i, owner] = [...owned][o.pick % owned.size]
            owned.delete(i)
            if (o.kind === 'release') t.release(i, owner)
            else {
              t.markForeign(i, owner)
              foreign.add(i)
            }
          } else {
            expect(t.releaseForeign()).toBe(foreign.size)
            foreign.clear()
          }
          t.invariants()
        }
        expect(t.used).toBe(owned.size)
        const wrong: number[] = []
        for (let i = 0; i < CAPACITY; i++) {
          const ok = t.owner(i) === (owned.get(i) ?? null) && t.isForeign(i) === foreign.has(i) && t.isFree(i) === (!owned.has(i) && !foreign.has(i))
          if (!ok) wrong.push(i)
        }
        expect(wrong).toEqual([])
      }),
      { numRuns: 100 },
    )
  })

  it('hands out every index up to its capacity, then refuses', () => {
    const t = new IndexTable<object>(CAPACITY)
    const seen = new Set<number>()
    for (let k = 0; k < CAPACITY; k++) seen.add(t.alloc({}))
    expect(seen.size).toBe(CAPACITY)
    expect(Math.max(...seen)).toBe(CAPACITY - 1)
    expect(t.alloc({})).toBe(-1)
    t.invariants()
  })
})
