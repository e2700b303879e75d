// OutQueue: one connection's records between the primary and the transport, in the chassis: those
// held for the secondary's ack and those released but not yet written. Each record is copied once,
// out of the ring frame it came in, into 64 KiB slabs; no object is made per record (a record is
// five array slots). On a stream connection, released records that lie back to back in a slab
// leave as one transport write (a run), as the bytes of many writes leave a TCP socket in one
// segment: the transport, the peer and the credit path then do their work per run, not per record.
// A datagram connection's records leave one by one, each with its address.
//
// Copy alignment: a record's bytes sit 8-aligned in the ring (sink.ts), and copies whose source
// and target offsets differ mod 8 are several times slower. A record of at least ALIGN_FROM bytes
// therefore starts 8-aligned in its slab, which ends the run before it when the previous record's
// length was not a multiple of 8; a shorter one is packed right after the previous one.
//
// Slab recycling: a queue given a SlabPool (its transport keeps nothing once a write's `done` has
// run: TCP and UDP over node) counts, per slab, the records queued in it and the runs in flight
// from it; a slab no longer appended to whose count falls to 0 goes back to the pool, and the next
// slab comes from there. Each fresh slab is 64 KiB of ArrayBuffer memory outside V8's heap, and at
// the echo's rates their allocation (with node:net's read buffers) had the host thread in a full
// GC about every 80 ms. Without a pool (the in-memory transport: its peer may keep what it got)
// slabs are only ever dropped.

import { seqLe } from '../protocol/header.ts'
import { copyBytes, type Addr } from '../socket/records.ts'

const SLAB_BYTES = 64 * 1024
/** Records from this size start 8-aligned (a run break); shorter ones pack (a misaligned copy is cheap). */
const ALIGN_FROM = 256
const NO_BYTES = new Uint8Array(0)

/** A slab and how many queued records and in-flight runs use it. */
export interface OutSlab {
  bytes: Uint8Array
  words: Int32Array
  refs: number
  /** From a pool and back to it when done with (false: a large record's own copy). */
  pooled: boolean
}

const NO_SLAB: OutSlab = { bytes: NO_BYTES, words: new Int32Array(0), refs: 0, pooled: false }

function newSlab(): OutSlab {
  const bytes = new Uint8Array(SLAB_BYTES)
  return { bytes, words: new Int32Array(bytes.buffer), refs: 0, pooled: false }
}

/** Spare 64 KiB slabs, shared by the queues of one chassis (bounded). */
export class SlabPool {
  private readonly free: OutSlab[] = []
  /** Slabs handed out again instead of allocated. */
  reused = 0
  private readonly max: number

  constructor(max = 64) {
    this.max = max
  }

  take(): OutSlab {
    const spare = this.free.pop()
    if (spare) {
      this.reused++
      return spare
    }
    const s = newSlab()
    s.pooled = true
    return s
  }

  give(s: OutSlab): void {
    if (this.free.length < this.max) this.free.push(s)
  }
}

/** The run takeRun() handed out: valid until the next call on the queue. Pass it to done() once written. */
export interface Run {
  data: Uint8Array
  addr: Addr | null
  first: number
  last: number
  count: number
  slab: OutSlab
}

export class OutQueue {
  /** Adjacent records leave as one write (stream); false: one write per record (datagrams). */
  readonly coalesce: boolean
  // Per record, from `head` on: sequence number, slab, offset in it, length, address.
  private seqs: number[] = []
  private slabs: OutSlab[] = []
  private starts: number[] = []
  private lens: number[] = []
  private addrs: Array<Addr | null> = []
  private head = 0
  private slab = NO_SLAB
  private used = SLAB_BYTES
  private readonly pool: SlabPool | null
  /** Payload bytes queued. */
  bytes = 0
  readonly run: Run = { data: NO_BYTES, addr: null, first: 0, last: 0, count: 0, slab: NO_SLAB }

  constructor(coalesce: boolean, pool: SlabPool | null = null) {
    this.coalesce = coalesce
    this.pool = pool
  }

  get length(): number {
    return this.seqs.length - this.head
  }

