// SimLink: one direction of a KKCM ring, in process, for the deterministic simulation and the SDRL
// unit tests. send() encodes a frame with the ring-backed sink's own writeFrame() (32-byte header,
// the DATAGRAM address prefix, then the payload) into a queue bounded
// in bytes, so 'full' happens and whenRoom() retries run. deliver() is the reader: it validates
// every frame (validate / decodeHeader, rejects counted, never thrown), hands it to the receiver
// and ends the batch with onBatchEnd(), as MessageReader.poll() does. The simulator decides when a
// link delivers and how many frames at a time, so interleavings vary with the seed.
//
// Records batch as on a ring (engine/re/sink.ts): a TX or REPLICATE record that follows a queued,
// undelivered record frame of the same socket with the next seq joins it; the first joiner turns
// a plain frame into a BATCH frame. So both frame forms reach the receivers under every schedule.
//
// Two ring behaviours are kept on purpose: a batch frees its room only when it ends (the ring
// publishes its head once per drain), and a delivered payload is a view into a scratch area that
// is overwritten as soon as the handler returns (MessageReader's contract: neither the header nor
// the bytes may be kept after the call), so code that keeps a view of a frame instead of copying it
// reads garbage and the simulation notices.

import {
  HEADER_BYTES,
  Off,
  RejectCounters,
  Reject,
  decodeHeader,
  emptyHeader,
  encodeHeader,
  validate,
  type Header,
} from '../../engine/protocol/header.ts'
import {
  BATCH_MAX_PAYLOAD_BYTES,
  batchEntryBytes,
  batchable,
  framePayloadBytes,
  writeBatchEntry,
  writeFrame,
  type FrameSink,
} from '../../engine/re/sink.ts'
import { Flag } from '../../engine/protocol/header.ts'
import type { Addr } from '../../engine/socket/records.ts'

export interface LinkReceiver {
  onMessage(h: Header, bytes: Uint8Array, off: number): void
  onBatchEnd(): void
}

/** Ring cost of a frame: an 8-byte prefix, then the frame padded to 8 (engine/kkcm/ring.ts). */
const FRAME_PREFIX_BYTES = 8
export const frameCost = (frameBytes: number): number => FRAME_PREFIX_BYTES + ((frameBytes + 7) & ~7)

const POISON = 0xee

// One scratch area for every link: deliveries never nest, and a frame's bytes live only while its
// handler runs.
let scratch = new Uint8Array(1 << 16)
let scratchView = new DataView(scratch.buffer)
function scratchFor(bytes: number): void {
  if (scratch.length >= bytes) return
  scratch = new Uint8Array(bytes)
  scratchView = new DataView(scratch.buffer)
}

export class SimLink implements FrameSink {
  readonly name: string
  readonly capacityBytes: number
  /** Largest frame (header included) the link carries: half the capacity, as on a ring. */
  readonly maxFrameBytes: number
  usedBytes = 0
  peakBytes = 0
  /** The producer died: its sends fail from now on; frames already committed stay readable. */
  senderDead = false
  /** The consumer died: sends fail (a closed ring), room never comes back. */
  receiverDead = false
  readonly rejects = new RejectCounters()
  readonly counters = { sent: 0, full: 0, closed: 0, delivered: 0, batches: 0, roomCallbacks: 0, injected: 0 }
  /** Wraps the handling of each injected frame, so a test can see that it was rejected and counted. */
  onInjected: ((handle: () => void) => void) | null = null
  private readonly injectedFrames = new WeakSet<Uint8Array>()
  /** Sees every frame as it is committed (invariant instrumentation). `payload` is the frame's own copy. */
  onSend: ((h: Header, payload: Uint8Array, addr: Addr | null) => void) | null = null
  private frames: Uint8Array[] = []
  private head = 0
  private roomWaiters: Array<() => void> = []
  private scratchPos = 0
  private readonly header = emptyHeader()
  private readonly sentHeader = emptyHeader()
  /** The last queued frame, while records may still join it (index in `frames`, -1: none). */
  private tailIndex = -1
  private tailShared = 0
  private tailLastSeq = 0
  counted = { batched: 0 }

  constructor(name: string, capacityBytes: number) {
    this.name = name
    this.capacityBytes = capacityBytes
    this.maxFrameBytes = (capacityBytes >>> 1) - FRAME_PREFIX_BYTES
    scratchFor(this.maxFrameBytes * 2 + 64)
  }

  /** Frames committed and not yet delivered. */
  get length(): number {
    return this.frames.length - this.head
  }

  // ---- FrameSink (the producer side) ---------------------------------------------------------

