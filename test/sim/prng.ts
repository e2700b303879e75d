// A small seeded PRNG (sfc32) for the deterministic simulation: every random choice of a schedule
// comes from one Prng seeded with the schedule's seed, so a failing schedule replays exactly.

export class Prng {
  private a: number
  private b: number
  private c: number
  private d: number

  constructor(seed: number) {
    this.a = 0x9e3779b9
    this.b = 0x243f6a88
    this.c = 0xb7e15162
    this.d = seed >>> 0
    for (let i = 0; i < 12; i++) this.next()
  }

  /** Uniform 32-bit unsigned integer. */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0
    this.d = (this.d + 1) | 0
    this.a = this.b ^ (this.b >>> 9)
    this.b = (this.c + (this.c << 3)) | 0
    this.c = (this.c << 21) | (this.c >>> 11)
    this.c = (this.c + t) | 0
    return t >>> 0
  }

  /** Integer in [lo, hi] inclusive. */
  int(lo: number, hi: number): number {
    return lo + (this.next() % (hi - lo + 1))
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() / 0x100000000 < p
  }

  pick<T>(items: readonly T[]): T {
    return items[this.next() % items.length]
  }

  /** Index chosen with the given non-negative weights (at least one positive). */
  weighted(weights: readonly number[]): number {
    let total = 0
    for (const w of weights) total += w
    let r = (this.next() / 0x100000000) * total
    for (let i = 0; i < weights.length; i++) {
      r -= weights[i]
      if (r < 0 && weights[i] > 0) return i
    }
    for (let i = weights.length - 1; i >= 0; i--) if (weights[i] > 0) return i
    throw new Error('weighted(): no positive weight')
  }
}

/** A 32-bit mix of a few integers: content bytes derive from it, so nothing needs storing. */
export function mix(a: number, b: number, c = 0): number {
  let h = Math.imul(a ^ 0x85ebca6b, 0xcc9e2d51) ^ Math.imul(b + 0x27d4eb2f, 0x1b873593) ^ Math.imul(c + 0x165667b1, 0x9e3779b1)
  h ^= h >>> 15
  h = Math.imul(h, 0x2c1b3c6d)
  h ^= h >>> 12
  return h >>> 0
}
