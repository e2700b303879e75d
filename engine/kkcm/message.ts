// KKCM messages: a frame on a ring is one wire header (engine/protocol/header.ts) followed by its
// payload. sendMessage() writes one in place on a ring; MessageReader drains a ring, validates
// every header (rejects are counted, never thrown) and hands each good message to a callback with
// one reused Header object and the payload's offset in the ring's data region (zero copy).

import { setImmediate } from 'node:timers'
import { NsrError } from '../errors.ts'
import {
  HEADER_BYTES,
  RejectCounters,
  Reject,
  emptyHeader,
  encodeHeader,
  readHeader,
  type Header,
} from '../protocol/header.ts'
import { RingResult, type Ring } from './ring.ts'

/** Messages one MessageReader.poll() handles before returning (drain loops are capped). */
export const READER_MAX_MESSAGES_PER_POLL = 1024
/**
 * Bytes one poll() handles at most: a batched frame carries many records, so frames alone no longer
 * bound a poll's work (1 MiB: what 1024 frames of 1 KiB records were before batching).
 */
export const READER_MAX_BYTES_PER_POLL = 1024 * 1024

/**
 * Reserves HEADER_BYTES + payloadLen on `ring`, writes the header and returns the offset in
 * `ring.bytes` where the payload goes, or RingResult.FULL / CLOSED. The caller writes the payload
 * and calls ring.commit(). Throws NsrError('EMSGSIZE') when the message can never fit.
 */
export function reserveMessage(
  ring: Ring,
  type: number,
  flags: number,
  handle: number,
  seq: number,
  ack: number,
  credit: number,
  payloadLen: number,
): number {
  const off = ring.reserve(HEADER_BYTES + payloadLen)
  if (off < 0) return off
  encodeHeader(ring.view, off, type, flags, handle, seq, ack, credit, payloadLen)
  return off + HEADER_BYTES
}

/**
 * Sends one message: header plus the first `payloadLen` bytes of `payload` (all of it by default).
 * Returns RingResult.OK, FULL or CLOSED; throws EMSGSIZE when it can never fit.
 */
export function sendMessage(
  ring: Ring,
  type: number,
  flags: number,
  handle: number,
  seq: number,
  ack: number,
  credit: number,
  payload?: Uint8Array,
  payloadLen?: number,
): number {
  const len = payloadLen ?? (payload ? payload.length : 0)
  if (len > 0 && (!payload || payload.length < len)) {
    throw new NsrError('EINVAL', `payloadLen ${len} exceeds the payload given (${payload ? payload.length : 0} bytes)`)
  }
  const off = reserveMessage(ring, type, flags, handle, seq, ack, credit, len)
  if (off < 0) return off
  if (len > 0) {
    const src = payload as Uint8Array
    ring.bytes.set(len === src.length ? src : src.subarray(0, len), off)
  }
  ring.commit()
  return RingResult.OK
}

/** Largest payload a message on `ring` can carry. */
export function maxMessagePayload(ring: Ring): number {
  return ring.maxFrameBytes - HEADER_BYTES
}

export type MessageHandler = (h: Header, bytes: Uint8Array, payloadOffset: number) => void

export interface MessageReaderOptions {
  /** Shared reject counters (one per channel); a fresh set by default. */
  rejects?: RejectCounters
  /** Payloads longer than this are rejected as bad-length. */
  maxPayload?: number
  /** Called for each rejected frame, after it is counted (diagnostics). */
  onReject?: (reason: Reject, bytes: Uint8Array, offset: number, length: number) => void
}

/**
 * Reads messages off one ring. onMessage gets a Header object that is reused for every message and
 * the ring's data region with the payload's offset: neither may be kept after the call returns.
 */
export class MessageReader {
  readonly ring: Ring
  readonly rejects: RejectCounters
  accepted = 0
  private readonly header: Header = emptyHeader()
  private readonly onMessage: MessageHandler
  private readonly maxPayload: number
  private readonly onReject: MessageReaderOptions['onReject']

  constructor(ring: Ring, onMessage: MessageHandler, opts: MessageReaderOptions = {}) {
    this.ring = ring
    this.onMessage = onMessage
    this.rejects = opts.rejects ?? new RejectCounters()
    this.maxPayload = opts.maxPayload ?? ring.maxFrameBytes - HEADER_BYTES
    this.onReject = opts.onReject
  }

  /** Handles up to `maxMessages` frames now. Returns frames consumed (accepted plus rejected). */
  poll(maxMessages = READER_MAX_MESSAGES_PER_POLL): number {
    return this.ring.drain(this.onFrame, maxMessages, READER_MAX_BYTES_PER_POLL)
  }

  /** The last poll() stopped at a cap (frames or bytes) with more waiting. */
  full(n: number, maxMessages = READER_MAX_MESSAGES_PER_POLL): boolean {
    return n === maxMessages || this.ring.drainCapped
  }

  /**
   * Handles messages until the ring is closed and empty, waiting with ring.readable() when idle
   * and yielding to the event loop after every full poll so timers and I/O keep running.
   */
  async pump(): Promise<void> {
    for (;;) {
      const n = this.poll()
      if (this.full(n)) {
        await yieldToEventLoop()
        continue
      }
      if (n > 0) continue
      if (this.ring.closed && this.ring.isEmpty()) return
      await this.ring.readable()
    }
  }

  private readonly onFrame = (bytes: Uint8Array, offset: number, length: number): void => {
    const h = this.header
    let reason = readHeader(this.ring.view, offset, length, this.maxPayload, h)
    if (reason === null && HEADER_BYTES + h.length !== length) reason = Reject.LENGTH
    if (reason !== null) {
      this.rejects.count(reason)
      this.onReject?.(reason, bytes, offset, length)
      return
    }
    this.accepted++
    this.onMessage(h, bytes, offset + HEADER_BYTES)
  }
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}
