// The chassis's out queue (engine/chassis/out-queue.ts) against a model, and what it changes at the
// transport: released records of a stream connection leave in runs of whole records, byte-exact
// and in order; datagrams leave one by one; held records wait for their release.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { OutQueue, SlabPool, type OutSlab } from '../../engine/chassis/out-queue.ts'
import type { Addr } from '../../engine/socket/records.ts'
import { Duo } from '../sdrl/duo.ts'

type Op = { kind: 'push'; len: number } | { kind: 'release'; ahead: number } | { kind: 'drop' }

const op: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.oneof(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 250, max: 20_000 })).map((len) => ({ kind: 'push' as const, len })), weight: 8 },
  { arbitrary: fc.integer({ min: 0, max: 12 }).map((ahead) => ({ kind: 'release' as const, ahead })), weight: 3 },
  { arbitrary: fc.constant({ kind: 'drop' as const }), weight: 1 },
)

/** Record `seq`'s bytes: derived from seq, so a byte out of place names its record. */
function recordBytes(seq: number, len: number): Uint8Array {
  const out = new Uint8Array(len)
  for (let k = 0; k < len; k++) out[k] = (seq * 31 + k * 7) & 0xff
  return out
}

describe('OutQueue', () => {
  for (const coalesce of [true, false]) {
    it(`hands out exactly the released records, whole and in order (${coalesce ? 'stream' : 'datagram'})`, () => {
      fc.assert(
        fc.property(fc.array(op, { minLength: 20, maxLength: 200 }), (ops) => {
          const q = new OutQueue(coalesce)
          // The model: queued records (seq, bytes), the next seq to push, the release point.
          let model: Array<{ seq: number; data: Uint8Array }> = []
          let next = 1
          let released = 0
          const addr: Addr | null = coalesce ? null : { address: '10.0.0.1', port: 7 }
          for (const o of ops) {
            if (o.kind === 'push') {
              const data = recordBytes(next, o.len)
              // The source is a window of a larger buffer, 8-aligned, as a ring frame is.
              const src = new Uint8Array(data.length + 16)
              src.set(data, 8)
              q.push(next, src, 8, 8 + data.length, addr)
              src.fill(0) // the queue copied: the ring slot may be reused at once
              model.push({ seq: next++, data })
            } else if (o.kind === 'release') {
              released = Math.min(next - 1, Math.max(released, (model[0]?.seq ?? next) - 1 + o.ahead))
              const want = model.filter((r) => r.seq <= released)
              const got: Uint8Array[] = []
              let seqs: number[] = []
              while (q.takeRun(released, (seq) => seqs.push(seq)) > 0) {
                const run = q.run
                expect(run.count).toBe(run.last - run.first + 1)
                if (!coalesce) expect(run.count).toBe(1)
                expect(run.addr).toEqual(addr)
                expect(seqs).toEqual(Array.from({ length: run.count }, (_, i) => run.first + i))
                // A record of 256 bytes or more starts 8-aligned: its copy was not a misaligned one.
                const firstLen = want.find((r) => r.seq === run.first)!.data.length
                if (firstLen >= 256) expect(run.data.byteOffset % 8).toBe(0)
                got.push(run.data.slice())
                seqs = []
              }
              expect(Buffer.compare(Buffer.concat(got), Buffer.concat(want.map((r) => r.data)))).toBe(0)
              model = model.filter((r) => r.seq > released)
            } else {
              expect(q.dropAll()).toBe(model.length)
              model = []
              released = next - 1
            }
            expect(q.length).toBe(model.length)
            expect(q.bytes).toBe(model.reduce((n, r) => n + r.data.length, 0))
          }
        }),
        { numRuns: 60 },
      )
    })
  }

  it('recycles a slab only once no queued record and no run in flight uses it', () => {
    type Step = { kind: 'push'; len: number } | { kind: 'take'; ahead: number } | { kind: 'finish'; pick: number } | { kind: 'drop' }
    const step: fc.Arbitrary<Step> = fc.oneof(
      { arbitrary: fc.integer({ min: 1, max: 9000 }).map((len) => ({ kind: 'push' as const, len })), weight: 6 },
      { arbitrary: fc.integer({ min: 0, max: 8 }).map((ahead) => ({ kind: 'take' as const, ahead })), weight: 3 },
      { arbitrary: fc.nat().map((pick) => ({ kind: 'finish' as const, pick })), weight: 3 },
      { arbitrary: fc.constant({ kind: 'drop' as const }), weight: 1 },
    )
    let reusedSomewhere = false
    fc.assert(
      fc.property(fc.array(step, { minLength: 100, maxLength: 300 }), (steps) => {
        const pool = new SlabPool(4)
        const q = new OutQueue(true, pool)
        const src = new Uint8Array(9016)
        const lens = new Map<number, number>()
        let next = 1
        let released = 0
        // Runs handed to the "transport", not yet done: their bytes must stay as they were.
        const inFlight: Array<{ data: Uint8Array; want: Uint8Array; slab: OutSlab }> = []
        const intact = (f: { data: Uint8Array; want: Uint8Array }) => Buffer.compare(f.data, f.want) === 0
        const finish = (i: number) => {
          const f = inFlight.splice(i, 1)[0]
          expect(intact(f)).toBe(true)
          q.done(f.slab)
        }
        for (const st of steps) {
          if (st.kind === 'push') {
            src.set(recordBytes(next, st.len), 8)
            q.push(next, src, 8, 8 + st.len, null)
            lens.set(next, st.len)
            next++
          } else if (st.kind === 'take') {
            released = Math.min(next - 1, released + st.ahead)
            while (q.takeRun(released) > 0) {
              const r = q.run
              const want = new Uint8Array(Buffer.concat(Array.from({ length: r.count }, (_, k) => recordBytes(r.first + k, lens.get(r.first + k)!))))
              inFlight.push({ data: r.data, want, slab: r.slab })
            }
          } else if (st.kind === 'finish') {
            if (inFlight.length) finish(st.pick % inFlight.length)
          } else {
            q.dropAll()
            released = next - 1
          }
          // A slab recycled too early gets new records over bytes still in flight.
          expect(inFlight.every(intact)).toBe(true)
        }
        while (inFlight.length) finish(0)
        if (pool.reused > 0) reusedSomewhere = true
      }),
      { numRuns: 100 },
    )
    expect(reusedSomewhere).toBe(true) // the schedules did recycle slabs: the checks above bit
  })

  it('a backlog that never empties moves its records to the front, order and bytes kept', () => {
    const q = new OutQueue(false) // one record per run: every take advances by one
    const src = new Uint8Array(64)
    let next = 1
    let want = 1
    const push = (k: number) => {
      for (let i = 0; i < k; i++, next++) {
        src.set(recordBytes(next, 8))
        q.push(next, src, 0, 8, null)
      }
    }
    const take = (upTo: number) => {
      while (q.takeRun(upTo) > 0) {
        expect(q.run.first).toBe(want)
        expect(q.run.data).toEqual(recordBytes(want, 8))
        want++
      }
    }
    push(3000)
    take(2500) // head passes 1024 and half the slots: the rest moves to the front
    expect(q.length).toBe(500)
    push(3000)
    take(5000)
    expect(q.length).toBe(1000)
    expect(q.bytes).toBe(8000)
    take(6000)
    expect(q.length).toBe(0)
    expect(want).toBe(6001)
  })

  it('joins adjacent small records of a stream into one run, and only those', () => {
    const q = new OutQueue(true)
    const src = new Uint8Array(70_000).fill(0x61)
    for (let seq = 1; seq <= 10; seq++) q.push(seq, src, 0, 100, null)
    q.push(11, src, 0, 20_000, null) // larger than a quarter slab: a buffer of its own
    q.push(12, src, 0, 100, null)
    const runs: number[][] = []
    while (q.takeRun(12) > 0) runs.push([q.run.first, q.run.last, q.run.data.length])
    expect(runs).toEqual([
      [1, 10, 1000],
      [11, 11, 20_000],
      [12, 12, 100],
    ])
  })
})

