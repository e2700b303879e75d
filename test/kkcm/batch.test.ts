// Record batches on the rings: the ring's open frames (holdOpen / commitOpen / ranks), the batch
// codec (writeBatchEntry / forEachRecord) and RingSink's batching, checked byte for byte against a
// model over random operation sequences (fast-check), including room()'s promise that a send it
// allowed is accepted, and the commit order SDRL relies on: a REPLICATE batch is never committed
// before the TX batch whose records it claims.

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { Ring, flushRings } from '../../engine/kkcm/ring.ts'
import { Flag, HEADER_BYTES, MsgType, emptyHeader, readHeader, type Header } from '../../engine/protocol/header.ts'
import { RingSink } from '../../engine/re/ring-sink.ts'
import { BATCH_MAX_PAYLOAD_BYTES, batchEntryBytes, forEachRecord, writeBatchEntry } from '../../engine/re/sink.ts'

interface Rec {
  type: number
  handle: number
  seq: number
  flags: number
  ack: number
  data: Uint8Array
  address: string | null
  port: number
}

/** Every frame a consumer of `ring` can read now, split into records (control frames: data = null). */
function readAll(ring: Ring): { recs: Rec[]; frames: Header[] } {
  const recs: Rec[] = []
  const frames: Header[] = []
  ring.drain((bytes, off, len) => {
    const h = emptyHeader()
    const why = readHeader(ring.view, off, len, ring.maxFrameBytes, h)
    expect(why).toBeNull()
    frames.push({ ...h })
    if (h.type !== MsgType.TX && h.type !== MsgType.REPLICATE) return
    const bad = forEachRecord(h, bytes, off + HEADER_BYTES, (seq, start, end, addr) => {
      recs.push({ type: h.type, handle: h.handle, seq, flags: h.flags & ~(Flag.BATCH | Flag.ACK_REQUIRED), ack: h.ack, data: bytes.slice(start, end), address: addr?.address ?? null, port: addr?.port ?? 0 })
    })
    expect(bad).toBeNull()
  })
  return { recs, frames }
}

/** The producer's committed position, as a consumer adopting a dead producer's frames sees it (ring.ts COMMITTED slot). */
function committed(ring: Ring): number {
  return new Int32Array(ring.sab, ring.byteOffset, 256)[7 * 32]
}

function bytesOf(n: number, tag: number): Uint8Array {
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = (tag * 13 + i) & 255
  return b
}

describe('ring open frames', () => {
  it('an open frame is invisible until closed, and commitOpen shrinks it to the bytes used', () => {
    const ring = Ring.create(1 << 16)
    const off = ring.reserve(1000)
    ring.bytes.set(bytesOf(10, 1), off)
    let closed = 0
    ring.holdOpen(0, () => {
      closed++
      ring.commitOpen(10)
    })
    const reader = Ring.attach(ring.sab, ring.byteOffset)
    expect(reader.recoverCommitted()).toBe(0) // nothing committed: a producer dying now loses it
    expect(closed).toBe(0)
    flushRings()
    expect(closed).toBe(1)
    const got: Uint8Array[] = []
    reader.drain((b, o, l) => got.push(b.slice(o, o + l)))
    expect(got).toEqual([bytesOf(10, 1)])
    // The shrunk frame took 8 + 16 bytes, not 8 + 1000: the next frame starts right after it.
    expect(ring.reserve(4)).toBe(off + 16 + 8)
  })

  it('any other write to the ring closes the open frame first, so frames stay in order', () => {
    const ring = Ring.create(1 << 16)
    const off = ring.reserve(64)
    ring.bytes.set(bytesOf(8, 2), off)
    ring.holdOpen(0, () => ring.commitOpen(8))
    expect(ring.send(bytesOf(5, 3))).toBe(0)
    ring.flush()
    const reader = Ring.attach(ring.sab, ring.byteOffset)
    const got: Uint8Array[] = []
    reader.drain((b, o, l) => got.push(b.slice(o, o + l)))
    expect(got).toEqual([bytesOf(8, 2), bytesOf(5, 3)])
  })

  it('closing a rank-1 frame first commits every open rank-0 frame of the thread', () => {
    const low = Ring.create(1 << 16)
    const high = Ring.create(1 << 16)
    const order: string[] = []
    low.reserve(16)
    low.holdOpen(0, () => {
      order.push('low')
      low.commitOpen(16)
    })
    high.reserve(16)
    high.holdOpen(1, () => {
      order.push('high')
      high.commitOpen(16)
    })
    high.closeOpen()
    expect(order).toEqual(['low', 'high'])
    // Committed (crash-durable) even before any publication.
    expect(Ring.attach(low.sab, low.byteOffset).recoverCommitted()).toBe(24)
  })

  it('the end of the task closes what was left open', async () => {
    const ring = Ring.create(1 << 16)
    ring.reserve(32)
    let closed = false
    ring.holdOpen(0, () => {
      closed = true
      ring.commitOpen(32)
    })
    expect(closed).toBe(false)
    await Promise.resolve()
    expect(closed).toBe(true) // committed by the microtask the ring queued, no ring call needed
    let frames = 0
    Ring.attach(ring.sab, ring.byteOffset).drain(() => frames++)
    expect(frames).toBe(1)
  })
})

