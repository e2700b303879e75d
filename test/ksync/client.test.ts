// KSyncClient against a Fib: each scenario drives one corner of the entry state machine and checks
// the states, the requests on the wire and the Fib; a final test runs them all and checks that
// together they take every legal transition of state.ts.

import { describe, expect, it } from 'vitest'
import { allTransitions } from '../../engine/ksync/state.ts'
import type { KSyncClientOptions, KSyncEvent } from '../../engine/ksync/client.ts'
import type { FibOptions } from '../../engine/ksync/fib.ts'
import type { KSyncKey, KSyncKind } from '../../engine/ksync/wire.ts'
import { rig, type Rig } from './harness.ts'

type Rec = (e: KSyncEvent) => void

interface T extends Rig {
  st(kind: KSyncKind, key: KSyncKey): string | undefined
  pump(): void
  check(): void
}

function setup(record: Rec, options: { fib?: FibOptions; client?: Partial<KSyncClientOptions> } = {}): T {
  const r = rig({ ...options, record }) as T
  r.st = (kind, key) => r.client.entry(kind, key)?.state
  r.check = () => {
    r.client.invariants()
    r.fib.invariants()
  }
  r.pump = () => {
    r.link.pump()
    r.check()
  }
  return r
}

const R1 = '10.0.0.0/8'
const R2 = '10.1.0.0/16'

