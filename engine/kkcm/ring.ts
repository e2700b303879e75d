// KKCM ring: a single-producer single-consumer queue of whole frames in a SharedArrayBuffer, the
// transport under every KKCM channel. One thread produces, one consumes; both build a Ring object
// over the same memory (Ring.create in one thread, Ring.attach in the other).
//
// Memory layout (all offsets from byteOffset, which must be 128-aligned inside the buffer):
//
//   control block, RING_CONTROL_BYTES, one 128-byte slot per word so that no two words written by
//   different threads share a cache line (128 rather than 64: adjacent-line prefetchers pair lines)
//     slot 0  META      magic, layout version, capacity          (written once, by format)
//     slot 1  HEAD      consumer position; framesOut (f64); DRAINING (word 4, halt())
//                                                                (written by the consumer)
//     slot 2  TAIL      producer position; framesIn (f64)        (written by the producer)
//     slot 3  PPARK     1 while the producer is parked in writable()
//     slot 4  CPARK     1 while the consumer is parked in readable()
//     slot 5  CLOSED    1 once either side closed; HALT (word 1): 1 once halt() stopped the consumer
//     slot 6  COUNTERS  full, parks, notifies, corrupt            (rare events, Atomics.add)
//     slot 7  COMMITTED producer position including unpublished frames (Atomics store per commit);
//             its second word COMMITTING: 1 while a task of the producer commits frames (fence())
//   data region, `capacity` bytes (a power of two)
//
// Frames: an 8-byte prefix (u32 payload length, u32 unused) then the payload, padded to 8, so every
// payload offset is 8-aligned (copies into a SAB at offsets that differ mod 8 are several times
// slower). A frame never straddles the end of the data region: when it would, the producer writes a
// WRAP marker (length 0xffffffff) in the leftover and starts the frame at offset 0, so a zero-copy
// reader always sees one contiguous slice. maxFrameBytes = capacity/2 - 8 guarantees that an empty
// ring always accepts the largest frame (the skipped leftover is smaller than the frame).
//
// Positions are free-running int32 counters (wrapping at 2^32); used bytes = (tail - head) | 0.
//
// Publication, batched by bytes: commit() advances a private tail; the shared TAIL word is stored
// when the unpublished bytes reach publishBatchBytes, and in any case before this thread can
// observe or wait on a ring: at the end of the current task (one queued microtask per burst), and
// first thing in drain(), receive(), isEmpty(), freeBytes(), readable(), writable(),
// waitReadableSync(), close(), stats(), and on FULL. So within a thread a committed frame is
// visible at once (single-thread code sees per-frame semantics), and across threads no later than
// the producer's next ring call or the end of its current task. Call flushRings() before signalling
// a peer by another route (postMessage) in the same task, or before blocking in foreign code.
// Why: on Node 20 every Atomics.load/store is a ~10-15 ns call (Bun and Deno inline them), and a
// store per frame also drags the TAIL line to the consumer's core per frame. bench/kkcm measures
// both side by side (kkcm.ring_batched_vs_per_frame.64 / .1024): batching is about 2x at 64-byte
// frames and 1.1-1.8x at 1 KiB on the 2-core machine; 16 KiB frames are one publish each anyway.
// Bytes, not frames: a publish costs the same whatever it releases, so a frame count would publish
// 16 KiB frames too rarely and 64-byte frames too often. publishBatchBytes: 0 restores per-frame.
// Crash durability is kept: commit() also stores the committed position in COMMITTED (an Atomics
// store on a line only the producer writes, once per frame, and a batch frame carries many
// records), so when a producer thread dies mid-batch its committed frames are still in shared
// memory, and the consumer adopts them with recoverCommitted() before draining a dead writer's ring.
// Being a release, it also makes every byte of those frames visible to a consumer that loads it
// while the producer still runs (see halt()). The consumer publishes its head once per drain() call.
//
// Fencing a live producer that is being terminated (the chassis retiring a hung or killed RE):
// termination reaches a thread at its next interrupt check, and tearing the thread down takes 10 ms
// more; waiting for its exit before draining its rings was most of a killed primary's takeover as
// a client saw it. fence() lets the consumer stop it sooner: it closes the ring, then reads
// COMMITTING, which the producer sets (Atomics) before the first commit of a task, re-checking
// CLOSED right after, and clears once the task's frames are committed (the end-of-task flush).
// Dekker's rule: either the producer sees CLOSED and commits nothing more, or the consumer sees
// COMMITTING and waits (fenced() polls) for the task to end. Once fenced, COMMITTED is final: recoverCommitted()
// and drain() then take exactly what the producer will ever have committed. Cost: two Atomics
// stores and a load per ring per task that commits, not per frame.
//
// A producer stopped mid-task cannot be fenced until its thread ends (20-60 ms of teardown). For
// the SDRL's case there is another way (halt()): what matters is that the secondary never holds a
// frame telling it the chassis has a record the chassis lacks. So the consumer is stopped instead:
// halt() closes the ring to its reader from a third thread. drain() announces itself (DRAINING,
// Atomics) and re-checks HALT before taking a frame, and clears DRAINING once done: Dekker's rule
// again, so once halt holds the consumer has taken its last frame, and whatever it took was
// published before. The chassis then loads the producer's other ring's COMMITTED: a release by the
// producer before that publish, so it covers (and shows) every frame committed ahead of the ones
// the consumer took. Cost: two Atomics stores and a load per drain() that finds frames.
//
// Waiting: a side that finds nothing to do spins for a bounded few microseconds (two cores shared
// by three threads: long spins starve the peer; the budget adapts, see spin()), then parks: it stores 1 in its parked word,
// re-checks the index, and sleeps on that very word (Atomics.waitAsync, or Atomics.wait in
// waitReadableSync). The other side, after publishing, does: if parked == 1 then store 0 and notify.
// Sleeping on the word that announced the park closes the lost wake-up window. A pending waitAsync
// does not keep an event loop alive, so a referenced interval timer is held while parked.