  send(
    type: number,
    flags: number,
    handle: number,
    seq: number,
    ack: number,
    credit: number,
    data: Uint8Array | null,
    addr?: Addr | null,
  ): boolean {
    if (this.senderDead || this.receiverDead) {
      this.counters.closed++
      return false
    }
    const size = HEADER_BYTES + framePayloadBytes(data, addr)
    if (size > this.maxFrameBytes) throw new Error(`${this.name}: a ${size}-byte frame can never fit (max ${this.maxFrameBytes})`)
    const cost = frameCost(size)
    if (this.usedBytes + cost > this.capacityBytes) {
      this.counters.full++
      return false
    }
    const isRecord = batchable(type, flags, data)
    if (!(isRecord && this.join(type, flags, handle, seq, ack, data!, addr ?? null))) {
      const frame = new Uint8Array(size)
      writeFrame(new DataView(frame.buffer), frame, 0, type, flags, handle, seq, ack, credit, data, addr)
      this.commit(frame, cost)
      this.tailIndex = isRecord ? this.frames.length - 1 : -1
      this.tailShared = flags & ~Flag.ACK_REQUIRED
      this.tailLastSeq = seq >>> 0
    }
    this.counters.sent++
    if (this.onSend) {
      const h = this.sentHeader
      h.type = type
      h.flags = flags
      h.handle = handle >>> 0
      h.seq = seq >>> 0
      h.ack = ack >>> 0
      h.credit = credit >>> 0
      h.length = size - HEADER_BYTES
      this.onSend(h, data ? data.slice() : new Uint8Array(0), addr ?? null)
    }
    return true
  }

  /** Appends a record to the last queued frame when it may join it (see the file comment). */
  private join(type: number, flags: number, handle: number, seq: number, ack: number, data: Uint8Array, addr: Addr | null): boolean {
    const i = this.tailIndex
    if (i < this.head || i !== this.frames.length - 1) return false
    const old = this.frames[i]
    const ov = new DataView(old.buffer, old.byteOffset, old.byteLength)
    if (ov.getUint8(Off.type) !== type || ov.getUint32(Off.handle, true) !== handle >>> 0) return false
    if ((flags & ~Flag.ACK_REQUIRED) !== this.tailShared || seq >>> 0 !== ((this.tailLastSeq + 1) >>> 0)) return false
    const oldFlags = ov.getUint16(Off.flags, true)
    const wasBatch = (oldFlags & Flag.BATCH) !== 0
    // The entries so far: the batch's own, or the plain frame's payload turned into one entry.
    const oldEntries = wasBatch ? old.subarray(HEADER_BYTES) : null
    const firstBytes = wasBatch ? 0 : batchEntryBytes(old.length - HEADER_BYTES)
    const payload = (oldEntries ? oldEntries.length : firstBytes) + batchEntryBytes(framePayloadBytes(data, addr))
    if (payload > BATCH_MAX_PAYLOAD_BYTES || HEADER_BYTES + payload > this.maxFrameBytes) return false
    const oldCost = frameCost(old.length)
    const newCost = frameCost(HEADER_BYTES + payload)
    if (this.usedBytes - oldCost + newCost > this.capacityBytes) return false
    const frame = new Uint8Array(HEADER_BYTES + payload)
    const dv = new DataView(frame.buffer)
    let p = HEADER_BYTES
    if (oldEntries) {
      frame.set(oldEntries, p)
      p += oldEntries.length
    } else {
      // The plain frame's payload already holds the address prefix: copy it as one entry's bytes.
      p += writeBatchEntry(dv, frame, p, old.subarray(HEADER_BYTES), null)
    }
    writeBatchEntry(dv, frame, p, data, addr)
    const count = (wasBatch ? ov.getUint32(Off.credit, true) : 1) + 1
    const ackRequired = (oldFlags | flags) & Flag.ACK_REQUIRED
    encodeHeader(dv, 0, type, this.tailShared | ackRequired | Flag.BATCH, handle, ov.getUint32(Off.seq, true), ack, count, payload)
    this.frames[i] = frame
    this.usedBytes += newCost - oldCost
    if (this.usedBytes > this.peakBytes) this.peakBytes = this.usedBytes
    this.tailLastSeq = seq >>> 0
    this.counted.batched++
    return true
  }

  room(payloadBytes: number): boolean {
    if (this.senderDead || this.receiverDead) return false
    if (this.usedBytes + frameCost(HEADER_BYTES + payloadBytes) <= this.capacityBytes) return true
    this.counters.full++
    return false
  }

  whenRoom(cb: () => void): void {
    this.roomWaiters.push(cb)
  }

  flush(): void {
    // A ring publishes each frame at commit; nothing to do.
  }

