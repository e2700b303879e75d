// The KKCM message header, after Linux RDS's rds_header: every frame on a KKCM ring (between the
// two REs, and between an RE and the chassis) starts with these 32 bytes, then `length` payload
// bytes. Encoded with a DataView at a caller's offset: no allocation, no msgpackr, no structured
// clone on the data path.
//
//   off size field     meaning
//     0    1 version   HEADER_VERSION; anything else is rejected
//     1    1 type      MsgType
//     2    2 flags     Flag bits (ACK_REQUIRED, RETRANSMITTED, CONGESTED, BATCH, ...)
//     4    4 handle    replication handle / chassis socket id (0 = channel-wide)
//     8    4 seq       per-handle sequence number of this message (wraps at 2^32)
//    12    4 ack       piggybacked cumulative ack: the highest seq received in order
//    16    4 credit    flow-control window in bytes the sender advertises (meaning per type)
//    20    4 length    payload bytes that follow the header
//    24    4 reserved  must be zero
//    28    4 checksum  over bytes 0..27
//
// All multi-byte fields are little-endian. Sequence numbers compare with wrap-around (seqLt).

export const HEADER_BYTES = 32
export const HEADER_VERSION = 1

export const Off = {
  version: 0,
  type: 1,
  flags: 2,
  handle: 4,
  seq: 8,
  ack: 12,
  credit: 16,
  length: 20,
  reserved: 24,
  checksum: 28,
} as const
if (Off.checksum + 4 !== HEADER_BYTES || HEADER_BYTES % 8 !== 0) throw new Error('KKCM header layout is inconsistent')

export const MsgType = {
  // RE <-> RE (SDRL / IHA)
  REPLICATE: 1, // primary -> secondary: one record the primary app wrote (UDP: address prefix)
  ACK: 2, // secondary -> primary: cumulative ack in `ack`, window in `credit`
  FLOWCTL: 3, // secondary -> primary: window update in `credit`
  TXDONE: 4, // primary -> secondary: records up to `ack` reached the chassis (it keeps them from now on)
  INIT_PARAMS: 5, // primary -> secondary: socket parameters (msgpackr payload), the handshake round in `ack`
  INIT_RCVDATA: 6, // primary -> secondary: pre-existing receive data
  INIT_SNDDATA: 7, // primary -> secondary: pre-existing send data (records not yet transmitted)
  INIT_DONE: 8, // primary -> secondary: init data complete
  INIT_ACK: 9, // secondary -> primary: acks one init step (step in `seq`, the round echoed in `ack`)
  FUNCTIONAL: 10, // primary -> secondary: replication is functional
  UNREPLICATE: 11, // either way: tear down replication on `handle`
  KEEPALIVE: 12, // either way: liveness
  PEER_MSG: 13, // either way: application out-of-band message (msgpackr payload)
  INIT_NAK: 14, // secondary -> primary: the handshake of round `ack` refused (the reason is counted there)
  // RE <-> chassis
  TX: 32, // RE -> chassis: record for the transport; `seq` is its record sequence
  TX_CREDIT: 33, // chassis -> RE: `credit` bytes of transport room returned
  RX: 34, // chassis -> RE: received bytes (UDP: address prefix); `seq` is the rx sequence
  RX_CREDIT: 35, // RE -> chassis: `credit` receive bytes consumed by the application
  CMD: 36, // RE -> chassis: control request (msgpackr payload), request id in `seq`
  EVENT: 37, // chassis -> RE: socket event or reply (msgpackr payload), request id in `ack`
  KSYNC: 38, // RE -> chassis: KSync request batch (msgpackr payload)
  KSYNC_ACK: 39, // chassis -> RE: KSync replies (msgpackr payload)
  TX_RELEASE: 40, // RE -> chassis: held records up to `seq` may reach the transport (RESUME: drop the rest)
} as const
export type MsgType = (typeof MsgType)[keyof typeof MsgType]

const knownTypes = new Uint8Array(256)
for (const v of Object.values(MsgType)) knownTypes[v] = 1

