// Sample BGP messages and fast-check arbitraries shared by the BGP tests, plus a hand-assembler for
// raw UPDATEs (to build the malformed ones an encoder refuses to write).

import fc from 'fast-check'
import {
  AttrFlag,
  AttrType,
  HEADER_BYTES,
  MsgType,
  Origin,
  SegType,
  as4Capability,
  encodeMessage,
  isMartianNextHop,
  mpCapability,
  parseIp,
  parsePrefix,
  prefixKey,
  type BgpMessage,
  type OpenMessage,
  type PathAttributes,
  type UpdateMessage,
} from '../../examples/bgp/codec.ts'

export function ip(text: string): number {
  const v = parseIp(text)
  if (v === null) throw new Error(`bad ip ${text}`)
  return v
}

export function pfx(text: string): number {
  const v = parsePrefix(text)
  if (v === null) throw new Error(`bad prefix ${text}`)
  return v
}

export const sampleOpen: OpenMessage = {
  type: MsgType.OPEN,
  version: 4,
  myAs: 65001,
  holdTimeS: 90,
  routerId: ip('10.0.0.1'),
  capabilities: [mpCapability(1, 1), as4Capability(65001), { code: 2, value: new Uint8Array(0) }],
}

export const sampleAttrs: PathAttributes = {
  origin: Origin.EGP,
  asPath: [
    { type: SegType.AS_SEQUENCE, asns: [65001, 4200000000, 7] },
    { type: SegType.AS_SET, asns: [100, 200] },
  ],
  nextHop: ip('192.0.2.1'),
  med: 50,
  localPref: 200,
  atomicAggregate: true,
  other: [
    { flags: AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE, type: AttrType.COMMUNITIES, value: new Uint8Array([0xfd, 0xe9, 0, 1]) },
    { flags: AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE | AttrFlag.PARTIAL, type: 99, value: new Uint8Array(300).fill(7) },
  ],
}

export const sampleUpdate: UpdateMessage = {
  type: MsgType.UPDATE,
  withdrawn: [pfx('10.9.0.0/16'), pfx('0.0.0.0/0'), pfx('192.0.2.7/32')],
  attrs: sampleAttrs,
  nlri: [pfx('100.0.0.0/24'), pfx('100.0.1.0/24'), pfx('172.16.0.0/12'), pfx('1.2.3.4/32'), pfx('128.0.0.0/1')],
  mpReach: null,
}

export const samples: { name: string; msg: BgpMessage }[] = [
  { name: 'OPEN', msg: sampleOpen },
  { name: 'OPEN without parameters', msg: { ...sampleOpen, capabilities: [] } },
  { name: 'KEEPALIVE', msg: { type: MsgType.KEEPALIVE } },
  { name: 'NOTIFICATION', msg: { type: MsgType.NOTIFICATION, code: 6, subcode: 2, data: new TextEncoder().encode('shutdown') } },
  { name: 'NOTIFICATION without data', msg: { type: MsgType.NOTIFICATION, code: 4, subcode: 0, data: new Uint8Array(0) } },
  { name: 'UPDATE', msg: sampleUpdate },
  { name: 'UPDATE withdraw-only', msg: { type: MsgType.UPDATE, withdrawn: [pfx('10.0.0.0/8')], attrs: null, nlri: [], mpReach: null } },
  { name: 'UPDATE End-of-RIB', msg: { type: MsgType.UPDATE, withdrawn: [], attrs: null, nlri: [], mpReach: null } },
]

export function encodedSamples(): Uint8Array[] {
  return samples.map((s) => encodeMessage(s.msg, true))
}

// ---------------------------------------------------------------------------------------------
// Arbitraries

export const arbPrefixKey = fc.tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 32 })).map(([a, l]) => prefixKey(a, l))

const arbAsn = fc.oneof(fc.integer({ min: 1, max: 0xffff }), fc.integer({ min: 0, max: 0xffffffff }))

const knownTypes = new Set<number>(Object.values(AttrType))

export const arbAttrs: fc.Arbitrary<PathAttributes> = fc.record({
  origin: fc.constantFrom(Origin.IGP, Origin.EGP, Origin.INCOMPLETE),
  asPath: fc.array(fc.record({ type: fc.constantFrom(SegType.AS_SET, SegType.AS_SEQUENCE), asns: fc.array(arbAsn, { minLength: 1, maxLength: 8 }) }), { maxLength: 4 }),
  nextHop: fc.integer({ min: 0, max: 0xffffffff }).filter((a) => !isMartianNextHop(a)),
  med: fc.option(fc.integer({ min: 0, max: 0xffffffff }), { nil: null }),
  localPref: fc.option(fc.integer({ min: 0, max: 0xffffffff }), { nil: null }),
  atomicAggregate: fc.boolean(),
  other: fc.uniqueArray(
    fc.record({
      flags: fc.constantFrom(AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE, AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE | AttrFlag.PARTIAL),
      type: fc.integer({ min: 19, max: 255 }).filter((t) => !knownTypes.has(t)),
      value: fc.uint8Array({ maxLength: 300 }),
    }),
    { maxLength: 3, selector: (o) => o.type },
  ),
})

