// FrameSink: the one port through which the sans-IO engine (RE core, chassis core) emits KKCM
// messages. A ring-backed sink writes header + payload straight into a SharedArrayBuffer ring;
// the simulator's sink queues frames in memory. `send` returns false when there is no room (the
// caller keeps its state and asks `whenRoom` to be called back), never blocks and never throws
// for a full channel.

import { Flag, HEADER_BYTES, MsgType, encodeHeader, type Header } from '../protocol/header.ts'
import type { Addr } from '../socket/records.ts'

export interface FrameSink {
  /**
   * Emits one message: header fields, then (when `addr` is given) the encoded address, then `data`.
   * Returns false when the channel is full or closed.
   */
  send(
    type: number,
    flags: number,
    handle: number,
    seq: number,
    ack: number,
    credit: number,
    data: Uint8Array | null,
    addr?: Addr | null,
  ): boolean
  /**
   * True when a frame carrying `payloadBytes` (see framePayloadBytes) would be accepted now; after
   * false, whenRoom() waits for room as after a refused send.
   */
  room(payloadBytes: number): boolean
  /** Calls `cb` once, soon after room may have appeared. */
  whenRoom(cb: () => void): void
  /** Makes everything sent so far visible to the reader (a no-op where sends publish at once). */
  flush(): void
}

// Address prefix of a DATAGRAM payload: u16 port, u8 length, then the address as ASCII.
export function addrBytes(addr: Addr): number {
  return 3 + addr.address.length
}

export function encodeAddr(bytes: Uint8Array, off: number, addr: Addr): number {
  const s = addr.address
  bytes[off] = addr.port & 0xff
  bytes[off + 1] = (addr.port >>> 8) & 0xff
  bytes[off + 2] = s.length
  for (let i = 0; i < s.length; i++) bytes[off + 3 + i] = s.charCodeAt(i) & 0x7f
  return 3 + s.length
}

/** Decodes an address prefix; returns null when the bytes cannot hold one. */
export function decodeAddr(bytes: Uint8Array, off: number, end: number): { addr: Addr; next: number } | null {
  if (off + 3 > end) return null
  const port = bytes[off] | (bytes[off + 1] << 8)
  const len = bytes[off + 2]
  if (off + 3 + len > end || len === 0 || len > 64) return null
  let address = ''
  for (let i = 0; i < len; i++) address += String.fromCharCode(bytes[off + 3 + i])
  return { addr: { address, port }, next: off + 3 + len }
}

/** Where a message's data lies in its frame's bytes, and the datagram address before it. */
export interface DataSpan {
  addr: Addr | null
  start: number
  end: number
}

/**
 * Where a message's data lies: after the address prefix when DATAGRAM is flagged. Fills and
 * returns `out` (one reused object: hot path), or null when the prefix is malformed.
 */
export function dataSpan(h: Header, bytes: Uint8Array, off: number, out: DataSpan): DataSpan | null {
  out.addr = null
  out.start = off
  out.end = off + h.length
  if (h.flags & Flag.DATAGRAM) {
    const d = decodeAddr(bytes, off, out.end)
    if (!d) return null
    out.addr = d.addr
    out.start = d.next
  }
  return out
}

/** Payload bytes of a frame that carries `data` after an optional address prefix. */
export function framePayloadBytes(data: Uint8Array | null, addr?: Addr | null): number {
  return (addr ? addrBytes(addr) : 0) + (data ? data.length : 0)
}

/**
 * Writes one frame at `off`: the header, the address prefix when `addr` is given, then `data`.
 * The caller has room for HEADER_BYTES + framePayloadBytes(data, addr). Every FrameSink encodes
 * through this one function, so the simulator's frames are the ring's byte for byte.
 */
export function writeFrame(
  view: DataView,
  bytes: Uint8Array,
  off: number,
  type: number,
  flags: number,
  handle: number,
  seq: number,
  ack: number,
  credit: number,
  data: Uint8Array | null,
  addr?: Addr | null,
): void {
  encodeHeader(view, off, type, flags, handle, seq, ack, credit, framePayloadBytes(data, addr))
  let p = off + HEADER_BYTES
  if (addr) p += encodeAddr(bytes, p, addr)
  if (!data) return
  const n = data.length
  if (n <= 32) {
    // Short copies: a loop beats TypedArray.set's call overhead.
    for (let i = 0; i < n; i++) bytes[p + i] = data[i]
  } else bytes.set(data, p)
}