import { NsrError, assert } from '../errors.ts'

export const RingResult = { OK: 0, FULL: -1, CLOSED: -2 } as const
export type RingResult = (typeof RingResult)[keyof typeof RingResult]

const SLOT_BYTES = 128
const SLOT_WORDS = SLOT_BYTES / 4
const META = 0
const HEAD = 1 * SLOT_WORDS
const TAIL = 2 * SLOT_WORDS
const PPARK = 3 * SLOT_WORDS
const CPARK = 4 * SLOT_WORDS
const CLOSED = 5 * SLOT_WORDS
const COUNTERS = 6 * SLOT_WORDS
const COMMITTED = 7 * SLOT_WORDS
const COMMITTING = COMMITTED + 1
const DRAINING = HEAD + 4 // words 2-3 hold framesOut
const HALT = CLOSED + 1
// inside META
const META_MAGIC = META
const META_VERSION = META + 1
const META_CAPACITY = META + 2
// inside COUNTERS
const C_FULL = COUNTERS
const C_PARKS = COUNTERS + 1
const C_NOTIFIES = COUNTERS + 2
const C_CORRUPT = COUNTERS + 3
// f64 counters sit 8 bytes into the HEAD and TAIL slots (index in a Float64Array)
const F_FRAMES_OUT = (HEAD * 4 + 8) / 8
const F_FRAMES_IN = (TAIL * 4 + 8) / 8

/** Bytes before the data region. A multiple of 128, so the data region stays line-aligned. */
export const RING_CONTROL_BYTES = 1024
assert(8 * SLOT_BYTES <= RING_CONTROL_BYTES, 'ring control block overflows')

const RING_MAGIC = 0x4b4b434d // 'KKCM'
const RING_LAYOUT_VERSION = 1
const PREFIX_BYTES = 8
const WRAP_MARKER = -1 // 0xffffffff as int32
export const RING_MIN_CAPACITY = 4096
export const RING_MAX_CAPACITY = 1 << 30
/** Default bounded spin before parking, in microseconds. */
export const RING_SPIN_US_DEFAULT = 10
/** Default unpublished bytes at which commit() stores the tail (smaller rings: capacity / 8). */
export const RING_PUBLISH_BATCH_BYTES_DEFAULT = 16384
/** Default least budget the adaptive spin falls to, in microseconds. */
export const RING_SPIN_FLOOR_US_DEFAULT = 1
/** Polls between clock reads while spinning (a clock read costs about as much as 20 polls). */
const SPIN_POLLS_PER_CLOCK_READ = 64
/** The interval that keeps an event loop alive while parked never fires in practice. */
const KEEPALIVE_INTERVAL_MS = 1 << 30

const RESOLVED: Promise<void> = Promise.resolve()
const noop = (): void => {}

// Rings of this thread holding committed but unpublished frames. Shared through a registry symbol
// so that two loaded copies of this module in one thread still flush each other's rings.
const UNPUBLISHED_KEY = Symbol.for('nsr-engine.kkcm.unpublished')
const registry = globalThis as {
  [UNPUBLISHED_KEY]?: { rings: Ring[]; microtaskQueued: boolean; open?: Ring[]; committing?: Ring[]; abandoned?: boolean }
}
const pending = (registry[UNPUBLISHED_KEY] ??= { rings: [], microtaskQueued: false, open: [], committing: [] })
pending.open ??= []
pending.committing ??= []

/**
 * Publishes every frame committed by this thread on any ring, after closing its open frames (see
 * holdOpen). Cheap when there is nothing to do.
 */
export function flushRings(): void {
  if (pending.open!.length !== 0) closeOpenFrames(Number.MAX_SAFE_INTEGER)
  const rings = pending.rings
  if (rings.length === 0) return
  pending.rings = []
  for (let i = 0; i < rings.length; i++) rings[i].flushQueued()
}

