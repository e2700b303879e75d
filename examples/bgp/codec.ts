// The BGP-4 wire codec (RFC 4271), sans-IO: message types, an incremental reader and size-first
// encoders. It covers OPEN with capabilities (RFC 5492: multiprotocol IPv4 unicast, RFC 4760;
// 4-octet AS, RFC 6793), KEEPALIVE, NOTIFICATION and UPDATE with withdrawn routes, the path
// attributes ORIGIN, AS_PATH, NEXT_HOP, MULTI_EXIT_DISC, LOCAL_PREF, ATOMIC_AGGREGATE (others kept
// verbatim) and IPv4 NLRI, in the classic fields or in MP_REACH/MP_UNREACH for AFI 1 SAFI 1.
//
// Every malformed input yields a WireError carrying the NOTIFICATION that RFC 4271 section 6 names;
// nothing here throws on wire input. Encoders throw only for programmer errors (a message that
// cannot fit 4096 bytes). Prefixes travel as numbers (prefixKey), never as strings, on the hot path.
//
// Message header (19 bytes):
//   off size field
//     0   16 marker   all ones
//    16    2 length   whole message, 19..4096
//    18    1 type     MsgType

import { assert } from '../../engine/errors.ts'

export const MARKER_BYTES = 16
export const HEADER_BYTES = 19
export const MAX_MESSAGE_BYTES = 4096
export const BGP_VERSION = 4
export const AS_TRANS = 23456
export const HeaderOff = { marker: 0, length: 16, type: 18 } as const
if (HeaderOff.type + 1 !== HEADER_BYTES || HeaderOff.length !== MARKER_BYTES) throw new Error('BGP header layout is inconsistent')

export const MsgType = { OPEN: 1, UPDATE: 2, NOTIFICATION: 3, KEEPALIVE: 4 } as const
export type MsgType = (typeof MsgType)[keyof typeof MsgType]

/** Smallest legal length of each message type (KEEPALIVE: exact length). */
export const MinLength = { 1: 29, 2: 23, 3: 21, 4: 19 } as const

/** NOTIFICATION error codes (RFC 4271 4.5) and subcodes (6.x, RFC 5492, RFC 6608, RFC 4486). */
export const ErrCode = { HEADER: 1, OPEN: 2, UPDATE: 3, HOLD_TIMER_EXPIRED: 4, FSM: 5, CEASE: 6 } as const
export const HeaderSub = { CONNECTION_NOT_SYNCHRONIZED: 1, BAD_MESSAGE_LENGTH: 2, BAD_MESSAGE_TYPE: 3 } as const
export const OpenSub = {
  UNSPECIFIC: 0,
  UNSUPPORTED_VERSION: 1,
  BAD_PEER_AS: 2,
  BAD_BGP_IDENTIFIER: 3,
  UNSUPPORTED_OPTIONAL_PARAMETER: 4,
  UNACCEPTABLE_HOLD_TIME: 6,
  UNSUPPORTED_CAPABILITY: 7,
} as const
export const UpdateSub = {
  MALFORMED_ATTRIBUTE_LIST: 1,
  UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: 2,
  MISSING_WELL_KNOWN_ATTRIBUTE: 3,
  ATTRIBUTE_FLAGS_ERROR: 4,
  ATTRIBUTE_LENGTH_ERROR: 5,
  INVALID_ORIGIN: 6,
  INVALID_NEXT_HOP: 8,
  OPTIONAL_ATTRIBUTE_ERROR: 9,
  INVALID_NETWORK_FIELD: 10,
  MALFORMED_AS_PATH: 11,
} as const
export const FsmSub = { UNSPECIFIED: 0, IN_OPENSENT: 1, IN_OPENCONFIRM: 2, IN_ESTABLISHED: 3 } as const
export const CeaseSub = { ADMIN_SHUTDOWN: 2, PEER_DECONFIGURED: 3, ADMIN_RESET: 4, CONNECTION_REJECTED: 5 } as const

export const AttrType = {
  ORIGIN: 1,
  AS_PATH: 2,
  NEXT_HOP: 3,
  MULTI_EXIT_DISC: 4,
  LOCAL_PREF: 5,
  ATOMIC_AGGREGATE: 6,
  AGGREGATOR: 7,
  COMMUNITIES: 8,
  MP_REACH_NLRI: 14,
  MP_UNREACH_NLRI: 15,
  AS4_PATH: 17,
  AS4_AGGREGATOR: 18,
} as const
export const AttrFlag = { OPTIONAL: 0x80, TRANSITIVE: 0x40, PARTIAL: 0x20, EXTENDED_LENGTH: 0x10 } as const
export const Origin = { IGP: 0, EGP: 1, INCOMPLETE: 2 } as const
export type Origin = (typeof Origin)[keyof typeof Origin]
export const SegType = { AS_SET: 1, AS_SEQUENCE: 2 } as const
export type SegType = (typeof SegType)[keyof typeof SegType]
export const CapCode = { MULTIPROTOCOL: 1, FOUR_OCTET_AS: 65 } as const
export const OptParam = { CAPABILITIES: 2 } as const
export const AFI_IPV4 = 1
export const SAFI_UNICAST = 1

// ---------------------------------------------------------------------------------------------
// Messages

export interface Capability {
  code: number
  value: Uint8Array
}

export interface OpenMessage {
  type: typeof MsgType.OPEN
  version: number
  /** The 2-octet My AS field (AS_TRANS when the real AS needs 4 octets). */
  myAs: number
  holdTimeS: number
  /** BGP identifier as an unsigned 32-bit number. */
  routerId: number
  /** Capabilities in wire order, from every Capabilities optional parameter. */
  capabilities: Capability[]
}

export interface KeepaliveMessage {
  type: typeof MsgType.KEEPALIVE
}

export interface NotificationMessage {
  type: typeof MsgType.NOTIFICATION
  code: number
  subcode: number
  data: Uint8Array
}

export interface AsPathSegment {
  type: SegType
  asns: number[]
}

