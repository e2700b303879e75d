// Ring properties (fast-check, seeded): random frame sizes and random interleavings of send,
// reserve/commit, drain and receive, checked against a model queue that also predicts FULL exactly
// (frames are contiguous, so the model tracks the wrap skip), from random starting positions
// (crossing the 2^32 wrap of the indices), on small rings so that wrap and full happen constantly.

import fc from 'fast-check'
import { describe, expect, it, onTestFailed } from 'vitest'
import { Ring, RingResult, ringFrameBytes, ringSabBytes } from '../../engine/kkcm/ring.ts'

const seed = Number(process.env.NSR_SEED ?? Math.floor(Math.random() * 2 ** 31))

type Op =
  | { kind: 'send'; len: number }
  | { kind: 'reserve'; len: number }
  | { kind: 'drain'; max: number }
  | { kind: 'receive' }

function byteOf(id: number, j: number): number {
  return (id * 131 + j * 17 + (j >> 8)) & 255
}

function fill(dst: Uint8Array, off: number, len: number, id: number): void {
  for (let j = 0; j < len; j++) dst[off + j] = byteOf(id, j)
}

function matches(src: Uint8Array, off: number, len: number, id: number): boolean {
  for (let j = 0; j < len; j++) if (src[off + j] !== byteOf(id, j)) return false
  return true
}

/** Occupancy model: exact free-space rule of a ring of contiguous frames. */
class Model {
  tail: number
  head: number
  readonly queue: Array<{ id: number; len: number; advance: number }> = []
  readonly capacity: number
  constructor(capacity: number, start: number) {
    this.capacity = capacity
    this.tail = start
    this.head = start
  }
  /** Bytes the tail would advance for a frame of len, or -1 if it does not fit now. */
  fit(len: number): number {
    const rec = ringFrameBytes(len)
    const pos = this.tail & (this.capacity - 1)
    const contig = this.capacity - pos
    const need = rec <= contig ? rec : contig + rec
    return ((this.tail - this.head) | 0) + need <= this.capacity ? need : -1
  }
}

function run(capacity: number, start: number, ops: Op[]): void {
  const sab = new SharedArrayBuffer(ringSabBytes(capacity))
  const prod = Ring.format(sab, 0, capacity, { initialPosition: start })
  const cons = Ring.attach(sab)
  const m = new Model(capacity, start)
  let nextId = 0
  let delivered = 0
  const check = (bytes: Uint8Array, off: number, len: number): void => {
    const want = m.queue.shift()
    expect(want, 'frame delivered that was never sent').toBeDefined()
    expect(len).toBe(want!.len)
    expect(off % 8).toBe(0)
    expect(off + len).toBeLessThanOrEqual(capacity)
    expect(matches(bytes, off, len, want!.id)).toBe(true)
    m.head = (m.head + want!.advance) | 0
    delivered++
  }
  for (const op of ops) {
    switch (op.kind) {
      case 'send':
      case 'reserve': {
        const len = Math.min(op.len, prod.maxFrameBytes)
        const advance = m.fit(len)
        const id = nextId++
        let r: number
        if (op.kind === 'send') {
          const p = new Uint8Array(len)
          fill(p, 0, len, id)
          r = prod.send(p)
        } else {
          const off = prod.reserve(len)
          if (off >= 0) {
            expect(off % 8).toBe(0)
            fill(prod.bytes, off, len, id)
            prod.commit()
          }
          r = off >= 0 ? RingResult.OK : off
        }
        expect(r, `${op.kind}(${len})`).toBe(advance >= 0 ? RingResult.OK : RingResult.FULL)
        if (advance >= 0) {
          m.tail = (m.tail + advance) | 0
          m.queue.push({ id, len, advance })
        }
        break
      }
      case 'drain': {
        const before = m.queue.length
        const n = cons.drain(check, op.max)
        expect(n).toBe(Math.min(before, op.max))
        break
      }
      case 'receive': {
        const want = m.queue[0]
        const f = cons.receive()
        if (!want) {
          expect(f).toBeNull()
          break
        }
        expect(f).not.toBeNull()
        check(f!, 0, f!.length)
        break
      }
    }
    expect(prod.freeBytes()).toBe(capacity - ((m.tail - m.head) | 0))
    expect(cons.isEmpty()).toBe(m.queue.length === 0)
  }
  // everything still queued comes out in order
  cons.drain(check)
  expect(m.queue.length).toBe(0)
  expect(cons.isEmpty()).toBe(true)
  // never grew
  expect(sab.byteLength).toBe(ringSabBytes(capacity))
  expect(prod.capacity).toBe(capacity)
  expect(cons.stats().framesOut).toBe(delivered)
}

describe('Ring against a model queue', () => {
  it('matches the model for random sizes and interleavings (seeded)', () => {
    onTestFailed(() => console.error(`ring property seed=${seed} (rerun with NSR_SEED=${seed})`))
    const capacity = fc.constantFrom(4096, 8192)
    const len = fc.oneof(
      { weight: 4, arbitrary: fc.nat({ max: 64 }) },
      { weight: 3, arbitrary: fc.nat({ max: 4096 }) },
      { weight: 1, arbitrary: fc.constantFrom(0, 1, 7, 8, 9, 2040, 2039, 4088, 4087, 100_000) },
    )
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 4, arbitrary: len.map((l) => ({ kind: 'send' as const, len: l })) },
      { weight: 3, arbitrary: len.map((l) => ({ kind: 'reserve' as const, len: l })) },
      { weight: 3, arbitrary: fc.integer({ min: 1, max: 8 }).map((x) => ({ kind: 'drain' as const, max: x === 8 ? Number.MAX_SAFE_INTEGER : x })) },
      { weight: 1, arbitrary: fc.constant({ kind: 'receive' as const }) },
    )
    // any 8-aligned int32 start, with the wrap points weighted in
    const start = fc.oneof(
      fc.integer({ min: -(2 ** 28), max: 2 ** 28 - 1 }).map((x) => x * 8),
      fc.constantFrom(0, -8, -4096, 0x7ffff000, -0x80000000),
    )
    fc.assert(
      fc.property(capacity, start, fc.array(op, { minLength: 1, maxLength: 300, size: 'max' }), (cap, s, ops) => run(cap, s, ops)),
      { seed, numRuns: 300 },
    )
  })
})
