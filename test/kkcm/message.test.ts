// Message framing on a ring: sendMessage/reserveMessage write header + payload in place;
// MessageReader validates each frame, counts rejects without throwing, and hands good messages on
// with one reused Header object and the payload offset.

import { describe, expect, it } from 'vitest'
import { NsrError } from '../../engine/errors.ts'
import { Ring, RingResult } from '../../engine/kkcm/ring.ts'
import { MessageReader, READER_MAX_MESSAGES_PER_POLL, maxMessagePayload, reserveMessage, sendMessage } from '../../engine/kkcm/message.ts'
import { Flag, HEADER_BYTES, MsgType, Off, Reject, headerChecksum, type Header } from '../../engine/protocol/header.ts'

interface Got {
  h: Header
  payload: Uint8Array
}

function collect(ring: Ring): { reader: MessageReader; got: Got[]; headers: Header[] } {
  const got: Got[] = []
  const headers: Header[] = []
  const reader = new MessageReader(ring, (h, bytes, off) => {
    headers.push(h)
    got.push({ h: { ...h }, payload: bytes.slice(off, off + h.length) })
  })
  return { reader, got, headers }
}

describe('sendMessage / MessageReader', () => {
  it('round-trips headers and payloads, reusing one Header object', () => {
    const ring = Ring.create(8192)
    const { reader, got, headers } = collect(ring)
    expect(sendMessage(ring, MsgType.REPLICATE, Flag.ACK_REQUIRED, 7, 0xffffffff, 3, 4096, new Uint8Array([1, 2, 3]))).toBe(RingResult.OK)
    expect(sendMessage(ring, MsgType.ACK, 0, 7, 0, 0xffffffff, 65536)).toBe(RingResult.OK)
    const big = new Uint8Array(1000).map((_, i) => i & 255)
    expect(sendMessage(ring, MsgType.TX, 0, 1, 2, 3, 4, big, 600)).toBe(RingResult.OK) // first 600 bytes only
    expect(reader.poll()).toBe(3)
    expect(got.map((g) => g.h)).toEqual([
      { type: MsgType.REPLICATE, flags: Flag.ACK_REQUIRED, handle: 7, seq: 0xffffffff, ack: 3, credit: 4096, length: 3 },
      { type: MsgType.ACK, flags: 0, handle: 7, seq: 0, ack: 0xffffffff, credit: 65536, length: 0 },
      { type: MsgType.TX, flags: 0, handle: 1, seq: 2, ack: 3, credit: 4, length: 600 },
    ])
    expect(got[0].payload).toEqual(new Uint8Array([1, 2, 3]))
    expect(Buffer.compare(got[2].payload, big.subarray(0, 600))).toBe(0)
    expect(headers[0]).toBe(headers[1])
    expect(reader.accepted).toBe(3)
    expect(reader.rejects.total).toBe(0)
  })

  it('reserveMessage lets the caller write the payload in place', () => {
    const ring = Ring.create(4096)
    const { reader, got } = collect(ring)
    const off = reserveMessage(ring, MsgType.RX, Flag.DATAGRAM, 9, 1, 0, 0, 4)
    expect(off % 8).toBe(0)
    ring.view.setUint32(off, 0xdeadbeef, true)
    ring.commit()
    reader.poll()
    expect(got[0].h.flags).toBe(Flag.DATAGRAM)
    expect(new DataView(got[0].payload.buffer).getUint32(0, true)).toBe(0xdeadbeef)
  })

  it('returns FULL and CLOSED, throws EMSGSIZE and EINVAL', () => {
    const ring = Ring.create(4096)
    const max = maxMessagePayload(ring)
    expect(max).toBe(ring.maxFrameBytes - HEADER_BYTES)
    let e: unknown
    try {
      sendMessage(ring, MsgType.TX, 0, 0, 0, 0, 0, new Uint8Array(max + 1))
    } catch (err) {
      e = err
    }
    expect(e instanceof NsrError && e.code).toBe('EMSGSIZE')
    expect(() => sendMessage(ring, MsgType.TX, 0, 0, 0, 0, 0, new Uint8Array(2), 5)).toThrow(/EINVAL/)
    expect(() => sendMessage(ring, MsgType.TX, 0, 0, 0, 0, 0, undefined, 5)).toThrow(/EINVAL/)
    let r: number
    while ((r = sendMessage(ring, MsgType.TX, 0, 0, 0, 0, 0, new Uint8Array(max))) === RingResult.OK);
    expect(r).toBe(RingResult.FULL)
    ring.close()
    expect(sendMessage(ring, MsgType.TX, 0, 0, 0, 0, 0)).toBe(RingResult.CLOSED)
  })

  it('counts every kind of bad frame, never throws, and keeps delivering good ones', () => {
    const ring = Ring.create(8192)
    const rejected: Reject[] = []
    const got: number[] = []
    const reader = new MessageReader(ring, (h) => got.push(h.seq), { onReject: (why) => rejected.push(why), maxPayload: 100 })
    const good = (seq: number) => sendMessage(ring, MsgType.REPLICATE, 0, 1, seq, 0, 0, new Uint8Array(4))
    const raw = (bytes: Uint8Array) => ring.send(bytes)
    const encoded = (mutate: (dv: DataView) => void, seal = true): Uint8Array => {
      const scratch = Ring.create(4096)
      sendMessage(scratch, MsgType.REPLICATE, 0, 1, 99, 0, 0, new Uint8Array(4))
      const f = scratch.receive()!
      const dv = new DataView(f.buffer)
      mutate(dv)
      if (seal) dv.setUint32(Off.checksum, headerChecksum(dv, 0), true)
      return f
    }
    good(1)
    raw(new Uint8Array(10)) // truncated
    raw(encoded((dv) => dv.setUint8(Off.version, 9))) // version
    raw(encoded((dv) => dv.setUint8(Off.seq, 0x55), false)) // checksum
    raw(encoded((dv) => dv.setUint8(Off.type, 200))) // type
    raw(encoded((dv) => dv.setUint16(Off.flags, 0x4000, true))) // flags
    raw(encoded((dv) => dv.setUint32(Off.reserved, 1, true))) // reserved
    raw(encoded((dv) => dv.setUint32(Off.length, 3, true))) // frame longer than header says
    raw(encoded((dv) => dv.setUint32(Off.length, 500, true))) // beyond the frame
    good(2)
    sendMessage(ring, MsgType.REPLICATE, 0, 1, 3, 0, 0, new Uint8Array(101)) // beyond maxPayload
    good(4)
    expect(() => reader.poll()).not.toThrow()
    expect(got).toEqual([1, 2, 4])
    expect(rejected).toEqual([
      Reject.TRUNCATED,
      Reject.VERSION,
      Reject.CHECKSUM,
      Reject.TYPE,
      Reject.FLAGS,
      Reject.RESERVED,
      Reject.LENGTH,
      Reject.LENGTH,
      Reject.LENGTH,
    ])
    expect(reader.rejects.total).toBe(9)
    expect(reader.rejects.byReason[Reject.LENGTH]).toBe(3)
  })

  it('caps one poll and pump() runs until the ring is closed and empty', async () => {
    const ring = Ring.create(1 << 20)
    const { reader, got } = collect(ring)
    const n = READER_MAX_MESSAGES_PER_POLL * 2 + 5
    for (let i = 0; i < n; i++) sendMessage(ring, MsgType.KEEPALIVE, 0, 0, i, 0, 0)
    expect(reader.poll()).toBe(READER_MAX_MESSAGES_PER_POLL)
    const pumped = reader.pump()
    setTimeout(() => {
      sendMessage(ring, MsgType.KEEPALIVE, 0, 0, n, 0, 0)
      ring.close()
    }, 10)
    await pumped
    expect(got.length).toBe(n + 1)
    expect(got.every((g, i) => g.h.seq === i)).toBe(true)
  })
})