describe('batch codec', () => {
  it('round-trips random records and refuses every malformed chain before handing anything out', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 20, size: 'max' }), fc.integer({ min: 0, max: 2 ** 32 - 1 }), (sizes, first) => {
        const payload = sizes.reduce((a, n) => a + batchEntryBytes(n), 0)
        const buf = new Uint8Array(HEADER_BYTES + payload + 16)
        const dv = new DataView(buf.buffer)
        let p = HEADER_BYTES
        sizes.forEach((n, i) => (p += writeBatchEntry(dv, buf, p, bytesOf(n, i), null)))
        const h: Header = { type: MsgType.TX, flags: Flag.BATCH, handle: 1, seq: first, ack: 0, credit: sizes.length, length: payload }
        const seen: Array<[number, Uint8Array]> = []
        expect(forEachRecord(h, buf, HEADER_BYTES, (seq, s, e) => seen.push([seq, buf.slice(s, e)]))).toBeNull()
        expect(seen).toEqual(sizes.map((n, i) => [(first + i) >>> 0, bytesOf(n, i)]))
        // Damage: a count too high, too low, an entry length past the end, zero records.
        let calls = 0
        const count = (): void => void calls++
        expect(forEachRecord({ ...h, credit: sizes.length + 1 }, buf, HEADER_BYTES, count)).not.toBeNull()
        if (sizes.length > 1) expect(forEachRecord({ ...h, credit: sizes.length - 1 }, buf, HEADER_BYTES, count)).toBe('batch-trailing-bytes')
        expect(forEachRecord({ ...h, credit: 0 }, buf, HEADER_BYTES, count)).toBe('batch-empty')
        dv.setUint32(HEADER_BYTES, payload, true)
        expect(forEachRecord(h, buf, HEADER_BYTES, count)).toBe('batch-entry-length')
        expect(calls).toBe(0)
      }),
      { numRuns: 300 },
    )
  })
})