  /** Commits raw bytes as a frame (bad-input injection). False when there is no room. */
  inject(frame: Uint8Array): boolean {
    const cost = frameCost(frame.length)
    if (this.senderDead || this.receiverDead || this.usedBytes + cost > this.capacityBytes) return false
    const copy = frame.slice()
    this.injectedFrames.add(copy)
    this.commit(copy, cost)
    this.counters.injected++
    return true
  }

  private commit(frame: Uint8Array, cost: number): void {
    this.frames.push(frame)
    this.usedBytes += cost
    if (this.usedBytes > this.peakBytes) this.peakBytes = this.usedBytes
  }

  /** Calls the room callbacks once (they re-register if they still find no room). */
  notifyRoom(): number {
    if (this.roomWaiters.length === 0) return 0
    if (this.senderDead || this.receiverDead) {
      this.roomWaiters = []
      return 0
    }
    if (this.usedBytes >= this.capacityBytes) return 0
    const waiters = this.roomWaiters
    this.roomWaiters = []
    for (const cb of waiters) cb()
    this.counters.roomCallbacks += waiters.length
    return waiters.length
  }

  get waitingForRoom(): number {
    return this.roomWaiters.length
  }

  // ---- the reader ----------------------------------------------------------------------------

  /** Delivers up to `max` frames as one batch. Returns frames consumed (accepted and rejected). */
  deliver(rx: LinkReceiver, max: number): number {
    let n = 0
    let freed = 0
    while (n < max && this.head < this.frames.length) {
      const frame = this.frames[this.head]
      this.frames[this.head++] = undefined as unknown as Uint8Array
      n++
      freed += frameCost(frame.length)
      if (this.onInjected && this.injectedFrames.has(frame)) this.onInjected(() => this.handle(rx, frame))
      else this.handle(rx, frame)
    }
    if (n === 0) return 0
    this.counters.batches++
    // Room comes back when the batch ends (the ring publishes its head once per drain).
    this.usedBytes -= freed
    rx.onBatchEnd()
    if (this.head > 256 && this.head * 2 > this.frames.length) {
      this.frames = this.frames.slice(this.head)
      this.tailIndex -= this.head
      this.head = 0
    }
    return n
  }

  private handle(rx: LinkReceiver, frame: Uint8Array): void {
    const dv = scratchView
    // Place the frame at the next 8-aligned offset of the scratch area, wrapping like a ring.
    let off = this.scratchPos
    if (off + frame.length > scratch.length) off = 0
    scratch.set(frame, off)
    this.scratchPos = (off + frame.length + 7) & ~7
    let reason = validate(dv, off, frame.length)
    if (reason === null && HEADER_BYTES + dv.getUint32(off + Off.length, true) !== frame.length) reason = Reject.LENGTH
    if (reason !== null) {
      this.rejects.count(reason)
      return
    }
    this.counters.delivered++
    try {
      rx.onMessage(decodeHeader(dv, off, this.header), scratch, off + HEADER_BYTES)
    } finally {
      scratch.fill(POISON, off, off + frame.length)
    }
  }

  /** Delivers everything queued, in batches of at most `batch` frames. */
  deliverAll(rx: LinkReceiver, batch = 64): number {
    let total = 0
    while (this.length > 0) total += this.deliver(rx, batch)
    return total
  }

  /** Drops every queued frame (the reader died with them unread). */
  discard(): void {
    this.frames = []
    this.head = 0
    this.usedBytes = 0
    this.roomWaiters = []
  }
}

/** Encodes one well-formed frame (for injection). */
export function encodeFrame(type: number, flags: number, handle: number, seq: number, ack: number, credit: number, payload: Uint8Array | null = null): Uint8Array {
  const length = payload ? payload.length : 0
  const frame = new Uint8Array(HEADER_BYTES + length)
  encodeHeader(new DataView(frame.buffer), 0, type, flags, handle, seq, ack, credit, length)
  if (payload) frame.set(payload, HEADER_BYTES)
  return frame
}

/** Receiver adapters. */
export function peerReceiver(re: { onPeerMessage(h: Header, b: Uint8Array, o: number): void; onPeerBatchEnd(): void }): LinkReceiver {
  return { onMessage: (h, b, o) => re.onPeerMessage(h, b, o), onBatchEnd: () => re.onPeerBatchEnd() }
}

export function chassisReceiver(re: { onChassisMessage(h: Header, b: Uint8Array, o: number): void; onChassisBatchEnd(): void }): LinkReceiver {
  return { onMessage: (h, b, o) => re.onChassisMessage(h, b, o), onBatchEnd: () => re.onChassisBatchEnd() }
}

export function coreReceiver(core: { onReMessage(id: string, h: Header, b: Uint8Array, o: number): void; onReBatchEnd(): void }, reId: string): LinkReceiver {
  return { onMessage: (h, b, o) => core.onReMessage(reId, h, b, o), onBatchEnd: () => core.onReBatchEnd() }
}