const scenarios: { name: string; run(rec: Rec): void }[] = [
  {
    name: 'a next hop is added: INIT -> SYNC_WAIT -> IN_SYNC',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('192.0.2.1', { ifname: 'eth0' })
      expect(r.client.entry('nh', '192.0.2.1')).toMatchObject({ state: 'SYNC_WAIT', pending: 'queued', index: 0 })
      expect(r.link.toFib).toHaveLength(0) // nothing leaves before flush()
      expect(r.client.flush()).toBe(1)
      expect(r.link.toFib[0]).toEqual([{ id: 1, epoch: 0, op: 'add', kind: 'nh', index: 0, key: '192.0.2.1', nh: -1, data: { ifname: 'eth0' } }])
      expect(r.client.entry('nh', '192.0.2.1')?.pending).toBe('inflight')
      r.pump()
      expect(r.st('nh', '192.0.2.1')).toBe('IN_SYNC')
      expect(r.fib.lookup('nh', '192.0.2.1')).toMatchObject({ index: 0, data: { ifname: 'eth0' } })
      expect(r.client.quiescent).toBe(true)
    },
  },
  {
    name: 'a route whose next hop is missing waits (TEMP next hop, ADD_DEFER route) and goes once the next hop is acked',
    run(rec) {
      const r = setup(rec)
      r.client.addRoute(R1, 'a', { metric: 1 })
      expect(r.st('nh', 'a')).toBe('TEMP')
      expect(r.st('route', R1)).toBe('ADD_DEFER')
      r.pump()
      expect(r.fib.stats()).toMatchObject({ nextHops: 0, routes: 0, requests: 0 })
      r.client.addNextHop('a')
      expect(r.st('nh', 'a')).toBe('SYNC_WAIT')
      r.client.flush()
      expect(r.link.toFib.flat().map((q) => q.kind)).toEqual(['nh']) // the route waits for the ack
      r.link.deliverToFib()
      r.link.deliverToClient() // the ack wakes the route; onAck flushes it
      expect(r.st('route', R1)).toBe('SYNC_WAIT')
      expect(r.link.toFib.flat()).toMatchObject([{ kind: 'route', op: 'add', key: R1, nh: 0, data: { metric: 1 } }])
      r.pump()
      expect(r.st('route', R1)).toBe('IN_SYNC')
      expect(r.fib.lookup('route', R1)).toMatchObject({ nh: 0, data: { metric: 1 } })
      expect(r.client.stats().depWaits).toBe(1)
    },
  },
  {
    name: 'names nobody uses any more are released: ADD_DEFER -> ADD_DEFER, ADD_DEFER -> FREE_WAIT, TEMP -> FREE_WAIT',
    run(rec) {
      const r = setup(rec)
      r.client.addRoute(R1, 'a')
      r.client.changeRoute(R1, 'b') // still waiting, now for b; nobody names a
      expect(r.st('route', R1)).toBe('ADD_DEFER')
      expect(r.st('nh', 'a')).toBeUndefined()
      expect(r.st('nh', 'b')).toBe('TEMP')
      r.client.deleteRoute(R1)
      expect(r.client.entries()).toEqual([])
      r.pump()
      expect(r.client.stats().requests).toBe(0)
    },
  },
  {
    name: 'a request still queued carries the latest content: IN_SYNC -> SYNC_WAIT -> SYNC_WAIT, SYNC_WAIT -> IN_SYNC',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('a', { v: 1 })
      r.pump()
      r.client.changeNextHop('a', { v: 2 })
      r.client.changeNextHop('a', { v: 3 })
      expect(r.st('nh', 'a')).toBe('SYNC_WAIT')
      const before = r.client.stats().requests
      r.pump()
      expect(r.client.stats().requests - before).toBe(1)
      expect(r.fib.lookup('nh', 'a')?.data).toEqual({ v: 3 })
      r.client.changeNextHop('a', { v: 4 })
      r.client.changeNextHop('a', { v: 3 }) // back to what the Fib holds: nothing to send
      expect(r.st('nh', 'a')).toBe('IN_SYNC')
      r.pump()
      expect(r.client.stats()).toMatchObject({ requests: before + 1, coalesced: 2 })
      r.client.changeNextHop('a', { v: 3 })
      expect(r.client.stats().noopChanges).toBe(1)
    },
  },
  {
    name: 'a change while a request is in flight waits for the ack: SYNC_WAIT -> NEED_SYNC -> SYNC_WAIT | IN_SYNC',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('a', { v: 1 })
      r.client.flush()
      r.client.changeNextHop('a', { v: 2 })
      expect(r.st('nh', 'a')).toBe('NEED_SYNC')
      r.client.changeNextHop('a', { v: 3 })
      expect(r.client.stats()).toMatchObject({ deferred: 1, coalesced: 1 })
      r.link.deliverToFib()
      r.link.deliverToClient()
      expect(r.st('nh', 'a')).toBe('SYNC_WAIT') // re-sent with the latest content only
      expect(r.link.toFib.flat()).toMatchObject([{ op: 'change', data: { v: 3 } }])
      r.pump()
      expect(r.st('nh', 'a')).toBe('IN_SYNC')
      expect(r.client.stats().requests).toBe(2)
      r.client.changeNextHop('a', { v: 4 })
      r.client.flush()
      r.client.changeNextHop('a', { v: 5 })
      r.client.changeNextHop('a', { v: 4 }) // what is in flight already
      expect(r.st('nh', 'a')).toBe('NEED_SYNC')
      r.pump()
      expect(r.st('nh', 'a')).toBe('IN_SYNC')
      expect(r.client.stats().requests).toBe(3)
      expect(r.fib.lookup('nh', 'a')?.data).toEqual({ v: 4 })
    },
  },
  {
    name: 'a delete while the add is in flight: SYNC_WAIT -> DEL_DEFER_SYNC -> DEL_ACK_WAIT -> FREE_WAIT; the index is reused only after the ack',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('a')
      r.client.flush()
      r.client.deleteNextHop('a')
      expect(r.st('nh', 'a')).toBe('DEL_DEFER_SYNC')
      r.link.deliverToFib()
      r.link.deliverToClient()
      expect(r.st('nh', 'a')).toBe('DEL_ACK_WAIT')
      expect(r.link.toFib.flat()).toMatchObject([{ op: 'delete', index: 0, key: 'a' }])
      r.client.addNextHop('b')
      expect(r.client.entry('nh', 'b')?.index).toBe(1) // 0 still belongs to a
      r.pump()
      expect(r.st('nh', 'a')).toBeUndefined()
      r.client.addNextHop('c')
      expect(r.client.entry('nh', 'c')?.index).toBe(0) // reused after the delete ack
      r.pump()
      expect(r.fib.snapshot().nextHops.map((e) => [e.index, e.key])).toEqual([
        [0, 'c'],
        [1, 'b'],
      ])
    },
  },
  {
    name: 'deleted and re-added while in flight: NEED_SYNC -> DEL_DEFER_SYNC -> NEED_SYNC -> IN_SYNC',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('a', { v: 1 })
      r.client.flush()
      r.client.changeNextHop('a', { v: 2 })
      r.client.deleteNextHop('a')
      expect(r.st('nh', 'a')).toBe('DEL_DEFER_SYNC')
      r.client.addNextHop('a', { v: 3 })
      expect(r.st('nh', 'a')).toBe('NEED_SYNC')
      r.pump()
      expect(r.st('nh', 'a')).toBe('IN_SYNC')
      expect(r.fib.lookup('nh', 'a')?.data).toEqual({ v: 3 })
      expect(r.fib.stats()).toMatchObject({ adds: 1, changes: 1, deletes: 0 })
    },
  },
  {
    name: 'an add refused while it was being deleted is simply dropped: DEL_DEFER_SYNC -> FREE_WAIT | TEMP',
    run(rec) {
      const r = setup(rec, { fib: { inject: (q) => (q.op === 'add' && q.kind === 'nh' ? 'ENOBUFS' : null) } })
      r.client.addNextHop('a')
      r.client.flush()
      r.client.deleteNextHop('a')
      r.pump()
      expect(r.st('nh', 'a')).toBeUndefined()
      r.client.addRoute(R1, 'b')
      r.client.addNextHop('b')
      r.client.flush()
      r.client.deleteNextHop('b')
      r.pump()
      expect(r.st('nh', 'b')).toBe('TEMP')
      expect(r.client.stats()).toMatchObject({ retries: 0, errors: 2, errorsByCode: { ENOBUFS: 2 } })
      expect(r.client.quiescent).toBe(true)
    },
  },
  {
    name: 'a transient refusal is retried on the retry timer: NEED_SYNC -> SYNC_WAIT (retry) -> SYNC_WAIT -> IN_SYNC',
    run(rec) {
      let failures = 1
      const r = setup(rec, { fib: { inject: (q) => (q.op === 'add' && failures-- > 0 ? 'ENOBUFS' : null) }, client: { retryDelayMs: 50 } })
      const errors: KSyncEvent[] = []
      r.client = r.restart({ onEvent: (e) => (rec(e), e.type === 'error' && errors.push(e)) })
      r.client.addNextHop('a', { v: 1 })
      r.client.flush()
      r.client.changeNextHop('a', { v: 2 })
      r.pump()
      expect(r.client.entry('nh', 'a')).toMatchObject({ state: 'SYNC_WAIT', pending: 'retry' })
      expect(r.client.quiescent).toBe(false)
      expect(errors).toMatchObject([{ type: 'error', kind: 'nh', key: 'a', op: 'add', code: 'ENOBUFS' }])
      r.client.changeNextHop('a', { v: 3 }) // absorbed: the retry sends the latest
      r.clock.advance(49)
      expect(r.link.toFib).toHaveLength(0)
      r.clock.advance(1)
      expect(r.link.toFib.flat()).toMatchObject([{ op: 'add', data: { v: 3 } }])
      r.pump()
      expect(r.st('nh', 'a')).toBe('IN_SYNC')
      expect(r.client.stats()).toMatchObject({ retries: 1, requests: 2 })
    },
  },
  {
    name: 'a request withdrawn before it was sent: SYNC_WAIT -> FREE_WAIT | TEMP | DEL_ACK_WAIT | DEL_DEFER_REF',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('a')
      r.client.deleteNextHop('a')
      expect(r.st('nh', 'a')).toBeUndefined()
      r.client.addRoute(R1, 'b')
      r.client.addNextHop('b')
      r.client.deleteNextHop('b')
      expect(r.st('nh', 'b')).toBe('TEMP')
      r.pump()
      expect(r.client.stats().requests).toBe(0)
      r.client.addNextHop('c')
      r.pump()
      r.client.changeNextHop('c', { v: 2 })
      r.client.deleteNextHop('c')
      expect(r.st('nh', 'c')).toBe('DEL_ACK_WAIT')
      r.pump()
      expect(r.fib.stats()).toMatchObject({ adds: 1, changes: 0, deletes: 1 })
      r.client.addNextHop('d')
      r.client.addRoute(R2, 'd')
      r.pump()
      r.client.changeNextHop('d', { v: 2 })
      r.client.deleteNextHop('d')
      expect(r.st('nh', 'd')).toBe('DEL_DEFER_REF')
      r.pump()
    },
  },
  {
    name: 'a next hop routes use is deleted only after the last of them: IN_SYNC -> DEL_DEFER_REF -> DEL_ACK_WAIT',
    run(rec) {
      const r = setup(rec)
      const ops: string[] = []
      const fibApply = r.fib.applyBatch.bind(r.fib)
      r.fib.applyBatch = (b) => (b.forEach((q) => ops.push(`${(q as { op: string }).op} ${(q as { key: string }).key}`)), fibApply(b))
      r.client.addNextHop('a')
      r.client.addRoute(R1, 'a')
      r.client.addRoute(R2, 'a')
      r.pump()
      r.client.deleteNextHop('a')
      expect(r.st('nh', 'a')).toBe('DEL_DEFER_REF')
      r.pump()
      expect(r.fib.lookup('nh', 'a')?.refs).toBe(2)
      r.client.deleteRoute(R1)
      r.pump()
      expect(r.fib.lookup('nh', 'a')).toBeDefined()
      r.client.deleteRoute(R2)
      r.pump()
      expect(r.fib.lookup('nh', 'a')).toBeUndefined()
      expect(ops.slice(3)).toEqual([`delete ${R1}`, `delete ${R2}`, 'delete a'])
      expect(r.client.stats().refDeferredDeletes).toBe(1)
      expect(r.fib.stats().errors).toBe(0)
    },
  },
  {
    name: 'a deleted next hop wanted again while routes hold it: DEL_DEFER_REF -> IN_SYNC | SYNC_WAIT',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('a', { v: 1 })
      r.client.addRoute(R1, 'a')
      r.pump()
      r.client.deleteNextHop('a')
      r.client.addNextHop('a', { v: 1 })
      expect(r.st('nh', 'a')).toBe('IN_SYNC')
      r.client.deleteNextHop('a')
      r.client.addNextHop('a', { v: 2 })
      expect(r.st('nh', 'a')).toBe('SYNC_WAIT')
      r.pump()
      expect(r.fib.lookup('nh', 'a')?.data).toEqual({ v: 2 })
      expect(r.fib.stats()).toMatchObject({ deletes: 0, changes: 1 })
    },
  },
  {
    name: 'a delete or change withdrawn while in flight with routes on it: DEL_DEFER_SYNC -> DEL_DEFER_REF',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('a', { v: 1 })
      r.client.addRoute(R1, 'a')
      r.pump()
      r.client.changeNextHop('a', { v: 2 })
      r.client.flush()
      r.client.deleteNextHop('a')
      expect(r.st('nh', 'a')).toBe('DEL_DEFER_SYNC')
      r.pump()
      expect(r.st('nh', 'a')).toBe('DEL_DEFER_REF')
    },
  },
  {
    name: 'a delete still queued is cancelled by a re-add: DEL_ACK_WAIT -> IN_SYNC | SYNC_WAIT | CHANGE_DEFER',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('a', { v: 1 })
      r.pump()
      r.client.deleteNextHop('a')
      expect(r.st('nh', 'a')).toBe('DEL_ACK_WAIT')
      r.client.addNextHop('a', { v: 1 })
      expect(r.st('nh', 'a')).toBe('IN_SYNC')
      r.client.deleteNextHop('a')
      r.client.addNextHop('a', { v: 2 })
      expect(r.st('nh', 'a')).toBe('SYNC_WAIT')
      r.pump()
      r.client.addRoute(R1, 'a')
      r.pump()
      r.client.deleteRoute(R1)
      r.client.addRoute(R1, 'b')
      expect(r.st('route', R1)).toBe('CHANGE_DEFER')
      r.pump()
      expect(r.fib.lookup('route', R1)?.nh).toBe(0) // still forwarding via a
      expect(r.fib.stats()).toMatchObject({ deletes: 0, adds: 2 })
    },
  },
  {
    name: 'a delete acked of a next hop routes wait for: DEL_ACK_WAIT -> TEMP',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('a')
      r.pump()
      r.client.deleteNextHop('a')
      r.client.addRoute(R1, 'a') // a is on its way out: the route waits
      expect(r.st('route', R1)).toBe('ADD_DEFER')
      r.pump()
      expect(r.st('nh', 'a')).toBe('TEMP')
      expect(r.fib.stats().routes).toBe(0)
    },
  },
  {
    name: 'a re-add while the delete is in flight renews at the ack: DEL_ACK_WAIT -> RENEW_WAIT -> SYNC_WAIT | ADD_DEFER | DEL_ACK_WAIT',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('a', { v: 1 })
      r.pump()
      r.client.deleteNextHop('a')
      r.client.flush()
      r.client.addNextHop('a', { v: 2 })
      expect(r.st('nh', 'a')).toBe('RENEW_WAIT')
      r.client.changeNextHop('a', { v: 3 })
      r.pump()
      expect(r.client.entry('nh', 'a')).toMatchObject({ state: 'IN_SYNC', index: 0 })
      expect(r.fib.lookup('nh', 'a')?.data).toEqual({ v: 3 })
      expect(r.fib.stats()).toMatchObject({ adds: 2, deletes: 1, reAdds: 1 })
      r.client.deleteNextHop('a')
      r.client.flush()
      r.client.addNextHop('a')
      r.client.deleteNextHop('a')
      expect(r.st('nh', 'a')).toBe('DEL_ACK_WAIT')
      r.pump()
      expect(r.st('nh', 'a')).toBeUndefined()
      r.client.addNextHop('n')
      r.client.addRoute(R1, 'n')
      r.pump()
      r.client.deleteRoute(R1)
      r.client.flush()
      r.client.addRoute(R1, 'm')
      expect(r.st('route', R1)).toBe('RENEW_WAIT')
      r.pump()
      expect(r.st('route', R1)).toBe('ADD_DEFER')
      expect(r.st('nh', 'm')).toBe('TEMP')
    },
  },
  {
    name: 'a route moved to a next hop not yet in the Fib keeps forwarding on the old one: IN_SYNC -> CHANGE_DEFER -> SYNC_WAIT',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('a')
      r.client.addRoute(R1, 'a')
      r.pump()
      r.client.changeRoute(R1, 'b')
      expect(r.st('route', R1)).toBe('CHANGE_DEFER')
      r.client.changeRoute(R1, 'c')
      expect(r.st('route', R1)).toBe('CHANGE_DEFER')
      expect(r.st('nh', 'b')).toBeUndefined()
      r.pump()
      expect(r.fib.lookup('route', R1)?.nh).toBe(0)
      r.client.addNextHop('c')
      r.pump()
      expect(r.st('route', R1)).toBe('IN_SYNC')
      expect(r.fib.lookup('route', R1)?.nh).toBe(1)
      expect(r.client.entry('nh', 'a')?.refs).toBe(0)
      r.client.changeRoute(R1, 'd')
      r.client.changeRoute(R1, 'c') // back to what the Fib holds
      expect(r.st('route', R1)).toBe('IN_SYNC')
      r.client.changeRoute(R1, 'e')
      r.client.deleteRoute(R1)
      expect(r.st('route', R1)).toBe('DEL_ACK_WAIT')
      r.pump()
      expect(r.fib.stats().routes).toBe(0)
    },
  },
  {
    name: 'a queued request coalesced onto a next hop not in the Fib: SYNC_WAIT -> ADD_DEFER | CHANGE_DEFER',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('a')
      r.pump()
      r.client.addRoute(R1, 'a')
      r.client.changeRoute(R1, 'b')
      expect(r.st('route', R1)).toBe('ADD_DEFER')
      r.client.addRoute(R2, 'a')
      r.pump()
      r.client.changeRoute(R2, 'a', { metric: 2 })
      r.client.changeRoute(R2, 'b')
      expect(r.st('route', R2)).toBe('CHANGE_DEFER')
      r.pump()
      expect(r.fib.stats()).toMatchObject({ routes: 1, adds: 2, changes: 0 })
    },
  },
  {
    name: 'a change in flight resolved onto a next hop not in the Fib: NEED_SYNC -> CHANGE_DEFER',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('a')
      r.client.addRoute(R1, 'a')
      r.pump()
      r.client.changeRoute(R1, 'a', { metric: 2 })
      r.client.flush()
      r.client.changeRoute(R1, 'b')
      expect(r.st('route', R1)).toBe('NEED_SYNC')
      r.pump()
      expect(r.st('route', R1)).toBe('CHANGE_DEFER')
      expect(r.fib.lookup('route', R1)).toMatchObject({ nh: 0, data: { metric: 2 } })
    },
  },
  {
    name: 're-sync learns indexes, sets aside stale ones and waits for a free index: TEMP -> ADD_DEFER, ADD_DEFER -> TEMP, SYNC_WAIT -> ADD_DEFER',
    run(rec) {
      const r = setup(rec, { fib: { maxNextHops: 2 } })
      r.client.addNextHop('x')
      r.client.addNextHop('y')
      r.pump()
      const { epoch } = r.fib.beginAudit()
      const c = r.restart({ epoch, resync: true })
      c.addRoute(R1, 'n')
      c.addNextHop('n')
      expect(c.entry('nh', 'n')).toMatchObject({ state: 'SYNC_WAIT', index: -1 })
      r.pump() // learn miss; index 0 then 1 are held by stale x, y (EEXIST); none left
      expect(r.st('nh', 'n')).toBe('ADD_DEFER')
      expect(c.stats()).toMatchObject({ learns: 1, learnMisses: 1, indexCollisions: 2, indexWaits: 1 })
      c.deleteNextHop('n')
      expect(r.st('nh', 'n')).toBe('TEMP')
      c.addNextHop('n')
      expect(r.st('nh', 'n')).toBe('ADD_DEFER')
      expect(c.quiescent).toBe(true)
      expect(r.fib.endAudit().swept.map((s) => s.key)).toEqual(['x', 'y'])
      c.auditEnded()
      r.pump()
      expect(r.st('nh', 'n')).toBe('IN_SYNC')
      expect(r.st('route', R1)).toBe('IN_SYNC')
      expect(c.resyncing).toBe(false)
    },
  },
  {
    name: 'a learn miss on an add changed meanwhile onto a missing next hop: NEED_SYNC -> ADD_DEFER',
    run(rec) {
      const r = setup(rec)
      const { epoch } = r.fib.beginAudit()
      const c = r.restart({ epoch, resync: true })
      c.addNextHop('a')
      r.pump()
      c.addRoute(R1, 'a')
      c.flush()
      expect(r.link.toFib.flat()).toMatchObject([{ op: 'add', index: -1, key: R1 }])
      c.changeRoute(R1, 'b')
      expect(r.st('route', R1)).toBe('NEED_SYNC')
      r.pump()
      expect(r.st('route', R1)).toBe('ADD_DEFER')
      expect(c.stats().learnMisses).toBe(2)
    },
  },
  {
    name: 'a re-sync cannot delete a next hop stale routes still use: parked until the audit ends, or kept: RENEW_WAIT -> IN_SYNC',
    run(rec) {
      const r = setup(rec)
      r.client.addNextHop('a')
      r.client.addNextHop('b')
      r.client.addRoute(R1, 'a')
      r.client.addRoute(R2, 'b')
      r.pump()
      const { epoch } = r.fib.beginAudit()
      const c = r.restart({ epoch, resync: true })
      c.addNextHop('a')
      c.addNextHop('b')
      r.pump()
      c.deleteNextHop('a') // the new primary knows no route on a, but the Fib still has R1
      r.pump()
      expect(c.entry('nh', 'a')).toMatchObject({ state: 'DEL_ACK_WAIT', pending: 'parked' })
      expect(c.stats()).toMatchObject({ parked: 1, parkedDeletes: 1, retries: 0 })
      expect(c.quiescent).toBe(true)
      c.deleteNextHop('b')
      c.flush()
      c.addNextHop('b')
      expect(r.st('nh', 'b')).toBe('RENEW_WAIT')
      r.pump()
      expect(r.st('nh', 'b')).toBe('IN_SYNC')
      expect(r.fib.endAudit().swept.map((s) => s.key).sort()).toEqual([R1, R2])
      c.auditEnded()
      r.pump()
      expect(r.st('nh', 'a')).toBeUndefined()
      expect(r.fib.snapshot().nextHops.map((e) => e.key)).toEqual(['b'])
    },
  },
]