function onMicrotask(): void {
  pending.microtaskQueued = false
  flushRings()
  // Last, at the end of the task only (not at every publish): every frame of it is committed now
  // (see fence()). Ending it at each byte-batch publish cost 16 KiB frames two more Atomics each.
  const committing = pending.committing!
  if (committing.length === 0) return
  pending.committing = []
  for (let i = 0; i < committing.length; i++) committing[i].endCommitting()
}

/**
 * This thread is dying of an uncaught exception: whatever it would commit from now on is dropped
 * (an 'exit' listener cannot land a frame), and the COMMITTING marks of the task that threw end now,
 * which that task, cut short, would never do. A fence on its rings then holds at once, and the
 * chassis takes over without waiting for the thread's teardown (20 ms and more). Frames committed
 * before stay committed (recoverCommitted() adopts them); an open frame is lost whole, as when a
 * thread is terminated.
 */
export function abandonRings(): void {
  pending.abandoned = true
  const committing = pending.committing!
  pending.committing = []
  for (let i = 0; i < committing.length; i++) committing[i].endCommitting()
}

function queueFlush(): void {
  if (pending.microtaskQueued) return
  pending.microtaskQueued = true
  queueMicrotask(onMicrotask)
}

/** Closes this thread's open frames of rank <= maxRank, lowest rank first. */
function closeOpenFrames(maxRank: number): void {
  const open = pending.open!
  for (;;) {
    let next: Ring | null = null
    for (let i = 0; i < open.length; i++) if (open[i].openRank <= maxRank && (next === null || open[i].openRank < next.openRank)) next = open[i]
    if (next === null) return
    next.closeOpen()
  }
}

/** Total SharedArrayBuffer bytes for one ring: control block plus data. */
export function ringSabBytes(capacityBytes: number): number {
  checkCapacity(capacityBytes)
  return RING_CONTROL_BYTES + capacityBytes
}

function checkCapacity(capacityBytes: number): void {
  if (
    !Number.isInteger(capacityBytes) ||
    capacityBytes < RING_MIN_CAPACITY ||
    capacityBytes > RING_MAX_CAPACITY ||
    (capacityBytes & (capacityBytes - 1)) !== 0
  ) {
    throw new NsrError('EINVAL', `ring capacity must be a power of two in [${RING_MIN_CAPACITY}, 2^30], got ${capacityBytes}`)
  }
}

/** Bytes a frame of `len` payload bytes occupies in the data region. */
export function ringFrameBytes(len: number): number {
  return PREFIX_BYTES + ((len + 7) & ~7)
}

export interface RingStats {
  framesIn: number
  framesOut: number
  /** reserve() calls that returned FULL */
  full: number
  /** times a side parked (either side) */
  parks: number
  /** notifies sent to a parked side (either side) */
  notifies: number
  /** corrupt frame prefixes seen by the consumer (the ring is closed when one is seen) */
  corrupt: number
}

export interface RingOptions {
  /** Bounded spin before parking, in microseconds (default RING_SPIN_US_DEFAULT). 0 parks at once. */
  spinUs?: number
  /** Least budget the adaptive spin falls to (default RING_SPIN_FLOOR_US_DEFAULT); spinUs makes it fixed. */
  spinFloorUs?: number
  /**
   * Unpublished bytes at which commit() publishes the tail at once (default
   * min(RING_PUBLISH_BATCH_BYTES_DEFAULT, capacity / 8)); 0 publishes every frame.
   */
  publishBatchBytes?: number
}

export class Ring {
  readonly sab: SharedArrayBuffer
  readonly byteOffset: number
  readonly capacity: number
  readonly maxFrameBytes: number
  /** View of the data region; frame offsets index into it. */
  readonly bytes: Uint8Array
  /** Same region as `bytes`. */
  readonly view: DataView
  /** Bounded spin before parking, in microseconds (the adaptive budget's ceiling). */
  spinUs: number
  /** The adaptive budget's floor, in microseconds. */
  spinFloorUs: number
  /** Unpublished bytes at which commit() publishes the tail at once. */
  publishBatchBytes: number

  private spinBudgetUs: number
  private readonly ctl: Int32Array
  private readonly f64: Float64Array
  private readonly words: Int32Array
  private readonly mask: number

  // producer-local state
  private tail: number
  private publishedTail: number
  private queued = false // in pending.rings
  private committing = false // in pending.committing, COMMITTING set
  private cachedHead: number
  private pendingBytes = -1 // bytes the reserved frame advances the tail by (skip + frame), -1 when none
  private reservedAt = 0 // payload offset of the reserved frame
  private reservedLen = 0 // its payload bytes
  private openCloser: (() => void) | null = null
  /** @internal closeOpenFrames() only: the rank of this ring's open frame. */
  openRank = 0
  /** The last drain() stopped at its byte budget (more may be waiting). */
  drainCapped = false
  private framesIn: number
  private fullPending = false
  private headAtFull = 0
  private writeWait: Promise<void> | null = null

  // consumer-local state
  private head: number
  private framesOut: number
  private readWait: Promise<void> | null = null

