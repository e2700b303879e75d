// Ring unit tests in one thread: sizing, zero-length and oversized frames, FULL without growth,
// wrap-around (of the data region and of the 2^32 positions), close from either side, in-place
// versus copied reads, frame alignment, corrupt prefixes, and parking/waking on the same memory.

import { describe, expect, it } from 'vitest'
import { NsrError } from '../../engine/errors.ts'
import { RING_CONTROL_BYTES, Ring, RingResult, flushRings, ringFrameBytes, ringSabBytes } from '../../engine/kkcm/ring.ts'

function payload(len: number, tag: number): Uint8Array {
  const p = new Uint8Array(len)
  for (let i = 0; i < len; i++) p[i] = (tag * 31 + i * 7) & 255
  return p
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0
}

function drainAll(r: Ring): Array<{ off: number; data: Uint8Array }> {
  const out: Array<{ off: number; data: Uint8Array }> = []
  r.drain((b, off, len) => out.push({ off, data: b.slice(off, off + len) }))
  return out
}

function code(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (e) {
    return e instanceof NsrError ? e.code : String(e)
  }
  return undefined
}

describe('Ring sizing', () => {
  it('accepts powers of two from 4096 and refuses anything else', () => {
    for (const bad of [0, 2048, 4095, 5000, 4096 * 3, 2 ** 31, 1.5, -4096]) expect(code(() => Ring.create(bad)), String(bad)).toBe('EINVAL')
    const r = Ring.create(4096)
    expect(r.capacity).toBe(4096)
    expect(r.maxFrameBytes).toBe(4096 / 2 - 8)
    expect(r.sab.byteLength).toBe(ringSabBytes(4096))
    expect(ringSabBytes(4096)).toBe(RING_CONTROL_BYTES + 4096)
    expect(r.bytes.length).toBe(4096)
    expect(r.view.byteLength).toBe(4096)
    expect(r.bytes.byteOffset % 128).toBe(0)
  })

  it('attach refuses memory that holds no ring, and bad offsets', () => {
    expect(code(() => Ring.attach(new SharedArrayBuffer(8192)))).toBe('EINVAL')
    const r = Ring.create(4096)
    expect(code(() => Ring.attach(r.sab, 8))).toBe('EINVAL')
    expect(code(() => Ring.attach(r.sab, 128))).toBe('EINVAL')
  })
})

