// RecordQueue: the bounded FIFO of records behind every sockbuf (send, receive, replication,
// snoop). Records keep their boundaries; each carries its sequence number and, for UDP, its
// address. Bytes are copied into 64 KiB slabs, so a write costs one copy and no per-record
// backing-store allocation; a slab is dropped when its last record leaves.

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
      this.slab = new Uint8Array(SLAB_BYTES)
      this.slabUsed = 0
    }
    const out = this.slab.subarray(this.slabUsed, this.slabUsed + n)
    out.set(data)
    this.slabUsed = (this.slabUsed + n + 7) & ~7
    return out
  }
}

/** Copies short-lived views (a ring frame read in place) into shared slabs, one copy each. */
export class Slab {
  private slab = NO_SLAB
  private used = SLAB_BYTES

  copy(data: Uint8Array): Uint8Array {
    const n = data.length
    if (n > SLAB_BYTES / 4) return data.slice()
    if (this.used + n > SLAB_BYTES) {
      this.slab = new Uint8Array(SLAB_BYTES)
      this.used = 0
    }
    const out = this.slab.subarray(this.used, this.used + n)
    out.set(data)
    this.used = (this.used + n + 7) & ~7
    return out
  }
}