/** An attribute kept verbatim: AGGREGATOR, COMMUNITIES, unknown optional transitive ones. */
export interface RawAttribute {
  /** Flags as received, EXTENDED_LENGTH cleared (the encoder recomputes it). */
  flags: number
  type: number
  value: Uint8Array
}

/** Path attributes of one UPDATE; shared by every prefix it carries. null = absent. */
export interface PathAttributes {
  origin: Origin | null
  /** With 2-octet peers, already merged with AS4_PATH (RFC 6793 4.2.3). */
  asPath: AsPathSegment[] | null
  /** IPv4 next hop as an unsigned 32-bit number. */
  nextHop: number | null
  med: number | null
  localPref: number | null
  atomicAggregate: boolean
  other: RawAttribute[]
}

/** NLRI carried in MP_REACH_NLRI for IPv4 unicast, with its own next hop. */
export interface MpReach {
  nextHop: number
  nlri: number[]
}

export interface UpdateMessage {
  type: typeof MsgType.UPDATE
  /** Prefix keys (prefixKey) withdrawn, classic field then MP_UNREACH_NLRI. */
  withdrawn: number[]
  /** null when the UPDATE has no path attributes at all. */
  attrs: PathAttributes | null
  /** Prefix keys announced in the classic NLRI field. */
  nlri: number[]
  mpReach: MpReach | null
}

export type BgpMessage = OpenMessage | UpdateMessage | NotificationMessage | KeepaliveMessage

/** Bad wire input: the NOTIFICATION to send, and a reason for people. */
export interface WireError {
  code: number
  subcode: number
  data: Uint8Array
  reason: string
}

const EMPTY = new Uint8Array(0)

function wireError(code: number, subcode: number, reason: string, data: Uint8Array = EMPTY): WireError {
  return { code, subcode, data, reason }
}

// ---------------------------------------------------------------------------------------------
// Addresses and prefix keys
//
// A prefix key packs an IPv4 prefix into one number so RIB maps key by number, not string.
// Prefixes up to /31 are the address with host bits cleared plus a marker bit just past the
// prefix (bit 31-len), read as an int32: unique, and a small integer V8 hashes fast. A /32 is
// 2^32 + address, outside the int32 range. keyLen/keyAddr invert it.

const HOST_KEY_BASE = 4294967296

export function maskOf(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0
}

export function prefixKey(addr: number, len: number): number {
  if (len === 32) return HOST_KEY_BASE + (addr >>> 0)
  return (addr & maskOf(len)) | (1 << (31 - len))
}

export function keyLen(key: number): number {
  if (key >= HOST_KEY_BASE) return 32
  return Math.clz32(key & -key)
}

export function keyAddr(key: number): number {
  if (key >= HOST_KEY_BASE) return key - HOST_KEY_BASE
  return (key & (key - 1)) >>> 0
}

/** Parses a dotted quad; null when malformed. */
export function parseIp(text: string): number | null {
  const parts = text.split('.')
  if (parts.length !== 4) return null
  let v = 0
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return null
    const n = Number(p)
    if (n > 255) return null
    v = v * 256 + n
  }
  return v
}

export function formatIp(addr: number): string {
  return `${addr >>> 24}.${(addr >>> 16) & 255}.${(addr >>> 8) & 255}.${addr & 255}`
}

/** Parses 'A.B.C.D/LEN' into a prefix key; null when malformed or host bits are set. */
export function parsePrefix(text: string): number | null {
  const slash = text.indexOf('/')
  if (slash < 0) return null
  const addr = parseIp(text.slice(0, slash))
  const lenText = text.slice(slash + 1)
  if (addr === null || !/^\d{1,2}$/.test(lenText)) return null
  const len = Number(lenText)
  if (len > 32 || (addr & ~maskOf(len)) !== 0) return null
  return prefixKey(addr, len)
}

export function formatPrefix(key: number): string {
  return `${formatIp(keyAddr(key))}/${keyLen(key)}`
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function get16(b: Uint8Array, o: number): number {
  return (b[o] << 8) | b[o + 1]
}
function get32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0
}
function put16(b: Uint8Array, o: number, v: number): number {
  b[o] = v >>> 8
  b[o + 1] = v
  return o + 2
}
function put32(b: Uint8Array, o: number, v: number): number {
  b[o] = v >>> 24
  b[o + 1] = v >>> 16
  b[o + 2] = v >>> 8
  b[o + 3] = v
  return o + 4
}
function u16bytes(v: number): Uint8Array {
  return new Uint8Array([v >>> 8, v & 255])
}

function writeHeader(b: Uint8Array, o: number, length: number, type: number): number {
  b.fill(0xff, o, o + MARKER_BYTES)
  put16(b, o + HeaderOff.length, length)
  b[o + HeaderOff.type] = type
  return o + HEADER_BYTES
}

/** Capability helpers for an OPEN. */
export function capAs4(open: OpenMessage): number | null {
  for (const c of open.capabilities) if (c.code === CapCode.FOUR_OCTET_AS && c.value.length === 4) return get32(c.value, 0)
  return null
}

/** The capability list advertises multiprotocol for AFI/SAFI. */
export function capMp(open: OpenMessage, afi: number, safi: number): boolean {
  for (const c of open.capabilities) {
    if (c.code === CapCode.MULTIPROTOCOL && c.value.length === 4 && get16(c.value, 0) === afi && c.value[3] === safi) return true
  }
  return false
}

export function hasMpCapabilities(open: OpenMessage): boolean {
  return open.capabilities.some((c) => c.code === CapCode.MULTIPROTOCOL)
}

export function mpCapability(afi: number, safi: number): Capability {
  return { code: CapCode.MULTIPROTOCOL, value: new Uint8Array([afi >>> 8, afi & 255, 0, safi]) }
}

export function as4Capability(as: number): Capability {
  const value = new Uint8Array(4)
  put32(value, 0, as)
  return { code: CapCode.FOUR_OCTET_AS, value }
}

// ---------------------------------------------------------------------------------------------
// Header

