// BGP wire codec: round trips of every message type (fixed samples and seeded properties),
// truncated prefixes ("need more", never an error), splits at every byte boundary, corrupt input
// that never throws, and targeted corruptions that must yield the NOTIFICATION RFC 4271 section 6
// names. Prefix keys and the UPDATE packer are checked here too.

import fc from 'fast-check'
import { describe, expect, it, onTestFailed } from 'vitest'
import {
  AS_TRANS,
  AttrType,
  ErrCode,
  HeaderSub,
  MAX_MESSAGE_BYTES,
  MessageReader,
  MsgType,
  OpenSub,
  Origin,
  SegType,
  UpdateSub,
  attributesSize,
  decodeMessage,
  encodeAttributes,
  encodeMessage,
  encodeUpdate,
  formatPrefix,
  keyAddr,
  keyLen,
  maskOf,
  mergeAs4Path,
  packAnnounce,
  packWithdraw,
  parsePrefix,
  prefixKey,
  type BgpMessage,
  type UpdateMessage,
  type WireError,
} from '../../examples/bgp/codec.ts'
import { OPT, OPT_T, WK, arbMessage, arbPrefixKey, arbUpdate, attr, encodedSamples, findAttr, frame, goodAttrs, ip, pfx, rawUpdate, sampleAttrs, sampleOpen, samples } from './fixtures.ts'
import { concat } from './harness.ts'

const seed = Number(process.env.NSR_SEED ?? Math.floor(Math.random() * 2 ** 31))

function readAll(chunks: readonly Uint8Array[], as4 = true): { messages: BgpMessage[]; error: WireError | null } {
  const r = new MessageReader({ as4 })
  const messages: BgpMessage[] = []
  for (const c of chunks) {
    const got = r.feedAll(c)
    messages.push(...got.messages)
    if (got.error) return { messages, error: got.error }
  }
  return { messages, error: null }
}

function decodeOne(bytes: Uint8Array, as4 = true): BgpMessage {
  const r = decodeMessage(bytes, { as4 })
  if (r.kind !== 'message') throw new Error(`expected a message, got ${JSON.stringify(r)}`)
  expect(r.length).toBe(bytes.length)
  return r.message
}

function errorOf(bytes: Uint8Array, as4 = true): WireError {
  const r = decodeMessage(bytes, { as4 })
  if (r.kind !== 'error') throw new Error(`expected an error, got ${r.kind}`)
  // The incremental reader agrees, whatever the split.
  const split = readAll([bytes.subarray(0, 7), bytes.subarray(7)], as4)
  expect(split.error).toEqual(r.error)
  return r.error
}

function expectError(bytes: Uint8Array, code: number, subcode: number, data?: ArrayLike<number>, as4 = true): void {
  const e = errorOf(bytes, as4)
  expect([e.code, e.subcode], e.reason).toEqual([code, subcode])
  if (data) expect(Array.from(e.data)).toEqual(Array.from(data))
}

describe('prefix keys', () => {
  it('round-trip every length, host bits masked', () => {
    for (let len = 0; len <= 32; len++) {
      for (const a of [0, 0xffffffff, 0x64000000, 0x0a010203, 0x80000001]) {
        const key = prefixKey(a, len)
        expect(keyLen(key)).toBe(len)
        expect(keyAddr(key)).toBe((a & maskOf(len)) >>> 0)
        expect(parsePrefix(formatPrefix(key))).toBe(key)
      }
    }
  })

  it('are distinct across lengths and small integers below /32', () => {
    const seen = new Set<number>()
    for (let len = 0; len <= 32; len++) seen.add(prefixKey(0, len))
    expect(seen.size).toBe(33)
    expect(Number.isInteger(pfx('100.0.0.0/24')) && pfx('100.0.0.0/24') < 2 ** 31).toBe(true)
  })

  it('reject malformed text and host bits', () => {
    for (const t of ['10.0.0.0', '10.0.0.0/33', '10.0.0.1/24', '256.0.0.0/8', '10.0.0/8', 'a.b.c.d/8', '10.0.0.0/-1']) expect(parsePrefix(t)).toBeNull()
  })
})