export const arbUpdate: fc.Arbitrary<UpdateMessage> = fc
  .record({
    withdrawn: fc.array(arbPrefixKey, { maxLength: 60, size: 'max' }),
    attrs: fc.option(arbAttrs, { nil: null }),
    nlri: fc.array(arbPrefixKey, { maxLength: 60, size: 'max' }),
  })
  .map((u) => ({ type: MsgType.UPDATE, withdrawn: u.withdrawn, attrs: u.attrs, nlri: u.attrs ? u.nlri : [], mpReach: null }))

export const arbOpen: fc.Arbitrary<OpenMessage> = fc.record({
  type: fc.constant(MsgType.OPEN),
  version: fc.constant(4),
  myAs: fc.integer({ min: 1, max: 0xffff }),
  holdTimeS: fc.oneof(fc.constant(0), fc.integer({ min: 3, max: 0xffff })),
  routerId: fc.integer({ min: 1, max: 0xffffffff }),
  capabilities: fc.array(fc.oneof(
    fc.integer({ min: 1, max: 0xffff }).map((afi) => mpCapability(afi, 1)),
    fc.integer({ min: 0, max: 0xffffffff }).map((as) => as4Capability(as)),
    fc.record({ code: fc.integer({ min: 2, max: 64 }), value: fc.uint8Array({ maxLength: 8 }) }),
  ), { maxLength: 6 }),
})

export const arbMessage: fc.Arbitrary<BgpMessage> = fc.oneof(
  arbOpen,
  arbUpdate,
  fc.constant({ type: MsgType.KEEPALIVE } as const),
  fc.record({ type: fc.constant(MsgType.NOTIFICATION), code: fc.integer({ min: 1, max: 6 }), subcode: fc.integer({ min: 0, max: 11 }), data: fc.uint8Array({ maxLength: 40 }) }),
)

// ---------------------------------------------------------------------------------------------
// Hand assembly

export function attr(flags: number, type: number, value: ArrayLike<number>): number[] {
  const v = Array.from(value)
  return v.length > 255 || flags & AttrFlag.EXTENDED_LENGTH
    ? [flags | AttrFlag.EXTENDED_LENGTH, type, v.length >> 8, v.length & 255, ...v]
    : [flags, type, v.length, ...v]
}

export const WK = AttrFlag.TRANSITIVE
export const OPT = AttrFlag.OPTIONAL
export const OPT_T = AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE

/** Well-formed attributes for an eBGP route: ORIGIN IGP, AS_PATH [65002] (4-octet), NEXT_HOP 192.0.2.1. */
export function goodAttrs(parts: { origin?: number[]; asPath?: number[]; nextHop?: number[]; extra?: number[] } = {}): number[] {
  return [
    ...(parts.origin ?? attr(WK, AttrType.ORIGIN, [0])),
    ...(parts.asPath ?? attr(WK, AttrType.AS_PATH, [2, 1, 0, 0, 0xfd, 0xea])),
    ...(parts.nextHop ?? attr(WK, AttrType.NEXT_HOP, [192, 0, 2, 1])),
    ...(parts.extra ?? []),
  ]
}

/** Assembles an UPDATE from raw parts; lengths can be overridden to lie. */
export function rawUpdate(p: { withdrawn?: number[]; attrs?: number[]; nlri?: number[]; withdrawnLen?: number; attrsLen?: number }): Uint8Array {
  const w = p.withdrawn ?? []
  const a = p.attrs ?? []
  const n = p.nlri ?? [24, 100, 0, 0]
  const body = [(p.withdrawnLen ?? w.length) >> 8, (p.withdrawnLen ?? w.length) & 255, ...w, (p.attrsLen ?? a.length) >> 8, (p.attrsLen ?? a.length) & 255, ...a, ...n]
  return frame(MsgType.UPDATE, body)
}

export function frame(type: number, body: ArrayLike<number>): Uint8Array {
  const b = new Uint8Array(HEADER_BYTES + body.length)
  b.fill(0xff, 0, 16)
  b[16] = b.length >> 8
  b[17] = b.length & 255
  b[18] = type
  b.set(Array.from(body), HEADER_BYTES)
  return b
}

/** Offset of attribute `type`'s flags byte inside an encoded UPDATE, with its value offset and length. */
export function findAttr(m: Uint8Array, type: number): { at: number; value: number; length: number } | null {
  const wlen = (m[19] << 8) | m[20]
  const aoff = 23 + wlen
  const alen = (m[21 + wlen] << 8) | m[22 + wlen]
  let p = aoff
  while (p < aoff + alen) {
    const ext = (m[p] & AttrFlag.EXTENDED_LENGTH) !== 0
    const length = ext ? (m[p + 2] << 8) | m[p + 3] : m[p + 2]
    const value = p + (ext ? 4 : 3)
    if (m[p + 1] === type) return { at: p, value, length }
    p = value + length
  }
  return null
}