/** Checks the header at `off` (19 bytes present). Returns the message length or a WireError. */
export function checkHeader(b: Uint8Array, off: number): number | WireError {
  for (let i = 0; i < MARKER_BYTES; i++) {
    if (b[off + i] !== 0xff) return wireError(ErrCode.HEADER, HeaderSub.CONNECTION_NOT_SYNCHRONIZED, 'marker is not all ones')
  }
  const length = get16(b, off + HeaderOff.length)
  const type = b[off + HeaderOff.type]
  if (length < HEADER_BYTES || length > MAX_MESSAGE_BYTES) {
    return wireError(ErrCode.HEADER, HeaderSub.BAD_MESSAGE_LENGTH, `length ${length} out of bounds`, u16bytes(length))
  }
  if (type < MsgType.OPEN || type > MsgType.KEEPALIVE) {
    return wireError(ErrCode.HEADER, HeaderSub.BAD_MESSAGE_TYPE, `unknown type ${type}`, new Uint8Array([type]))
  }
  const min = MinLength[type as MsgType]
  if (length < min || (type === MsgType.KEEPALIVE && length !== min)) {
    return wireError(ErrCode.HEADER, HeaderSub.BAD_MESSAGE_LENGTH, `length ${length} bad for type ${type}`, u16bytes(length))
  }
  return length
}

// ---------------------------------------------------------------------------------------------
// Decoding

export interface DecodeContext {
  /** Both sides advertised the 4-octet AS capability: AS_PATH carries 4-octet ASNs. */
  as4: boolean
  /**
   * Decode only the prefixes of UPDATEs (attrs null, mpReach null), checking the framing but not
   * the attributes: for following our own writes, whose attributes need no session context.
   */
  prefixesOnly?: boolean
  /** Accept next hops in 127/8 (a lab whose speakers all sit on one host's loopback). */
  loopbackNextHop?: boolean
}

function badNextHop(a: number, ctx: DecodeContext): boolean {
  return isMartianNextHop(a) && !(ctx.loopbackNextHop === true && a >>> 24 === 127)
}

/** Decodes one whole message (header already checked, `msg.length` is its length). */
export function decodeBody(msg: Uint8Array, ctx: DecodeContext): BgpMessage | WireError {
  const type = msg[HeaderOff.type]
  switch (type) {
    case MsgType.KEEPALIVE:
      return { type: MsgType.KEEPALIVE }
    case MsgType.NOTIFICATION:
      return { type: MsgType.NOTIFICATION, code: msg[19], subcode: msg[20], data: msg.slice(21) }
    case MsgType.OPEN:
      return decodeOpen(msg)
    case MsgType.UPDATE:
      return decodeUpdate(msg, ctx)
    default:
      return wireError(ErrCode.HEADER, HeaderSub.BAD_MESSAGE_TYPE, `unknown type ${type}`, new Uint8Array([type]))
  }
}

export type DecodeResult =
  | { kind: 'message'; message: BgpMessage; length: number }
  | { kind: 'need-more'; needBytes: number }
  | { kind: 'error'; error: WireError }

/** Decodes the message at the start of `buf`: a whole message, "need more", or an error. */
export function decodeMessage(buf: Uint8Array, ctx: DecodeContext = { as4: true }): DecodeResult {
  if (buf.length < HEADER_BYTES) {
    const bad = firstBadMarkerByte(buf, 0, buf.length)
    if (bad >= 0) return { kind: 'error', error: wireError(ErrCode.HEADER, HeaderSub.CONNECTION_NOT_SYNCHRONIZED, 'marker is not all ones') }
    return { kind: 'need-more', needBytes: HEADER_BYTES - buf.length }
  }
  const length = checkHeader(buf, 0)
  if (typeof length !== 'number') return { kind: 'error', error: length }
  if (buf.length < length) return { kind: 'need-more', needBytes: length - buf.length }
  const m = decodeBody(buf.subarray(0, length), ctx)
  return 'reason' in m ? { kind: 'error', error: m } : { kind: 'message', message: m, length }
}

function firstBadMarkerByte(b: Uint8Array, from: number, to: number): number {
  for (let i = from; i < to && i < MARKER_BYTES; i++) if (b[i] !== 0xff) return i
  return -1
}

function decodeOpen(m: Uint8Array): OpenMessage | WireError {
  const version = m[19]
  if (version !== BGP_VERSION) {
    return wireError(ErrCode.OPEN, OpenSub.UNSUPPORTED_VERSION, `version ${version}`, u16bytes(BGP_VERSION))
  }
  const myAs = get16(m, 20)
  const holdTimeS = get16(m, 22)
  const routerId = get32(m, 24)
  const optLen = m[28]
  if (29 + optLen !== m.length) return wireError(ErrCode.OPEN, OpenSub.UNSPECIFIC, 'optional parameters length mismatch')
  const capabilities: Capability[] = []
  let p = 29
  while (p < m.length) {
    if (p + 2 > m.length) return wireError(ErrCode.OPEN, OpenSub.UNSPECIFIC, 'truncated optional parameter')
    const ptype = m[p]
    const plen = m[p + 1]
    const end = p + 2 + plen
    if (end > m.length) return wireError(ErrCode.OPEN, OpenSub.UNSPECIFIC, 'optional parameter overruns')
    if (ptype !== OptParam.CAPABILITIES) {
      return wireError(ErrCode.OPEN, OpenSub.UNSUPPORTED_OPTIONAL_PARAMETER, `optional parameter ${ptype}`)
    }
    let c = p + 2
    while (c < end) {
      if (c + 2 > end) return wireError(ErrCode.OPEN, OpenSub.UNSPECIFIC, 'truncated capability')
      const code = m[c]
      const clen = m[c + 1]
      if (c + 2 + clen > end) return wireError(ErrCode.OPEN, OpenSub.UNSPECIFIC, 'capability overruns')
      if ((code === CapCode.MULTIPROTOCOL || code === CapCode.FOUR_OCTET_AS) && clen !== 4) {
        return wireError(ErrCode.OPEN, OpenSub.UNSPECIFIC, `capability ${code} length ${clen}`)
      }
      capabilities.push({ code, value: m.slice(c + 2, c + 2 + clen) })
      c += 2 + clen
    }
    p = end
  }
  if (holdTimeS === 1 || holdTimeS === 2) {
    return wireError(ErrCode.OPEN, OpenSub.UNACCEPTABLE_HOLD_TIME, `hold time ${holdTimeS}`)
  }
  if (routerId === 0) return wireError(ErrCode.OPEN, OpenSub.BAD_BGP_IDENTIFIER, 'BGP identifier 0')
  return { type: MsgType.OPEN, version, myAs, holdTimeS, routerId, capabilities }
}