describe('KSyncClient state machine', () => {
  for (const s of scenarios) it(s.name, () => s.run(() => {}))

  it('the scenarios above take every legal transition, and only legal ones', () => {
    const seen = new Set<string>()
    for (const s of scenarios) s.run((e) => e.type === 'transition' && seen.add(`${e.from} -> ${e.to}`))
    const legal = allTransitions().map(([f, t]) => `${f} -> ${t}`)
    expect(legal.filter((t) => !seen.has(t))).toEqual([])
    expect([...seen].filter((t) => !legal.includes(t))).toEqual([])
  })
})

describe('KSyncClient', () => {
  it('keeps at most maxInFlight requests in flight and sends at most maxBatch per batch', () => {
    const r = setup(() => {}, { client: { maxInFlight: 4, maxBatch: 3 } })
    for (let i = 0; i < 10; i++) r.client.addNextHop(i)
    expect(r.client.flush()).toBe(4)
    expect(r.link.toFib.map((b) => b.length)).toEqual([3, 1])
    expect(r.client.stats()).toMatchObject({ inFlight: 4, queued: 6 })
    r.pump()
    expect(r.client.stats()).toMatchObject({ inFlightHighWater: 4, requests: 10, inFlight: 0, queued: 0 })
    expect(r.fib.stats().nextHops).toBe(10)
  })

  it('tells the app what it did wrong with a code, and changes nothing', () => {
    const r = setup(() => {}, { fib: { maxNextHops: 2, maxRoutes: 1 } })
    r.client.addNextHop('a')
    expect(() => r.client.addNextHop('a')).toThrow(expect.objectContaining({ code: 'EEXIST' }))
    expect(() => r.client.changeNextHop('zz', null)).toThrow(expect.objectContaining({ code: 'ENOENT' }))
    expect(() => r.client.deleteRoute(R1)).toThrow(expect.objectContaining({ code: 'ENOENT' }))
    expect(() => r.client.addRoute('not a prefix', 'a')).toThrow(expect.objectContaining({ code: 'EINVAL' }))
    expect(() => r.client.addNextHop(-1)).toThrow(expect.objectContaining({ code: 'EINVAL' }))
    expect(() => r.client.addNextHop({} as unknown as string)).toThrow(expect.objectContaining({ code: 'EINVAL' }))
    r.client.addRoute(R1, 'b')
    expect(() => r.client.addRoute(R2, 'a')).toThrow(expect.objectContaining({ code: 'ENOBUFS' }))
    expect(() => r.client.changeRoute(R1, 'c')).toThrow(expect.objectContaining({ code: 'ENOBUFS' }))
    r.check()
    r.pump()
    expect(r.fib.stats()).toMatchObject({ nextHops: 1, routes: 0 }) // the route waits for b
  })

  it('is fenced when a newer client owns the Fib: its late requests change nothing', () => {
    const r = setup(() => {})
    const old = r.client
    const events: KSyncEvent[] = []
    old.addNextHop('a')
    r.pump()
    old.deleteNextHop('a')
    old.flush() // in the ring when the primary dies
    const { epoch } = r.fib.beginAudit()
    const fresh = r.restart({ epoch, resync: true, onEvent: (e) => events.push(e) })
    r.link.client = old
    r.link.deliverToFib()
    r.link.deliverToClient()
    expect(old.fenced).toBe(true)
    expect(() => old.addNextHop('b')).toThrow(expect.objectContaining({ code: 'ECLOSED' }))
    expect(r.fib.lookup('nh', 'a')).toBeDefined()
    r.link.client = fresh
    fresh.addNextHop('a')
    r.pump()
    expect(r.fib.endAudit()).toMatchObject({ swept: [], churn: { adds: 0, changes: 0, deletes: 0, swept: 0, reAdds: 0 } })
    expect(fresh.entry('nh', 'a')).toMatchObject({ state: 'IN_SYNC', index: 0 })
    expect(events.filter((e) => e.type === 'fenced')).toEqual([])
  })

  it('counts and drops malformed and unknown replies', () => {
    const r = setup(() => {})
    r.client.addNextHop('a')
    r.client.flush()
    r.client.onAck([{ id: 999, ok: true, index: 0, code: null }, { nonsense: true }, null])
    r.client.onAck('nope' as unknown as unknown[])
    expect(r.client.stats()).toMatchObject({ staleReplies: 1, badReplies: 3 })
    r.pump()
    expect(r.st('nh', 'a')).toBe('IN_SYNC')
  })

  it('a learn reply takes over an index from an add of ours still in flight (index transfer)', () => {
    const r = setup(() => {}, { fib: { maxNextHops: 2 } })
    r.client.addNextHop('d') // index 0
    r.client.addNextHop('e') // index 1: the new primary will not want it
    r.pump()
    const { epoch } = r.fib.beginAudit()
    const c = r.restart({ epoch, resync: true })
    c.addNextHop('d')
    c.addNextHop('c')
    c.flush()
    r.link.deliverToFib()
    const [replyD, replyC] = r.link.toClient.shift()!
    expect(replyD).toMatchObject({ ok: true, index: 0 })
    expect(replyC).toMatchObject({ ok: false, code: 'ENOENT', index: -1 }) // the table is full: no index to suggest
    c.onAck([replyC]) // c is new: it takes index 0, free as far as it knows, and sends add(c, 0)
    expect(c.entry('nh', 'c')?.index).toBe(0)
    c.onAck([replyD]) // but d is at 0 in the Fib: d takes 0 over, c's add will be refused
    expect(c.entry('nh', 'd')?.index).toBe(0)
    expect(c.entry('nh', 'c')?.index).toBe(-1)
    c.invariants()
    r.pump() // c: EEXIST at 0, then EEXIST at 1 (stale e): no index until the audit ends
    expect(c.entry('nh', 'c')?.state).toBe('ADD_DEFER')
    expect(c.stats()).toMatchObject({ indexTransfers: 1, indexCollisions: 2 })
    expect(r.fib.endAudit()).toMatchObject({ swept: [{ key: 'e' }], churn: { adds: 0, changes: 0, deletes: 0, swept: 1 } })
    c.auditEnded()
    r.pump()
    expect(r.fib.snapshot().nextHops.map((e) => [e.index, e.key])).toEqual([
      [0, 'd'],
      [1, 'c'],
    ])
    r.check()
  })

  it('a learn miss takes the free index the Fib suggests', () => {
    const r = setup(() => {})
    r.client.addNextHop('a')
    r.client.addNextHop('b')
    r.pump()
    const { epoch } = r.fib.beginAudit()
    const c = r.restart({ epoch, resync: true })
    c.addNextHop('new')
    c.addNextHop('b')
    r.pump()
    expect(c.entry('nh', 'new')?.index).toBe(2)
    expect(c.entry('nh', 'b')?.index).toBe(1)
    expect(c.stats()).toMatchObject({ learnMisses: 1, indexCollisions: 0 })
    expect(r.fib.endAudit().swept).toEqual([{ kind: 'nh', index: 0, key: 'a' }])
  })

  it('flushes through an injected scheduler, once per burst', () => {
    const tasks: (() => void)[] = []
    const r = setup(() => {}, { client: { schedule: (f) => tasks.push(f) } })
    r.client = r.restart({})
    r.client.addNextHop('a')
    r.client.addNextHop('b')
    expect(tasks).toHaveLength(1)
    tasks.shift()!()
    expect(r.link.toFib.flat()).toHaveLength(2)
    r.pump()
    expect(r.fib.stats().nextHops).toBe(2)
  })
})
