// KSyncClient.invariants(): checks every entry against its state (which of Entry's plain fields
// are meaningful in which state) and every count against a recount: state counts, pending counts
// (outbox.ts), reference counts, waiters and owned indexes (index-pool.ts). O(entries); the
// client runs it on request (tests run it after each event), never on its own hot path.

import { assert } from '../errors.ts'
import { KSyncPending, present, sameContent, type Entry } from './entry.ts'
import type { IndexPool } from './index-pool.ts'
import type { Outbox } from './outbox.ts'
import { KSyncState } from './state.ts'
import { zeroStates } from './stats.ts'
import { KSyncKind, KSyncOp, type KSyncKey } from './wire.ts'

const S = KSyncState
const P = KSyncPending
const { NH, ROUTE } = KSyncKind

/** The parts of a KSyncClient the check reads. */
export interface ClientParts {
  nhs: ReadonlyMap<KSyncKey, Entry>
  routes: ReadonlyMap<KSyncKey, Entry>
  indexes: IndexPool
  out: Outbox
  stateCounts: Readonly<Record<KSyncState, number>>
  woken: readonly Entry[]
  learning: boolean
}

export function checkInvariants(c: ClientParts): void {
  const refs = new Map<Entry, number>()
  const desire = new Map<Entry, number>()
  const counts = zeroStates()
  let inflight = 0
  let queued = 0
  let retry = 0
  let parked = 0
  const indexed = [0, 0]
  const bump = (m: Map<Entry, number>, e: Entry) => m.set(e, (m.get(e) ?? 0) + 1)
  for (const [kind, map] of [
    [NH, c.nhs],
    [ROUTE, c.routes],
  ] as const) {
    const t = c.indexes.table(kind)
    for (const [key, e] of map) {
      const at = `${kind} ${String(key)} in ${e.state}`
      assert(e.key === key && e.kind === kind, `${at}: filed under its key`)
      assert(e.state !== S.INIT && e.state !== S.FREE_WAIT, `${at}: live state`)
      counts[e.state]++
      if (e.pending === P.INFLIGHT) {
        inflight++
        assert(c.out.holdsInFlight(e) && e.reqOp !== null, `${at}: in the in-flight map`)
      } else if (e.pending === P.QUEUED) {
        queued++
        assert(e.inQueue, `${at}: queued entries sit in the queue`)
      } else if (e.pending === P.RETRY) {
        retry++
        assert(e.inRetry, `${at}: retrying entries sit in the retry list`)
      } else if (e.pending === P.PARKED) {
        parked++
        assert(kind === NH && e.state === S.DEL_ACK_WAIT && c.learning, `${at}: only a next hop delete is parked, during a re-sync`)
      }
      if (e.index >= 0) {
        assert(t.owner(e.index) === e, `${at}: owns index ${e.index}`)
        indexed[kind === NH ? 0 : 1]++
      }
      if (e.fib !== null) {
        assert(e.index >= 0, `${at}: an entry in the Fib has an index`)
        if (e.fib.nh !== null) {
          assert(e.fib.nh.fib !== null, `${at}: its programmed next hop is in the Fib`)
          bump(refs, e.fib.nh)
        }
      }
      if (e.sent !== null) {
        assert(e.pending === P.QUEUED || (e.pending === P.INFLIGHT && e.reqOp !== KSyncOp.DELETE), `${at}: sent content is outstanding`)
        if (e.sent.nh !== null) bump(refs, e.sent.nh)
      } else assert(e.pending === P.NONE || e.pending === P.RETRY || e.reqOp === KSyncOp.DELETE || e.state === S.DEL_ACK_WAIT || e.state === S.RENEW_WAIT, `${at}: outstanding add/change has content`)
      if (e.want !== null && e.want.nh !== null) bump(desire, e.want.nh)
      if (kind === ROUTE) assert(e.refs === 0 && e.desireRefs === 0 && (e.waiters === null || e.waiters.size === 0), `${at}: routes are not referenced`)
      if (e.waitingOn !== null) {
        assert(e.state === S.ADD_DEFER || e.state === S.CHANGE_DEFER, `${at}: only deferred entries wait`)
        assert(e.want?.nh === e.waitingOn && !present(e.waitingOn) && e.waitingOn.waiters?.has(e) === true, `${at}: waits on its missing next hop`)
      }
      switch (e.state) {
        case S.TEMP:
          assert(kind === NH && e.want === null && e.fib === null && e.pending === P.NONE && e.index < 0, `${at}: a TEMP entry is only a name`)
          break
        case S.ADD_DEFER:
          assert(e.want !== null && e.fib === null && e.pending === P.NONE && e.index < 0, `${at}: wanted, not in the Fib, nothing outstanding`)
          assert(e.waitingOn !== null || e.waitingIndex, `${at}: waits for something`)
          break
        case S.SYNC_WAIT:
          assert(e.want !== null && e.pending !== P.NONE, `${at}: wanted, request outstanding`)
          if (e.pending === P.QUEUED) assert(e.sent === e.want, `${at}: a queued request carries the latest content`)
          if (e.pending === P.INFLIGHT) assert(e.sent === e.want, `${at}: changes while in flight go to NEED_SYNC`)
          if (e.index < 0 && e.pending === P.QUEUED) assert(!e.probed && e.fib === null, `${at}: only an add that asks for its index goes without one`)
          break
        case S.IN_SYNC:
          assert(e.want !== null && e.fib !== null && sameContent(e.fib, e.want) && e.pending === P.NONE, `${at}: the Fib holds what is wanted`)
          break
        case S.NEED_SYNC:
          assert(e.want !== null && e.pending === P.INFLIGHT && e.reqOp !== KSyncOp.DELETE, `${at}: add/change in flight`)
          break
        case S.CHANGE_DEFER:
          assert(kind === ROUTE && e.want !== null && e.fib !== null && e.pending === P.NONE && e.waitingOn !== null, `${at}: in the Fib, waiting for its new next hop`)
          break
        case S.DEL_DEFER_SYNC:
          assert(e.want === null && e.pending === P.INFLIGHT && e.reqOp !== KSyncOp.DELETE, `${at}: unwanted, add/change in flight`)
          break
        case S.DEL_DEFER_REF:
          assert(kind === NH && e.want === null && e.fib !== null && e.pending === P.NONE && e.refs > 0, `${at}: unwanted, still referenced`)
          break
        case S.DEL_ACK_WAIT:
          assert(e.want === null && e.fib !== null && e.pending !== P.NONE && e.sent === null, `${at}: delete outstanding`)
          break
        case S.RENEW_WAIT:
          assert(e.want !== null && e.fib !== null && e.pending !== P.NONE && e.sent === null, `${at}: delete outstanding, wanted again`)
          break
      }
    }
  }
  for (const e of c.nhs.values()) {
    assert(e.refs === (refs.get(e) ?? 0), `next hop ${String(e.key)}: refs ${e.refs} = ${refs.get(e) ?? 0}`)
    assert(e.desireRefs === (desire.get(e) ?? 0), `next hop ${String(e.key)}: desireRefs ${e.desireRefs} = ${desire.get(e) ?? 0}`)
    if (e.state === S.TEMP) assert(e.desireRefs > 0, `next hop ${String(e.key)}: TEMP is named by a route`)
    if (e.waiters !== null) for (const w of e.waiters) assert(w.waitingOn === e, `next hop ${String(e.key)}: its waiters wait on it`)
  }
  for (const s of Object.values(S)) assert(counts[s] === c.stateCounts[s], `state count ${s}: ${c.stateCounts[s]} = ${counts[s]}`)
  c.out.invariants(inflight, queued, retry, parked)
  assert(c.woken.length === 0, 'nothing left to re-evaluate between calls')
  c.indexes.invariants(indexed[0], indexed[1])
}