/** Decodes prefixes in b[from, to) into keys; null when a prefix is malformed. */
export function decodePrefixes(b: Uint8Array, from: number, to: number, out: number[]): number[] | null {
  let p = from
  while (p < to) {
    const len = b[p++]
    if (len > 32) return null
    const n = (len + 7) >>> 3
    if (p + n > to) return null
    let a = 0
    switch (n) {
      case 4:
        a = (b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]
        break
      case 3:
        a = (b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8)
        break
      case 2:
        a = (b[p] << 24) | (b[p + 1] << 16)
        break
      case 1:
        a = b[p] << 24
        break
    }
    p += n
    // Trailing bits past the prefix length are irrelevant (RFC 4271 4.3): prefixKey masks them.
    out.push(prefixKey(a, len))
  }
  return out
}

// Expected flag bits (OPTIONAL | TRANSITIVE | PARTIAL) of recognised attributes.
const WELL_KNOWN = AttrFlag.TRANSITIVE
const OPT_NON_TRANSITIVE = AttrFlag.OPTIONAL
const OPT_TRANSITIVE = AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE
const expectedFlags = new Int16Array(256).fill(-1)
expectedFlags[AttrType.ORIGIN] = WELL_KNOWN
expectedFlags[AttrType.AS_PATH] = WELL_KNOWN
expectedFlags[AttrType.NEXT_HOP] = WELL_KNOWN
expectedFlags[AttrType.LOCAL_PREF] = WELL_KNOWN
expectedFlags[AttrType.ATOMIC_AGGREGATE] = WELL_KNOWN
expectedFlags[AttrType.MULTI_EXIT_DISC] = OPT_NON_TRANSITIVE
expectedFlags[AttrType.MP_REACH_NLRI] = OPT_NON_TRANSITIVE
expectedFlags[AttrType.MP_UNREACH_NLRI] = OPT_NON_TRANSITIVE
expectedFlags[AttrType.AGGREGATOR] = OPT_TRANSITIVE
expectedFlags[AttrType.COMMUNITIES] = OPT_TRANSITIVE
expectedFlags[AttrType.AS4_PATH] = OPT_TRANSITIVE
expectedFlags[AttrType.AS4_AGGREGATOR] = OPT_TRANSITIVE

/** A next hop that cannot be a unicast router address: 0/8, 127/8, 224/3 (multicast, class E, broadcast). */
export function isMartianNextHop(a: number): boolean {
  const top = a >>> 24
  return top === 0 || top === 127 || top >= 224
}