export const Flag = {
  ACK_REQUIRED: 0x0001, // the receiver must ack now, not coalesce
  RETRANSMITTED: 0x0002, // sent before (a new primary resending after takeover)
  CONGESTED: 0x0004, // the sender's socket is congested: writes get ENOBUFS
  FIN: 0x0008, // end of stream (RX: peer closed; TX: close after this)
  RST: 0x0010, // connection reset / error
  DATAGRAM: 0x0020, // payload starts with an encoded address (UDP)
  HELD: 0x0040, // TX: the chassis keeps the record until a TX_RELEASE covers it
  RESUME: 0x0080, // TX_RELEASE from a new primary: held records after `seq` are dropped
  BATCH: 0x0100, // TX / REPLICATE: `credit` records from `seq` on, one entry each (engine/re/sink.ts)
} as const
const knownFlags = 0x01ff

/** Why a header was rejected. */
export const Reject = {
  TRUNCATED: 'truncated',
  VERSION: 'bad-version',
  TYPE: 'bad-type',
  FLAGS: 'bad-flags',
  RESERVED: 'reserved-nonzero',
  CHECKSUM: 'bad-checksum',
  LENGTH: 'bad-length',
} as const
export type Reject = (typeof Reject)[keyof typeof Reject]

export interface Header {
  type: number
  flags: number
  handle: number
  seq: number
  ack: number
  credit: number
  length: number
}

export function emptyHeader(): Header {
  return { type: 0, flags: 0, handle: 0, seq: 0, ack: 0, credit: 0, length: 0 }
}

/** Header checksum: FNV-1a over the seven 32-bit words before it, then a final avalanche. */
export function headerChecksum(dv: DataView, off: number): number {
  return checksumWords(
    dv.getUint32(off, true),
    dv.getUint32(off + 4, true),
    dv.getUint32(off + 8, true),
    dv.getUint32(off + 12, true),
    dv.getUint32(off + 16, true),
    dv.getUint32(off + 20, true),
    dv.getUint32(off + 24, true),
  )
}

/** The checksum of the seven header words given as values (encode and decode need no re-read). */
function checksumWords(w0: number, w1: number, w2: number, w3: number, w4: number, w5: number, w6: number): number {
  let h = Math.imul(0x811c9dc5 ^ w0, 0x01000193)
  h = Math.imul(h ^ w1, 0x01000193)
  h = Math.imul(h ^ w2, 0x01000193)
  h = Math.imul(h ^ w3, 0x01000193)
  h = Math.imul(h ^ w4, 0x01000193)
  h = Math.imul(h ^ w5, 0x01000193)
  h = Math.imul(h ^ w6, 0x01000193)
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  return h >>> 0
}

/** Writes a header at `off`. The caller writes `length` payload bytes after it. */
export function encodeHeader(
  dv: DataView,
  off: number,
  type: number,
  flags: number,
  handle: number,
  seq: number,
  ack: number,
  credit: number,
  length: number,
): void {
  // Word 0 holds version, type and flags (little-endian); the checksum is computed from the values.
  const w0 = (HEADER_VERSION | ((type & 0xff) << 8) | ((flags & 0xffff) << 16)) >>> 0
  dv.setUint32(off, w0, true)
  dv.setUint32(off + Off.handle, handle >>> 0, true)
  dv.setUint32(off + Off.seq, seq >>> 0, true)
  dv.setUint32(off + Off.ack, ack >>> 0, true)
  dv.setUint32(off + Off.credit, credit >>> 0, true)
  dv.setUint32(off + Off.length, length >>> 0, true)
  dv.setUint32(off + Off.reserved, 0, true)
  dv.setUint32(off + Off.checksum, checksumWords(w0, handle >>> 0, seq >>> 0, ack >>> 0, credit >>> 0, length >>> 0, 0), true)
}

/**
 * validate() and decodeHeader() in one pass, each word read once: fills `into` and returns null,
 * or returns the reason the header is rejected (then `into` is unspecified).
 */
