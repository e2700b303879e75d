// ChassisCore's release point (sans-IO, in-memory transport): records the primary sends flagged
// HELD wait in the chassis until a TX_RELEASE covers them, and only then reach the transport, in
// order; an unheld TX releases what is before it; a new primary's RESUME releases its history and
// drops the rest; a close waits for the held records; a release from the wrong RE is refused.

import { pack, unpack } from 'msgpackr'
import { describe, expect, it } from 'vitest'
import { ChassisCore } from '../../engine/chassis/core.ts'
import { MemoryNetwork } from '../../engine/chassis/memory.ts'
import { NetTransport } from '../../engine/chassis/net.ts'
import net from 'node:net'
import { Flag, MsgType, type Header } from '../../engine/protocol/header.ts'
import type { FrameSink } from '../../engine/re/sink.ts'

interface Frame {
  type: number
  handle: number
  credit: number
  body: Record<string, unknown> | null
}

function sink(): FrameSink & { frames: Frame[] } {
  const frames: Frame[] = []
  return {
    frames,
    send(type, _flags, handle, _seq, _ack, credit, data) {
      frames.push({ type, handle, credit, body: type === MsgType.EVENT && data ? (unpack(data) as Record<string, unknown>) : null })
      return true
    },
    room: () => true,
    whenRoom: (cb) => queueMicrotask(cb),
    flush() {},
  }
}

const enc = new TextEncoder()
const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 0))
let reqId = 1

function frame(core: ChassisCore, reId: string, type: number, flags: number, handle: number, seq: number, data: Uint8Array = new Uint8Array(0)): void {
  const h: Header = { type, flags, handle, seq, ack: 0, credit: 0, length: data.length }
  core.onReMessage(reId, h, data, 0)
}

async function setup() {
  const net = new MemoryNetwork()
  const core = new ChassisCore({ memory: net }, { txWindowBytes: 1000 })
  const a = sink()
  const b = sink()
  core.setPrimary('a', a)
  core.setSecondary('b', b)
  const listenCmd = pack({ op: 'listen', host: 'mem', port: 179, transport: 'memory', replicate: false })
  core.onReMessage('a', { type: MsgType.CMD, flags: 0, handle: 0, seq: reqId++, ack: 0, credit: 0, length: listenCmd.length }, listenCmd, 0)
  await tick()
  const peer = net.dial(179)
  await tick()
  const conn = a.frames.find((f) => f.body?.ev === 'accepted')!.body!.handle as number
  const tx = (seq: number, held = true, re = 'a'): void => frame(core, re, MsgType.TX, held ? Flag.HELD : 0, conn, seq, enc.encode(`r${seq};`))
  const release = (seq: number, re: string, flags = 0): void => frame(core, re, MsgType.TX_RELEASE, flags, conn, seq)
  const seen = (): string => peer.text()
  return { core, a, b, peer, conn, tx, release, seen }
}

