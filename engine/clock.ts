// The injected clock. Engine code never calls setTimeout directly: it creates named Timer
// objects on a Clock, so tests and the deterministic simulation drive time by hand
// (ManualClock.advance) and replay exactly.

export interface TimerHandle {
  cancel(): void
}

export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number
  schedule(delayMs: number, fn: () => void): TimerHandle
}

/** Wall-clock implementation on the host runtime's timers. Timers are unref'd: they never keep a thread alive. */
export const systemClock: Clock = {
  now: () => performance.now(),
  schedule(delayMs, fn) {
    const t = setTimeout(fn, delayMs)
    ;(t as { unref?: () => void }).unref?.()
    return { cancel: () => clearTimeout(t) }
  },
}

/** A named one-shot timer: `start` (re)arms it, `stop` disarms it, `running` says which. */
export class Timer {
  readonly name: string
  private handle: TimerHandle | null = null
  private readonly clock: Clock
  private readonly onFire: () => void

  constructor(clock: Clock, name: string, onFire: () => void) {
    this.clock = clock
    this.name = name
    this.onFire = onFire
  }

  get running(): boolean {
    return this.handle !== null
  }

  start(delayMs: number): void {
    this.stop()
    this.handle = this.clock.schedule(delayMs, () => {
      this.handle = null
      this.onFire()
    })
  }

  stop(): void {
    if (this.handle) {
      this.handle.cancel()
      this.handle = null
    }
  }
}

interface Pending {
  at: number
  order: number
  fn: () => void
  cancelled: boolean
}

/** A clock that moves only when told. Timers due at the same instant fire in scheduling order. */
export class ManualClock implements Clock {
  private t = 0
  private order = 0
  private pending: Pending[] = []

  now(): number {
    return this.t
  }

  schedule(delayMs: number, fn: () => void): TimerHandle {
    const p: Pending = { at: this.t + Math.max(0, delayMs), order: this.order++, fn, cancelled: false }
    this.pending.push(p)
    return {
      cancel: () => {
        p.cancelled = true
      },
    }
  }

  /** Time of the next live timer, or null. */
  nextAt(): number | null {
    let best: Pending | null = null
    for (const p of this.pending) if (!p.cancelled && (!best || p.at < best.at || (p.at === best.at && p.order < best.order))) best = p
    return best ? best.at : null
  }

  /** Moves time forward by `ms`, firing every timer that falls due, in order. */
  advance(ms: number): void {
    const until = this.t + ms
    for (;;) {
      this.pending = this.pending.filter((p) => !p.cancelled)
      let next: Pending | null = null
      for (const p of this.pending) if (p.at <= until && (!next || p.at < next.at || (p.at === next.at && p.order < next.order))) next = p
      if (!next) break
      this.t = Math.max(this.t, next.at)
      next.cancelled = true
      next.fn()
    }
    this.t = until
  }
}