export function readHeader(dv: DataView, off: number, available: number, maxPayload: number, into: Header): Reject | null {
  if (available < HEADER_BYTES || off < 0 || off + HEADER_BYTES > dv.byteLength) return Reject.TRUNCATED
  const w0 = dv.getUint32(off, true)
  const handle = dv.getUint32(off + 4, true)
  const seq = dv.getUint32(off + 8, true)
  const ack = dv.getUint32(off + 12, true)
  const credit = dv.getUint32(off + 16, true)
  const length = dv.getUint32(off + 20, true)
  const reserved = dv.getUint32(off + 24, true)
  if ((w0 & 0xff) !== HEADER_VERSION) return Reject.VERSION
  if (dv.getUint32(off + Off.checksum, true) !== checksumWords(w0, handle, seq, ack, credit, length, reserved)) return Reject.CHECKSUM
  const type = (w0 >>> 8) & 0xff
  const flags = w0 >>> 16
  if (knownTypes[type] !== 1) return Reject.TYPE
  if ((flags & ~knownFlags) !== 0) return Reject.FLAGS
  if (reserved !== 0) return Reject.RESERVED
  if (length > maxPayload || HEADER_BYTES + length > available) return Reject.LENGTH
  into.type = type
  into.flags = flags
  into.handle = handle
  into.seq = seq
  into.ack = ack
  into.credit = credit
  into.length = length
  return null
}

/**
 * Checks the header at `off` given `available` bytes from there. Returns a reason, or null when the
 * header is well formed and its payload lies within `available` and `maxPayload`.
 */
export function validate(dv: DataView, off: number, available: number, maxPayload = 0x7fffffff): Reject | null {
  if (available < HEADER_BYTES || off < 0 || off + HEADER_BYTES > dv.byteLength) return Reject.TRUNCATED
  if (dv.getUint8(off + Off.version) !== HEADER_VERSION) return Reject.VERSION
  if (dv.getUint32(off + Off.checksum, true) !== headerChecksum(dv, off)) return Reject.CHECKSUM
  if (knownTypes[dv.getUint8(off + Off.type)] !== 1) return Reject.TYPE
  if ((dv.getUint16(off + Off.flags, true) & ~knownFlags) !== 0) return Reject.FLAGS
  if (dv.getUint32(off + Off.reserved, true) !== 0) return Reject.RESERVED
  const length = dv.getUint32(off + Off.length, true)
  if (length > maxPayload || HEADER_BYTES + length > available) return Reject.LENGTH
  return null
}

/** Reads a header that validate() accepted into `into` (reused by callers to avoid allocation). */
export function decodeHeader(dv: DataView, off: number, into: Header): Header {
  into.type = dv.getUint8(off + Off.type)
  into.flags = dv.getUint16(off + Off.flags, true)
  into.handle = dv.getUint32(off + Off.handle, true)
  into.seq = dv.getUint32(off + Off.seq, true)
  into.ack = dv.getUint32(off + Off.ack, true)
  into.credit = dv.getUint32(off + Off.credit, true)
  into.length = dv.getUint32(off + Off.length, true)
  return into
}

/** Counts rejected headers by reason; every channel owns one. */
export class RejectCounters {
  total = 0
  readonly byReason: Record<Reject, number> = {
    truncated: 0,
    'bad-version': 0,
    'bad-type': 0,
    'bad-flags': 0,
    'reserved-nonzero': 0,
    'bad-checksum': 0,
    'bad-length': 0,
  }
  count(reason: Reject): void {
    this.total++
    this.byReason[reason]++
  }
}

// Sequence arithmetic modulo 2^32 (RFC 1982 style): a < b when b is ahead of a by less than 2^31.
export const seqLt = (a: number, b: number): boolean => ((a - b) | 0) < 0
export const seqLe = (a: number, b: number): boolean => ((a - b) | 0) <= 0
export const seqAdd = (a: number, n: number): number => (a + n) >>> 0
/** b - a as a signed distance. */
export const seqDiff = (b: number, a: number): number => (b - a) | 0