describe('batch codec, datagrams', () => {
  it('hands out each record with its address; a bad address prefix ends the frame there', () => {
    const buf = new Uint8Array(HEADER_BYTES + 256)
    const dv = new DataView(buf.buffer)
    let p = HEADER_BYTES
    p += writeBatchEntry(dv, buf, p, bytesOf(4, 1), { address: '10.1.2.3', port: 179 })
    const second = p
    p += writeBatchEntry(dv, buf, p, bytesOf(4, 2), { address: '10.1.2.4', port: 180 })
    p += writeBatchEntry(dv, buf, p, bytesOf(4, 3), { address: '10.1.2.5', port: 181 })
    const h: Header = { type: MsgType.REPLICATE, flags: Flag.BATCH | Flag.DATAGRAM, handle: 1, seq: 7, ack: 0, credit: 3, length: p - HEADER_BYTES }
    const seen: string[] = []
    const each = (seq: number, s: number, e: number, addr: { address: string; port: number } | null): void => void seen.push(`${seq} ${addr?.address}:${addr?.port} ${[...buf.subarray(s, e)]}`)
    expect(forEachRecord(h, buf, HEADER_BYTES, each)).toBeNull()
    expect(seen).toEqual([`7 10.1.2.3:179 ${[...bytesOf(4, 1)]}`, `8 10.1.2.4:180 ${[...bytesOf(4, 2)]}`, `9 10.1.2.5:181 ${[...bytesOf(4, 3)]}`])
    // The second record's address claims 200 bytes: record 7 went out, nothing after it.
    buf[second + 8 + 2] = 200
    seen.length = 0
    expect(forEachRecord(h, buf, HEADER_BYTES, each)).toBe('bad-address')
    expect(seen.length).toBe(1)
  })
})