describe('Ring frames', () => {
  it('carries zero-length frames', () => {
    const r = Ring.create(4096)
    for (let i = 0; i < 10; i++) expect(r.send(new Uint8Array(0))).toBe(RingResult.OK)
    const lens: number[] = []
    expect(r.drain((_b, _off, len) => lens.push(len), 4)).toBe(4)
    expect(lens).toEqual([0, 0, 0, 0])
    const f = r.receive()
    expect(f).not.toBeNull()
    expect(f!.length).toBe(0)
    expect(r.drain(() => {})).toBe(5)
    expect(r.receive()).toBeNull()
    expect(r.isEmpty()).toBe(true)
  })

  it('throws EMSGSIZE for a frame that can never fit, and takes the largest one on an empty ring at any position', () => {
    const r = Ring.create(4096)
    expect(code(() => r.reserve(r.maxFrameBytes + 1))).toBe('EMSGSIZE')
    expect(code(() => r.send(new Uint8Array(r.maxFrameBytes + 1)))).toBe('EMSGSIZE')
    expect(code(() => r.reserve(-1))).toBe('EINVAL')
    expect(code(() => r.reserve(1.5))).toBe('EINVAL')
    const big = payload(r.maxFrameBytes, 9)
    // walk the empty ring through every 8-byte position
    for (let step = 0; step < r.capacity / 8; step++) {
      expect(r.send(big), `position ${step * 8}`).toBe(RingResult.OK)
      const got = drainAll(r)
      expect(got.length).toBe(1)
      expect(same(got[0].data, big)).toBe(true)
      expect(r.send(new Uint8Array(0))).toBe(RingResult.OK) // advance by 8
      expect(r.drain(() => {})).toBe(1)
    }
  })

  it('returns FULL without growing and recovers after a drain', async () => {
    const r = Ring.create(4096)
    const before = r.sab.byteLength
    const p = payload(100, 1)
    let sent = 0
    while (r.send(p) === RingResult.OK) sent++
    expect(sent).toBe(Math.floor(4096 / ringFrameBytes(100)))
    expect(r.send(p)).toBe(RingResult.FULL)
    expect(r.sab.byteLength).toBe(before)
    expect(r.capacity).toBe(4096)
    expect(r.stats().full).toBeGreaterThanOrEqual(2)
    expect(r.freeBytes()).toBe(4096 - sent * ringFrameBytes(100))
    expect(r.drain(() => {}, 1)).toBe(1)
    await r.writable() // the head moved since the FULL: resolves at once
    expect(r.send(p)).toBe(RingResult.OK)
    const got = drainAll(r)
    expect(got.length).toBe(sent)
    for (const g of got) expect(g.data).toEqual(p)
    expect(r.stats()).toMatchObject({ framesIn: sent + 1, framesOut: sent + 1 })
  })

  it('keeps every frame contiguous and 8-aligned across the wrap', () => {
    const r = Ring.create(4096)
    let tag = 0
    let expectTag = 0
    for (let round = 0; round < 200; round++) {
      for (let k = 0; k < 3; k++) {
        const len = (round * 37 + k * 101) % 700
        if (r.send(payload(len, tag)) === RingResult.OK) tag++
      }
      r.drain((b, off, len) => {
        expect(off % 8).toBe(0)
        expect(off + len).toBeLessThanOrEqual(r.capacity)
        expect(same(b.subarray(off, off + len), payload(len, expectTag))).toBe(true)
        expectTag++
      }, 2)
    }
    drainAll(r)
    expect(r.isEmpty()).toBe(true)
    expect(r.stats().framesOut).toBe(tag)
  })

  it('aligns every payload offset to 8 for all lengths', () => {
    const r = Ring.create(8192)
    for (let len = 0; len <= 300; len++) {
      const off = r.reserve(len)
      expect(off % 8, `len ${len}`).toBe(0)
      r.commit()
      r.drain((_b, o, l) => {
        expect(o).toBe(off)
        expect(l).toBe(len)
      })
    }
  })

  it('crosses the 2^31 and 2^32 wrap of its positions', () => {
    for (const start of [-64, 0x7fffffc0, -4096 - 64]) {
      const sab = new SharedArrayBuffer(ringSabBytes(4096))
      const r = Ring.format(sab, 0, 4096, { initialPosition: start })
      const c = Ring.attach(sab)
      let sent = 0
      let got = 0
      for (let i = 0; i < 500; i++) {
        const len = (i * 53) % 900
        if (r.send(payload(len, i)) === RingResult.OK) sent++
        c.drain((b, off, l) => {
          expect(same(b.subarray(off, off + l), payload((got * 53) % 900, got))).toBe(true)
          got++
        })
      }
      expect(got).toBe(sent)
      expect(r.freeBytes()).toBe(4096)
    }
  })

  it('reads in place with drain and copies out with receive', () => {
    const r = Ring.create(4096)
    r.send(payload(16, 3))
    r.send(payload(16, 4))
    let view: Uint8Array | null = null
    let at = -1
    r.drain((b, off) => {
      view = b
      at = off
    }, 1)
    expect(view).toBe(r.bytes) // the ring's own memory: zero copy
    expect(r.bytes.slice(at, at + 16)).toEqual(payload(16, 3))
    const copy = r.receive()!
    expect(copy.buffer).not.toBe(r.sab)
    expect(copy).toEqual(payload(16, 4))
    r.bytes.fill(0) // the producer reusing the space does not touch the copy
    expect(copy).toEqual(payload(16, 4))
  })

  it('reserve/commit writes in place; a second reserve replaces the first', () => {
    const r = Ring.create(4096)
    const off1 = r.reserve(10)
    const off2 = r.reserve(20)
    expect(off2).toBe(off1)
    r.bytes.set(payload(20, 5), off2)
    r.commit()
    expect(() => r.commit()).toThrow(/commit\(\) without a reserve/)
    expect(drainAll(r).map((f) => f.data)).toEqual([payload(20, 5)])
  })

  it('honours maxFrames and consumes a frame whose handler throws', () => {
    const r = Ring.create(4096)
    for (let i = 0; i < 5; i++) r.send(payload(8, i))
    expect(r.drain(() => {}, 2)).toBe(2)
    expect(() =>
      r.drain(() => {
        throw new Error('handler failed')
      }),
    ).toThrow('handler failed')
    expect(r.stats().framesOut).toBe(3)
    expect(drainAll(r).map((f) => f.data)).toEqual([payload(8, 3), payload(8, 4)])
  })

  it('closes the ring and counts a corrupt prefix instead of throwing', () => {
    const r = Ring.create(4096)
    r.send(payload(8, 1))
    const off = r.reserve(8)
    r.commit()
    r.bytes[off - 8 + 3] = 0x40 // length prefix now absurd
    expect(drainAll(r).length).toBe(1)
    expect(r.closed).toBe(true)
    expect(r.stats().corrupt).toBe(1)
  })
})