  private constructor(sab: SharedArrayBuffer, byteOffset: number, capacity: number, opts: RingOptions) {
    this.sab = sab
    this.byteOffset = byteOffset
    this.capacity = capacity
    this.maxFrameBytes = capacity / 2 - PREFIX_BYTES
    this.mask = capacity - 1
    this.spinUs = opts.spinUs ?? RING_SPIN_US_DEFAULT
    this.spinFloorUs = opts.spinFloorUs ?? RING_SPIN_FLOOR_US_DEFAULT
    this.spinBudgetUs = this.spinUs
    this.publishBatchBytes = opts.publishBatchBytes ?? Math.min(RING_PUBLISH_BATCH_BYTES_DEFAULT, capacity / 8)
    const dataOffset = byteOffset + RING_CONTROL_BYTES
    this.ctl = new Int32Array(sab, byteOffset, RING_CONTROL_BYTES / 4)
    this.f64 = new Float64Array(sab, byteOffset, RING_CONTROL_BYTES / 8)
    this.bytes = new Uint8Array(sab, dataOffset, capacity)
    this.view = new DataView(sab, dataOffset, capacity)
    this.words = new Int32Array(sab, dataOffset, capacity / 4)
    this.tail = Atomics.load(this.ctl, TAIL)
    this.publishedTail = this.tail
    this.head = Atomics.load(this.ctl, HEAD)
    this.cachedHead = this.head
    this.framesIn = this.f64[F_FRAMES_IN]
    this.framesOut = this.f64[F_FRAMES_OUT]
  }

  /** Allocates a SharedArrayBuffer holding one ring of `capacityBytes` (a power of two >= 4096). */
  static create(capacityBytes: number, opts: RingOptions = {}): Ring {
    const sab = new SharedArrayBuffer(ringSabBytes(capacityBytes))
    return Ring.format(sab, 0, capacityBytes, opts)
  }

  /**
   * Lays out an empty ring at `byteOffset` of an existing buffer (which must have
   * ringSabBytes(capacityBytes) bytes from there) and returns it. `initialPosition` starts both
   * indices somewhere other than 0 (tests use it to cross the 2^32 wrap of the positions).
   */
  static format(
    sab: SharedArrayBuffer,
    byteOffset: number,
    capacityBytes: number,
    opts: RingOptions & { initialPosition?: number } = {},
  ): Ring {
    checkCapacity(capacityBytes)
    checkOffset(sab, byteOffset, capacityBytes)
    const ctl = new Int32Array(sab, byteOffset, RING_CONTROL_BYTES / 4)
    ctl.fill(0)
    const start = (opts.initialPosition ?? 0) | 0
    if ((start & 7) !== 0) throw new NsrError('EINVAL', 'ring initial position must be 8-aligned')
    ctl[META_VERSION] = RING_LAYOUT_VERSION
    ctl[META_CAPACITY] = capacityBytes
    ctl[HEAD] = start
    ctl[TAIL] = start
    ctl[COMMITTED] = start
    Atomics.store(ctl, META_MAGIC, RING_MAGIC) // last: attach() checks it
    return new Ring(sab, byteOffset, capacityBytes, opts)
  }

  /** Rebuilds a ring that format()/create() laid out, from the same memory, in any thread. */
  static attach(sab: SharedArrayBuffer, byteOffset = 0, opts: RingOptions = {}): Ring {
    if (!(sab instanceof SharedArrayBuffer)) throw new NsrError('EINVAL', 'Ring.attach needs a SharedArrayBuffer')
    if (byteOffset < 0 || byteOffset % SLOT_BYTES !== 0 || byteOffset + RING_CONTROL_BYTES > sab.byteLength) {
      throw new NsrError('EINVAL', `bad ring offset ${byteOffset}`)
    }
    const ctl = new Int32Array(sab, byteOffset, RING_CONTROL_BYTES / 4)
    if (Atomics.load(ctl, META_MAGIC) !== RING_MAGIC || ctl[META_VERSION] !== RING_LAYOUT_VERSION) {
      throw new NsrError('EINVAL', `no KKCM ring at offset ${byteOffset}`)
    }
    const capacity = ctl[META_CAPACITY]
    checkCapacity(capacity)
    checkOffset(sab, byteOffset, capacity)
    return new Ring(sab, byteOffset, capacity, opts)
  }

  // ---------------------------------------------------------------------------------------------
  // producer side

  /**
   * Reserves room for one frame of exactly `len` payload bytes. Returns the 8-aligned offset in
   * `bytes` where the payload goes, or RingResult.FULL / RingResult.CLOSED. Follow with commit().
   * A second reserve() before commit() replaces the first reservation.
   */
  /**
   * True when reserve(len) would succeed now. On false it counts as a FULL reserve (writable()
   * waits for the consumer), so a caller can check two rings before writing to either.
   */
  canReserve(len: number): boolean {
    if (this.openCloser !== null) this.closeOpen()
    if (this.ctl[CLOSED] !== 0) return false
    if (this.hasRoom(len)) return true
    this.flush()
    this.fullPending = true
    this.headAtFull = this.cachedHead
    Atomics.add(this.ctl, C_FULL, 1)
    return false
  }

