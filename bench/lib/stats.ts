// Sample statistics for benchmarks: percentiles over latency samples, rates, and rounding that
// keeps results.json readable.

export interface Summary {
  count: number
  min: number
  p50: number
  p90: number
  p99: number
  max: number
  mean: number
}

/** Percentile (0..100) of an ascending array, by nearest rank. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]
}

/** Sorts a copy of `samples` and summarizes it. */
export function summarize(samples: ArrayLike<number>): Summary {
  const sorted = Float64Array.from(samples as ArrayLike<number>).sort()
  let sum = 0
  for (let i = 0; i < sorted.length; i++) sum += sorted[i]
  return {
    count: sorted.length,
    min: sorted[0],
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1],
    mean: sorted.length ? sum / sorted.length : Number.NaN,
  }
}

/** Rounds to `digits` significant digits (figures are noisy; more digits only mislead). */
export function sig(x: number, digits = 4): number {
  if (!Number.isFinite(x) || x === 0) return x
  return Number(x.toPrecision(digits))
}

/** Absolute time in milliseconds, comparable across the threads of one process. */
export function absNow(): number {
  return performance.timeOrigin + performance.now()
}

/** Human form of a rate: 1.23M/s. */
export function fmtRate(perS: number, unit = '/s'): string {
  if (perS >= 1e9) return `${(perS / 1e9).toFixed(2)}G${unit}`
  if (perS >= 1e6) return `${(perS / 1e6).toFixed(2)}M${unit}`
  if (perS >= 1e3) return `${(perS / 1e3).toFixed(1)}k${unit}`
  return `${perS.toFixed(1)}${unit}`
}