function decodeUpdate(m: Uint8Array, ctx: DecodeContext): UpdateMessage | WireError {
  const L = m.length
  const wlen = get16(m, 19)
  if (21 + wlen + 2 > L) return wireError(ErrCode.UPDATE, UpdateSub.MALFORMED_ATTRIBUTE_LIST, 'withdrawn routes length overruns')
  const withdrawn = decodePrefixes(m, 21, 21 + wlen, [])
  if (!withdrawn) return wireError(ErrCode.UPDATE, UpdateSub.INVALID_NETWORK_FIELD, 'malformed withdrawn prefix')
  const aoff = 23 + wlen
  const alen = get16(m, 21 + wlen)
  if (aoff + alen > L) return wireError(ErrCode.UPDATE, UpdateSub.MALFORMED_ATTRIBUTE_LIST, 'total path attribute length overruns')
  const nlri = decodePrefixes(m, aoff + alen, L, [])
  if (!nlri) return wireError(ErrCode.UPDATE, UpdateSub.INVALID_NETWORK_FIELD, 'malformed NLRI prefix')
  if (alen === 0 || ctx.prefixesOnly) {
    if (nlri.length > 0 && alen === 0) return wireError(ErrCode.UPDATE, UpdateSub.MISSING_WELL_KNOWN_ATTRIBUTE, 'ORIGIN missing', new Uint8Array([AttrType.ORIGIN]))
    return { type: MsgType.UPDATE, withdrawn, attrs: null, nlri, mpReach: null }
  }
  const attrs: PathAttributes = { origin: null, asPath: null, nextHop: null, med: null, localPref: null, atomicAggregate: false, other: [] }
  let mpReach: MpReach | null = null
  let as4Path: AsPathSegment[] | null = null
  const seen = new Uint8Array(256)
  const end = aoff + alen
  let p = aoff
  while (p < end) {
    if (p + 3 > end) return wireError(ErrCode.UPDATE, UpdateSub.MALFORMED_ATTRIBUTE_LIST, 'truncated attribute header')
    const flags = m[p]
    const type = m[p + 1]
    const ext = (flags & AttrFlag.EXTENDED_LENGTH) !== 0
    if (ext && p + 4 > end) return wireError(ErrCode.UPDATE, UpdateSub.MALFORMED_ATTRIBUTE_LIST, 'truncated attribute header')
    const vlen = ext ? get16(m, p + 2) : m[p + 2]
    const v = p + (ext ? 4 : 3)
    if (v + vlen > end) return wireError(ErrCode.UPDATE, UpdateSub.MALFORMED_ATTRIBUTE_LIST, `attribute ${type} overruns the attribute list`)
    const whole = () => m.slice(p, v + vlen)
    if (seen[type]) return wireError(ErrCode.UPDATE, UpdateSub.MALFORMED_ATTRIBUTE_LIST, `attribute ${type} repeated`)
    seen[type] = 1
    const expected = expectedFlags[type]
    if (expected < 0) {
      if ((flags & AttrFlag.OPTIONAL) === 0) {
        return wireError(ErrCode.UPDATE, UpdateSub.UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE, `unrecognized well-known attribute ${type}`, whole())
      }
      // Unknown optional transitive: kept for propagation (with PARTIAL set by whoever propagates).
      // Unknown optional non-transitive: quietly ignored (RFC 4271 5).
      if (flags & AttrFlag.TRANSITIVE) attrs.other.push({ flags: flags & 0xe0, type, value: m.slice(v, v + vlen) })
      p = v + vlen
      continue
    }
    const fixedFlags = flags & (AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE | (expected === OPT_TRANSITIVE ? 0 : AttrFlag.PARTIAL))
    if (fixedFlags !== expected) return wireError(ErrCode.UPDATE, UpdateSub.ATTRIBUTE_FLAGS_ERROR, `attribute ${type} flags 0x${flags.toString(16)}`, whole())
    const lengthError = () => wireError(ErrCode.UPDATE, UpdateSub.ATTRIBUTE_LENGTH_ERROR, `attribute ${type} length ${vlen}`, whole())
    switch (type) {
      case AttrType.ORIGIN:
        if (vlen !== 1) return lengthError()
        if (m[v] > Origin.INCOMPLETE) return wireError(ErrCode.UPDATE, UpdateSub.INVALID_ORIGIN, `ORIGIN ${m[v]}`, whole())
        attrs.origin = m[v] as Origin
        break
      case AttrType.AS_PATH: {
        const path = decodeAsPath(m, v, v + vlen, ctx.as4 ? 4 : 2)
        if (!path) return wireError(ErrCode.UPDATE, UpdateSub.MALFORMED_AS_PATH, 'malformed AS_PATH')
        attrs.asPath = path
        break
      }
      case AttrType.NEXT_HOP: {
        if (vlen !== 4) return lengthError()
        const nh = get32(m, v)
        if (badNextHop(nh, ctx)) return wireError(ErrCode.UPDATE, UpdateSub.INVALID_NEXT_HOP, `NEXT_HOP ${formatIp(nh)}`, whole())
        attrs.nextHop = nh
        break
      }
      case AttrType.MULTI_EXIT_DISC:
        if (vlen !== 4) return lengthError()
        attrs.med = get32(m, v)
        break
      case AttrType.LOCAL_PREF:
        if (vlen !== 4) return lengthError()
        attrs.localPref = get32(m, v)
        break
      case AttrType.ATOMIC_AGGREGATE:
        if (vlen !== 0) return lengthError()
        attrs.atomicAggregate = true
        break
      case AttrType.AGGREGATOR:
        if (vlen !== (ctx.as4 ? 8 : 6)) return lengthError()
        attrs.other.push({ flags: flags & 0xe0, type, value: m.slice(v, v + vlen) })
        break
      case AttrType.COMMUNITIES:
        if (vlen % 4 !== 0) return lengthError()
        attrs.other.push({ flags: flags & 0xe0, type, value: m.slice(v, v + vlen) })
        break
      case AttrType.AS4_PATH:
        // Only meaningful from a 2-octet speaker; a malformed one is discarded (RFC 6793 6).
        if (!ctx.as4) as4Path = decodeAsPath(m, v, v + vlen, 4)
        break
      case AttrType.AS4_AGGREGATOR:
        if (!ctx.as4 && vlen === 8) attrs.other.push({ flags: flags & 0xe0, type, value: m.slice(v, v + vlen) })
        break
      case AttrType.MP_REACH_NLRI: {
        const r = decodeMpReach(m, v, v + vlen, ctx)
        if ('reason' in r) return { ...r, data: whole() }
        mpReach = r.reach
        break
      }
      case AttrType.MP_UNREACH_NLRI: {
        if (vlen < 3) return wireError(ErrCode.UPDATE, UpdateSub.OPTIONAL_ATTRIBUTE_ERROR, 'MP_UNREACH_NLRI too short', whole())
        if (get16(m, v) === AFI_IPV4 && m[v + 2] === SAFI_UNICAST) {
          if (!decodePrefixes(m, v + 3, v + vlen, withdrawn)) return wireError(ErrCode.UPDATE, UpdateSub.INVALID_NETWORK_FIELD, 'malformed MP_UNREACH prefix')
        }
        break
      }
    }
    p = v + vlen
  }
  if (as4Path && attrs.asPath) attrs.asPath = mergeAs4Path(attrs.asPath, as4Path)
  if (nlri.length > 0 || mpReach) {
    const missing = attrs.origin === null ? AttrType.ORIGIN : attrs.asPath === null ? AttrType.AS_PATH : nlri.length > 0 && attrs.nextHop === null ? AttrType.NEXT_HOP : 0
    if (missing) return wireError(ErrCode.UPDATE, UpdateSub.MISSING_WELL_KNOWN_ATTRIBUTE, `attribute ${missing} missing`, new Uint8Array([missing]))
  }
  return { type: MsgType.UPDATE, withdrawn, attrs, nlri, mpReach }
}

function decodeMpReach(m: Uint8Array, from: number, to: number, ctx: DecodeContext): { reach: MpReach | null } | WireError {
  const bad = (why: string) => wireError(ErrCode.UPDATE, UpdateSub.OPTIONAL_ATTRIBUTE_ERROR, why)
  if (to - from < 5) return bad('MP_REACH_NLRI too short')
  const afi = get16(m, from)
  const safi = m[from + 2]
  const nhlen = m[from + 3]
  if (from + 4 + nhlen + 1 > to) return bad('MP_REACH_NLRI next hop overruns')
  if (afi !== AFI_IPV4 || safi !== SAFI_UNICAST) return { reach: null } // not negotiated: ignored
  if (nhlen !== 4) return bad(`MP_REACH_NLRI IPv4 next hop length ${nhlen}`)
  const nextHop = get32(m, from + 4)
  if (badNextHop(nextHop, ctx)) return wireError(ErrCode.UPDATE, UpdateSub.INVALID_NEXT_HOP, `MP next hop ${formatIp(nextHop)}`)
  const nlri = decodePrefixes(m, from + 4 + nhlen + 1, to, [])
  if (!nlri) return wireError(ErrCode.UPDATE, UpdateSub.INVALID_NETWORK_FIELD, 'malformed MP_REACH prefix')
  return { reach: { nextHop, nlri } }
}

