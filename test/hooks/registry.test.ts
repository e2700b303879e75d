// HookRegistry: each event reaches its hooks with the right record, a failing hook is reported
// and never breaks the socket operation, and the live TCP connection table walks correctly.

import { describe, expect, it } from 'vitest'
import { HookRegistry } from '../../engine/hooks/registry.ts'
import type { ConnectCall, HookCall, HookErrorEvent, HookEvent } from '../../engine/hooks/types.ts'

const peer = (n: number, extra: Partial<ConnectCall> = {}) => ({
  stackId: 're0' as const,
  protocol: 'tcp' as const,
  family: 4 as const,
  laddr: '192.0.2.1',
  lport: 40000 + n,
  faddr: `198.51.100.${n}`,
  fport: 179,
  args: { outgoing: true },
  ...extra,
})

describe('HookRegistry', () => {
  it('fires every event with stack, protocol, family, both ends and args', () => {
    const reg = new HookRegistry()
    const seen: [HookEvent, HookCall][] = []
    for (const e of ['bind', 'unbind', 'listen', 'unlisten', 'connect', 'disconnect'] as const) reg.on(e, (c: HookCall) => void seen.push([e, c]))
    reg.bind({ stackId: 1, protocol: 'udp', family: 6, laddr: '2001:db8::1', lport: 3784, args: { reuse: true } })
    reg.listen({ stackId: 1, protocol: 'tcp', family: 4, laddr: '0.0.0.0', lport: 179 })
    reg.connect({ stackId: 1, protocol: 'tcp', family: 4, laddr: '192.0.2.1', lport: 179, faddr: '198.51.100.7', fport: 51234, args: { outgoing: false, vrf: 'red' } })
    reg.connect({ stackId: 1, protocol: 'tcp', family: 6, laddr: '2001:db8::1', lport: 50000, faddr: '2001:db8::2', fport: 179, args: { outgoing: true } })
    reg.disconnect({ stackId: 1, protocol: 'tcp', family: 4, laddr: '192.0.2.1', lport: 179, faddr: '198.51.100.7', fport: 51234 })
    reg.unlisten({ stackId: 1, protocol: 'tcp', family: 4, laddr: '0.0.0.0', lport: 179 })
    reg.unbind({ stackId: 1, protocol: 'udp', family: 6, laddr: '2001:db8::1', lport: 3784 })
    expect(seen).toEqual([
      ['bind', { stackId: 1, protocol: 'udp', family: 6, laddr: '2001:db8::1', lport: 3784, faddr: '::', fport: 0, args: { reuse: true } }],
      ['listen', { stackId: 1, protocol: 'tcp', family: 4, laddr: '0.0.0.0', lport: 179, faddr: '0.0.0.0', fport: 0, args: {} }],
      ['connect', { stackId: 1, protocol: 'tcp', family: 4, laddr: '192.0.2.1', lport: 179, faddr: '198.51.100.7', fport: 51234, args: { outgoing: false, vrf: 'red' } }],
      ['connect', { stackId: 1, protocol: 'tcp', family: 6, laddr: '2001:db8::1', lport: 50000, faddr: '2001:db8::2', fport: 179, args: { outgoing: true } }],
      ['disconnect', { stackId: 1, protocol: 'tcp', family: 4, laddr: '192.0.2.1', lport: 179, faddr: '198.51.100.7', fport: 51234, args: {} }],
      ['unlisten', { stackId: 1, protocol: 'tcp', family: 4, laddr: '0.0.0.0', lport: 179, faddr: '0.0.0.0', fport: 0, args: {} }],
      ['unbind', { stackId: 1, protocol: 'udp', family: 6, laddr: '2001:db8::1', lport: 3784, faddr: '::', fport: 0, args: {} }],
    ])
    expect(Object.isFrozen(seen[0][1])).toBe(true)
    expect(reg.stats().calls).toEqual({ bind: 1, unbind: 1, listen: 1, unlisten: 1, connect: 2, disconnect: 1 })
  })

  it('runs hooks in registration order; unregistering works, also from inside a firing', () => {
    const reg = new HookRegistry()
    const order: string[] = []
    const second = () => void order.push('second')
    const offFirst = reg.on('listen', function first() {
      order.push('first')
      offFirst() // takes effect from the next firing
    })
    reg.on('listen', second)
    const call = { stackId: 0, protocol: 'tcp' as const, family: 4 as const, laddr: '0.0.0.0', lport: 179 }
    reg.listen(call)
    reg.listen(call)
    expect(order).toEqual(['first', 'second', 'second'])
    expect(reg.off('listen', second)).toBe(true)
    expect(reg.off('listen', second)).toBe(false)
    reg.listen(call)
    expect(order).toHaveLength(3)
    expect(reg.stats().hooks.listen).toBe(0)
  })

  it('a hook that throws or rejects is caught, counted and reported; the others still run and the caller never sees it', async () => {
    const errors: HookErrorEvent[] = []
    const reg = new HookRegistry({ onHookError: (e) => errors.push(e) })
    reg.onHookError(() => {
      throw new Error('a broken reporter is swallowed too')
    })
    const ran: string[] = []
    reg.on('connect', function clusterHook() {
      throw new Error('boom')
    })
    reg.on('connect', async () => {
      throw new Error('async boom')
    }, { name: 'asyncHook' })
    reg.on('connect', () => void ran.push('third'))
    expect(() => reg.connect(peer(1))).not.toThrow()
    expect(ran).toEqual(['third'])
    expect(reg.connections.size).toBe(1) // the socket operation went on
    await new Promise((r) => setTimeout(r, 0))
    expect(errors.map((e) => [e.event, e.hook, (e.error as Error).message])).toEqual([
      ['connect', 'clusterHook', 'boom'],
      ['connect', 'asyncHook', 'async boom'],
    ])
    expect(errors[0].call).toMatchObject({ lport: 40001, fport: 179 })
    expect(reg.stats()).toMatchObject({ hookErrors: 2, reporterErrors: 2, hookErrorsByEvent: { connect: 2 } })
  })

  it('refuses malformed calls from the socket layer and bounds hooks and nesting', () => {
    const reg = new HookRegistry({ maxHooksPerEvent: 2 })
    expect(() => reg.bind({ stackId: 0, protocol: 'sctp' as 'tcp', family: 4, laddr: '', lport: 1 })).toThrow(expect.objectContaining({ code: 'EINVAL' }))
    expect(() => reg.bind({ stackId: 0, protocol: 'tcp', family: 5 as 4, laddr: '', lport: 1 })).toThrow(/family/)
    expect(() => reg.bind({ stackId: 0, protocol: 'tcp', family: 4, laddr: '', lport: 70000 })).toThrow(/lport/)
    expect(() => reg.connect({ ...peer(1), args: {} as { outgoing: boolean } })).toThrow(/outgoing/)
    expect(() => reg.on('nope' as 'bind', () => {})).toThrow(expect.objectContaining({ code: 'EINVAL' }))
    expect(() => reg.on('bind', () => {}, { replay: true })).toThrow(/replay/)
    // A hook that fires hooks recursively is cut off at MAX_HOOK_DEPTH.
    let depth = 0
    reg.on('bind', (c) => {
      depth++
      reg.bind(c)
    })
    reg.on('bind', () => {})
    expect(() => reg.on('bind', () => {})).toThrow(expect.objectContaining({ code: 'ENOBUFS' }))
    reg.bind({ stackId: 0, protocol: 'tcp', family: 4, laddr: '0.0.0.0', lport: 1 })
    expect(depth).toBe(8)
    expect(reg.stats().depthDrops).toBe(2)
  })
})