  reserve(len: number): number {
    if (!(len >= 0 && len <= this.maxFrameBytes) || len !== (len | 0)) {
      if (len > this.maxFrameBytes) {
        throw new NsrError('EMSGSIZE', `frame of ${len} bytes exceeds the ring's ${this.maxFrameBytes}`)
      }
      throw new NsrError('EINVAL', `bad frame length ${len}`)
    }
    if (this.openCloser !== null) this.closeOpen()
    const ctl = this.ctl
    // A plain read: CLOSED only ever goes 0 -> 1, and a stale 0 costs one more frame at most (the
    // next Atomics operation of this thread orders it). An Atomics.load here is ~10 ns on Node 20.
    if (ctl[CLOSED] !== 0) return RingResult.CLOSED
    const rec = PREFIX_BYTES + ((len + 7) & ~7)
    const pos = this.tail & this.mask
    const contig = this.capacity - pos
    const need = rec <= contig ? rec : contig + rec
    if (((this.tail - this.cachedHead) | 0) + need > this.capacity) {
      this.cachedHead = Atomics.load(ctl, HEAD)
      if (((this.tail - this.cachedHead) | 0) + need > this.capacity) {
        this.flush() // the consumer must see everything before we wait on it
        this.fullPending = true
        this.headAtFull = this.cachedHead
        Atomics.add(ctl, C_FULL, 1)
        return RingResult.FULL
      }
    }
    let at = pos
    if (rec > contig) {
      this.words[pos >> 2] = WRAP_MARKER
      at = 0
    }
    this.words[at >> 2] = len
    this.pendingBytes = need
    this.reservedAt = at + PREFIX_BYTES
    this.reservedLen = len
    return at + PREFIX_BYTES
  }

  /** True when a frame of `len` payload bytes fits now (no side effects, unlike canReserve). */
  fits(len: number): boolean {
    return this.ctl[CLOSED] === 0 && len <= this.maxFrameBytes && this.hasRoom(len)
  }

  /** Room for a frame of `len` payload bytes at the tail, skipping to 0 if it would straddle the end. */
  private hasRoom(len: number): boolean {
    const rec = PREFIX_BYTES + ((len + 7) & ~7)
    const pos = this.tail & this.mask
    const contig = this.capacity - pos
    const need = rec <= contig ? rec : contig + rec
    if (((this.tail - this.cachedHead) | 0) + need <= this.capacity) return true
    this.cachedHead = Atomics.load(this.ctl, HEAD)
    return ((this.tail - this.cachedHead) | 0) + need <= this.capacity
  }

  // Open frames: a writer that grows its frame record by record (engine/re/ring-sink.ts batches)
  // reserves room for the largest size, writes, and leaves the frame open with holdOpen(). The
  // frame is closed (its closer writes the final header and calls commitOpen with the size used)
  // before anything else touches this ring (reserve, canReserve, flush), by flushRings(), and at
  // the latest by the end of the current task. An open frame is not committed: a producer that
  // dies with one loses it, as it loses a frame it had not yet written. Ranks order the closing
  // across rings: closing a frame first closes every open frame of a lower rank on this thread, so
  // a writer can promise that what it put in a rank-0 frame is committed no later than what it put
  // in a rank-1 frame after it (SDRL: a TX batch before the REPLICATE batch that claims it).

  /** Leaves the frame reserved last open; `closer` must end with commitOpen(). */
  holdOpen(rank: number, closer: () => void): void {
    if (this.pendingBytes < 0 || this.openCloser !== null) assert(false, 'Ring.holdOpen() without a fresh reserve()')
    this.openCloser = closer
    this.openRank = rank
    pending.open!.push(this)
    queueFlush()
  }

  /** Closes this ring's open frame, if any, after every open frame of a lower rank. */
  closeOpen(): void {
    const closer = this.openCloser
    if (closer === null) return
    if (this.openRank > 0) closeOpenFrames(this.openRank - 1)
    if (this.openCloser !== closer) return
    this.openCloser = null
    const open = pending.open!
    const i = open.indexOf(this)
    if (i >= 0) open.splice(i, 1)
    closer()
  }

  /** Payload bytes of the frame reserved last (an open frame's capacity). */
  get reservedBytes(): number {
    return this.reservedLen
  }

  /** Commits the frame reserved last with `len` payload bytes, at most what was reserved. */
  commitOpen(len: number): void {
    if (this.pendingBytes < 0 || len > this.reservedLen || len < 0) assert(false, `Ring.commitOpen(${len}) of a ${this.reservedLen}-byte reservation`)
    this.pendingBytes -= ((this.reservedLen + 7) & ~7) - ((len + 7) & ~7)
    this.words[(this.reservedAt - PREFIX_BYTES) >> 2] = len
    this.reservedLen = len
    this.commit()
  }

