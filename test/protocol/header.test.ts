// Wire header codec: round trip, every reject reason (a corrupt byte at each offset, truncation at
// each length), and sequence arithmetic across the 2^32 wrap.

import fc from 'fast-check'
import { describe, expect, it, onTestFailed } from 'vitest'
import {
  Flag,
  HEADER_BYTES,
  HEADER_VERSION,
  MsgType,
  Off,
  Reject,
  RejectCounters,
  decodeHeader,
  emptyHeader,
  encodeHeader,
  headerChecksum,
  readHeader,
  seqAdd,
  seqDiff,
  seqLe,
  seqLt,
  validate,
  type Header,
} from '../../engine/protocol/header.ts'

const seed = Number(process.env.NSR_SEED ?? Math.floor(Math.random() * 2 ** 31))
const types = Object.values(MsgType)
const allFlags = Object.values(Flag).reduce((a, b) => a | b, 0)

function encode(h: Header, payloadLen = h.length, at = 0): DataView {
  const dv = new DataView(new ArrayBuffer(at + HEADER_BYTES + payloadLen))
  encodeHeader(dv, at, h.type, h.flags, h.handle, h.seq, h.ack, h.credit, h.length)
  return dv
}

const sample: Header = { type: MsgType.REPLICATE, flags: Flag.ACK_REQUIRED, handle: 7, seq: 0xfffffff0, ack: 3, credit: 65536, length: 5 }

/** Rewrites the checksum after a deliberate field change, so validate() reaches the later checks. */
function reseal(dv: DataView, at = 0): void {
  dv.setUint32(at + Off.checksum, headerChecksum(dv, at), true)
}

describe('header codec', () => {
  it('round-trips random headers at random offsets', () => {
    onTestFailed(() => console.error(`header round-trip seed=${seed}`))
    fc.assert(
      fc.property(
        fc.constantFrom(...types),
        fc.integer({ min: 0, max: allFlags }),
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 300 }),
        fc.nat({ max: 40 }),
        (type, flags, handle, seq, ack, credit, length, at) => {
          const h: Header = { type, flags: flags & allFlags, handle, seq, ack, credit, length }
          const dv = encode(h, length, at)
          expect(validate(dv, at, HEADER_BYTES + length)).toBeNull()
          expect(decodeHeader(dv, at, emptyHeader())).toEqual(h)
        },
      ),
      { seed, numRuns: 500 },
    )
  })

  it('readHeader (the one-pass path of the reader) agrees with validate + decodeHeader on good and damaged headers', () => {
    onTestFailed(() => console.error(`readHeader seed=${seed}`))
    fc.assert(
      fc.property(
        fc.constantFrom(...types),
        fc.integer({ min: 0, max: 0xffff }),
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 300 }),
        fc.nat({ max: HEADER_BYTES + 8 }), // byte to damage (past the header: none)
        fc.integer({ min: 1, max: 255 }),
        fc.boolean(), // reseal the checksum after the damage, to reach the later checks
        fc.nat({ max: 340 }), // bytes the caller says are there
        (type, flags, handle, seq, length, at, x, reseal_, available) => {
          const dv = encode({ type, flags: flags & allFlags, handle, seq, ack: seq ^ handle, credit: length * 3, length }, 320)
          if (at < HEADER_BYTES) dv.setUint8(at, dv.getUint8(at) ^ x)
          if (reseal_) reseal(dv)
          const into = emptyHeader()
          const got = readHeader(dv, 0, available, 0x7fffffff, into)
          expect(got).toBe(validate(dv, 0, available))
          if (got === null) expect(into).toEqual(decodeHeader(dv, 0, emptyHeader()))
        },
      ),
      { seed, numRuns: 2000 },
    )
  })

  it('decodes into the object it is given (no allocation)', () => {
    const dv = encode(sample)
    const into = emptyHeader()
    expect(decodeHeader(dv, 0, into)).toBe(into)
  })

  it('rejects a corrupt byte at every offset', () => {
    onTestFailed(() => console.error(`corrupt-byte seed=${seed}`))
    const rnd = fc.sample(fc.integer({ min: 1, max: 255 }), { seed, numRuns: HEADER_BYTES })
    for (let i = 0; i < HEADER_BYTES; i++) {
      for (const x of [1, 0x80, 0xff, rnd[i]]) {
        const dv = encode(sample)
        dv.setUint8(i, dv.getUint8(i) ^ x)
        const reason = validate(dv, 0, HEADER_BYTES + sample.length)
        expect(reason, `byte ${i} ^ ${x}`).toBe(i === Off.version ? Reject.VERSION : Reject.CHECKSUM)
      }
    }
  })

  it('rejects a truncated header at every length, and a truncated payload', () => {
    const dv = encode(sample)
    for (let n = 0; n < HEADER_BYTES; n++) expect(validate(dv, 0, n), `available ${n}`).toBe(Reject.TRUNCATED)
    for (let n = HEADER_BYTES; n < HEADER_BYTES + sample.length; n++) expect(validate(dv, 0, n), `available ${n}`).toBe(Reject.LENGTH)
    expect(validate(dv, 0, HEADER_BYTES + sample.length)).toBeNull()
    // the view itself too short, whatever the caller claims
    const short = new DataView(dv.buffer, 0, HEADER_BYTES - 1)
    expect(validate(short, 0, 1000)).toBe(Reject.TRUNCATED)
    expect(validate(dv, -1, 1000)).toBe(Reject.TRUNCATED)
  })

  it('rejects each bad field even with a valid checksum', () => {
    const cases: Array<[string, (dv: DataView) => void, Reject]> = [
      ['version', (dv) => dv.setUint8(Off.version, HEADER_VERSION + 1), Reject.VERSION],
      ['type 0', (dv) => dv.setUint8(Off.type, 0), Reject.TYPE],
      ['type 255', (dv) => dv.setUint8(Off.type, 255), Reject.TYPE],
      ['unknown flag', (dv) => dv.setUint16(Off.flags, 0x8000, true), Reject.FLAGS],
      ['reserved', (dv) => dv.setUint32(Off.reserved, 1, true), Reject.RESERVED],
      ['length beyond available', (dv) => dv.setUint32(Off.length, 6, true), Reject.LENGTH],
    ]
    for (const [name, mutate, reason] of cases) {
      const dv = encode(sample)
      mutate(dv)
      reseal(dv)
      expect(validate(dv, 0, HEADER_BYTES + sample.length), name).toBe(reason)
    }
    const dv = encode(sample)
    expect(validate(dv, 0, HEADER_BYTES + sample.length, 4)).toBe(Reject.LENGTH) // maxPayload
    expect(validate(dv, 0, HEADER_BYTES + sample.length, 5)).toBeNull()
  })

  it('accepts every known type and flag, rejects every unknown type', () => {
    const known = new Set<number>(types)
    for (let t = 0; t < 256; t++) {
      const dv = encode({ ...sample, type: t, flags: allFlags })
      expect(validate(dv, 0, HEADER_BYTES + sample.length), `type ${t}`).toBe(known.has(t) ? null : Reject.TYPE)
    }
  })

  it('counts rejects by reason', () => {
    const c = new RejectCounters()
    c.count(Reject.CHECKSUM)
    c.count(Reject.CHECKSUM)
    c.count(Reject.TYPE)
    expect(c.total).toBe(3)
    expect(c.byReason[Reject.CHECKSUM]).toBe(2)
    expect(c.byReason[Reject.TYPE]).toBe(1)
  })
})

