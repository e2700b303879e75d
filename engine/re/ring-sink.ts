// RingSink: the FrameSink of real threads. Each send() writes the header, the address prefix and
// the payload straight into a KKCM ring slot (one copy, no allocation) and commits it; a full ring
// returns false and `whenRoom` callbacks run once the consumer has advanced.
// pumpRing(): the consumer loop every thread runs per incoming ring: drain a capped batch, tell
// the handler the batch ended (coalesced acks and credits go out then), yield to the event loop
// after a full batch, park when empty.

import { HEADER_BYTES, type Header } from '../protocol/header.ts'
import { MessageReader, READER_MAX_MESSAGES_PER_POLL } from '../kkcm/message.ts'
import { flushRings, type Ring } from '../kkcm/ring.ts'
import type { Addr } from '../socket/records.ts'
import { framePayloadBytes, writeFrame, type FrameSink } from './sink.ts'

export class RingSink implements FrameSink {
  readonly ring: Ring
  private waiters: Array<() => void> = []
  private waiting = false
  sent = 0
  full = 0

  constructor(ring: Ring) {
    this.ring = ring
  }

  send(type: number, flags: number, handle: number, seq: number, ack: number, credit: number, data: Uint8Array | null, addr?: Addr | null): boolean {
    const ring = this.ring
    const off = ring.reserve(HEADER_BYTES + framePayloadBytes(data, addr))
    if (off < 0) {
      this.full++
      return false
    }
    writeFrame(ring.view, ring.bytes, off, type, flags, handle, seq, ack, credit, data, addr)
    ring.commit()
    this.sent++
    return true
  }

  room(payloadBytes: number): boolean {
    if (this.ring.canReserve(HEADER_BYTES + payloadBytes)) return true
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
 * Runs until the ring is closed and empty (or `stop()` returns true): handles every message, calls
 * `onBatchEnd` after each drained batch, yields after a full batch, parks when idle.
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
      if (n === READER_MAX_MESSAGES_PER_POLL || now - busySince > MACROTASK_YIELD_MS) {
        await yieldToLoop()
        busySince = -1
        continue
      }
    } else {
      busySince = -1
      if (ring.closed && ring.isEmpty()) return reader
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
