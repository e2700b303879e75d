// ChassisCore's receive queue (sans-IO, in-memory transport): a peer's bytes, in chunks of any
// size, reach the RE byte-exact and in order through stalls of its link and of its window, over
// random schedules, whether the transport's reads are the chassis's to keep or only lent to it.
// The queue drops delivered chunks by index and compacts in steps (it used to shift() each one,
// quadratic in a backlog of single lines: seconds of host time at a takeover).
import fc from 'fast-check'
import { pack, unpack } from 'msgpackr'
import { expect, it } from 'vitest'
import { ChassisCore } from '../../engine/chassis/core.ts'
import { MemoryNetwork } from '../../engine/chassis/memory.ts'
import { MsgType, type Header } from '../../engine/protocol/header.ts'
import type { FrameSink } from '../../engine/re/sink.ts'

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 0))

// Run again with reads lent (as a TCP socket lends its read buffer): the transport overwrites each
// read's bytes once data() returns, so a chunk the queue kept as a view comes out as 0xee.
it.each([{ lendReads: false }, { lendReads: true }])('delivers every received byte once, in order, through link stalls and a full window (%o)', async ({ lendReads }) => {
  let copied = 0
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.oneof(
          fc.record({ k: fc.constant('write' as const), n: fc.integer({ min: 1, max: 400 }), size: fc.integer({ min: 1, max: 4 }) }),
          fc.record({ k: fc.constant('stall' as const), on: fc.boolean() }),
          fc.record({ k: fc.constant('read' as const), bytes: fc.integer({ min: 0, max: 3000 }) }),
        ),
        { minLength: 1, maxLength: 120, size: 'max' },
      ),
      async (ops) => {
        const net = new MemoryNetwork({ lendReads })
        // A small window and queue: stalls, pauses and refills happen within a short schedule.
        const core = new ChassisCore({ memory: net }, { rxWindowBytes: 700, rxQueueBytes: 900 })
        let stalled = false
        let room: Array<() => void> = []
        const got: number[] = []
        let events: Record<string, unknown>[] = []
        const re: FrameSink = {
          send(type, _f, _h, _s, _a, _c, data) {
            if (stalled) return false
            if (type === MsgType.RX && data) for (const b of data) got.push(b)
            if (type === MsgType.EVENT && data) events.push(unpack(data) as Record<string, unknown>)
            return true
          },
          room: () => !stalled,
          whenRoom: (cb) => void room.push(cb),
          flush() {},
        }
        core.setPrimary('a', re)
        const cmd = pack({ op: 'listen', host: 'mem', port: 179, transport: 'memory', replicate: false })
        core.onReMessage('a', { type: MsgType.CMD, flags: 0, handle: 0, seq: 1, ack: 0, credit: 0, length: cmd.length }, cmd, 0)
        await tick()
        const peer = net.dial(179)
        await tick()
        const conn = events.find((e) => e.ev === 'accepted')!.handle as number
        events = []
        const credit = (n: number): void => {
          const h: Header = { type: MsgType.RX_CREDIT, flags: 0, handle: conn, seq: 0, ack: 0, credit: n, length: 0 }
          core.onReMessage('a', h, new Uint8Array(0), 0)
        }
        const sent: number[] = []
        let next = 0
        let read = 0
        for (const o of ops) {
          if (o.k === 'write') {
            for (let i = 0; i < o.n; i++) {
              const chunk = new Uint8Array(o.size)
              for (let j = 0; j < o.size; j++) chunk[j] = next++ & 255
              sent.push(...chunk)
              peer.write(chunk)
            }
          } else if (o.k === 'stall') {
            stalled = o.on
            if (!o.on) {
              const cbs = room
              room = []
              for (const cb of cbs) cb()
            }
          } else {
            // The application reads: its window opens by what it consumed.
            const n = Math.min(o.bytes, got.length - read)
            read += n
            if (n) credit(n)
          }
          await tick()
        }
        stalled = false
        for (let guard = 0; guard < 1000 && got.length < sent.length; guard++) {
          const cbs = room
          room = []
          for (const cb of cbs) cb()
          const n = got.length - read
          read += n
          if (n) credit(n)
          await tick()
        }
        expect(got.length).toBe(sent.length)
        expect(Buffer.from(got).equals(Buffer.from(sent))).toBe(true)
        copied += core.counters.rxCopied
      },
    ),
    { numRuns: 60 },
  )
  // Lent reads were queued behind a full window or a stalled link, and copied; owned ones never are.
  if (lendReads) expect(copied).toBeGreaterThan(0)
  else expect(copied).toBe(0)
}, 60_000)