describe('Ring close', () => {
  it('producer close: committed frames stay readable, then the consumer sees closed and empty', async () => {
    const sab = Ring.create(4096).sab
    const prod = Ring.attach(sab)
    const cons = Ring.attach(sab)
    prod.send(payload(40, 1))
    prod.send(payload(0, 2))
    prod.close()
    expect(prod.send(payload(1, 3))).toBe(RingResult.CLOSED)
    expect(prod.reserve(1)).toBe(RingResult.CLOSED)
    expect(cons.closed).toBe(true)
    await cons.readable()
    expect(drainAll(cons).map((f) => f.data)).toEqual([payload(40, 1), payload(0, 2)])
    expect(cons.isEmpty()).toBe(true)
    await cons.readable() // closed: resolves at once
  })

  it('consumer close: the producer gets CLOSED and a pending writable() resolves', async () => {
    const sab = Ring.create(4096).sab
    const prod = Ring.attach(sab, 0, { spinUs: 0 })
    const cons = Ring.attach(sab)
    while (prod.send(payload(500, 0)) === RingResult.OK);
    const w = prod.writable()
    let done = false
    void w.then(() => (done = true))
    await new Promise((r) => setTimeout(r, 20))
    expect(done).toBe(false)
    cons.close()
    await w
    expect(prod.closed).toBe(true)
    expect(prod.send(payload(1, 1))).toBe(RingResult.CLOSED)
  })
})