describe('round trips', () => {
  for (const s of samples) {
    it(s.name, () => {
      const bytes = encodeMessage(s.msg, true)
      expect(bytes.length).toBeLessThanOrEqual(MAX_MESSAGE_BYTES)
      expect(decodeOne(bytes)).toEqual(s.msg)
      expect(encodeMessage(decodeOne(bytes))).toEqual(bytes)
    })
  }

  it('any message (property, seeded)', () => {
    onTestFailed(() => console.error(`bgp round-trip seed=${seed}`))
    fc.assert(
      fc.property(arbMessage, (m) => {
        expect(decodeOne(encodeMessage(m, true), true)).toEqual(m)
      }),
      { seed, numRuns: 300 },
    )
  })

  it('UPDATE to a 2-octet peer: AS_TRANS in AS_PATH, real path in AS4_PATH, merged on decode (property, seeded)', () => {
    onTestFailed(() => console.error(`bgp as2 round-trip seed=${seed}`))
    fc.assert(
      fc.property(arbUpdate, (u) => {
        const bytes = encodeMessage(u, false)
        const back = decodeOne(bytes, false)
        expect(back).toEqual(u)
        const big = u.attrs?.asPath?.some((s) => s.asns.some((a) => a > 0xffff)) ?? false
        expect(findAttr(bytes, AttrType.AS4_PATH) !== null).toBe(big)
      }),
      { seed, numRuns: 200 },
    )
    const u: UpdateMessage = { type: MsgType.UPDATE, withdrawn: [], attrs: sampleAttrs, nlri: [pfx('10.0.0.0/8')], mpReach: null }
    const bytes = encodeUpdate(u, false)
    const asPath = findAttr(bytes, AttrType.AS_PATH)!
    expect(Array.from(bytes.subarray(asPath.value, asPath.value + 8))).toEqual([2, 3, 0xfd, 0xe9, AS_TRANS >> 8, AS_TRANS & 255, 0, 7])
  })

  it('AS4_PATH merge keeps the leading ASNs AS4_PATH lacks (RFC 6793 4.2.3)', () => {
    const seq = (...asns: number[]) => ({ type: SegType.AS_SEQUENCE, asns })
    expect(mergeAs4Path([seq(1, 2, AS_TRANS)], [seq(4200000000)])).toEqual([seq(1, 2), seq(4200000000)])
    expect(mergeAs4Path([seq(AS_TRANS)], [seq(4200000000, 5)])).toEqual([seq(AS_TRANS)]) // longer AS4_PATH: ignored
  })

  it('MP_REACH_NLRI / MP_UNREACH_NLRI for IPv4 unicast decode into prefixes; other AFIs are ignored', () => {
    const mpReach = attr(OPT, AttrType.MP_REACH_NLRI, [0, 1, 1, 4, 192, 0, 2, 9, 0, 24, 100, 0, 5, 16, 10, 1])
    const mpUnreach = attr(OPT, AttrType.MP_UNREACH_NLRI, [0, 1, 1, 8, 20])
    const v6 = attr(OPT, AttrType.MP_REACH_NLRI, [0, 2, 1, 16, ...new Array(16).fill(0x20), 0, 64, ...new Array(8).fill(1)])
    const m = decodeOne(rawUpdate({ attrs: [...goodAttrs({ nextHop: [] }), ...mpReach, ...mpUnreach], nlri: [] }))
    expect(m.type === MsgType.UPDATE && m.mpReach).toEqual({ nextHop: ip('192.0.2.9'), nlri: [pfx('100.0.5.0/24'), pfx('10.1.0.0/16')] })
    expect(m.type === MsgType.UPDATE && m.withdrawn).toEqual([pfx('20.0.0.0/8')])
    const m6 = decodeOne(rawUpdate({ attrs: [...goodAttrs({ nextHop: [] }), ...v6], nlri: [] }))
    expect(m6.type === MsgType.UPDATE && m6.mpReach).toBeNull()
  })

  it('unknown optional transitive attributes are kept, unknown optional non-transitive ones dropped', () => {
    const m = decodeOne(rawUpdate({ attrs: goodAttrs({ extra: [...attr(OPT_T, 200, [1, 2, 3]), ...attr(OPT, 201, [4])] }) }))
    expect(m.type === MsgType.UPDATE && m.attrs!.other).toEqual([{ flags: OPT_T, type: 200, value: new Uint8Array([1, 2, 3]) }])
  })

  it('attribute encoders size first: attributesSize matches what is written', () => {
    for (const as4 of [true, false]) expect(encodeAttributes(sampleAttrs, as4).length).toBe(attributesSize(sampleAttrs, as4))
  })
})

