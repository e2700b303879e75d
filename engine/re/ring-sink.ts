// RingSink: the FrameSink of real threads. Each send() writes the header, the address prefix and
// the payload straight into a KKCM ring slot (one copy, no allocation) and commits it; a full ring
// returns false and `whenRoom` callbacks run once the consumer has advanced. Records (TX,
// REPLICATE) go into a batch frame (sink.ts) left open on the ring: the next record of the same
// socket is appended in place, and the ring closes the frame before anything else is written to it,
// when the task ends, or when this sink finds it full. TX batches have rank 0 and REPLICATE
// batches rank 1 (ring.ts, open frames): a REPLICATE frame that tells the secondary "the chassis
// has these records" is never committed before the TX frame that carries them.
// pumpRing(): the consumer loop every thread runs per incoming ring: drain a capped batch, tell
// the handler the batch ended (coalesced acks and credits go out then), yield to the event loop
// after a full batch, park when empty.

import { Flag, HEADER_BYTES, MsgType, encodeHeader, type Header } from '../protocol/header.ts'
import { MessageReader, READER_MAX_MESSAGES_PER_POLL } from '../kkcm/message.ts'
import { flushRings, ringFrameBytes, type Ring } from '../kkcm/ring.ts'
import type { Addr } from '../socket/records.ts'
import { BATCH_MAX_PAYLOAD_BYTES, batchEntryBytes, batchable, framePayloadBytes, writeBatchEntry, writeFrame, type FrameSink } from './sink.ts'

export class RingSink implements FrameSink {
  readonly ring: Ring
  private waiters: Array<() => void> = []
  private waiting = false
  sent = 0
  full = 0
  /** Batch frames committed, and the records they carried. */
  batches = 0
  batchedRecords = 0
  // The open batch: header offset, payload capacity and bytes used, and what every record in it shares.
  private bOpen = false
  private bOff = 0
  private bCap = 0
  private bUsed = 0
  private bCount = 0
  private bType = 0
  private bFlags = 0
  private bHandle = 0
  private bFirst = 0
  private bLast = 0
  private bAck = 0
  private bAckRequired = 0

  constructor(ring: Ring) {
    this.ring = ring
  }

  send(type: number, flags: number, handle: number, seq: number, ack: number, credit: number, data: Uint8Array | null, addr?: Addr | null): boolean {
    if (batchable(type, flags, data)) return this.sendRecord(type, flags, handle, seq, ack, data!, addr ?? null)
    const ring = this.ring
    const off = ring.reserve(HEADER_BYTES + framePayloadBytes(data, addr)) // closes an open batch first
    if (off < 0) {
      this.full++
      return false
    }
    writeFrame(ring.view, ring.bytes, off, type, flags, handle, seq, ack, credit, data, addr)
    ring.commit()
    this.sent++
    return true
  }

  /** Appends a record to the open batch, or opens a new batch for it. */
  private sendRecord(type: number, flags: number, handle: number, seq: number, ack: number, data: Uint8Array, addr: Addr | null): boolean {
    const entry = batchEntryBytes(framePayloadBytes(data, addr))
    const shared = flags & ~Flag.ACK_REQUIRED
    seq >>>= 0
    if (
      !this.bOpen ||
      type !== this.bType ||
      shared !== this.bFlags ||
      handle !== this.bHandle ||
      seq !== ((this.bLast + 1) >>> 0) ||
      this.bUsed + entry > this.bCap
    ) {
      if (!this.openBatch(type, shared, handle, seq, entry)) {
        this.full++
        return false
      }
    }
    const ring = this.ring
    this.bUsed += writeBatchEntry(ring.view, ring.bytes, this.bOff + HEADER_BYTES + this.bUsed, data, addr)
    this.bCount++
    this.bLast = seq
    this.bAck = ack
    this.bAckRequired |= flags & Flag.ACK_REQUIRED
    this.sent++
    return true
  }

