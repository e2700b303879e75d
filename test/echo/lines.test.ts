// The echo protocol's rules (examples/echo/lines.ts): what a reply's length says about the bytes it
// answered is exactly what the primary consumed, whatever the line lengths (long lines come back in
// pieces) and wherever the stream is split; and reply() / replyNumber() round-trip.

import { describe, expect, it } from 'vitest'
import { MAX_LINE_BYTES, consumedBy, digits, lineEnd, lineNext, reply, replyBytes, replyInto, replyNumber } from '../../examples/echo/lines.ts'
import { prng } from './harness.ts'

/** The primary's loop over a stream delivered in `chunks`: replies, and bytes consumed. */
function answer(chunks: Uint8Array[]): { replies: Uint8Array[]; consumed: number } {
  let data = new Uint8Array(0)
  let consumed = 0
  const replies: Uint8Array[] = []
  for (const c of chunks) {
    const joined = new Uint8Array(data.length + c.length)
    joined.set(data)
    joined.set(c, data.length)
    data = joined
    let start = 0
    for (let end = lineEnd(data, start); end >= 0; end = lineEnd(data, start)) {
      replies.push(reply(replies.length + 1, data, start, end).slice())
      start = lineNext(start, end)
    }
    consumed += start
    data = data.subarray(start)
  }
  return { replies, consumed }
}

describe('echo lines', () => {
  it('digits, reply and replyNumber agree', () => {
    for (let n = 1; n < 2 ** 53; n = n * 10) for (const m of [n - 1, n, n + 1, 2 * n - 1]) if (m > 0) expect(digits(m), String(m)).toBe(String(m).length)
    for (const n of [1, 9, 10, 99, 100, 12345, 2 ** 32 - 1]) {
      expect(digits(n)).toBe(String(n).length)
      const r = reply(n, new TextEncoder().encode('x y'))
      expect(new TextDecoder().decode(r)).toBe(`${n} x y\n`)
      expect(replyNumber(r)).toBe(n)
    }
    expect(replyNumber(new TextEncoder().encode('12x'))).toBe(-1)
    expect(replyNumber(new TextEncoder().encode(' 1'))).toBe(-1)
  })

  it('replyInto writes exactly replyBytes() bytes in place, the same as reply(), and nothing around them', () => {
    const src = new TextEncoder().encode('..a body of some length, longer than sixteen..')
    for (const n of [1, 10, 999, 123456]) {
      for (const [from, to] of [[2, 3], [2, 20], [0, src.length]]) {
        for (const newline of [true, false]) {
          const out = new Uint8Array(200).fill(0xee)
          const end = replyInto(out, 7, n, src, from, to, newline)
          expect(end - 7).toBe(replyBytes(n, to - from, newline))
          expect(out.subarray(7, end)).toEqual(reply(n, src, from, to, newline))
          expect(out[6]).toBe(0xee)
          expect(out[end]).toBe(0xee)
        }
      }
    }
  })

  it('a line of MAX_LINE_BYTES or more comes back in pieces of exactly MAX_LINE_BYTES', () => {
    const line = new Uint8Array(MAX_LINE_BYTES * 2 + 5).fill(0x61)
    const input = new Uint8Array(line.length + 1)
    input.set(line)
    input[line.length] = 0x0a
    const { replies, consumed } = answer([input])
    expect(replies.map((r) => r.length)).toEqual([MAX_LINE_BYTES + 3, MAX_LINE_BYTES + 3, 5 + 3])
    expect(consumed).toBe(input.length)
  })

  it('replies say exactly what was consumed, for random lines split at random places (seeded)', () => {
    const seed = Number(process.env.LINES_SEED ?? 12345)
    const rand = prng(seed)
    for (let round = 0; round < 50; round++) {
      const bytes: number[] = []
      const lines = 1 + Math.floor(rand() * 40)
      for (let i = 0; i < lines; i++) {
        const long = rand() < 0.1
        const len = long ? MAX_LINE_BYTES - 2 + Math.floor(rand() * (MAX_LINE_BYTES + 4)) : Math.floor(rand() * 50)
        for (let k = 0; k < len; k++) bytes.push(97 + (k % 26))
        if (rand() < 0.95) bytes.push(0x0a)
      }
      const stream = Uint8Array.from(bytes)
      const chunks: Uint8Array[] = []
      for (let at = 0; at < stream.length; ) {
        const n = 1 + Math.floor(rand() * 3000)
        chunks.push(stream.subarray(at, at + n))
        at += n
      }
      const { replies, consumed } = answer(chunks)
      let rebuilt = 0
      replies.forEach((r, i) => {
        expect(replyNumber(r)).toBe(i + 1)
        rebuilt += consumedBy(i + 1, r.length)
      })
      expect(rebuilt, `seed ${seed} round ${round}`).toBe(consumed)
    }
  })
})