describe('RingSink batching', () => {
  it('joins consecutive records of one socket, splits on another socket, a gap, a control frame or a full batch', () => {
    const ring = Ring.create(1 << 20)
    const sink = new RingSink(ring)
    const rec = (handle: number, seq: number, n = 8, flags = 0): boolean => sink.send(MsgType.TX, Flag.HELD | flags, handle, seq, 0, 0, bytesOf(n, seq))
    expect([rec(1, 1), rec(1, 2), rec(1, 3, 8, Flag.ACK_REQUIRED)]).toEqual([true, true, true])
    rec(2, 1) // another socket
    rec(2, 3) // a gap
    sink.send(MsgType.KEEPALIVE, 0, 0, 0, 0, 0, null)
    rec(2, 4)
    rec(2, 5, 0, Flag.FIN) // never batched: a FIN is an event of its own (data here is empty, not null)
    let seq = 6
    const per = Math.floor(BATCH_MAX_PAYLOAD_BYTES / batchEntryBytes(1000))
    for (let i = 0; i < per + 1; i++) rec(2, seq++, 1000)
    flushRings()
    const reader = Ring.attach(ring.sab, ring.byteOffset)
    const { recs, frames } = readAll(reader)
    const shape = frames.map((f) => `${f.type}:${f.handle}:${f.seq}x${f.flags & Flag.BATCH ? f.credit : 1}${f.flags & Flag.ACK_REQUIRED ? '!' : ''}`)
    expect(shape).toEqual(['32:1:1x3!', '32:2:1x1', '32:2:3x1', '12:0:0x1', '32:2:4x1', '32:2:5x1', `32:2:6x${per}`, `32:2:${6 + per}x1`])
    expect(recs.map((r) => `${r.handle}:${r.seq}:${r.data.length}`).slice(0, 6)).toEqual(['1:1:8', '1:2:8', '1:3:8', '2:1:8', '2:3:8', '2:4:8'])
    expect(sink.batchedRecords).toBe(3 + 1 + 1 + 1 + per + 1)
  })

  it('carries UDP addresses per record', () => {
    const ring = Ring.create(1 << 16)
    const sink = new RingSink(ring)
    sink.send(MsgType.REPLICATE, Flag.DATAGRAM, 9, 1, 0, 0, bytesOf(3, 1), { address: '10.0.0.1', port: 179 })
    sink.send(MsgType.REPLICATE, Flag.DATAGRAM, 9, 2, 0, 0, bytesOf(5, 2), { address: '192.168.100.200', port: 65535 })
    flushRings()
    const { recs, frames } = readAll(Ring.attach(ring.sab, ring.byteOffset))
    expect(frames.length).toBe(1)
    expect(recs.map((r) => [r.seq, r.address, r.port, [...r.data]])).toEqual([
      [1, '10.0.0.1', 179, [...bytesOf(3, 1)]],
      [2, '192.168.100.200', 65535, [...bytesOf(5, 2)]],
    ])
  })

  it('a REPLICATE batch is committed only after the TX batch holding the records it claims', () => {
    // The primary's order: TX (rank 0, to the chassis) then REPLICATE (rank 1, to the secondary),
    // record by record. Whatever closes the REPLICATE batch, the TX batch is committed first.
    for (const closeBy of ['control-frame', 'room', 'flush'] as const) {
      const toChassis = new RingSink(Ring.create(1 << 16))
      const toPeer = new RingSink(Ring.create(1 << 16))
      for (let seq = 1; seq <= 5; seq++) {
        expect(toChassis.send(MsgType.TX, Flag.HELD, 4, seq, 0, 0, bytesOf(16, seq))).toBe(true)
        expect(toPeer.send(MsgType.REPLICATE, 0, 4, seq, seq, 0, bytesOf(16, seq))).toBe(true)
      }
      const chassisSide = Ring.attach(toChassis.ring.sab, toChassis.ring.byteOffset)
      const peerSide = Ring.attach(toPeer.ring.sab, toPeer.ring.byteOffset)
      expect([committed(toChassis.ring), committed(toPeer.ring)]).toEqual([0, 0])
      if (closeBy === 'control-frame') toPeer.send(MsgType.KEEPALIVE, 0, 0, 0, 0, 0, null)
      else if (closeBy === 'room') toPeer.room(BATCH_MAX_PAYLOAD_BYTES) // no room left in the batch: closes it
      else flushRings()
      // The moment the REPLICATE batch is committed, so is the TX batch (read off shared memory,
      // before any call of this thread could close it).
      expect(committed(toPeer.ring), closeBy).toBeGreaterThan(0)
      expect(committed(toChassis.ring), closeBy).toBe(8 + HEADER_BYTES + 5 * batchEntryBytes(16))
      // As if the primary died right here: only committed frames are adopted.
      chassisSide.recoverCommitted()
      peerSide.recoverCommitted()
      const tx = readAll(chassisSide).recs.map((r) => r.seq)
      const rep = readAll(peerSide).recs
      expect(rep.map((r) => r.seq), closeBy).toEqual([1, 2, 3, 4, 5])
      expect(rep[4].ack).toBe(5)
      expect(tx, closeBy).toEqual([1, 2, 3, 4, 5])
    }
  })

  it('room() is a promise even when the batch is the last free space and the next frame cannot join it', () => {
    const ring = Ring.create(1 << 16)
    const sink = new RingSink(ring)
    // Fill the ring so that exactly one full batch (8 + 32 + BATCH_MAX_PAYLOAD_BYTES) fits, at its end.
    const batchCost = 8 + HEADER_BYTES + BATCH_MAX_PAYLOAD_BYTES
    let left = ring.capacity - batchCost
    let tag = 0
    while (left > 0) {
      const n = left >= 1040 + 48 ? 1000 : left - 8 - HEADER_BYTES
      expect(sink.send(MsgType.PEER_MSG, 0, 0, 0, 0, 0, bytesOf(n, tag++))).toBe(true)
      left -= 8 + HEADER_BYTES + ((n + 7) & ~7)
    }
    expect(left).toBe(0)
    // Entries of 72 bytes, the last ones adjusted, leave 80 bytes of the batch unused.
    let used = 0
    let seq = 0
    while (used < BATCH_MAX_PAYLOAD_BYTES - 80) {
      const room = BATCH_MAX_PAYLOAD_BYTES - 80 - used
      const n = room >= 72 + 72 || room === 72 ? 64 : room - 8
      expect(sink.send(MsgType.TX, 0, 1, ++seq, 0, 0, bytesOf(n, seq))).toBe(true)
      used += batchEntryBytes(n)
    }
    expect(used).toBe(BATCH_MAX_PAYLOAD_BYTES - 80)
    // 80 bytes hold a 64-byte record as an entry (72), but not as a frame of its own (8 + 32 + 64).
    const promised = sink.room(64)
    const ok = sink.send(MsgType.PEER_MSG, 0, 0, 0, 0, 0, bytesOf(64, 7))
    expect(promised ? ok : true).toBe(true)
    expect(promised).toBe(false)
  })

  it('matches a model over random sends, room checks and drains, and keeps room()s promise', () => {
    type Op =
      | { k: 'rec'; type: number; handle: number; n: number; ackReq: boolean; gap: boolean }
      | { k: 'ctl'; n: number }
      | { k: 'room'; n: number }
      | { k: 'drain'; max: number }
    const op = fc.oneof(
      // Mostly one socket's records (batches fill up), a ring that fills (few drains), and room
      // checks followed by whatever comes next: a record that joins, or one that cannot.
      { weight: 8, arbitrary: fc.record({ k: fc.constant('rec' as const), type: fc.constantFrom(MsgType.TX, MsgType.TX, MsgType.REPLICATE), handle: fc.constantFrom(1, 1, 1, 2), n: fc.oneof(fc.integer({ min: 0, max: 120 }), fc.integer({ min: 0, max: 1500 })), ackReq: fc.boolean(), gap: fc.constantFrom(false, false, false, true) }) },
      { weight: 1, arbitrary: fc.record({ k: fc.constant('ctl' as const), n: fc.integer({ min: 0, max: 200 }) }) },
      { weight: 4, arbitrary: fc.record({ k: fc.constant('room' as const), n: fc.integer({ min: 0, max: 300 }) }) },
      { weight: 1, arbitrary: fc.record({ k: fc.constant('drain' as const), max: fc.integer({ min: 1, max: 8 }) }) },
    )
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 300, size: 'max' }), fc.constantFrom(1 << 14, 1 << 16), (ops, capacity) => {
        // 16 KiB: no full batch fits (batches of one entry); 64 KiB: batches grow.
        const ring = Ring.create(capacity)
        const sink = new RingSink(ring)
        const reader = Ring.attach(ring.sab, ring.byteOffset)
        const expected: string[] = []
        const got: string[] = []
        const seqs = new Map<string, number>()
        let tag = 0
        const collect = (max: number): void => {
          flushRings()
          reader.drain((bytes, off, len) => {
            const h = emptyHeader()
            expect(readHeader(reader.view, off, len, reader.maxFrameBytes, h)).toBeNull()
            if (h.type === MsgType.KEEPALIVE || h.type === MsgType.PEER_MSG) {
              got.push(`ctl:${h.length}:${h.length ? bytes[off + HEADER_BYTES] : ''}`)
              return
            }
            expect(forEachRecord(h, bytes, off + HEADER_BYTES, (seq, s, e) => got.push(`${h.type}:${h.handle}:${seq}:${e - s}:${e > s ? bytes[s] : ''}`))).toBeNull()
          }, max)
        }
        let promised = -1
        for (const o of ops) {
          if (o.k === 'drain') {
            collect(o.max)
            promised = -1
            continue
          }
          if (o.k === 'room') {
            promised = sink.room(o.n) ? o.n : -1
            continue
          }
          const n = o.k === 'ctl' ? o.n : o.n
          const data = bytesOf(n, ++tag)
          let ok: boolean
          let line: string
          if (o.k === 'ctl') {
            ok = sink.send(MsgType.PEER_MSG, 0, 0, 0, 0, 0, data)
            line = `ctl:${n}:${n ? data[0] : ''}`
          } else {
            const key = `${o.type}:${o.handle}`
            const seq = ((seqs.get(key) ?? 0) + (o.gap ? 2 : 1)) >>> 0
            ok = sink.send(o.type, o.ackReq ? Flag.ACK_REQUIRED : 0, o.handle, seq, 0, 0, data)
            if (ok) seqs.set(key, seq)
            line = `${o.type}:${o.handle}:${seq}:${n}:${n ? data[0] : ''}`
          }
          if (promised >= n) expect(ok, `room(${promised}) then a ${n}-byte send`).toBe(true)
          promised = -1
          if (ok) expected.push(line)
        }
        collect(Number.MAX_SAFE_INTEGER)
        expect(got).toEqual(expected)
      }),
      { numRuns: 400 },
    )
  })
})
