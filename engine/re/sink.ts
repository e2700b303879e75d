// FrameSink: the one port through which the sans-IO engine (RE core, chassis core) emits KKCM
// messages. A ring-backed sink writes header + payload straight into a SharedArrayBuffer ring;
// the simulator's sink queues frames in memory. `send` returns false when there is no room (the
// caller keeps its state and asks `whenRoom` to be called back), never blocks and never throws
// for a full channel.

import { HEADER_BYTES, encodeHeader } from '../protocol/header.ts'
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