describe('chassis release point: held records', () => {
  it('keeps held records from the transport until the secondary releases them, then sends them in order', async () => {
    const { core, tx, release, seen } = await setup()
    tx(1)
    tx(2)
    tx(3)
    expect(seen()).toBe('')
    release(2, 'b')
    expect(seen()).toBe('r1;r2;')
    release(1, 'b') // an older ack changes nothing
    expect(seen()).toBe('r1;r2;')
    release(3, 'b')
    expect(seen()).toBe('r1;r2;r3;')
    expect(core.counters.txHeld).toBe(3)
    expect(core.counters.txDuplicates + core.counters.txGaps).toBe(0)
  })

  it('sends at once a held record whose release came first (the ack overtook the TX)', async () => {
    const { tx, release, seen } = await setup()
    release(2, 'b')
    tx(1)
    tx(2)
    expect(seen()).toBe('r1;r2;')
    tx(3)
    expect(seen()).toBe('r1;r2;')
  })

  it('lets every held record go, in order, before an unheld one (replication turned off)', async () => {
    const { tx, seen, release } = await setup()
    tx(1)
    tx(2)
    tx(3, false)
    expect(seen()).toBe('r1;r2;r3;')
    // and the primary's own release (a socket whose replication failed, nothing written after)
    tx(4)
    release(4, 'a')
    expect(seen()).toBe('r1;r2;r3;r4;')
  })

  it('at a takeover, releases the new primary its history and drops the rest, returning their window', async () => {
    const { core, a, b, conn, tx, release, seen } = await setup()
    tx(1)
    tx(2)
    tx(3)
    release(1, 'b')
    const info = core.beginPromotion('b', b)
    // The chassis says it has up to record 3; the new primary's history ends at 2.
    expect(info.sockets[conn].txSeq).toBe(3)
    release(2, 'b', Flag.RESUME)
    expect(seen()).toBe('r1;r2;')
    expect(core.counters.txDroppedAtResume).toBe(1)
    await tick()
    expect(b.frames.filter((f) => f.type === MsgType.TX_CREDIT).reduce((n, f) => n + f.credit, 0)).toBeGreaterThanOrEqual(3) // 'r3;'
    expect(a.frames.filter((f) => f.type === MsgType.TX_CREDIT && f.credit === 3)).toHaveLength(0)
    // The new primary carries on right after its history: record 3 again, its own version.
    frame(core, 'b', MsgType.TX, 0, conn, 3, enc.encode('R3;'))
    expect(seen()).toBe('r1;r2;R3;')
    expect(core.counters.txDuplicates + core.counters.txGaps).toBe(0)
  })

  it('counts a gap when a new primary resumes after records the chassis never got', async () => {
    const { core, b, tx, release } = await setup()
    tx(1)
    core.beginPromotion('b', b)
    release(3, 'b', Flag.RESUME) // records 2 and 3 never reached the chassis
    expect(core.counters.txGaps).toBe(1)
    release(1, 'b', Flag.RESUME) // a history within what the chassis has is no gap
    expect(core.counters.txGaps).toBe(1)
  })

  it('closes a connection only after its held records are released', async () => {
    const { core, peer, conn, tx, release, seen } = await setup()
    let ended = 0
    peer.on('end', () => ended++)
    tx(1)
    const close = pack({ op: 'close', handle: conn })
    core.onReMessage('a', { type: MsgType.CMD, flags: 0, handle: 0, seq: reqId++, ack: 0, credit: 0, length: close.length }, close, 0)
    await tick()
    expect(ended).toBe(0)
    expect(core.conns.has(conn)).toBe(true)
    release(1, 'b')
    await tick()
    expect(seen()).toBe('r1;')
    expect(core.conns.has(conn)).toBe(false)
    expect(ended).toBe(1)
    expect(peer.reset).toBe(false)
  })

  it('refuses a RESUME from the secondary and a release from an RE it does not know', async () => {
    const { core, tx, release, seen } = await setup()
    tx(1)
    const before = core.counters.rejected
    release(1, 'b', Flag.RESUME)
    release(1, 'zz')
    expect(core.counters.rejected).toBe(before + 2)
    expect(seen()).toBe('')
  })

  it('over TCP, recycles out-queue slabs once written, and every byte arrives as sent', async () => {
    const core = new ChassisCore({ tcp: new NetTransport('tcp') })
    const a = sink()
    core.setPrimary('a', a)
    const cmd = pack({ op: 'listen', host: '127.0.0.1', port: 0, transport: 'tcp', replicate: false })
    const req = reqId++
    core.onReMessage('a', { type: MsgType.CMD, flags: 0, handle: 0, seq: req, ack: 0, credit: 0, length: cmd.length }, cmd, 0)
    const until = async (cond: () => boolean) => {
      for (let i = 0; i < 2000 && !cond(); i++) await new Promise((r) => setTimeout(r, 5))
      expect(cond()).toBe(true)
    }
    const listened = () => a.frames.find((f) => f.body?.ok && (f.body.local as { port?: number } | undefined)?.port)
    await until(() => !!listened())
    const port = (listened()!.body!.local as { port: number }).port
    const client = net.connect({ port, host: '127.0.0.1' })
    const got: Buffer[] = []
    let gotBytes = 0
    client.on('data', (d: Buffer) => {
      got.push(d)
      gotBytes += d.length
    })
    await until(() => a.frames.some((f) => f.body?.ev === 'accepted'))
    const conn = a.frames.find((f) => f.body?.ev === 'accepted')!.body!.handle as number
    // 2 MiB in 4 KiB records, a frame of 8 at a time, unheld: 32 slabs' worth through a 2 MiB window.
    const sent: Uint8Array[] = []
    let seq = 0
    for (let batch = 0; batch < 64; batch++) {
      for (let i = 0; i < 8; i++) {
        const rec = new Uint8Array(4096)
        seq++
        for (let k = 0; k < rec.length; k++) rec[k] = (seq * 31 + k * 7) & 0xff
        sent.push(rec)
        frame(core, 'a', MsgType.TX, 0, conn, seq, rec)
      }
      await new Promise((r) => setTimeout(r, 1)) // the socket's writes complete and recycle slabs
    }
    await until(() => gotBytes === 64 * 8 * 4096)
    expect(Buffer.compare(Buffer.concat(got), Buffer.concat(sent))).toBe(0)
    expect(core.stats().slabsReused).toBeGreaterThan(0)
    client.destroy()
    for (const c of core.conns.values()) c.listener?.close()
    for (const c of core.conns.values()) c.transport?.destroy()
  })
})