describe('the UPDATE packer', () => {
  const keys = Array.from({ length: 5000 }, (_, i) => prefixKey(0x64000000 + i * 256, 24))
  const attrBytes = encodeAttributes({ ...sampleAttrs, other: [] }, true)

  it('packs many prefixes per UPDATE, none over 4096 bytes, all of them in order', () => {
    const out: number[] = []
    let msgs = 0
    for (let i = 0; i < keys.length; ) {
      const { message, next } = packAnnounce(attrBytes, keys, i)
      expect(message.length).toBeLessThanOrEqual(MAX_MESSAGE_BYTES)
      expect(next).toBeGreaterThan(i)
      if (next < keys.length) expect(message.length).toBeGreaterThan(MAX_MESSAGE_BYTES - 5)
      const m = decodeOne(message)
      if (m.type !== MsgType.UPDATE) throw new Error('not an UPDATE')
      expect(m.attrs).toEqual({ ...sampleAttrs, other: [] })
      out.push(...m.nlri)
      i = next
      msgs++
    }
    expect(out).toEqual(keys)
    expect(msgs).toBe(Math.ceil(5000 / Math.floor((4096 - 23 - attrBytes.length) / 4)))
  })

  it('packs withdrawals the same way', () => {
    const out: number[] = []
    for (let i = 0; i < keys.length; ) {
      const { message, next } = packWithdraw(keys, i)
      expect(message.length).toBeLessThanOrEqual(MAX_MESSAGE_BYTES)
      const m = decodeOne(message)
      if (m.type !== MsgType.UPDATE) throw new Error('not an UPDATE')
      expect(m.attrs).toBeNull()
      out.push(...m.withdrawn)
      i = next
    }
    expect(out).toEqual(keys)
  })
})

describe('incremental reading', () => {
  const encoded = encodedSamples()
  const stream = concat(encoded)
  const whole = samples.map((s) => s.msg)

  it('every truncated prefix of every message is "need more", never an error', () => {
    for (const bytes of encoded) {
      for (let i = 0; i < bytes.length; i++) {
        const r = decodeMessage(bytes.subarray(0, i))
        expect(r.kind).toBe('need-more')
        const read = readAll([bytes.subarray(0, i)])
        expect(read).toEqual({ messages: [], error: null })
      }
    }
  })

  /** The messages, re-encoded: a cheap exact comparison (the round trips above prove encode o decode). */
  const bytesOf = (ms: BgpMessage[]) => Buffer.from(concat(ms.map((m) => encodeMessage(m))))

  it('a split at every byte boundary of a stream parses to the same messages', () => {
    expect(readAll([stream]).messages).toEqual(whole)
    for (let i = 0; i <= stream.length; i++) {
      const r = readAll([stream.subarray(0, i), stream.subarray(i)])
      expect(r.error).toBeNull()
      expect(r.messages.length).toBe(whole.length)
      expect(bytesOf(r.messages).equals(stream)).toBe(true)
    }
  })

  it('byte-at-a-time and random multi-way splits parse the same (property, seeded)', () => {
    onTestFailed(() => console.error(`bgp splits seed=${seed}`))
    expect(readAll(Array.from(stream, (b) => new Uint8Array([b]))).messages).toEqual(whole)
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: stream.length }), { maxLength: 12 }), (cuts) => {
        const points = [0, ...cuts.sort((a, b) => a - b), stream.length]
        const chunks = points.slice(1).map((p, i) => stream.subarray(points[i], p))
        const r = readAll(chunks)
        expect(r.messages.length).toBe(whole.length)
        expect(bytesOf(r.messages).equals(stream)).toBe(true)
      }),
      { seed, numRuns: 300 },
    )
  })

  it('holds at most one message: a partial message is buffered only after its length is checked', () => {
    const r = new MessageReader()
    const bad = frame(MsgType.KEEPALIVE, [])
    bad[16] = 0x20 // length 8192: refused as soon as the header is whole
    expect(r.feed(bad.subarray(0, 18), () => {})).toBeNull()
    expect(r.buffered).toBe(18)
    const e = r.feed(bad.subarray(18), () => {})
    expect([e?.code, e?.subcode]).toEqual([ErrCode.HEADER, HeaderSub.BAD_MESSAGE_LENGTH])
    expect(r.buffered).toBe(0)
    expect(r.feed(encodedSamples()[2], () => {})).toBe(e) // sticky until reset
    r.reset()
    expect(r.feed(encodedSamples()[2], () => {})).toBeNull()
  })
})