  /**
   * Commits the frame last reserved. It is published at once if publishBatchBytes are pending,
   * else by the end of the current task or this thread's next ring call (see the file comment).
   */
  commit(): void {
    const n = this.pendingBytes
    if (n < 0) assert(false, 'Ring.commit() without a reserve()')
    this.pendingBytes = -1
    if (!this.committing && !this.beginCommitting()) return // fenced: the frame is dropped
    this.tail = (this.tail + n) | 0
    this.framesIn++
    Atomics.store(this.ctl, COMMITTED, this.tail) // durable for recoverCommitted(), and a release (halt())
    if (((this.tail - this.publishedTail) | 0) >= this.publishBatchBytes) {
      // Frames committed earlier on another ring go out first. That is not commit order in
      // general (flushRings publishes ring by ring, each with all its frames), so a consumer that
      // needs every frame its dead producer committed before some other frame calls
      // recoverCommitted(): the chassis does, before draining a dead primary (SDRL depends on it).
      flushRings()
      this.flush()
    } else if (!this.queued) {
      this.queued = true
      pending.rings.push(this)
      queueFlush()
    }
  }

  /** First commit of a task: announces it (COMMITTING), then checks for a fence. False if fenced. */
  private beginCommitting(): boolean {
    if (pending.abandoned) return false // abandonRings(): this thread is dying
    const ctl = this.ctl
    Atomics.store(ctl, COMMITTING, 1)
    if (Atomics.load(ctl, CLOSED) !== 0) {
      Atomics.store(ctl, COMMITTING, 0)
      return false
    }
    this.committing = true
    pending.committing!.push(this)
    queueFlush()
    return true
  }

  /** @internal the end-of-task flush only: this task's frames are committed. */
  endCommitting(): void {
    this.committing = false
    Atomics.store(this.ctl, COMMITTING, 0)
  }

  /** Publishes this ring's committed frames now; wakes the consumer if it is parked. */
  flush(): void {
    if (this.openCloser !== null) this.closeOpen()
    if (this.tail === this.publishedTail) return
    const ctl = this.ctl
    this.publishedTail = this.tail
    this.f64[F_FRAMES_IN] = this.framesIn
    Atomics.store(ctl, TAIL, this.tail)
    // seq-cst store then load: pairs with park()'s store-then-recheck (no lost wake-up)
    if (Atomics.load(ctl, CPARK) === 1) this.wake(CPARK)
  }

  /** reserve + copy + commit. Returns RingResult.OK, FULL or CLOSED. */
  send(payload: Uint8Array): number {
    const off = this.reserve(payload.length)
    if (off < 0) return off
    if (payload.length !== 0) this.bytes.set(payload, off) // set() beats a byte loop from ~8 bytes up
    this.commit()
    return RingResult.OK
  }

  /** Free bytes now (the largest frame that fits may be smaller: frames are contiguous). */
  freeBytes(): number {
    flushRings()
    return this.capacity - ((Atomics.load(this.ctl, TAIL) - Atomics.load(this.ctl, HEAD)) | 0)
  }

  /**
   * Resolves when space may have appeared since the last FULL (the consumer advanced) or the ring
   * closed; at once if no reserve() returned FULL since. Spins briefly, then parks.
   */
  writable(): Promise<void> {
    flushRings()
    if (!this.fullPending) return RESOLVED
    if (this.writeWait) return this.writeWait
    const ctl = this.ctl
    const ready = (): boolean => Atomics.load(ctl, HEAD) !== this.headAtFull || Atomics.load(ctl, CLOSED) !== 0
    if (ready() || this.spin(ready)) {
      this.fullPending = false
      return RESOLVED
    }
    const p = this.park(PPARK, ready).then(() => {
      this.writeWait = null
      this.fullPending = false
    })
    this.writeWait = p
    return p
  }

  // ---------------------------------------------------------------------------------------------
  // consumer side

