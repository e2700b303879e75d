// The BGP example on the engine: real RE worker threads, the in-memory transport, an EmbeddedPeer
// in the test's thread. The session must stay Established through kills of the primary and
// graceful switchovers, each followed by a fresh secondary that joins the running session (state
// transfer, then snooping). The peer is the judge: exactly one session (one connection, one OPEN,
// Established once), no NOTIFICATION either way, no hold-timer expiry, every route it announced in
// the example's RIB and FIB, every route the example announced received exactly once. The chassis
// FIB, re-synced by audit after every takeover, never churns.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { churnFree, EmbeddedRig, type FailoverReport } from '../../examples/bgp/embedded.ts'
import { generateRoutes } from '../../examples/bgp/peer.ts'
import { formatPrefix } from '../../examples/bgp/codec.ts'

const KILLS = Number(process.env.BGP_KILLS ?? 4)
const SWITCHOVERS = Number(process.env.BGP_SWITCHOVERS ?? 2)
const ANNOUNCE = 2000
const PEER_ROUTES = 10_000 // more than one snapshot chunk

describe(`BGP session through ${KILLS} kills and ${SWITCHOVERS} switchovers (real workers, in-memory transport)`, () => {
  let rig: EmbeddedRig
  const reports: FailoverReport[] = []

  beforeAll(async () => {
    rig = await EmbeddedRig.start({ announce: ANNOUNCE, peerRoutes: PEER_ROUTES, holdTimeS: 9 })
  })
  afterAll(async () => {
    await rig?.close()
  })

  it('comes up, exchanges every route both ways and programs the FIB', async () => {
    await rig.converged()
    const p = rig.peer!
    expect(p.speaker.state).toBe('Established')
    expect(p.receivedRoutes.size).toBe(ANNOUNCE)
    const fib = rig.chassis.ksync.fib
    expect(fib.stats()).toMatchObject({ routes: PEER_ROUTES, nextHops: 1, errors: 0 })
    for (const k of generateRoutes(3, '100.0.0.0/24')) expect(fib.lookup('route', formatPrefix(k))?.nh).toBe(fib.lookup('nh', '172.16.0.2')?.index)
    await rig.redundant()
  })

  it('keeps the session and the routes through every failover, with no FIB churn', async () => {
    // Switchovers spread among the kills.
    const plan = Array<'kill' | 'switchover'>(KILLS + SWITCHOVERS).fill('kill')
    for (let j = 0; j < SWITCHOVERS; j++) plan[Math.floor(((j + 1) * (KILLS + SWITCHOVERS)) / (SWITCHOVERS + 1))] = 'switchover'
    for (const kind of plan) {
      await rig.redundant()
      const r = await rig.failover(kind)
      reports.push(r)
      expect(r.takeover.carried).toBe(true)
      expect(r.takeover.state).toBe('Established')
      expect(r.audit.churn).toEqual({ adds: 0, changes: 0, deletes: 0, swept: 0, reAdds: 0 })
      expect(r.audit.refreshed).toBe(PEER_ROUTES + 1)
      const p = rig.peer!
      expect(p.sessionUp).toBe(true)
      expect(p.establishedSince).toBe(1)
      expect(rig.chassis.ksync.fib.stats().routes).toBe(PEER_ROUTES)
    }
    expect(reports.map((r) => r.kind).sort()).toEqual(plan.slice().sort())
    expect(reports.every((r) => churnFree(r.audit))).toBe(true)
  })

  it('ends with one session, no NOTIFICATION, no hold-timer expiry, and every route intact both ways', async () => {
    await rig.redundant()
    // Time for keepalives both ways after the last takeover (keepalive 3 s of hold 9 s).
    await new Promise((r) => setTimeout(r, 3500))
    const p = rig.peer!
    const ps = p.stats()
    expect(rig.connections).toBe(1)
    expect(p.sessionUp).toBe(true)
    expect(ps.establishedSince).toBe(1)
    expect(ps.opensReceived).toBe(1)
    expect(p.notificationsSeen).toBe(0)
    expect(ps.holdExpired).toBe(0)
    expect(ps.wireErrors).toBe(0)
    expect(p.receivedRoutes.size).toBe(ANNOUNCE)
    expect(ps.prefixesReceived).toBe(ANNOUNCE) // each announced exactly once, across every takeover
    expect(ps.prefixesWithdrawn).toBe(0)
    expect(performance.now() - ps.lastMessageReceivedMs!).toBeLessThan(9000)
    const st = await rig.chassis.stats()
    expect(st.fib).toMatchObject({ routes: PEER_ROUTES, nextHops: 1, auditing: false, errors: 0, reAdds: 0, swept: 0 })
    expect(st.fib.link.notPrimary).toBe(0)
    expect(st.chassis.counters).toMatchObject({ txDuplicates: 0, txGaps: 0 })
    expect(rig.appEvents.filter((e) => e.event.type === 'session-reset')).toEqual([])
    expect(rig.appEvents.filter((e) => e.primary && e.event.type === 'notification')).toEqual([])
    // The example's own view: the Loc-RIB holds every peer route.
    const last = rig.lastPrimaryEvent('takeover')!
    expect(last.routes).toBe(PEER_ROUTES)
    expect(reports.length).toBe(KILLS + SWITCHOVERS)
  })

  it('after the peer ends the session, the example reconnects, and the new session survives failovers too', async () => {
    const old = rig.peer!
    old.speaker.stop('test: peer ends the session') // Cease; the example restarts after connectRetryMs
    await rig.until(() => rig.connections === 2 && rig.peer !== old && rig.peer!.sessionUp, 'a new session on a new connection')
    await rig.converged()
    for (const kind of ['kill', 'switchover'] as const) {
      await rig.redundant()
      const r = await rig.failover(kind)
      expect(r.takeover.carried).toBe(true)
      expect(r.audit.churn).toEqual({ adds: 0, changes: 0, deletes: 0, swept: 0, reAdds: 0 })
    }
    const p = rig.peer!
    expect(p.stats()).toMatchObject({ establishedSince: 1, opensReceived: 1, notificationsSeen: 0, holdExpired: 0, prefixesReceived: ANNOUNCE })
    expect(rig.chassis.ksync.fib.stats().routes).toBe(PEER_ROUTES)
  })
})
