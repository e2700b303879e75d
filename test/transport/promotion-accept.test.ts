// ChassisCore (sans-IO, in-memory transport, frames captured) at the edges of a takeover, where the
// transport's connections meet a primary that is gone:
// - a connection accepted while the primary was dying (announced to it, never handled) and one
//   accepted while the secondary was being promoted are announced to the new primary as newly
//   accepted, not reset or left unannounced;
// - a socket the new primary adopted whose connection was closed just before the old primary died
//   is reported to it as closed (it would otherwise be kept, re-replicated and never functional).

import { pack, unpack } from 'msgpackr'
import { describe, expect, it } from 'vitest'
import { ChassisCore } from '../../engine/chassis/core.ts'
import { MemoryNetwork } from '../../engine/chassis/memory.ts'
import { MsgType, type Header } from '../../engine/protocol/header.ts'
import type { FrameSink } from '../../engine/re/sink.ts'

interface Frame {
  type: number
  flags: number
  handle: number
  ack: number
  body: Record<string, unknown> | null
}

function sink(): FrameSink & { frames: Frame[]; events: () => Record<string, unknown>[] } {
  const frames: Frame[] = []
  return {
    frames,
    send(type, flags, handle, _seq, ack, _credit, data) {
      frames.push({ type, flags, handle, ack, body: type === MsgType.EVENT && data ? (unpack(data) as Record<string, unknown>) : null })
      return true
    },
    room: () => true,
    whenRoom: (cb) => queueMicrotask(cb),
    flush() {},
    events: () => frames.filter((f) => f.type === MsgType.EVENT).map((f) => f.body!),
  }
}

let reqId = 1
function cmd(core: ChassisCore, reId: string, c: Record<string, unknown>): void {
  const bytes = pack(c)
  const h: Header = { type: MsgType.CMD, flags: 0, handle: 0, seq: reqId++, ack: 0, credit: 0, length: bytes.length }
  core.onReMessage(reId, h, bytes, 0)
}

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 0))

async function setup() {
  const net = new MemoryNetwork()
  const core = new ChassisCore({ memory: net })
  const a = sink()
  const b = sink()
  core.setPrimary('a', a)
  core.setSecondary('b', b)
  cmd(core, 'a', { op: 'listen', host: 'mem', port: 179, transport: 'memory', replicate: true })
  await tick()
  const listen = a.events().find((e) => e.ok)!.handle as number
  return { net, core, a, b, listen }
}

describe('ChassisCore at a takeover: accepted and closed connections', () => {
  it('announces to the new primary what was accepted while the old one died or the new one was promoted', async () => {
    const { net, core, a, b, listen } = await setup()
    // Accepted while the primary dies: announced to it (held for its handshake), never handled.
    const early = net.dial(179)
    early.write(new TextEncoder().encode('early'))
    const earlyEv = a.events().find((e) => e.ev === 'accepted')!
    expect(earlyEv).toMatchObject({ listen, held: true })
    const info = core.beginPromotion('b', b)
    expect(info.sockets[listen]).toBeDefined()
    // Accepted while the secondary is being promoted: not announced to it yet.
    const during = net.dial(179)
    during.write(new TextEncoder().encode('during'))
    expect(b.events().filter((e) => e.ev === 'accepted')).toEqual([])
    // The new primary adopted only the listener (the early connection's handshake never began).
    core.promoted('b', b, [listen], [earlyEv.handle as number])
    await tick()
    const announced = b.events().filter((e) => e.ev === 'accepted')
    expect(announced.map((e) => e.handle as number).sort()).toEqual([earlyEv.handle as number, (earlyEv.handle as number) + 1])
    expect(announced.every((e) => e.listen === listen && e.held === false)).toBe(true)
    expect(early.reset || during.reset).toBe(false)
    // Their data reaches the new primary, after the announcement.
    const rx = b.frames.filter((f) => f.type === MsgType.RX).map((f) => f.handle)
    expect(rx.sort()).toEqual(announced.map((e) => e.handle).sort())
    for (const e of announced) {
      const at = b.frames.findIndex((f) => f.type === MsgType.EVENT && f.body?.ev === 'accepted' && f.body.handle === e.handle)
      const firstRx = b.frames.findIndex((f) => f.type === MsgType.RX && f.handle === e.handle)
      expect(firstRx).toBeGreaterThan(at)
    }
  })

  it('tells the new primary that a socket it adopted has no connection any more', async () => {
    const { net, core, a, b, listen } = await setup()
    const peer = net.dial(179)
    const conn = a.events().find((e) => e.ev === 'accepted')!.handle as number
    // The old primary closed it just before it died (its last command, drained at the takeover).
    cmd(core, 'a', { op: 'close', handle: conn })
    core.beginPromotion('b', b)
    core.promoted('b', b, [listen, conn], [])
    await tick()
    expect(b.events().filter((e) => e.ev === 'closed' && e.handle === conn && e.code === 'ECLOSED')).toHaveLength(1)
    expect(peer.reset).toBe(false) // it was closed (FIN), as the old primary asked
  })
})