  private openBatch(type: number, flags: number, handle: number, seq: number, entry: number): boolean {
    const ring = this.ring
    if (this.bOpen) ring.closeOpen()
    const want = HEADER_BYTES + Math.max(entry, BATCH_MAX_PAYLOAD_BYTES)
    const off = ring.fits(want) ? ring.reserve(want) : ring.reserve(HEADER_BYTES + entry)
    if (off < 0) return false
    this.bOpen = true
    this.bOff = off
    this.bCap = ring.reservedBytes - HEADER_BYTES
    this.bUsed = 0
    this.bCount = 0
    this.bType = type
    this.bFlags = flags
    this.bHandle = handle
    this.bFirst = seq
    this.bLast = seq
    this.bAckRequired = 0
    ring.holdOpen(type === MsgType.TX ? 0 : 1, this.closeBatch)
    return true
  }

  /** The ring's closer for the open batch: the header goes in last, with the count and size used. */
  private readonly closeBatch = (): void => {
    this.bOpen = false
    const ring = this.ring
    const flags = this.bFlags | this.bAckRequired | Flag.BATCH
    encodeHeader(ring.view, this.bOff, this.bType, flags, this.bHandle, this.bFirst, this.bAck, this.bCount, this.bUsed)
    ring.commitOpen(HEADER_BYTES + this.bUsed)
    this.batches++
    this.batchedRecords += this.bCount
  }

  room(payloadBytes: number): boolean {
    const need = HEADER_BYTES + batchEntryBytes(payloadBytes)
    if (this.bOpen) {
      // Room left in the open batch for this record as an entry, or as a frame of its own once the
      // batch closes (what it leaves unused is contiguous and free then).
      if (this.bCap - this.bUsed >= ringFrameBytes(need)) return true
      this.ring.closeOpen()
    }
    if (this.ring.canReserve(need)) return true
    this.full++
    return false
  }

  whenRoom(cb: () => void): void {
    this.waiters.push(cb)
    if (this.waiting) return
    this.waiting = true
    void this.ring.writable().then(() => {
      this.waiting = false
      const ws = this.waiters
      this.waiters = []
      for (const w of ws) w()
    })
  }

  /** Publishes every frame this thread committed, on any ring (ring by ring, not in commit order across them). */
  flush(): void {
    flushRings()
  }
}

const MACROTASK_YIELD_MS = 2

/** Frames whose header failed validation, by reason, across this thread's readers (stats). */
export const frameRejects: Record<string, number> = {}

function logReject(reason: string): void {
  frameRejects[reason] = (frameRejects[reason] ?? 0) + 1
}

const yieldToLoop: () => Promise<void> =
  typeof setImmediate === 'function' ? () => new Promise((r) => setImmediate(r)) : () => new Promise((r) => setTimeout(r, 0))

/**
 * Runs until the ring is closed and empty or halted (or `stop()` returns true): handles every
 * message, calls `onBatchEnd` after each drained batch, yields after a full batch, parks when idle.
 */
export async function pumpRing(
  ring: Ring,
  onMessage: (h: Header, bytes: Uint8Array, off: number) => void,
  onBatchEnd: () => void,
  stop: () => boolean = () => false,
): Promise<MessageReader> {
  const reader = new MessageReader(ring, onMessage, { onReject: logReject })
  // Start of the current run of back-to-back batches (-1: none). The clock is read once per
  // non-empty batch, not per idle poll.
  let busySince = -1
  for (;;) {
    if (stop()) return reader
    const n = reader.poll(READER_MAX_MESSAGES_PER_POLL)
    if (n > 0) {
      onBatchEnd()
      // readable() resolves as a microtask while frames keep coming: give timers and I/O a turn
      // after a full batch or after MACROTASK_YIELD_MS of back-to-back batches.
      const now = performance.now()
      if (busySince < 0) busySince = now
      if (reader.full(n) || now - busySince > MACROTASK_YIELD_MS) {
        await yieldToLoop()
        busySince = -1
        continue
      }
    } else {
      busySince = -1
      // A halted ring (its producer died mid-task: Ring.halt) has frames left that are never read.
      if (ring.closed && (ring.isEmpty() || ring.halted)) return reader
    }
    await ring.readable()
  }
}

/** Drains everything a ring holds right now (a dead writer's leftovers), synchronously. */
export function drainNow(ring: Ring, onMessage: (h: Header, bytes: Uint8Array, off: number) => void, onBatchEnd: () => void): number {
  const reader = new MessageReader(ring, onMessage, { onReject: logReject })
  let total = 0
  for (;;) {
    const n = reader.poll(READER_MAX_MESSAGES_PER_POLL)
    if (n === 0) break
    total += n
    onBatchEnd()
  }
  return total
}