describe('chassis transmit through the out queue', () => {
  const enc = (s: string) => new TextEncoder().encode(s)

  it('a batch of unreplicated records reaches the peer as one read, byte-exact', async () => {
    const duo = new Duo()
    const { sock, peer } = await duo.connect()
    const reads: string[] = []
    peer.on('data', (d: Uint8Array) => reads.push(Buffer.from(d).toString()))
    for (let i = 0; i < 10; i++) sock.write(enc(`r${i};`))
    await duo.run()
    expect(reads).toEqual(['r0;r1;r2;r3;r4;r5;r6;r7;r8;r9;'])
    expect(duo.core.counters.txRecords).toBe(10)
    expect(duo.core.counters.txWrites).toBe(1)
  })

  it('held records leave only on their release, in runs, and then byte-exact', async () => {
    const duo = new Duo()
    const { sock, peer } = await duo.connect()
    await duo.replicate(sock)
    const base = duo.core.counters.txWrites
    for (let i = 0; i < 10; i++) sock.write(enc(`h${i};`))
    await duo.deliver(duo.pc) // the chassis holds them: no ack yet
    expect(peer.receivedBytes).toBe(0)
    expect(duo.core.stats().connections.find((c) => c.handle === sock.handle)!.heldRecords).toBe(10)
    await duo.run() // REPLICATE, then the secondary's release
    expect(Buffer.concat(peer.received).toString()).toBe('h0;h1;h2;h3;h4;h5;h6;h7;h8;h9;')
    expect(duo.core.counters.txWrites - base).toBe(1)
  })
})