describe('sequence arithmetic across 2^32', () => {
  it('orders and counts seqs that start just below 2^32', () => {
    const start = 0xffffffff - 5
    let prev = start
    for (let i = 1; i <= 12; i++) {
      const s = seqAdd(start, i)
      expect(s).toBe((start + i) % 2 ** 32)
      expect(seqLt(prev, s)).toBe(true)
      expect(seqLt(s, prev)).toBe(false)
      expect(seqLe(s, s)).toBe(true)
      expect(seqDiff(s, start)).toBe(i)
      expect(seqDiff(start, s)).toBe(-i)
      prev = s
    }
    expect(seqAdd(0xffffffff, 1)).toBe(0)
    expect(seqLt(0xffffffff, 0)).toBe(true)
    expect(seqLt(0, 0xffffffff)).toBe(false)
  })

  it('survives the wire: encoded seqs and acks near the wrap decode and compare correctly', () => {
    const base = 0xfffffff8
    const into = emptyHeader()
    let last = -1
    for (let i = 0; i < 16; i++) {
      const seq = seqAdd(base, i)
      const dv = encode({ ...sample, seq, ack: seqAdd(seq, -1), length: 0 })
      expect(validate(dv, 0, HEADER_BYTES)).toBeNull()
      decodeHeader(dv, 0, into)
      expect(into.seq).toBe(seq)
      expect(seqDiff(into.seq, into.ack)).toBe(1)
      if (last >= 0) expect(seqLt(last, into.seq)).toBe(true)
      last = into.seq
    }
  })

  it('compares by signed distance (property, seeded)', () => {
    onTestFailed(() => console.error(`seq property seed=${seed}`))
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), fc.integer({ min: -(2 ** 31) + 1, max: 2 ** 31 - 1 }), (a, d) => {
        const b = seqAdd(a, d)
        expect(seqDiff(b, a)).toBe(d)
        expect(seqLt(a, b)).toBe(d > 0)
        expect(seqLe(a, b)).toBe(d >= 0)
      }),
      { seed, numRuns: 1000 },
    )
  })
})
