// KSyncClient's request pipeline: where each entry's outstanding request is (KSyncPending), and
// the machinery behind it. Entries wait in a FIFO queue, one slot per entry; flush() turns them
// into requests, at most `maxInFlight` in flight and `maxBatch` per send; replies are matched by
// request id; a transient refusal waits for the retry timer; a next hop delete refused during a
// re-sync is parked until the audit ends. What a request carries, and what happens to an entry
// when its request comes back, is the state machine's (client.ts): the outbox only moves entries
// between these places and counts them.
//
// Rules it keeps:
// - Bounds: at most `maxInFlight` requests in flight, `maxBatch` per send; the rest queue, one
//   slot per entry (a stale slot, whose entry is no longer QUEUED, is skipped).
// - setPending() is the one place an entry's pending changes, and keeps the per-kind counts.
// - Fenced: nothing more is sent, even in the middle of a flush (send may re-enter onAck), and
//   the retry timer stops.

import { Timer, type Clock } from '../clock.ts'
import { assert } from '../errors.ts'
import { Fifo, KSyncPending, present, type Entry } from './entry.ts'
import { KSyncState } from './state.ts'
import type { KSyncCounters } from './stats.ts'
import { KSyncOp, NO_NEXT_HOP, type KSyncData, type KSyncRequest } from './wire.ts'

const S = KSyncState
const P = KSyncPending

export interface OutboxOptions {
  send: (batch: KSyncRequest[]) => void
  schedule: ((flush: () => void) => void) | undefined
  epoch: number
  maxInFlight: number
  maxBatch: number
  retryDelayMs: number
  clock: Clock
}

/** What the outbox asks of the state machine when the retry timer fires. */
export interface OutboxHooks {
  /** An entry the retry timer let go of (now pending NONE): re-evaluate and re-queue it. */
  retry(e: Entry): void
  /** After a retry round: re-evaluate what it woke, then flush. */
  retried(): void
}

export class Outbox {
  readonly maxInFlight: number
  private readonly sendFn: (batch: KSyncRequest[]) => void
  private readonly scheduleFn: ((flush: () => void) => void) | undefined
  private readonly epoch: number
  private readonly maxBatch: number
  private readonly retryDelayMs: number
  private readonly s: KSyncCounters
  private readonly hooks: OutboxHooks
  private readonly queue = new Fifo<Entry>()
  private readonly inflight = new Map<number, Entry>()
  private retryList: Entry[] = []
  private parkedList: Entry[] = []
  private readonly retryTimer: Timer
  private nextId = 1
  private inFlightCount = 0
  private queuedCount = 0
  private retryCount = 0
  private parkedCount = 0
  private isFenced = false
  private flushScheduled = false
  private flushing = false
  private flushAgain = false

  constructor(options: OutboxOptions, counters: KSyncCounters, hooks: OutboxHooks) {
    this.sendFn = options.send
    this.scheduleFn = options.schedule
    this.epoch = options.epoch
    this.maxInFlight = options.maxInFlight
    this.maxBatch = options.maxBatch
    this.retryDelayMs = options.retryDelayMs
    this.s = counters
    this.hooks = hooks
    this.retryTimer = new Timer(options.clock, 'retryTimer', () => this.onRetryTimer())
  }

  get fenced(): boolean {
    return this.isFenced
  }

  get inFlight(): number {
    return this.inFlightCount
  }

  get queued(): number {
    return this.queuedCount
  }

  get retrying(): number {
    return this.retryCount
  }

  get parked(): number {
    return this.parkedCount
  }

  /** Sends what is queued, up to the in-flight limit, in batches of maxBatch. Returns requests sent. */
  flush(): number {
    if (this.isFenced) return 0
    if (this.flushing) {
      this.flushAgain = true
      return 0
    }
    this.flushing = true
    let sent = 0
    try {
      do {
        this.flushAgain = false
        let batch: KSyncRequest[] = []
        while (this.inFlightCount < this.maxInFlight && this.queue.length > 0 && !this.isFenced) {
          const e = this.queue.shift()!
          e.inQueue = false
          this.s.queuePops++
          if (e.pending !== P.QUEUED) continue
          batch.push(this.request(e))
          sent++
          if (batch.length === this.maxBatch) {
            this.emit(batch)
            batch = []
          }
        }
        if (batch.length > 0) this.emit(batch)
      } while (this.flushAgain && !this.isFenced)
    } finally {
      this.flushing = false
    }
    return sent
  }

  /** Queues the entry's request (add/change in SYNC_WAIT, else a delete) for an in-flight slot. */
  enqueue(e: Entry): void {
    this.setPending(e, P.QUEUED)
    if (!e.inQueue) {
      e.inQueue = true
      this.queue.push(e)
    }
    this.scheduleFlush()
  }

