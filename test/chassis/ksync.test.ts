// KSync between real RE workers and the chassis FIB: the primary programs routes over its chassis
// ring (KSYNC / KSYNC_ACK); the FIB outlives every RE; after each failover (kill or switchover) the
// new primary re-syncs by audit, and an unchanged table costs no churn at all: no add, change,
// delete or sweep, and the same indexes. A changed table gets exactly the difference.
import { afterEach, describe, expect, it } from 'vitest'
import { Chassis } from '../../engine/index.ts'
import type { FibAuditEvent } from '../../engine/chassis/fib-link.ts'

const app = new URL('../fixtures/ksync-app.ts', import.meta.url)
let chassis: Chassis | null = null
afterEach(async () => {
  await chassis?.close()
  chassis = null
})

function nextEvent<T>(c: Chassis, name: string, pred: (e: T) => boolean = () => true, timeoutMs = 20_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no '${name}' event in ${timeoutMs} ms`)), timeoutMs)
    const on = (e: T) => {
      if (!pred(e)) return
      clearTimeout(t)
      c.off(name, on)
      resolve(e)
    }
    c.on(name, on)
  })
}

const appEvent = (type: string) => (e: { primary: boolean; event: { type: string } }) => e.event.type === type

describe('KSync over the chassis link', () => {
  it('programs the FIB from the primary and re-syncs it by audit after kills and a switchover, with no churn', async () => {
    const routes = 3000
    chassis = await Chassis.start({ app, appOptions: { routes, nextHops: 4 }, deadIntervalMs: 10_000, re: { deadIntervalMs: 10_000 } })
    const c = chassis!
    while (c.ksync.fib.stats().routes < routes) await new Promise((r) => setTimeout(r, 10))
    const before = c.ksync.fib.snapshot()
    expect(c.ksync.fib.stats()).toMatchObject({ nextHops: 4, routes, errors: 0 })
    for (const how of ['kill', 'kill', 'switchover'] as const) {
      await c.ready(20_000).catch(() => {})
      while (!c.secondary) await new Promise((r) => setTimeout(r, 10))
      const audit = nextEvent<FibAuditEvent>(c, 'fib-audit')
      if (how === 'kill') await c.kill('primary')
      else await c.switchover({ force: true })
      const a = await audit
      expect(a.churn).toEqual({ adds: 0, changes: 0, deletes: 0, swept: 0, reAdds: 0 })
      expect(a.refreshed).toBe(routes + 4)
      const s = c.ksync.fib.stats()
      expect(s).toMatchObject({ routes, nextHops: 4, auditing: false, stale: 0 })
      expect(c.ksync.fib.snapshot()).toEqual({ ...before, epoch: s.epoch })
    }
    const st = await c.stats()
    expect(st.fib.audits.length).toBe(3)
    expect(st.fib.link.notPrimary).toBe(0)
  })

  it('a changed table after takeover: exactly the difference is programmed, the rest refreshed', async () => {
    chassis = await Chassis.start({ app, appOptions: { routes: 500, nextHops: 3, changeOnTakeover: true }, deadIntervalMs: 10_000, re: { deadIntervalMs: 10_000 } })
    const c = chassis
    while (c.ksync.fib.stats().routes < 500) await new Promise((r) => setTimeout(r, 10))
    while (!c.secondary) await new Promise((r) => setTimeout(r, 10))
    const audit = nextEvent<FibAuditEvent>(c, 'fib-audit')
    const ended = nextEvent(c, 'app-event', appEvent('audit-ended'))
    await c.kill('primary')
    const a = await audit
    await ended
    expect(a.churn).toEqual({ adds: 0, changes: 1, deletes: 0, swept: 1, reAdds: 0 })
    expect(c.ksync.fib.stats().routes).toBe(499)
    expect(c.ksync.fib.lookup('route', '10.0.0.0/32')?.nh).toBe(c.ksync.fib.lookup('nh', '192.0.2.2')?.index)
  })
})