  /**
   * Calls onFrame for each available frame, in place (zero copy), up to `maxFrames`, then
   * publishes the head once. onFrame must not keep the view: the producer reuses the bytes once the
   * call returns. Returns the number of frames consumed. A throwing onFrame still consumes its frame.
   */
  drain(
    onFrame: (bytes: Uint8Array, offset: number, length: number) => void,
    maxFrames = Number.MAX_SAFE_INTEGER,
    maxBytes = Number.MAX_SAFE_INTEGER,
  ): number {
    if (pending.rings.length !== 0 || pending.open!.length !== 0) flushRings()
    this.drainCapped = false
    let h = this.head
    const ctl = this.ctl
    const t = Atomics.load(ctl, TAIL) // one acquire per call, not per frame
    if (h === t) return 0
    // Announced before the first frame is taken, re-checked after (see halt()).
    Atomics.store(ctl, DRAINING, 1)
    if (Atomics.load(ctl, HALT) !== 0) {
      Atomics.store(ctl, DRAINING, 0)
      return 0
    }
    const words = this.words
    const bytes = this.bytes
    const mask = this.mask
    const cap = this.capacity
    const maxLen = this.maxFrameBytes
    let n = 0
    try {
      while (h !== t && n < maxFrames) {
        const pos = h & mask
        const len = words[pos >> 2]
        if (len === WRAP_MARKER) {
          const skipTo = (h + cap - pos) | 0
          if (((t - skipTo) | 0) <= 0) {
            this.onCorrupt()
            return n
          }
          h = skipTo
          continue
        }
        const next = (h + PREFIX_BYTES + ((len + 7) & ~7)) | 0
        if (len < 0 || len > maxLen || pos + PREFIX_BYTES + len > cap || ((t - next) | 0) < 0) {
          this.onCorrupt()
          return n
        }
        h = next
        n++
        onFrame(bytes, pos + PREFIX_BYTES, len)
        if ((maxBytes -= len) <= 0) {
          this.drainCapped = h !== t
          break
        }
      }
    } finally {
      this.publishHead(h, n)
      Atomics.store(ctl, DRAINING, 0)
    }
    return n
  }

  /** Copies out one frame, or returns null when none is available. */
  receive(): Uint8Array | null {
    let out: Uint8Array | null = null
    this.drain((b, off, len) => {
      out = b.slice(off, off + len)
    }, 1)
    return out
  }

  /**
   * Resolves when a frame is available or the ring closed: spins briefly, then parks with
   * Atomics.waitAsync (holding a referenced timer so the event loop stays alive while parked).
   */
  readable(): Promise<void> {
    flushRings()
    if (this.readWait) return this.readWait
    const ready = this.readyToRead
    if (ready() || this.spin(ready)) return RESOLVED
    const p = this.park(CPARK, ready).then(() => {
      this.readWait = null
    })
    this.readWait = p
    return p
  }

  /** Blocking variant of readable() for threads that may block. True when readable, false on timeout. */
  waitReadableSync(timeoutMs: number): boolean {
    flushRings()
    const ready = this.readyToRead
    if (ready() || this.spin(ready)) return true
    const ctl = this.ctl
    const deadline = performance.now() + timeoutMs
    for (;;) {
      Atomics.store(ctl, CPARK, 1)
      if (ready()) {
        Atomics.store(ctl, CPARK, 0)
        return true
      }
      Atomics.add(ctl, C_PARKS, 1)
      const left = deadline - performance.now()
      if (left <= 0) {
        Atomics.store(ctl, CPARK, 0)
        return ready()
      }
      Atomics.wait(ctl, CPARK, 1, left)
      Atomics.store(ctl, CPARK, 0)
      if (ready()) return true
    }
  }

  /**
   * For a consumer whose producer thread is gone (exited, crashed or terminated), fenced(), or
   * being terminated mid-task (the chassis, once the secondary's ring from it is halted):
   * publishes every frame the producer committed, including those still in its unpublished batch,
   * so that drain() delivers all of them. Returns the bytes adopted. COMMITTED is stored (Atomics)
   * after each frame is complete, so a producer that still runs shows whole frames only; it may
   * commit more afterwards, which a dead or fenced one cannot.
   */
  recoverCommitted(): number {
    const ctl = this.ctl
    const committed = Atomics.load(ctl, COMMITTED)
    for (;;) {
      const t = Atomics.load(ctl, TAIL)
      const gain = (committed - t) | 0
      if (gain <= 0) return 0
      if (Atomics.compareExchange(ctl, TAIL, t, committed) === t) return gain
    }
  }

  /**
   * Consumer: stops a producer that is being terminated from committing anything more (see the file
   * comment). Closes the ring; true when the fence holds at once, else poll fenced() (the producer
   * is mid-task) or wait for its thread to end.
   */
  fence(): boolean {
    const ctl = this.ctl
    Atomics.store(ctl, CLOSED, 1)
    Atomics.store(ctl, PPARK, 0)
    Atomics.notify(ctl, PPARK)
    return this.fenced()
  }

  /**
   * From a third thread: stops the consumer for good (see the file comment). drain() takes no frame
   * once this holds. True when it holds at once, else poll haltHeld() (a drain() is under way).
   */
  halt(): boolean {
    Atomics.store(this.ctl, HALT, 1)
    return this.haltHeld()
  }

  /** Undoes halt(): the consumer reads on (the producer was fenced after all, see chassis retire()). */
  unhalt(): void {
    Atomics.store(this.ctl, HALT, 0)
  }

  /** True once halt() holds: no drain() is under way, and none will take a frame again. */
  haltHeld(): boolean {
    return Atomics.load(this.ctl, HALT) !== 0 && Atomics.load(this.ctl, DRAINING) === 0
  }

  /** halt() was called: the frames left are never read. */
  get halted(): boolean {
    return Atomics.load(this.ctl, HALT) !== 0
  }