  scheduleFlush(): void {
    if (this.scheduleFn === undefined || this.flushScheduled || this.queuedCount === 0) return
    this.flushScheduled = true
    this.scheduleFn(() => {
      this.flushScheduled = false
      this.flush()
    })
  }

  /** The entry whose request has this id, taken out of the in-flight map; undefined if none. */
  takeInFlight(id: number): Entry | undefined {
    const e = this.inflight.get(id)
    if (e !== undefined) this.inflight.delete(id)
    return e
  }

  /** The one place an entry's pending changes. */
  setPending(e: Entry, p: KSyncPending): void {
    const was = e.pending
    if (was === p) return
    if (was === P.QUEUED) this.queuedCount--
    else if (was === P.INFLIGHT) this.inFlightCount--
    else if (was === P.RETRY) this.retryCount--
    else if (was === P.PARKED) this.parkedCount--
    if (p === P.QUEUED) this.queuedCount++
    else if (p === P.INFLIGHT) {
      this.inFlightCount++
      if (this.inFlightCount > this.s.inFlightHighWater) this.s.inFlightHighWater = this.inFlightCount
    } else if (p === P.RETRY) this.retryCount++
    else if (p === P.PARKED) this.parkedCount++
    e.pending = p
  }

  scheduleRetry(e: Entry): void {
    this.setPending(e, P.RETRY)
    if (!e.inRetry) {
      e.inRetry = true
      this.retryList.push(e)
    }
    if (!this.retryTimer.running) this.retryTimer.start(this.retryDelayMs)
  }

  /** Sets a next hop delete aside until releaseParked() (the audit's end). */
  park(e: Entry): void {
    this.setPending(e, P.PARKED)
    this.parkedList.push(e)
  }

  /** Queues every delete still parked. */
  releaseParked(): void {
    const parked = this.parkedList
    this.parkedList = []
    for (const e of parked) if (e.pending === P.PARKED) this.enqueue(e)
  }

  /** Nothing more goes out; the retry timer stops. */
  fence(): void {
    this.isFenced = true
    this.retryTimer.stop()
  }

  // ---- looking in (KSyncClient.invariants()) -----------------------------------------------

  /** True if the entry's request is the one filed under its id. */
  holdsInFlight(e: Entry): boolean {
    return this.inflight.get(e.reqId) === e
  }

  /** Checks the counts against a recount of the entries' pending (from KSyncClient.invariants()). */
  invariants(inflight: number, queued: number, retry: number, parked: number): void {
    assert(inflight === this.inFlightCount && inflight === this.inflight.size, `in flight ${this.inFlightCount} = ${inflight}`)
    assert(inflight <= this.maxInFlight, 'in flight within maxInFlight')
    assert(queued === this.queuedCount && retry === this.retryCount && parked === this.parkedCount, 'queued, retry and parked counts')
  }

  // ---- inside ------------------------------------------------------------------------------

  /** retryTimer: hands back everything a transient refusal set aside, to be re-evaluated and re-sent. */
  private onRetryTimer(): void {
    if (this.isFenced) return
    const list = this.retryList
    this.retryList = []
    for (const e of list) {
      e.inRetry = false
      if (e.pending !== P.RETRY) continue
      this.setPending(e, P.NONE)
      this.s.retries++
      this.hooks.retry(e)
    }
    this.hooks.retried()
  }

  private request(e: Entry): KSyncRequest {
    const id = this.nextId
    this.nextId = this.nextId === 0xffffffff ? 1 : this.nextId + 1
    assert(!this.inflight.has(id), 'request ids do not wrap onto one in flight')
    let op: KSyncOp
    let nh = NO_NEXT_HOP
    let data: KSyncData = null
    if (e.state === S.SYNC_WAIT) {
      const c = e.sent!
      op = e.fib === null ? KSyncOp.ADD : KSyncOp.CHANGE
      data = c.data
      if (c.nh !== null) {
        assert(present(c.nh) && c.nh.index >= 0, 'a route is sent against a next hop in the Fib')
        nh = c.nh.index
      }
      if (e.index < 0) {
        assert(op === KSyncOp.ADD && !e.probed, 'only an add that asks the Fib for its index goes without one')
        e.probed = true
        this.s.learns++
      }
    } else {
      assert(e.state === S.DEL_ACK_WAIT || e.state === S.RENEW_WAIT, `queued in ${e.state}`)
      op = KSyncOp.DELETE
    }
    if (op === KSyncOp.ADD) this.s.adds++
    else if (op === KSyncOp.CHANGE) this.s.changes++
    else this.s.deletes++
    e.reqId = id
    e.reqOp = op
    e.reqIndex = e.index
    this.setPending(e, P.INFLIGHT)
    this.inflight.set(id, e)
    return { id, epoch: this.epoch, op, kind: e.kind, index: e.index, key: e.key, nh, data }
  }

  private emit(batch: KSyncRequest[]): void {
    this.s.batches++
    this.s.requests += batch.length
    this.sendFn(batch)
  }
}