// ---- record batches ---------------------------------------------------------------------------
// TX and REPLICATE carry records. Consecutive records of one socket sent in one task share a frame
// flagged BATCH (the ring-backed sink keeps it open until the task ends, another frame goes on the
// ring, or it is full): the header's `seq` is the first record's, `credit` the number of records,
// `ack` and ACK_REQUIRED those of the last one, the other flags those of every record. The payload
// is one entry per record: u32 length (address prefix included), u32 zero, then the bytes (the
// address prefix when DATAGRAM, then the record) padded to 8, so every record starts 8-aligned
// (ring copies at offsets that differ mod 8 are several times slower). A frame without BATCH is one
// record as before. Why: per-frame work (header encode and validate, reserve, commit, dispatch) was
// most of the cost of a 64-byte record on all three threads.

export const BATCH_ENTRY_PREFIX_BYTES = 8
/**
 * Payload bytes a batch grows to before it is closed: a whole batch is one ring publication (16 KiB,
 * ring.ts). 4 KiB batches measured 0.7-0.8x of this at 1 KiB records (bench/sdrl, same runs).
 */
export const BATCH_MAX_PAYLOAD_BYTES = 16 * 1024 - HEADER_BYTES
/** Flags that keep a frame out of a batch (a FIN or a reset is an event of its own). */
const UNBATCHABLE_FLAGS = Flag.FIN | Flag.RST | Flag.RESUME | Flag.BATCH

/** True for a frame that may join a record batch. */
export function batchable(type: number, flags: number, data: Uint8Array | null): boolean {
  return data !== null && (type === MsgType.TX || type === MsgType.REPLICATE) && (flags & UNBATCHABLE_FLAGS) === 0
}

/** Batch payload bytes one record of `payloadBytes` (see framePayloadBytes) takes. */
export function batchEntryBytes(payloadBytes: number): number {
  return BATCH_ENTRY_PREFIX_BYTES + ((payloadBytes + 7) & ~7)
}

/** Writes one batch entry at `off` (8-aligned). Returns the bytes it took. */
export function writeBatchEntry(view: DataView, bytes: Uint8Array, off: number, data: Uint8Array, addr: Addr | null): number {
  const n = framePayloadBytes(data, addr)
  view.setUint32(off, n, true)
  view.setUint32(off + 4, 0, true)
  let p = off + BATCH_ENTRY_PREFIX_BYTES
  if (addr) p += encodeAddr(bytes, p, addr)
  const len = data.length
  if (len <= 32) for (let i = 0; i < len; i++) bytes[p + i] = data[i]
  else bytes.set(data, p)
  return BATCH_ENTRY_PREFIX_BYTES + ((n + 7) & ~7)
}

/**
 * The records of a TX or REPLICATE frame, batched or not: calls `each(seq, start, end, addr)` with
 * the bounds of each record's bytes in `bytes` and, for a DATAGRAM frame, its decoded address.
 * Returns null, or why the frame is malformed: a bad chain hands out nothing (entries are checked
 * before the first call); a bad address prefix ends the frame at that record.
 */
export function forEachRecord(
  h: Header,
  bytes: Uint8Array,
  off: number,
  each: (seq: number, start: number, end: number, addr: Addr | null) => void,
): string | null {
  const end = off + h.length
  const datagram = (h.flags & Flag.DATAGRAM) !== 0
  if (!(h.flags & Flag.BATCH)) return record(h.seq, bytes, off, end, datagram, each)
  const count = h.credit
  if (count === 0) return 'batch-empty'
  // Validate the whole chain first: a bad entry must not leave half a batch applied.
  let p = off
  for (let i = 0; i < count; i++) {
    if (p + BATCH_ENTRY_PREFIX_BYTES > end) return 'batch-truncated'
    const n = bytes[p] | (bytes[p + 1] << 8) | (bytes[p + 2] << 16) | (bytes[p + 3] << 24)
    if (n < 0 || p + BATCH_ENTRY_PREFIX_BYTES + n > end) return 'batch-entry-length'
    p += BATCH_ENTRY_PREFIX_BYTES + ((n + 7) & ~7)
  }
  if (p !== end) return 'batch-trailing-bytes'
  p = off
  let seq = h.seq
  for (let i = 0; i < count; i++) {
    const n = bytes[p] | (bytes[p + 1] << 8) | (bytes[p + 2] << 16) | (bytes[p + 3] << 24)
    const start = p + BATCH_ENTRY_PREFIX_BYTES
    const bad = record(seq, bytes, start, start + n, datagram, each)
    if (bad !== null) return bad
    p = start + ((n + 7) & ~7)
    seq = (seq + 1) >>> 0
  }
  return null
}

function record(
  seq: number,
  bytes: Uint8Array,
  start: number,
  end: number,
  datagram: boolean,
  each: (seq: number, start: number, end: number, addr: Addr | null) => void,
): string | null {
  if (!datagram) {
    each(seq, start, end, null)
    return null
  }
  const d = decodeAddr(bytes, start, end)
  if (!d) return 'bad-address'
  each(seq, d.next, end, d.addr)
  return null
}