describe('live TCP connection walker', () => {
  it('visits live TCP connections in connect order, per stack, and stops when the callback returns false', () => {
    const reg = new HookRegistry()
    for (let n = 1; n <= 5; n++) reg.connect(peer(n))
    reg.connect(peer(6, { stackId: 're1' }))
    reg.connect(peer(7, { protocol: 'udp' })) // not a TCP connection: not walked
    reg.disconnect(peer(2))
    const all: number[] = []
    expect(reg.walk((c) => void all.push(c.lport))).toBe(5)
    expect(all).toEqual([40001, 40003, 40004, 40005, 40006])
    const re1: string[] = []
    reg.walk((c) => void re1.push(c.faddr), { stackId: 're1' })
    expect(re1).toEqual(['198.51.100.6'])
    const early: number[] = []
    expect(
      reg.walk((c) => {
        early.push(c.lport)
        return early.length < 2
      }),
    ).toBe(2)
    expect(early).toEqual([40001, 40003])
    expect(reg.connections.stats()).toMatchObject({ live: 5, added: 6, removed: 1 })
  })

  it('is bounded, and tolerates duplicates, unknown disconnects and changes during a walk', () => {
    const reg = new HookRegistry({ maxConnections: 3 })
    for (let n = 1; n <= 4; n++) reg.connect(peer(n))
    reg.connect(peer(1)) // again: replaces, moves to the end
    reg.disconnect(peer(9))
    expect(reg.connections.stats()).toMatchObject({ live: 3, dropped: 1, duplicates: 1, unknownRemovals: 1 })
    const seen: number[] = []
    reg.walk((c) => {
      seen.push(c.lport)
      if (c.lport === 40002) reg.disconnect(peer(3))
    })
    expect(seen).toEqual([40002, 40001])
  })

  it('a disconnect hook no longer sees the connection in the table; a connect hook already does', () => {
    const reg = new HookRegistry()
    const live: number[] = []
    reg.on('connect', () => void live.push(reg.connections.size))
    reg.on('disconnect', () => void live.push(reg.connections.size))
    reg.connect(peer(1))
    reg.disconnect(peer(1))
    expect(live).toEqual([1, 0])
  })
})