function decodeAsPath(m: Uint8Array, from: number, to: number, asnBytes: 2 | 4): AsPathSegment[] | null {
  const segs: AsPathSegment[] = []
  let p = from
  while (p < to) {
    if (p + 2 > to) return null
    const type = m[p]
    const count = m[p + 1]
    if ((type !== SegType.AS_SET && type !== SegType.AS_SEQUENCE) || count === 0) return null
    p += 2
    if (p + count * asnBytes > to) return null
    const asns = new Array<number>(count)
    for (let i = 0; i < count; i++, p += asnBytes) asns[i] = asnBytes === 4 ? get32(m, p) : get16(m, p)
    segs.push({ type: type as SegType, asns })
  }
  return segs
}

/** Path length for best-path selection: an AS_SET counts as one (RFC 4271 9.1.2.2). */
export function asPathLength(path: readonly AsPathSegment[] | null): number {
  if (!path) return 0
  let n = 0
  for (const s of path) n += s.type === SegType.AS_SET ? 1 : s.asns.length
  return n
}

/** RFC 6793 4.2.3: leading ASNs of AS_PATH the AS4_PATH lacks, then AS4_PATH. */
export function mergeAs4Path(asPath: AsPathSegment[], as4Path: AsPathSegment[]): AsPathSegment[] {
  let keep = asPathLength(asPath) - asPathLength(as4Path)
  if (keep < 0) return asPath
  const out: AsPathSegment[] = []
  for (const s of asPath) {
    if (keep <= 0) break
    if (s.type === SegType.AS_SET) {
      out.push(s)
      keep -= 1
    } else {
      const take = Math.min(keep, s.asns.length)
      out.push({ type: s.type, asns: s.asns.slice(0, take) })
      keep -= take
    }
  }
  return out.concat(as4Path)
}

/** The first ASN of the path (the neighbour AS), or null. */
export function firstAs(path: readonly AsPathSegment[] | null): number | null {
  if (!path || path.length === 0 || path[0].type !== SegType.AS_SEQUENCE) return null
  return path[0].asns[0]
}

// ---------------------------------------------------------------------------------------------
// The incremental reader

/**
 * Frames and decodes a byte stream. feed() accepts arbitrary splits: whole messages inside a chunk
 * are decoded in place (subarray); only a message straddling chunks is copied into a fixed
 * 4096-byte assembly buffer, after its header (and so its length) has been checked. It calls
 * `onMessage` per message, in order, so the caller can change `as4` between messages (an OPEN
 * and the UPDATEs after it can share a chunk). The first error is sticky until reset().
 */
export class MessageReader {
  /** Decode AS_PATH with 4-octet ASNs. Set once both OPENs are known. */
  as4: boolean
  prefixesOnly: boolean
  /** See DecodeContext. */
  loopbackNextHop = false
  private readonly partial = new Uint8Array(MAX_MESSAGE_BYTES)
  private partialLen = 0
  /** Length of the message being assembled in `partial`, 0 until its header is whole. */
  private partialMsgLen = 0
  private failed: WireError | null = null
  messages = 0
  bytes = 0

  constructor(opts: { as4?: boolean; prefixesOnly?: boolean } = {}) {
    this.as4 = opts.as4 ?? false
    this.prefixesOnly = opts.prefixesOnly ?? false
  }

  get error(): WireError | null {
    return this.failed
  }

  /** Bytes of an incomplete message held. */
  get buffered(): number {
    return this.partialLen
  }

  reset(): void {
    this.partialLen = 0
    this.partialMsgLen = 0
    this.failed = null
  }

  /** A copy of the incomplete message held (state transfer: feed it to a fresh reader to resume). */
  pendingBytes(): Uint8Array {
    return this.partial.slice(0, this.partialLen)
  }

  /** Consumes `chunk`; returns null (all consumed, maybe holding a partial message) or the error. */
  feed(chunk: Uint8Array, onMessage: (msg: BgpMessage) => void): WireError | null {
    if (this.failed) return this.failed
    this.bytes += chunk.length
    let pos = 0
    if (this.partialLen > 0) {
      pos = this.continuePartial(chunk)
      if (this.failed) return this.failed
      if (this.partialMsgLen === 0 || this.partialLen < this.partialMsgLen) return null
      const body = this.partial.subarray(0, this.partialMsgLen)
      this.partialLen = 0
      this.partialMsgLen = 0
      if (!this.deliver(body, onMessage)) return this.failed
    }
    while (pos < chunk.length) {
      const avail = chunk.length - pos
      if (avail < HEADER_BYTES) {
        if (firstBadMarkerByte(chunk.subarray(pos), 0, avail) >= 0) return this.fail(wireError(ErrCode.HEADER, HeaderSub.CONNECTION_NOT_SYNCHRONIZED, 'marker is not all ones'))
        this.partial.set(chunk.subarray(pos), 0)
        this.partialLen = avail
        return null
      }
      const length = checkHeader(chunk, pos)
      if (typeof length !== 'number') return this.fail(length)
      if (avail < length) {
        this.partial.set(chunk.subarray(pos), 0)
        this.partialLen = avail
        this.partialMsgLen = length
        return null
      }
      if (!this.deliver(chunk.subarray(pos, pos + length), onMessage)) return this.failed
      pos += length
    }
    return null
  }

  /**
   * feed() collecting the messages: whole messages or the error (with the messages before it).
   * Every message in `chunk` is read with the current `as4`: use feed() where an OPEN may change it.
   */
  feedAll(chunk: Uint8Array): { messages: BgpMessage[]; error: WireError | null } {
    const messages: BgpMessage[] = []
    const error = this.feed(chunk, (m) => messages.push(m))
    return { messages, error }
  }