  /** Copies record `seq`, bytes [start, end) of `src` (a ring frame read in place), to the tail. */
  push(seq: number, src: Uint8Array, start: number, end: number, addr: Addr | null): void {
    const n = end - start
    let slab: OutSlab
    let at: number
    if (n > SLAB_BYTES / 4) {
      slab = { bytes: src.slice(start, end), words: NO_SLAB.words, refs: 0, pooled: false }
      at = 0
    } else {
      at = n >= ALIGN_FROM ? (this.used + 7) & ~7 : this.used
      if (at + n > SLAB_BYTES) {
        const old = this.slab
        this.slab = this.pool ? this.pool.take() : newSlab()
        if (old.refs === 0) this.recycle(old)
        at = 0
      }
      slab = this.slab
      copyBytes(slab.bytes, slab.words, at, src, start, n)
      this.used = at + n
    }
    slab.refs++
    this.seqs.push(seq)
    this.slabs.push(slab)
    this.starts.push(at)
    this.lens.push(n)
    this.addrs.push(addr)
    this.bytes += n
  }

  /**
   * Takes the next run of records with sequence numbers up to `upTo` (the oldest queued first):
   * fills `run` and returns its record count, 0 when the oldest record is beyond `upTo` or none is
   * queued. With `each`, every record of the run is shown to it first (tests instrument here).
   */
  takeRun(upTo: number, each?: (seq: number, data: Uint8Array) => void): number {
    const seqs = this.seqs
    const end = seqs.length
    let i = this.head
    if (i === end || !seqLe(seqs[i], upTo)) return 0
    const slab = this.slabs[i]
    const from = this.starts[i]
    let to = from + this.lens[i]
    let k = i + 1
    if (this.coalesce) {
      while (k < end && this.slabs[k] === slab && this.starts[k] === to && seqLe(seqs[k], upTo)) to += this.lens[k++]
    }
    const run = this.run
    run.data = slab.bytes.subarray(from, to)
    run.addr = this.addrs[i]
    run.first = seqs[i]
    run.last = seqs[k - 1]
    run.count = k - i
    run.slab = slab
    // The run in flight holds one reference for its records (done() drops it).
    slab.refs -= run.count - 1
    if (each) for (let j = i; j < k; j++) each(seqs[j], this.slabs[j].bytes.subarray(this.starts[j], this.starts[j] + this.lens[j]))
    for (; i < k; i++) {
      this.slabs[i] = NO_SLAB
      this.addrs[i] = null
    }
    this.head = k
    this.bytes -= to - from
    this.compact()
    return run.count
  }

  /** The transport is done with `slab`'s run (its write's `done` ran): the slab may be recycled. */
  done(slab: OutSlab): void {
    if (--slab.refs === 0 && slab !== this.slab) this.recycle(slab)
  }

  /** Drops every queued record; returns how many. */
  dropAll(): number {
    const n = this.length
    for (let i = this.head; i < this.seqs.length; i++) this.done(this.slabs[i])
    this.reset()
    return n
  }

  private recycle(slab: OutSlab): void {
    if (slab.pooled && this.pool) this.pool.give(slab)
  }

  private reset(): void {
    // Truncated: V8 drops the backing stores and the next frame's records grow new ones, young.
    // Reusing the stores from index 0 instead measured 5-8% more CPU per record in the 64 B bench
    // (interleaved runs): stores of young slabs into old arrays take the write barrier's slow path.
    this.seqs.length = 0
    this.slabs.length = 0
    this.starts.length = 0
    this.lens.length = 0
    this.addrs.length = 0
    this.head = 0
    this.bytes = 0
  }

  private compact(): void {
    const head = this.head
    if (head === this.seqs.length) return this.reset()
    if (head > 1024 && head * 2 > this.seqs.length) {
      this.seqs = this.seqs.slice(head)
      this.slabs = this.slabs.slice(head)
      this.starts = this.starts.slice(head)
      this.lens = this.lens.slice(head)
      this.addrs = this.addrs.slice(head)
      this.head = 0
    }
  }
}