describe('Ring fence', () => {
  // A task ends with the microtask that flushes this thread's rings: `await endOfTask()`.
  const endOfTask = async (): Promise<void> => {
    for (let i = 0; i < 4; i++) await null
  }

  it('holds at once between tasks: later commits are dropped, earlier ones stay readable', async () => {
    const producer = Ring.create(4096)
    const consumer = Ring.attach(producer.sab, 0)
    expect(producer.send(payload(10, 1))).toBe(RingResult.OK)
    await endOfTask() // the task that committed it ends
    expect(consumer.fence()).toBe(true)
    // The producer, still running: a reservation fails, and a frame reserved before the fence is dropped at commit.
    expect(producer.reserve(8)).toBe(RingResult.CLOSED)
    expect(drainAll(consumer).map((f) => f.data.length)).toEqual([10])
  })

  it('waits for a task that is committing, and takes all of that task', async () => {
    const producer = Ring.create(4096)
    const consumer = Ring.attach(producer.sab, 0)
    const off = producer.reserve(16) // reserved before the fence, committed after it in the same task
    expect(producer.send(payload(10, 1))).toBe(RingResult.OK)
    expect(consumer.fence()).toBe(false)
    expect(consumer.fenced()).toBe(false)
    expect(off).toBeGreaterThanOrEqual(0)
    flushRings() // a publish in the middle of the task does not end it
    expect(consumer.fenced()).toBe(false)
    await endOfTask() // the task ends: its frames are committed
    expect(consumer.fenced()).toBe(true)
    expect(consumer.recoverCommitted()).toBe(0) // the end-of-task flush published them
    expect(drainAll(consumer).map((f) => f.data.length)).toEqual([10])
    // The next task's first commit sees the fence.
    const late = producer.reserve(8)
    expect(late).toBe(RingResult.CLOSED)
  })

  it('drops a frame reserved before the fence and committed in a later task', async () => {
    const producer = Ring.create(4096)
    const consumer = Ring.attach(producer.sab, 0)
    expect(producer.reserve(24)).toBeGreaterThanOrEqual(0)
    expect(consumer.fence()).toBe(true)
    producer.commit()
    await endOfTask()
    expect(consumer.recoverCommitted()).toBe(0)
    expect(drainAll(consumer)).toEqual([])
  })
})

describe('Ring halt', () => {
  it('stops the consumer for good: drain() takes nothing more, and unhalt() lets it read on', () => {
    const producer = Ring.create(4096)
    const consumer = Ring.attach(producer.sab, 0)
    producer.send(payload(10, 1))
    expect(drainAll(consumer).map((f) => f.data.length)).toEqual([10])
    producer.send(payload(11, 2))
    expect(consumer.halt()).toBe(true) // no drain() under way: holds at once
    expect(consumer.halted).toBe(true)
    expect(drainAll(consumer)).toEqual([])
    expect(consumer.isEmpty()).toBe(false) // the frame is there, never read
    consumer.unhalt()
    expect(drainAll(consumer).map((f) => f.data.length)).toEqual([11])
  })

  it('holds only once a drain() under way has returned; that drain() finishes its frames', () => {
    const producer = Ring.create(4096)
    const consumer = Ring.attach(producer.sab, 0)
    const third = Ring.attach(producer.sab, 0) // the chassis's view of the same ring
    for (let i = 0; i < 3; i++) producer.send(payload(8, i))
    flushRings()
    const held: boolean[] = []
    let taken = 0
    consumer.drain(() => {
      taken++
      if (taken === 1) held.push(third.halt())
      held.push(third.haltHeld())
    })
    expect(taken).toBe(3)
    expect(held).toEqual([false, false, false, false])
    expect(third.haltHeld()).toBe(true)
    producer.send(payload(8, 9))
    expect(drainAll(consumer)).toEqual([])
  })

  it('lets a consumer of a live producer adopt whole frames only, up to what it committed', () => {
    const producer = Ring.create(4096, { publishBatchBytes: 1 << 20 })
    const consumer = Ring.attach(producer.sab, 0)
    producer.send(payload(10, 1))
    producer.send(payload(20, 2))
    const off = producer.reserve(30) // written, not committed: not adopted
    expect(off).toBeGreaterThanOrEqual(0)
    expect(consumer.recoverCommitted()).toBe(ringFrameBytes(10) + ringFrameBytes(20))
    expect(drainAll(consumer).map((f) => f.data.length)).toEqual([10, 20])
    producer.commit()
    flushRings()
    expect(drainAll(consumer).map((f) => f.data.length)).toEqual([30])
  })
})