  /** True once fence() holds: the ring is closed and no task of the producer is committing. */
  fenced(): boolean {
    return Atomics.load(this.ctl, CLOSED) !== 0 && Atomics.load(this.ctl, COMMITTING) === 0
  }

  /** True when no committed frame waits to be drained. */
  isEmpty(): boolean {
    flushRings()
    return Atomics.load(this.ctl, HEAD) === Atomics.load(this.ctl, TAIL)
  }

  // ---------------------------------------------------------------------------------------------
  // both sides

  /**
   * Closes the ring for both sides: reserve() returns CLOSED from now on, parked sides wake up.
   * Frames committed before close() stay readable; a frame is never half-delivered.
   */
  close(): void {
    flushRings()
    const ctl = this.ctl
    Atomics.store(ctl, CLOSED, 1)
    Atomics.store(ctl, PPARK, 0)
    Atomics.notify(ctl, PPARK)
    Atomics.store(ctl, CPARK, 0)
    Atomics.notify(ctl, CPARK)
  }

  get closed(): boolean {
    return Atomics.load(this.ctl, CLOSED) !== 0
  }

  /** Counters of both sides (the shared ones live in the control block). */
  stats(): RingStats {
    flushRings()
    const ctl = this.ctl
    return {
      framesIn: this.f64[F_FRAMES_IN],
      framesOut: this.f64[F_FRAMES_OUT],
      full: Atomics.load(ctl, C_FULL),
      parks: Atomics.load(ctl, C_PARKS),
      notifies: Atomics.load(ctl, C_NOTIFIES),
      corrupt: Atomics.load(ctl, C_CORRUPT),
    }
  }

  // ---------------------------------------------------------------------------------------------
  // internals

  /** @internal flushRings() only: leaves the pending list and publishes. */
  flushQueued(): void {
    this.queued = false
    this.flush()
  }

  private readonly readyToRead = (): boolean =>
    Atomics.load(this.ctl, TAIL) !== this.head || Atomics.load(this.ctl, CLOSED) !== 0

  private publishHead(h: number, n: number): void {
    if (h === this.head) return
    const ctl = this.ctl
    this.head = h
    this.framesOut += n
    this.f64[F_FRAMES_OUT] = this.framesOut
    Atomics.store(ctl, HEAD, h)
    if (Atomics.load(ctl, PPARK) === 1) this.wake(PPARK)
  }

  private onCorrupt(): void {
    Atomics.add(this.ctl, C_CORRUPT, 1)
    this.close()
  }

  private wake(word: number): void {
    const ctl = this.ctl
    Atomics.store(ctl, word, 0)
    Atomics.notify(ctl, word)
    Atomics.add(ctl, C_NOTIFIES, 1)
  }

  /**
   * Polls `ready` for up to the current spin budget. Adaptive: a spin that succeeds restores the
   * full budget (spinUs), one that fails halves it (down to spinFloorUs). When the peer answers
   * within microseconds the side keeps spinning; when spins keep failing (the peer is idle, or
   * descheduled on an oversubscribed machine) it parks almost at once instead of burning 10 us of
   * a core the peer may be waiting for before every park.
   */
  private spin(ready: () => boolean): boolean {
    const max = this.spinUs
    if (max <= 0) return false
    const budget = Math.min(this.spinBudgetUs, max)
    const until = performance.now() + budget / 1000
    for (;;) {
      for (let i = 0; i < SPIN_POLLS_PER_CLOCK_READ; i++) {
        if (ready()) {
          this.spinBudgetUs = max
          return true
        }
      }
      if (performance.now() >= until) {
        this.spinBudgetUs = Math.max(Math.min(this.spinFloorUs, max), budget / 2)
        return false
      }
    }
  }

  /** Announces the park in `word`, re-checks, then sleeps on `word` until notified. */
  private async park(word: number, ready: () => boolean): Promise<void> {
    const ctl = this.ctl
    Atomics.store(ctl, word, 1)
    if (ready()) {
      Atomics.store(ctl, word, 0)
      return
    }
    Atomics.add(ctl, C_PARKS, 1)
    const keepAlive = setInterval(noop, KEEPALIVE_INTERVAL_MS)
    try {
      const r = Atomics.waitAsync(ctl, word, 1)
      if (r.async) await r.value
    } finally {
      clearInterval(keepAlive)
      Atomics.store(ctl, word, 0)
    }
  }
}

function checkOffset(sab: SharedArrayBuffer, byteOffset: number, capacity: number): void {
  if (!Number.isInteger(byteOffset) || byteOffset < 0 || byteOffset % SLOT_BYTES !== 0) {
    throw new NsrError('EINVAL', `ring offset ${byteOffset} must be a multiple of ${SLOT_BYTES}`)
  }
  if (byteOffset + RING_CONTROL_BYTES + capacity > sab.byteLength) {
    throw new NsrError('EINVAL', `ring of ${capacity} bytes at ${byteOffset} overruns a ${sab.byteLength}-byte buffer`)
  }
}
