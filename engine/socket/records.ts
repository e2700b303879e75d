// RecordQueue: the bounded FIFO of records behind every sockbuf (send, receive, replication,
// snoop). Records keep their boundaries; each carries its sequence number and, for UDP, its
// address. Bytes are copied into 64 KiB slabs, so a write costs one copy and no per-record
// backing-store allocation; a slab is dropped when its last record leaves.

import { Buffer } from 'node:buffer'

export interface Addr {
  address: string
  port: number
}

export interface QueuedRecord {
  seq: number
  data: Uint8Array
  addr: Addr | null
}

const SLAB_BYTES = 64 * 1024
const NO_SLAB = new Uint8Array(0)

/**
 * A slab left unzeroed: every byte a record exposes is copied in before the record exists, and
 * zeroing 64 KiB per slab showed in profiles of the echo (memset, 1-1.5% of each RE's samples).
 */
function freshSlab(): Uint8Array<ArrayBuffer> {
  const b = Buffer.allocUnsafeSlow(SLAB_BYTES)
  return new Uint8Array(b.buffer as ArrayBuffer, b.byteOffset, SLAB_BYTES)
}

export class RecordQueue {
  private items: QueuedRecord[] = []
  private head = 0
  // The first slab is allocated by the first copy: most queues (snoop, retained) never copy, and
  // a socket has several queues.
  private slab = NO_SLAB
  private slabUsed = SLAB_BYTES
  /** Payload bytes queued. */
  bytes = 0

  get length(): number {
    return this.items.length - this.head
  }

  /** Copies `data` in and queues it. The caller has checked limits. */
  push(seq: number, data: Uint8Array, addr: Addr | null = null): QueuedRecord {
    const rec: QueuedRecord = { seq, data: this.copy(data), addr }
    this.items.push(rec)
    this.bytes += data.length
    return rec
  }

  /** Queues a record whose bytes the queue may keep as they are (already a private copy). */
  pushOwned(seq: number, data: Uint8Array, addr: Addr | null = null): QueuedRecord {
    const rec: QueuedRecord = { seq, data, addr }
    this.items.push(rec)
    this.bytes += data.length
    return rec
  }

  /** Puts a record back at the front (a reader that could not use it yet). */
  unshiftOwned(seq: number, data: Uint8Array, addr: Addr | null = null): QueuedRecord {
    const rec: QueuedRecord = { seq, data, addr }
    if (this.head > 0) this.items[--this.head] = rec
    else this.items.unshift(rec)
    this.bytes += data.length
    return rec
  }

  peek(): QueuedRecord | undefined {
    return this.items[this.head]
  }

  /** The i-th queued record from the front. */
  at(i: number): QueuedRecord | undefined {
    return this.items[this.head + i]
  }

  shift(): QueuedRecord | undefined {
    const rec = this.items[this.head]
    if (!rec) return undefined
    this.items[this.head++] = undefined as unknown as QueuedRecord
    this.bytes -= rec.data.length
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return rec
  }

  clear(): void {
    this.items = []
    this.head = 0
    this.bytes = 0
  }

  *[Symbol.iterator](): IterableIterator<QueuedRecord> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i]
  }

  private copy(data: Uint8Array): Uint8Array {
    const n = data.length
    if (n > SLAB_BYTES / 4) return data.slice()
    if (this.slabUsed + n > SLAB_BYTES) {
      this.slab = freshSlab()
      this.slabUsed = 0
    }
    const out = this.slab.subarray(this.slabUsed, this.slabUsed + n)
    out.set(data)
    this.slabUsed = (this.slabUsed + n + 7) & ~7
    return out
  }
}

/** Copies records out of ring frames read in place into shared slabs, one copy each. */
export class Slab {
  private slab = NO_SLAB
  private slab32 = NO_WORDS
  private used = SLAB_BYTES

  /** A copy of src[start, end) (src: a ring's whole data region, so that copyBytes() can read it in words). */
  copy(src: Uint8Array, start: number, end: number): Uint8Array {
    const n = end - start
    if (n > SLAB_BYTES / 4) return src.slice(start, end)
    if (this.used + n > SLAB_BYTES) {
      this.slab = freshSlab()
      this.slab32 = new Int32Array(this.slab.buffer, this.slab.byteOffset, SLAB_BYTES >> 2)
      this.used = 0
    }
    const at = this.used
    copyBytes(this.slab, this.slab32, at, src, start, n)
    this.used = (at + n + 7) & ~7
    return this.slab.subarray(at, at + n)
  }
}

const NO_WORDS = new Int32Array(0)
/** Records up to this size are copied word by word when they can be (copyBytes). */
const WORD_COPY_MAX_BYTES = 128
// The word view of the last source copyBytes() read: sources are a ring's data region, the same
// object frame after frame, so one entry is enough and no view is made per record.
let lastSrc: Uint8Array | null = null
let lastSrc32: Int32Array<ArrayBufferLike> = NO_WORDS

/**
 * Copies src[start, start + n) to dst at `at` (dst32: dst's words, dst at offset 0 of its buffer).
 * A short record whose offsets are 4-aligned goes word by word: setting a view of it cost a view
 * and a call that weigh more than the copy (a 64 B record out of a ring written by another thread:
 * 77-120 ns with subarray() and set(), 40-64 ns in words, two threads measured). Larger ones, and
 * misaligned ones, go through set() (a few bytes: by hand).
 */
export function copyBytes(dst: Uint8Array, dst32: Int32Array, at: number, src: Uint8Array, start: number, n: number): void {
  if (n <= WORD_COPY_MAX_BYTES && ((at | start) & 3) === 0) {
    let s32 = lastSrc32
    if (src !== lastSrc && (src.byteOffset & 3) === 0) {
      s32 = lastSrc32 = new Int32Array(src.buffer, src.byteOffset, src.length >> 2)
      lastSrc = src
    }
    if (src === lastSrc) {
      const w = n >> 2
      const d = at >> 2
      const s = start >> 2
      for (let k = 0; k < w; k++) dst32[d + k] = s32[s + k]
      for (let k = w << 2; k < n; k++) dst[at + k] = src[start + k]
      return
    }
  }
  if (n <= 24) for (let i = 0; i < n; i++) dst[at + i] = src[start + i]
  else dst.set(src.subarray(start, start + n), at)
}
