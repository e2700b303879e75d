// The replication policy as a hook user: matching TCP connections are replicated with no call
// from the application, by local port, foreign port or either, per stack, including connections
// already live when it is installed; a failing replicate() is reported, not thrown.

import { describe, expect, it } from 'vitest'
import { HookRegistry } from '../../engine/hooks/registry.ts'
import { replicationPolicy } from '../../engine/hooks/replication-policy.ts'
import type { ConnectCall, ConnectCallInput, HookErrorEvent } from '../../engine/hooks/types.ts'

function conn(lport: number, fport: number, extra: Partial<ConnectCallInput> = {}): ConnectCallInput {
  return { stackId: 0, protocol: 'tcp', family: 4, laddr: '192.0.2.1', lport, faddr: '198.51.100.1', fport, args: { outgoing: fport === 179 }, ...extra }
}

describe('replicationPolicy', () => {
  it('replicates TCP connections to or from port 179 (match: either), nothing else', () => {
    const reg = new HookRegistry()
    const replicated: ConnectCall[] = []
    const policy = replicationPolicy(reg, { ports: [179], replicate: (c) => void replicated.push(c) })
    reg.connect(conn(50001, 179)) // we connected to a peer's BGP port
    reg.connect(conn(179, 50002)) // a peer connected to ours
    reg.connect(conn(50003, 22)) // ssh: no
    reg.connect(conn(50004, 179, { protocol: 'udp' })) // not TCP: no
    expect(replicated.map((c) => [c.lport, c.fport, c.args.outgoing])).toEqual([
      [50001, 179, true],
      [179, 50002, false],
    ])
    expect(policy.stats()).toEqual({ seen: 4, matched: 2, replicated: 2, failed: 0 })
  })

  it("match 'foreign' and 'local' look at one end only", () => {
    const reg = new HookRegistry()
    const foreign: number[] = []
    const local: number[] = []
    replicationPolicy(reg, { ports: [179, 639], match: 'foreign', replicate: (c) => void foreign.push(c.lport) })
    replicationPolicy(reg, { ports: [179], match: 'local', replicate: (c) => void local.push(c.lport) })
    reg.connect(conn(50001, 179))
    reg.connect(conn(50002, 639))
    reg.connect(conn(179, 50003))
    expect(foreign).toEqual([50001, 50002])
    expect(local).toEqual([179])
  })

  it('only the stack it is told, and connections live before it was installed too', () => {
    const reg = new HookRegistry()
    reg.connect(conn(50001, 179, { stackId: 'primary' }))
    reg.connect(conn(50002, 179, { stackId: 'secondary' }))
    const replicated: string[] = []
    const policy = replicationPolicy(reg, { ports: [179], stackId: 'primary', replicate: (c) => void replicated.push(`${c.stackId}:${c.lport}`) })
    reg.connect(conn(50003, 179, { stackId: 'primary' }))
    reg.connect(conn(50004, 179, { stackId: 'secondary' }))
    expect(replicated).toEqual(['primary:50001', 'primary:50003'])
    policy.dispose()
    reg.connect(conn(50005, 179, { stackId: 'primary' }))
    expect(replicated).toHaveLength(2)
    const late: number[] = []
    replicationPolicy(reg, { ports: [179], existing: false, replicate: (c) => void late.push(c.lport) })
    expect(late).toEqual([])
  })

  it('a replicate() that throws or rejects is reported through onHookError; the connection stands', async () => {
    const errors: HookErrorEvent[] = []
    const reg = new HookRegistry({ onHookError: (e) => errors.push(e) })
    let n = 0
    const policy = replicationPolicy(reg, {
      ports: [179],
      replicate: async () => {
        if (++n === 1) throw new Error('no secondary yet')
      },
    })
    reg.connect(conn(50001, 179))
    reg.connect(conn(50002, 179))
    const sync = replicationPolicy(reg, {
      ports: [179],
      existing: false,
      replicate: () => {
        throw new Error('sync failure')
      },
    })
    expect(() => reg.connect(conn(50003, 179))).not.toThrow()
    await new Promise((r) => setTimeout(r, 0))
    expect(errors.map((e) => [e.hook, (e.error as Error).message])).toEqual([
      ['replicationPolicy', 'sync failure'],
      ['replicationPolicy', 'no secondary yet'],
    ])
    expect(policy.stats()).toEqual({ seen: 3, matched: 3, replicated: 2, failed: 1 })
    expect(sync.stats()).toEqual({ seen: 1, matched: 1, replicated: 0, failed: 1 })
    expect(reg.connections.size).toBe(3)
  })

  it('refuses a policy it could not apply', () => {
    const reg = new HookRegistry()
    const replicate = () => {}
    expect(() => replicationPolicy(reg, { ports: [], replicate })).toThrow(expect.objectContaining({ code: 'EINVAL' }))
    expect(() => replicationPolicy(reg, { ports: [70000], replicate })).toThrow(/ports/)
    expect(() => replicationPolicy(reg, { ports: [179], match: 'both' as 'either', replicate })).toThrow(/match/)
    expect(() => replicationPolicy(reg, { ports: [179] } as unknown as Parameters<typeof replicationPolicy>[1])).toThrow(/replicate/)
  })
})
