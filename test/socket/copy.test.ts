// copyBytes() and Slab.copy() (engine/socket/records.ts): every record comes out byte-exact, whatever
// path the copy takes (words for short aligned records, set() or bytes otherwise), from a shared
// source and a plain one, and a source that changes between calls is never read through a stale view.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { Slab, copyBytes } from '../../engine/socket/records.ts'

function pattern(buf: Uint8Array, seed: number): void {
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 131 + seed * 7 + (i >>> 8)) & 0xff
}

describe('copyBytes', () => {
  it('copies exactly the range asked, on every path', () => {
    // A ring's data region (shared, line-aligned), a plain buffer, and a view whose words would be misaligned.
    const sources = [new Uint8Array(new SharedArrayBuffer(4096), 128), new Uint8Array(4096), new Uint8Array(new ArrayBuffer(4096), 2, 4000)]
    sources.forEach(pattern)
    fc.assert(
      fc.property(fc.nat(2), fc.integer({ min: 0, max: 1024 }), fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 1024 }), (which, start, n, at) => {
        const src = sources[which]
        const dst = new Uint8Array(2048).fill(0xee)
        copyBytes(dst, new Int32Array(dst.buffer), at, src, start, n)
        expect(Buffer.compare(dst.subarray(at, at + n), src.subarray(start, start + n))).toBe(0)
        // Nothing around the range is touched.
        expect(dst.subarray(0, at).every((b) => b === 0xee)).toBe(true)
        expect(dst.subarray(at + n).every((b) => b === 0xee)).toBe(true)
      }),
      { numRuns: 500 },
    )
  })

  it('reads a new source through its own words, not the previous one', () => {
    const a = new Uint8Array(256).fill(1)
    const b = new Uint8Array(256).fill(2)
    const dst = new Uint8Array(64)
    const dst32 = new Int32Array(dst.buffer)
    copyBytes(dst, dst32, 0, a, 0, 64)
    expect(dst.every((x) => x === 1)).toBe(true)
    copyBytes(dst, dst32, 0, b, 0, 64)
    expect(dst.every((x) => x === 2)).toBe(true)
  })
})

describe('Slab', () => {
  it('hands out private copies: the source may be overwritten at once', () => {
    const src = new Uint8Array(new SharedArrayBuffer(1 << 16))
    const slab = new Slab()
    const got: Array<[Uint8Array, Uint8Array]> = []
    for (let i = 0, at = 0; i < 400; i++) {
      const n = [1, 3, 4, 24, 64, 100, 128, 129, 1000, 20_000][i % 10]
      if (at + n > src.length) at = 0
      pattern(src.subarray(at, at + n), i)
      const want = src.slice(at, at + n)
      got.push([slab.copy(src, at, at + n), want])
      src.fill(0, at, at + n) // the ring slot is reused
      at = (at + n + 7) & ~7
    }
    expect(got.filter(([copy, want]) => Buffer.compare(copy, want) !== 0)).toEqual([])
  })
})