describe('corrupt input', () => {
  it('never throws, whatever the corruption or split (property, seeded)', () => {
    onTestFailed(() => console.error(`bgp corruption seed=${seed}`))
    const validCodes = new Set([ErrCode.HEADER, ErrCode.OPEN, ErrCode.UPDATE])
    fc.assert(
      fc.property(
        arbMessage,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
        fc.nat(),
        fc.boolean(),
        (m, flips, cut, as4) => {
          const bytes = encodeMessage(m, as4).slice()
          for (const [pos, v] of flips) bytes[pos % bytes.length] = v
          const r = decodeMessage(bytes, { as4 })
          const split = cut % (bytes.length + 1)
          const read = readAll([bytes.subarray(0, split), bytes.subarray(split)], as4)
          if (r.kind === 'error') {
            expect(validCodes.has(r.error.code as 1)).toBe(true)
            expect(read.error).toEqual(r.error)
          } else if (r.kind === 'message') {
            expect(read.messages[0]).toEqual(r.message)
          } else {
            expect(read).toEqual({ messages: [], error: null })
          }
        },
      ),
      { seed, numRuns: 2000 },
    )
  })

  it('random bytes never throw (property, seeded)', () => {
    onTestFailed(() => console.error(`bgp random-bytes seed=${seed}`))
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (junk, marker) => {
        const bytes = marker ? concat([new Uint8Array(16).fill(0xff), junk]) : junk
        decodeMessage(bytes)
        readAll([bytes])
      }),
      { seed, numRuns: 2000 },
    )
  })
})