  private continuePartial(chunk: Uint8Array): number {
    let pos = 0
    if (this.partialMsgLen === 0) {
      const take = Math.min(HEADER_BYTES - this.partialLen, chunk.length)
      this.partial.set(chunk.subarray(0, take), this.partialLen)
      this.partialLen += take
      pos = take
      if (this.partialLen < HEADER_BYTES) {
        if (firstBadMarkerByte(this.partial, 0, this.partialLen) >= 0) this.fail(wireError(ErrCode.HEADER, HeaderSub.CONNECTION_NOT_SYNCHRONIZED, 'marker is not all ones'))
        return pos
      }
      const length = checkHeader(this.partial, 0)
      if (typeof length !== 'number') {
        this.fail(length)
        return pos
      }
      this.partialMsgLen = length
    }
    const take = Math.min(this.partialMsgLen - this.partialLen, chunk.length - pos)
    this.partial.set(chunk.subarray(pos, pos + take), this.partialLen)
    this.partialLen += take
    return pos + take
  }

  private deliver(msg: Uint8Array, onMessage: (msg: BgpMessage) => void): boolean {
    const m = decodeBody(msg, this)
    if ('reason' in m) {
      this.fail(m)
      return false
    }
    this.messages++
    onMessage(m)
    return true
  }

  private fail(e: WireError): WireError {
    this.failed = e
    this.partialLen = 0
    this.partialMsgLen = 0
    return e
  }
}

// ---------------------------------------------------------------------------------------------
// Encoding: every encoder computes the size first and allocates once; write* variants fill a
// caller's buffer at an offset and return the offset past what they wrote.

export function openSize(o: OpenMessage): number {
  let caps = 0
  for (const c of o.capabilities) caps += 2 + c.value.length
  return 29 + (caps > 0 ? 2 + caps : 0)
}

export function writeOpen(b: Uint8Array, off: number, o: OpenMessage): number {
  const size = openSize(o)
  assert(size <= 29 + 255, 'OPEN optional parameters exceed 255 bytes')
  let p = writeHeader(b, off, size, MsgType.OPEN)
  b[p++] = o.version
  p = put16(b, p, o.myAs)
  p = put16(b, p, o.holdTimeS)
  p = put32(b, p, o.routerId)
  const optLen = size - 29
  b[p++] = optLen
  if (optLen > 0) {
    b[p++] = OptParam.CAPABILITIES
    b[p++] = optLen - 2
    for (const c of o.capabilities) {
      b[p++] = c.code
      b[p++] = c.value.length
      b.set(c.value, p)
      p += c.value.length
    }
  }
  return p
}

export function encodeOpen(o: OpenMessage): Uint8Array {
  const b = new Uint8Array(openSize(o))
  writeOpen(b, 0, o)
  return b
}

export function encodeKeepalive(): Uint8Array {
  const b = new Uint8Array(HEADER_BYTES)
  writeHeader(b, 0, HEADER_BYTES, MsgType.KEEPALIVE)
  return b
}

export function notificationSize(n: { data: Uint8Array }): number {
  return 21 + n.data.length
}

export function encodeNotification(n: { code: number; subcode: number; data: Uint8Array }): Uint8Array {
  const size = notificationSize(n)
  assert(size <= MAX_MESSAGE_BYTES, 'NOTIFICATION data too long')
  const b = new Uint8Array(size)
  let p = writeHeader(b, 0, size, MsgType.NOTIFICATION)
  b[p++] = n.code
  b[p++] = n.subcode
  b.set(n.data, p)
  return b
}

function needsAs4Path(path: readonly AsPathSegment[] | null): boolean {
  if (!path) return false
  for (const s of path) for (const a of s.asns) if (a > 0xffff) return true
  return false
}

function asPathBytes(path: readonly AsPathSegment[], asnBytes: number): number {
  let n = 0
  for (const s of path) n += 2 + s.asns.length * asnBytes
  return n
}

function attrHeaderBytes(vlen: number): number {
  return vlen > 255 ? 4 : 3
}

/**
 * Size of the encoded path attributes. With a 2-octet peer (`as4` false), ASNs above 65535 become
 * AS_TRANS in AS_PATH and the real path follows in AS4_PATH (RFC 6793 4.2.2).
 */
export function attributesSize(a: PathAttributes, as4: boolean): number {
  let n = 0
  if (a.origin !== null) n += 4
  if (a.asPath !== null) {
    const v = asPathBytes(a.asPath, as4 ? 4 : 2)
    n += attrHeaderBytes(v) + v
    if (!as4 && needsAs4Path(a.asPath)) {
      const v4 = asPathBytes(a.asPath, 4)
      n += attrHeaderBytes(v4) + v4
    }
  }
  if (a.nextHop !== null) n += 7
  if (a.med !== null) n += 7
  if (a.localPref !== null) n += 7
  if (a.atomicAggregate) n += 3
  for (const o of a.other) n += attrHeaderBytes(o.value.length) + o.value.length
  return n
}

function writeAttrHeader(b: Uint8Array, p: number, flags: number, type: number, vlen: number): number {
  if (vlen > 255) {
    b[p] = flags | AttrFlag.EXTENDED_LENGTH
    b[p + 1] = type
    return put16(b, p + 2, vlen)
  }
  b[p] = flags
  b[p + 1] = type
  b[p + 2] = vlen
  return p + 3
}

function writeAsPath(b: Uint8Array, p: number, path: readonly AsPathSegment[], asnBytes: number): number {
  for (const s of path) {
    b[p++] = s.type
    b[p++] = s.asns.length
    for (const a of s.asns) p = asnBytes === 4 ? put32(b, p, a) : put16(b, p, a > 0xffff ? AS_TRANS : a)
  }
  return p
}

