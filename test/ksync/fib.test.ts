// The chassis Fib on its own: requests in, replies out, churn counted, audits swept.

import { describe, expect, it } from 'vitest'
import { pack, unpack } from 'msgpackr'
import { Fib } from '../../engine/ksync/fib.ts'
import { INDEX_LEARN, NO_NEXT_HOP, sameData, type KSyncRequest } from '../../engine/ksync/wire.ts'

let nextId = 1
function req(p: Partial<KSyncRequest> & Pick<KSyncRequest, 'op' | 'kind' | 'index' | 'key'>): KSyncRequest {
  return { id: nextId++, epoch: 0, nh: NO_NEXT_HOP, data: null, ...p }
}
const nh = (op: KSyncRequest['op'], index: number, key: string | number, data: KSyncRequest['data'] = null, epoch = 0) =>
  req({ op, kind: 'nh', index, key, data, epoch })
const route = (op: KSyncRequest['op'], index: number, key: string, nhIndex: number, data: KSyncRequest['data'] = null, epoch = 0) =>
  req({ op, kind: 'route', index, key, nh: op === 'delete' ? NO_NEXT_HOP : nhIndex, data, epoch })

describe('Fib', () => {
  it('adds, changes and deletes next hops and routes, answering each request', () => {
    const fib = new Fib()
    expect(fib.apply(nh('add', 0, '192.0.2.1', { ifname: 'eth0' }))).toMatchObject({ ok: true, index: 0, code: null })
    expect(fib.apply(route('add', 5, '10.0.0.0/8', 0, { metric: 1 }))).toMatchObject({ ok: true, index: 5 })
    expect(fib.apply(route('change', 5, '10.0.0.0/8', 0, { metric: 2 }))).toMatchObject({ ok: true, index: 5 })
    expect(fib.lookup('route', '10.0.0.0/8')).toMatchObject({ index: 5, nh: 0, data: { metric: 2 } })
    expect(fib.lookup('nh', '192.0.2.1')?.refs).toBe(1)
    expect(fib.apply(route('delete', 5, '10.0.0.0/8', 0))).toMatchObject({ ok: true })
    expect(fib.apply(nh('delete', 0, '192.0.2.1'))).toMatchObject({ ok: true })
    expect(fib.stats()).toMatchObject({ adds: 2, changes: 1, deletes: 2, nextHops: 0, routes: 0, errors: 0 })
    fib.invariants()
  })

  it('refuses what would break forwarding or the tables, with a code', () => {
    const fib = new Fib({ maxNextHops: 4 })
    fib.apply(nh('add', 0, 'a'))
    fib.apply(route('add', 0, '10.0.0.0/8', 0))
    expect(fib.apply(nh('delete', 0, 'a'))).toMatchObject({ ok: false, code: 'EINVAL' }) // still referenced
    expect(fib.apply(nh('add', 0, 'b'))).toMatchObject({ ok: false, code: 'EEXIST', index: 0 }) // index taken
    expect(fib.apply(route('add', 1, '10.1.0.0/16', 3))).toMatchObject({ ok: false, code: 'ENOENT' }) // no such next hop
    expect(fib.apply(nh('add', 9, 'c'))).toMatchObject({ ok: false, code: 'EINVAL' }) // out of range
    expect(fib.apply(nh('change', 1, 'a'))).toMatchObject({ ok: false, code: 'ENOENT' }) // wrong index for key
    expect(fib.apply(nh('delete', 2, 'zz'))).toMatchObject({ ok: false, code: 'ENOENT' })
    expect(fib.apply({ id: 7, op: 'explode' })).toMatchObject({ ok: false, code: 'EINVAL', id: 7 })
    expect(fib.apply(null)).toMatchObject({ ok: false, code: 'EINVAL', id: 0 })
    expect(fib.apply(nh('change', INDEX_LEARN, 'a'))).toMatchObject({ ok: false, code: 'EINVAL' })
    expect(fib.stats().errorsByCode).toEqual({ EINVAL: 5, EEXIST: 1, ENOENT: 3 })
    expect(fib.stats()).toMatchObject({ nextHops: 1, routes: 1 })
    fib.invariants()
  })

  it('answers an add of a key it holds with the index it holds (learning), refreshing identical content', () => {
    const fib = new Fib()
    fib.apply(nh('add', 3, 'a', { mtu: 1500 }))
    expect(fib.apply(nh('add', INDEX_LEARN, 'a', { mtu: 1500 }))).toMatchObject({ ok: true, index: 3 })
    expect(fib.apply(nh('add', 7, 'a', { mtu: 1500 }))).toMatchObject({ ok: true, index: 3 })
    expect(fib.apply(nh('add', INDEX_LEARN, 'b'))).toMatchObject({ ok: false, code: 'ENOENT' })
    expect(fib.stats()).toMatchObject({ adds: 1, changes: 0, refreshes: 2, learned: 2 })
    expect(fib.apply(nh('add', INDEX_LEARN, 'a', { mtu: 9000 }))).toMatchObject({ ok: true, index: 3 })
    expect(fib.stats()).toMatchObject({ adds: 1, changes: 1 })
  })

  it('counts a delete followed by a re-add of the same key as churn', () => {
    const fib = new Fib({ maxDeletedKeysTracked: 2 })
    fib.apply(nh('add', 0, 'a'))
    fib.apply(nh('delete', 0, 'a'))
    fib.apply(nh('add', 1, 'a'))
    expect(fib.stats().reAdds).toBe(1)
    // Only the last two deletions are remembered.
    for (const [i, k] of ['x', 'y', 'z'].entries()) {
      fib.apply(nh('add', 10 + i, k))
      fib.apply(nh('delete', 10 + i, k))
    }
    fib.apply(nh('add', 20, 'x'))
    fib.apply(nh('add', 21, 'z'))
    expect(fib.stats().reAdds).toBe(2)
  })

  it('fences requests of an older epoch once an audit begins', () => {
    const fib = new Fib()
    fib.apply(nh('add', 0, 'a'))
    const { epoch } = fib.beginAudit()
    expect(epoch).toBe(1)
    expect(fib.apply(nh('delete', 0, 'a', null, 0))).toMatchObject({ ok: false, code: 'ECLOSED' })
    expect(fib.lookup('nh', 'a')).toBeDefined()
    expect(fib.stats().staleEpochRejects).toBe(1)
  })

  it('audits: refreshed entries stay untouched, the rest is swept, routes before their next hops', () => {
    const fib = new Fib()
    fib.apply(nh('add', 0, 'a'))
    fib.apply(nh('add', 1, 'b'))
    fib.apply(route('add', 0, '10.0.0.0/8', 0, 1))
    fib.apply(route('add', 1, '10.1.0.0/16', 1, 1))
    const before = fib.stats()
    const { epoch } = fib.beginAudit()
    expect(fib.stats().stale).toBe(4)
    expect(fib.apply(nh('add', INDEX_LEARN, 'a', null, epoch))).toMatchObject({ ok: true, index: 0 })
    expect(fib.apply(route('add', INDEX_LEARN, '10.0.0.0/8', 0, 1, epoch))).toMatchObject({ ok: true, index: 0 })
    expect(fib.stats().stale).toBe(2)
    expect(fib.lookup('route', '10.1.0.0/16')?.stale).toBe(true)
    fib.invariants()
    const result = fib.endAudit()
    expect(result.swept).toEqual([
      { kind: 'route', index: 1, key: '10.1.0.0/16' },
      { kind: 'nh', index: 1, key: 'b' },
    ])
    expect(result.refreshed).toBe(2)
    expect(result.churn).toEqual({ adds: 0, changes: 0, deletes: 0, swept: 2, reAdds: 0 })
    expect(fib.stats().adds).toBe(before.adds)
    expect(fib.snapshot()).toEqual({
      epoch: 1,
      nextHops: [{ kind: 'nh', index: 0, key: 'a', nh: -1, data: null, refs: 1, stale: false }],
      routes: [{ kind: 'route', index: 0, key: '10.0.0.0/8', nh: 0, data: 1, refs: 0, stale: false }],
    })
    expect(() => fib.endAudit()).toThrow(/EINVAL/)
    fib.invariants()
  })

  it('restarts an audit begun twice: what the first client refreshed is stale again', () => {
    const fib = new Fib()
    fib.apply(nh('add', 0, 'a'))
    fib.apply(nh('add', 1, 'b'))
    const first = fib.beginAudit()
    fib.apply(nh('add', INDEX_LEARN, 'a', null, first.epoch))
    const second = fib.beginAudit()
    fib.apply(nh('add', INDEX_LEARN, 'b', null, second.epoch))
    expect(fib.endAudit().swept.map((s) => s.key)).toEqual(['a'])
    fib.invariants()
  })

  it('requests and replies survive msgpackr unchanged', () => {
    const fib = new Fib()
    const batch = [nh('add', 0, 4294967295, { mac: new Uint8Array([1, 2, 3]) }), route('add', 1, '2001:db8::/32', 0, [1, 'x', null])]
    const wire = unpack(pack(batch)) as KSyncRequest[]
    expect(wire.map((r) => ({ ...r, data: null }))).toEqual(batch.map((r) => ({ ...r, data: null })))
    expect(wire.every((r, i) => sameData(r.data, batch[i].data))).toBe(true)
    const replies = fib.applyBatch(wire)
    expect(unpack(pack(replies))).toEqual(replies)
    expect(replies.map((r) => r.ok)).toEqual([true, true])
  })
})