describe('targeted corruptions yield the RFC 4271 section 6 NOTIFICATION', () => {
  const keepalive = encodeMessage({ type: MsgType.KEEPALIVE })
  const open = encodeMessage(sampleOpen)

  it('message header: marker -> connection not synchronized (any byte, any value)', () => {
    onTestFailed(() => console.error(`bgp marker seed=${seed}`))
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 15 }), fc.integer({ min: 0, max: 254 }), fc.integer({ min: 0, max: encodedSamples().length - 1 }), (pos, v, which) => {
        const b = encodedSamples()[which].slice()
        b[pos] = v
        expectError(b, ErrCode.HEADER, HeaderSub.CONNECTION_NOT_SYNCHRONIZED)
        // Detected before the header is whole, too.
        expect(readAll([b.subarray(0, pos + 1)]).error?.subcode).toBe(HeaderSub.CONNECTION_NOT_SYNCHRONIZED)
      }),
      { seed, numRuns: 200 },
    )
  })

  it('message header: length out of 19..4096 -> bad message length, data = the length field', () => {
    onTestFailed(() => console.error(`bgp length seed=${seed}`))
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: 0, max: 18 }), fc.integer({ min: 4097, max: 0xffff })), (len) => {
        const b = keepalive.slice()
        b[16] = len >> 8
        b[17] = len & 255
        expectError(b, ErrCode.HEADER, HeaderSub.BAD_MESSAGE_LENGTH, [len >> 8, len & 255])
      }),
      { seed, numRuns: 200 },
    )
  })

  it('message header: per-type length (KEEPALIVE not 19, OPEN < 29, UPDATE < 23, NOTIFICATION < 21)', () => {
    expectError(frame(MsgType.KEEPALIVE, [0]), ErrCode.HEADER, HeaderSub.BAD_MESSAGE_LENGTH, [0, 20])
    expectError(frame(MsgType.OPEN, new Array(9).fill(0)), ErrCode.HEADER, HeaderSub.BAD_MESSAGE_LENGTH, [0, 28])
    expectError(frame(MsgType.UPDATE, [0, 0, 0]), ErrCode.HEADER, HeaderSub.BAD_MESSAGE_LENGTH, [0, 22])
    expectError(frame(MsgType.NOTIFICATION, [6]), ErrCode.HEADER, HeaderSub.BAD_MESSAGE_LENGTH, [0, 20])
  })

  it('message header: unknown type -> bad message type, data = the type', () => {
    for (const t of [0, 5, 7, 255]) {
      const b = keepalive.slice()
      b[18] = t
      expectError(b, ErrCode.HEADER, HeaderSub.BAD_MESSAGE_TYPE, [t])
    }
  })

  it('OPEN: version, hold time, BGP identifier, optional parameters', () => {
    const v = open.slice()
    v[19] = 3
    expectError(v, ErrCode.OPEN, OpenSub.UNSUPPORTED_VERSION, [0, 4])
    for (const hold of [1, 2]) {
      const h = open.slice()
      h[22] = 0
      h[23] = hold
      expectError(h, ErrCode.OPEN, OpenSub.UNACCEPTABLE_HOLD_TIME)
    }
    const id = open.slice()
    id.fill(0, 24, 28)
    expectError(id, ErrCode.OPEN, OpenSub.BAD_BGP_IDENTIFIER)
    const param = open.slice()
    param[29] = 1 // optional parameter type 1 (authentication, deprecated)
    expectError(param, ErrCode.OPEN, OpenSub.UNSUPPORTED_OPTIONAL_PARAMETER)
    const overrun = open.slice()
    overrun[30] += 1 // capabilities parameter longer than the message
    expectError(overrun, ErrCode.OPEN, OpenSub.UNSPECIFIC)
  })

  it('UPDATE: invalid ORIGIN value (property, seeded)', () => {
    onTestFailed(() => console.error(`bgp origin seed=${seed}`))
    fc.assert(
      fc.property(arbUpdate.filter((u) => u.attrs !== null), fc.integer({ min: 3, max: 255 }), (u, v) => {
        const b = encodeMessage(u).slice()
        const a = findAttr(b, AttrType.ORIGIN)!
        b[a.value] = v
        expectError(b, ErrCode.UPDATE, UpdateSub.INVALID_ORIGIN, b.subarray(a.at, a.value + 1))
      }),
      { seed, numRuns: 100 },
    )
  })

  it('UPDATE: invalid NEXT_HOP (0/8, 127/8, multicast, class E, broadcast) (property, seeded)', () => {
    onTestFailed(() => console.error(`bgp next-hop seed=${seed}`))
    fc.assert(
      fc.property(arbUpdate.filter((u) => u.attrs !== null), fc.constantFrom(0, 127, 224, 239, 240, 255), fc.integer({ min: 0, max: 0xffffff }), (u, top, low) => {
        const b = encodeMessage(u).slice()
        const a = findAttr(b, AttrType.NEXT_HOP)!
        b.set([top, low >> 16, (low >> 8) & 255, low & 255], a.value)
        expectError(b, ErrCode.UPDATE, UpdateSub.INVALID_NEXT_HOP, b.subarray(a.at, a.value + 4))
      }),
      { seed, numRuns: 100 },
    )
  })

  it('UPDATE: missing well-known attributes, data = the type', () => {
    expectError(rawUpdate({ attrs: goodAttrs({ origin: [] }) }), ErrCode.UPDATE, UpdateSub.MISSING_WELL_KNOWN_ATTRIBUTE, [AttrType.ORIGIN])
    expectError(rawUpdate({ attrs: goodAttrs({ asPath: [] }) }), ErrCode.UPDATE, UpdateSub.MISSING_WELL_KNOWN_ATTRIBUTE, [AttrType.AS_PATH])
    expectError(rawUpdate({ attrs: goodAttrs({ nextHop: [] }) }), ErrCode.UPDATE, UpdateSub.MISSING_WELL_KNOWN_ATTRIBUTE, [AttrType.NEXT_HOP])
    expectError(rawUpdate({ attrs: [] }), ErrCode.UPDATE, UpdateSub.MISSING_WELL_KNOWN_ATTRIBUTE, [AttrType.ORIGIN])
    // No NLRI: nothing is mandatory.
    expect(decodeOne(rawUpdate({ attrs: goodAttrs({ nextHop: [] }), nlri: [] })).type).toBe(MsgType.UPDATE)
  })

  it('UPDATE: attribute length errors, data = the attribute', () => {
    const cases: [number[], number[]][] = [
      [goodAttrs({ origin: attr(WK, AttrType.ORIGIN, [0, 0]) }), attr(WK, AttrType.ORIGIN, [0, 0])],
      [goodAttrs({ nextHop: attr(WK, AttrType.NEXT_HOP, [192, 0, 2, 1, 0]) }), attr(WK, AttrType.NEXT_HOP, [192, 0, 2, 1, 0])],
      [goodAttrs({ extra: attr(OPT, AttrType.MULTI_EXIT_DISC, [0, 0, 1]) }), attr(OPT, AttrType.MULTI_EXIT_DISC, [0, 0, 1])],
      [goodAttrs({ extra: attr(WK, AttrType.LOCAL_PREF, [0, 0, 0, 0, 1]) }), attr(WK, AttrType.LOCAL_PREF, [0, 0, 0, 0, 1])],
      [goodAttrs({ extra: attr(WK, AttrType.ATOMIC_AGGREGATE, [1]) }), attr(WK, AttrType.ATOMIC_AGGREGATE, [1])],
      [goodAttrs({ extra: attr(OPT_T, AttrType.AGGREGATOR, [0, 1, 10, 0, 0, 1]) }), attr(OPT_T, AttrType.AGGREGATOR, [0, 1, 10, 0, 0, 1])], // 6 bytes on a 4-octet session
    ]
    for (const [attrs, data] of cases) expectError(rawUpdate({ attrs }), ErrCode.UPDATE, UpdateSub.ATTRIBUTE_LENGTH_ERROR, data)
  })

  it('UPDATE: attribute flags errors, data = the attribute', () => {
    const optionalOrigin = attr(OPT_T, AttrType.ORIGIN, [0])
    expectError(rawUpdate({ attrs: goodAttrs({ origin: optionalOrigin }) }), ErrCode.UPDATE, UpdateSub.ATTRIBUTE_FLAGS_ERROR, optionalOrigin)
    const transitiveMed = attr(OPT_T, AttrType.MULTI_EXIT_DISC, [0, 0, 0, 1])
    expectError(rawUpdate({ attrs: goodAttrs({ extra: transitiveMed }) }), ErrCode.UPDATE, UpdateSub.ATTRIBUTE_FLAGS_ERROR, transitiveMed)
    const partialNextHop = attr(WK | 0x20, AttrType.NEXT_HOP, [192, 0, 2, 1])
    expectError(rawUpdate({ attrs: goodAttrs({ nextHop: partialNextHop }) }), ErrCode.UPDATE, UpdateSub.ATTRIBUTE_FLAGS_ERROR, partialNextHop)
  })

  it('UPDATE: malformed AS_PATH (bad segment type, empty segment, overrun, 2-octet reading of a 4-octet path)', () => {
    for (const v of [[3, 1, 0, 0, 0, 1], [2, 0], [2, 2, 0, 0, 0, 1], [2]]) {
      expectError(rawUpdate({ attrs: goodAttrs({ asPath: attr(WK, AttrType.AS_PATH, v) }) }), ErrCode.UPDATE, UpdateSub.MALFORMED_AS_PATH, [])
    }
    expectError(rawUpdate({ attrs: goodAttrs() }), ErrCode.UPDATE, UpdateSub.MALFORMED_AS_PATH, [], false)
  })

  it('UPDATE: invalid network field (prefix length > 32, prefix overruns) in NLRI and withdrawn routes', () => {
    expectError(rawUpdate({ attrs: goodAttrs(), nlri: [33, 1, 2, 3, 4, 5] }), ErrCode.UPDATE, UpdateSub.INVALID_NETWORK_FIELD, [])
    expectError(rawUpdate({ attrs: goodAttrs(), nlri: [24, 100, 0] }), ErrCode.UPDATE, UpdateSub.INVALID_NETWORK_FIELD, [])
    expectError(rawUpdate({ withdrawn: [16, 10], attrs: goodAttrs() }), ErrCode.UPDATE, UpdateSub.INVALID_NETWORK_FIELD, [])
  })

  it('UPDATE: malformed attribute list (lengths overrun, truncated or repeated attribute)', () => {
    expectError(rawUpdate({ withdrawn: [8, 10], withdrawnLen: 200, attrs: goodAttrs() }), ErrCode.UPDATE, UpdateSub.MALFORMED_ATTRIBUTE_LIST)
    expectError(rawUpdate({ attrs: goodAttrs(), attrsLen: 300 }), ErrCode.UPDATE, UpdateSub.MALFORMED_ATTRIBUTE_LIST)
    expectError(rawUpdate({ attrs: [...goodAttrs(), 0x40, 1] }), ErrCode.UPDATE, UpdateSub.MALFORMED_ATTRIBUTE_LIST)
    expectError(rawUpdate({ attrs: [...goodAttrs(), ...attr(WK, AttrType.ORIGIN, [1])] }), ErrCode.UPDATE, UpdateSub.MALFORMED_ATTRIBUTE_LIST)
    expectError(rawUpdate({ attrs: [...goodAttrs(), 0xc0, 200, 9, 1] }), ErrCode.UPDATE, UpdateSub.MALFORMED_ATTRIBUTE_LIST)
  })

  it('UPDATE: unrecognized well-known attribute, data = the attribute', () => {
    const unknown = attr(WK, 99, [1, 2])
    expectError(rawUpdate({ attrs: goodAttrs({ extra: unknown }) }), ErrCode.UPDATE, UpdateSub.UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE, unknown)
  })

  it('a well-formed hand-assembled UPDATE decodes (the fixtures are right)', () => {
    const m = decodeOne(rawUpdate({ attrs: goodAttrs() }))
    expect(m).toEqual({
      type: MsgType.UPDATE,
      withdrawn: [],
      attrs: { origin: Origin.IGP, asPath: [{ type: SegType.AS_SEQUENCE, asns: [65002] }], nextHop: ip('192.0.2.1'), med: null, localPref: null, atomicAggregate: false, other: [] },
      nlri: [pfx('100.0.0.0/24')],
      mpReach: null,
    })
  })
})

describe('prefix decoding', () => {
  it('ignores trailing bits past the prefix length', () => {
    const m = decodeOne(rawUpdate({ attrs: goodAttrs(), nlri: [20, 10, 1, 0xff] }))
    expect(m.type === MsgType.UPDATE && m.nlri.map(formatPrefix)).toEqual(['10.1.240.0/20'])
  })

  it('round-trips arbitrary prefix lists (property, seeded)', () => {
    onTestFailed(() => console.error(`bgp prefixes seed=${seed}`))
    fc.assert(
      fc.property(fc.array(arbPrefixKey, { maxLength: 200, size: 'max' }), (keys) => {
        const u: UpdateMessage = { type: MsgType.UPDATE, withdrawn: keys, attrs: null, nlri: [], mpReach: null }
        expect(decodeOne(encodeUpdate(u, true))).toEqual(u)
      }),
      { seed, numRuns: 200 },
    )
  })
})