describe('Ring waiting', () => {
  it('parks in readable() and wakes on commit (notify only when parked)', async () => {
    const sab = Ring.create(4096).sab
    const prod = Ring.attach(sab)
    const cons = Ring.attach(sab, 0, { spinUs: 0 })
    prod.send(payload(1, 1))
    expect(prod.stats().notifies).toBe(0) // nobody parked: no notify
    await cons.readable()
    expect(cons.stats().parks).toBe(0)
    drainAll(cons)
    const p = cons.readable()
    expect(cons.readable()).toBe(p) // one pending wait per ring object
    setTimeout(() => prod.send(payload(2, 2)), 10)
    await p
    expect(cons.stats().parks).toBe(1)
    expect(cons.stats().notifies).toBe(1)
    expect(drainAll(cons).map((f) => f.data)).toEqual([payload(2, 2)])
  })

  it('parks in writable() and wakes when the consumer drains', async () => {
    const sab = Ring.create(4096).sab
    const prod = Ring.attach(sab, 0, { spinUs: 0 })
    const cons = Ring.attach(sab)
    while (prod.send(payload(100, 0)) === RingResult.OK);
    const w = prod.writable()
    setTimeout(() => cons.drain(() => {}, 1), 10)
    await w
    expect(prod.stats().parks).toBeGreaterThanOrEqual(1)
    expect(prod.send(payload(100, 0))).toBe(RingResult.OK)
  })

  it('waitReadableSync times out when empty and returns true when a frame is there', () => {
    const r = Ring.create(4096, { spinUs: 0 })
    const t0 = performance.now()
    expect(r.waitReadableSync(20)).toBe(false)
    expect(performance.now() - t0).toBeGreaterThanOrEqual(15)
    r.send(payload(3, 3))
    expect(r.waitReadableSync(1000)).toBe(true)
    drainAll(r)
    r.close()
    expect(r.waitReadableSync(1000)).toBe(true)
  })
})

describe('Ring tail publication (batched by bytes)', () => {
  // the shared TAIL word, read raw: what another thread would see
  const TAIL_WORD = (2 * 128) / 4
  const sharedTail = (r: Ring): number => Atomics.load(new Int32Array(r.sab, r.byteOffset, 256), TAIL_WORD)

  it('publishes at the byte threshold, at the end of the task, and before any ring call', async () => {
    const r = Ring.create(1 << 16, { publishBatchBytes: 1024 })
    expect(r.publishBatchBytes).toBe(1024)
    r.send(new Uint8Array(64))
    expect(sharedTail(r)).toBe(0) // not yet visible to another thread
    await Promise.resolve() // end of the task's synchronous part: the queued microtask published it
    expect(sharedTail(r)).toBe(72)
    for (let i = 0; i < 14; i++) r.send(new Uint8Array(64)) // 14 * 72 = 1008 < 1024
    expect(sharedTail(r)).toBe(72)
    r.send(new Uint8Array(64)) // crosses 1024 pending bytes
    expect(sharedTail(r)).toBe(72 * 16)
    r.send(new Uint8Array(8))
    const other = Ring.attach(r.sab) // same thread, another object: sees it at once
    expect(other.isEmpty()).toBe(false)
    expect(sharedTail(r)).toBe(72 * 16 + 16)
    r.send(new Uint8Array(8))
    flushRings()
    expect(sharedTail(r)).toBe(72 * 16 + 32)
  })

  it('publishes every frame with publishBatchBytes 0, and on FULL', () => {
    const r = Ring.create(4096, { publishBatchBytes: 0 })
    r.send(new Uint8Array(1))
    expect(sharedTail(r)).toBe(16)
    const b = Ring.attach(Ring.create(4096).sab, 0, { publishBatchBytes: 1 << 20 })
    let n = 0
    while (b.send(new Uint8Array(100)) === RingResult.OK) n++
    expect(sharedTail(b)).toBe(n * ringFrameBytes(100)) // FULL published what was committed
  })

  it('defaults the batch to min(16 KiB, capacity / 8)', () => {
    expect(Ring.create(4096).publishBatchBytes).toBe(512)
    expect(Ring.create(1 << 20).publishBatchBytes).toBe(16384)
    expect(Ring.create(1 << 16).publishBatchBytes).toBe(8192)
  })
})