export function writeAttributes(b: Uint8Array, p: number, a: PathAttributes, as4: boolean): number {
  if (a.origin !== null) {
    p = writeAttrHeader(b, p, WELL_KNOWN, AttrType.ORIGIN, 1)
    b[p++] = a.origin
  }
  if (a.asPath !== null) {
    const asnBytes = as4 ? 4 : 2
    p = writeAttrHeader(b, p, WELL_KNOWN, AttrType.AS_PATH, asPathBytes(a.asPath, asnBytes))
    p = writeAsPath(b, p, a.asPath, asnBytes)
  }
  if (a.nextHop !== null) p = put32(b, writeAttrHeader(b, p, WELL_KNOWN, AttrType.NEXT_HOP, 4), a.nextHop)
  if (a.med !== null) p = put32(b, writeAttrHeader(b, p, OPT_NON_TRANSITIVE, AttrType.MULTI_EXIT_DISC, 4), a.med)
  if (a.localPref !== null) p = put32(b, writeAttrHeader(b, p, WELL_KNOWN, AttrType.LOCAL_PREF, 4), a.localPref)
  if (a.atomicAggregate) p = writeAttrHeader(b, p, WELL_KNOWN, AttrType.ATOMIC_AGGREGATE, 0)
  for (const o of a.other) {
    p = writeAttrHeader(b, p, o.flags & ~AttrFlag.EXTENDED_LENGTH, o.type, o.value.length)
    b.set(o.value, p)
    p += o.value.length
  }
  if (!as4 && a.asPath !== null && needsAs4Path(a.asPath)) {
    p = writeAttrHeader(b, p, OPT_TRANSITIVE, AttrType.AS4_PATH, asPathBytes(a.asPath, 4))
    p = writeAsPath(b, p, a.asPath, 4)
  }
  return p
}

export function encodeAttributes(a: PathAttributes, as4: boolean): Uint8Array {
  const b = new Uint8Array(attributesSize(a, as4))
  const end = writeAttributes(b, 0, a, as4)
  assert(end === b.length, 'attribute size mismatch')
  return b
}

function prefixBytes(key: number): number {
  return 1 + ((keyLen(key) + 7) >>> 3)
}

export function prefixesSize(keys: ArrayLike<number>, from = 0, to = keys.length): number {
  let n = 0
  for (let i = from; i < to; i++) n += prefixBytes(keys[i])
  return n
}

export function writePrefixes(b: Uint8Array, p: number, keys: ArrayLike<number>, from = 0, to = keys.length): number {
  for (let i = from; i < to; i++) {
    const key = keys[i]
    const len = keyLen(key)
    const a = keyAddr(key)
    b[p++] = len
    const n = (len + 7) >>> 3
    for (let j = 0; j < n; j++) b[p++] = a >>> (24 - 8 * j)
  }
  return p
}

/** Size of an UPDATE with classic fields only (mpReach is decode-only). */
export function updateSize(u: UpdateMessage, as4: boolean): number {
  return 23 + prefixesSize(u.withdrawn) + (u.attrs ? attributesSize(u.attrs, as4) : 0) + prefixesSize(u.nlri)
}

export function encodeUpdate(u: UpdateMessage, as4: boolean): Uint8Array {
  assert(u.mpReach === null, 'encodeUpdate writes classic IPv4 fields only')
  const size = updateSize(u, as4)
  assert(size <= MAX_MESSAGE_BYTES, `UPDATE of ${size} bytes exceeds ${MAX_MESSAGE_BYTES}`)
  const b = new Uint8Array(size)
  let p = writeHeader(b, 0, size, MsgType.UPDATE)
  const wstart = p + 2
  p = writePrefixes(b, wstart, u.withdrawn)
  put16(b, wstart - 2, p - wstart)
  const astart = p + 2
  p = u.attrs ? writeAttributes(b, astart, u.attrs, as4) : astart
  put16(b, astart - 2, p - astart)
  p = writePrefixes(b, p, u.nlri)
  assert(p === size, 'UPDATE size mismatch')
  return b
}

/**
 * Packs keys[start..] into one UPDATE announcing them with pre-encoded attributes, as many as fit
 * in `maxBytes`. Returns the message and the index of the first key not packed.
 */
export function packAnnounce(attrBytes: Uint8Array, keys: ArrayLike<number>, start: number, maxBytes: number = MAX_MESSAGE_BYTES): { message: Uint8Array; next: number } {
  const fixed = 23 + attrBytes.length
  assert(fixed + 5 <= maxBytes && start < keys.length, 'nothing fits the UPDATE')
  let size = fixed
  let end = start
  while (end < keys.length) {
    const n = prefixBytes(keys[end])
    if (size + n > maxBytes) break
    size += n
    end++
  }
  const b = new Uint8Array(size)
  let p = writeHeader(b, 0, size, MsgType.UPDATE)
  p = put16(b, p, 0)
  p = put16(b, p, attrBytes.length)
  b.set(attrBytes, p)
  p = writePrefixes(b, p + attrBytes.length, keys, start, end)
  assert(p === size, 'packed UPDATE size mismatch')
  return { message: b, next: end }
}

/** Packs keys[start..] into one UPDATE withdrawing them. */
export function packWithdraw(keys: ArrayLike<number>, start: number, maxBytes: number = MAX_MESSAGE_BYTES): { message: Uint8Array; next: number } {
  assert(start < keys.length && maxBytes >= 28, 'nothing fits the UPDATE')
  let size = 23
  let end = start
  while (end < keys.length) {
    const n = prefixBytes(keys[end])
    if (size + n > maxBytes) break
    size += n
    end++
  }
  const b = new Uint8Array(size)
  let p = writeHeader(b, 0, size, MsgType.UPDATE)
  p = writePrefixes(b, p + 2, keys, start, end)
  put16(b, HEADER_BYTES, p - HEADER_BYTES - 2)
  p = put16(b, p, 0)
  assert(p === size, 'packed withdraw size mismatch')
  return { message: b, next: end }
}

/** Encodes any message (UPDATEs per the session's `as4`). */
export function encodeMessage(m: BgpMessage, as4 = true): Uint8Array {
  switch (m.type) {
    case MsgType.OPEN:
      return encodeOpen(m)
    case MsgType.UPDATE:
      return encodeUpdate(m, as4)
    case MsgType.NOTIFICATION:
      return encodeNotification(m)
    case MsgType.KEEPALIVE:
      return encodeKeepalive()
  }
}

/** The type byte of a whole encoded message. */
export function messageType(bytes: Uint8Array): number {
  return bytes[HeaderOff.type]
}
