// The chassis bridge (engine/chassis/conn-hooks.ts) on the chassis's real UDP transport, 127.0.0.1:
// a connected UDP socket (opened with a remote) fires bind, connect ... disconnect, unbind with that
// remote as the foreign end; an unconnected one fires bind ... unbind only, however many
// destinations it sends to. Neither enters the TCP connection table nor a replication policy.

import dgram from 'node:dgram'
import { pack, unpack } from 'msgpackr'
import { afterEach, describe, expect, it } from 'vitest'
import { ConnHooks } from '../../engine/chassis/conn-hooks.ts'
import { ChassisCore } from '../../engine/chassis/core.ts'
import { NetTransport } from '../../engine/chassis/net.ts'
import { HookRegistry } from '../../engine/hooks/registry.ts'
import { replicationPolicy } from '../../engine/hooks/replication-policy.ts'
import { HOOK_EVENTS, type HookCall, type HookEvent } from '../../engine/hooks/types.ts'
import { Flag, MsgType } from '../../engine/protocol/header.ts'
import { addrBytes, encodeAddr, type FrameSink } from '../../engine/re/sink.ts'
import type { Addr } from '../../engine/socket/records.ts'

const PRIMARY = 'a'
const HOST = '127.0.0.1'

function replies(): FrameSink & { events: Array<Record<string, unknown>> } {
  const events: Array<Record<string, unknown>> = []
  return {
    events,
    send(type, _flags, _handle, _seq, _ack, _credit, data) {
      if (type === MsgType.EVENT && data) events.push(unpack(data) as Record<string, unknown>)
      return true
    },
    room: () => true,
    whenRoom: (cb) => queueMicrotask(cb),
    flush() {},
  }
}

async function until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 5))
  }
}

async function udpPeer(): Promise<{ sock: dgram.Socket; addr: Addr; got: string[] }> {
  const sock = dgram.createSocket('udp4')
  await new Promise<void>((r) => sock.bind(0, HOST, r))
  const got: string[] = []
  sock.on('message', (m) => got.push(m.toString()))
  return { sock, addr: { address: HOST, port: sock.address().port }, got }
}

function setup() {
  const net = new NetTransport('udp')
  const core = new ChassisCore({ udp: net })
  const primary = replies()
  core.setPrimary(PRIMARY, primary)
  const registry = new HookRegistry()
  core.observer = new ConnHooks(registry, core)
  const calls: Array<[HookEvent, HookCall]> = []
  for (const e of HOOK_EVENTS) registry.on(e, (c: HookCall) => void calls.push([e, c]))
  let reqId = 1
  const command = (cmd: Record<string, unknown>): void => {
    const body = pack(cmd)
    core.onReMessage(PRIMARY, { type: MsgType.CMD, flags: 0, handle: 0, seq: reqId++, ack: 0, credit: 0, length: body.length }, body, 0)
  }
  /** Opens a UDP socket on 127.0.0.1 (connected when `remote` is given); resolves with the chassis's reply. */
  const open = async (remote: Addr | null): Promise<{ handle: number; local: Addr; remote: Addr | null }> => {
    const before = primary.events.length
    command({ op: 'udp', host: HOST, port: 0, remote, transport: 'udp' })
    await until(() => primary.events.length > before)
    const r = primary.events[before]
    expect(r.ok).toBe(true)
    return r as unknown as { handle: number; local: Addr; remote: Addr | null }
  }
  let seq = 0
  /** The primary sends one datagram to `to` on socket `handle` (a TX frame, as an RE writes it). */
  const sendTo = (handle: number, to: Addr, text: string): void => {
    const data = new TextEncoder().encode(text)
    const payload = new Uint8Array(addrBytes(to) + data.length)
    payload.set(data, encodeAddr(payload, 0, to))
    core.onReMessage(PRIMARY, { type: MsgType.TX, flags: Flag.DATAGRAM, handle, seq: ++seq, ack: 0, credit: 0, length: payload.length }, payload, 0)
  }
  return { net, core, primary, registry, calls, command, open, sendTo }
}

describe('ConnHooks on real UDP sockets', () => {
  const cleanup: Array<() => void> = []
  afterEach(() => {
    for (const f of cleanup.splice(0)) f()
  })

  it('a connected UDP socket fires bind, connect(outgoing) ... disconnect, unbind with its remote', async () => {
    const { registry, calls, command, open } = setup()
    const far = await udpPeer()
    cleanup.push(() => far.sock.close())
    const policy = replicationPolicy(registry, { ports: [far.addr.port], replicate: () => expect.fail('a policy replicated a UDP socket') })

    const { handle, local, remote } = await open(far.addr)
    expect(remote).toEqual(far.addr)
    const unconnected = { stackId: PRIMARY, protocol: 'udp', family: 4, laddr: HOST, lport: local.port, faddr: '0.0.0.0', fport: 0 }
    const connected = { ...unconnected, faddr: HOST, fport: far.addr.port }
    expect(calls).toEqual([
      ['bind', { ...unconnected, args: { handle } }],
      ['connect', { ...connected, args: { handle, outgoing: true } }],
    ])
    // The connect reached the policy, which matches TCP only; the walker holds TCP only.
    expect(policy.stats()).toEqual({ seen: 1, matched: 0, replicated: 0, failed: 0 })
    expect(registry.walk(() => {})).toBe(0)
    expect(registry.stats().connections).toMatchObject({ live: 0, added: 0 })

    command({ op: 'close', handle })
    await until(() => calls.length === 4)
    expect(calls.slice(2)).toEqual([
      ['disconnect', { ...connected, args: { handle, reason: 'close' } }],
      ['unbind', { ...unconnected, args: { handle, reason: 'close' } }],
    ])
    expect(registry.stats().connections).toMatchObject({ live: 0, removed: 0, unknownRemovals: 0 })
  })

  it('an unconnected UDP socket fires bind ... unbind only, though it sends to two destinations', async () => {
    const { net, calls, command, open, sendTo } = setup()
    const a = await udpPeer()
    const b = await udpPeer()
    cleanup.push(() => a.sock.close(), () => b.sock.close())

    const { handle, local, remote } = await open(null)
    expect(remote).toBeNull()
    sendTo(handle, a.addr, 'to-a')
    sendTo(handle, b.addr, 'to-b')
    await until(() => a.got.length === 1 && b.got.length === 1)
    expect([a.got, b.got, net.counters.udpSendErrors]).toEqual([['to-a'], ['to-b'], 0])
    command({ op: 'close', handle })
    await until(() => calls.length >= 2)
    const unconnected = { stackId: PRIMARY, protocol: 'udp', family: 4, laddr: HOST, lport: local.port, faddr: '0.0.0.0', fport: 0 }
    expect(calls).toEqual([
      ['bind', { ...unconnected, args: { handle } }],
      ['unbind', { ...unconnected, args: { handle, reason: 'close' } }],
    ])
  })

  it('a udp command with a malformed remote is refused (EINVAL) and fires nothing', async () => {
    const { calls, command, core, primary } = setup()
    command({ op: 'udp', host: HOST, port: 0, remote: { address: HOST, port: 0 }, transport: 'udp' })
    await until(() => primary.events.length === 1)
    expect(primary.events[0]).toMatchObject({ ok: false, code: 'EINVAL' })
    expect(calls).toEqual([])
    expect(core.conns.size).toBe(0)
  })
})
