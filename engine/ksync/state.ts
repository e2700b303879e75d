// The KSync entry state machine, after the seed's KSyncEntry: its states and every legal
// transition. KSyncClient owns the one function that changes an entry's state (transition()),
// which asserts the state it leaves and that the move is listed here.
//
// States (app = what the application wants; fib = what the Fib acked; "outstanding" = a request
// queued for an in-flight slot, in flight, or waiting for its retry timer):
//
//   INIT            just created; left at once
//   TEMP            a next hop that routes want but the app has not added: not in the Fib
//   ADD_DEFER       app wants it, not in the Fib; waits for a dependency (a route's next hop is
//                   not in the Fib) or for a free index
//   SYNC_WAIT       app wants it; an add or change is outstanding
//   IN_SYNC         the Fib holds what the app wants
//   NEED_SYNC       app changed it while an add/change was in flight; re-evaluated at the ack
//   CHANGE_DEFER    a route in the Fib whose new content waits for its new next hop; the Fib
//                   keeps forwarding on the old content meanwhile
//   DEL_DEFER_SYNC  app deleted it while an add/change was in flight; re-evaluated at the ack
//   DEL_DEFER_REF   a next hop the app deleted that routes in the Fib still reference; its
//                   delete is sent when the last of them lets go
//   DEL_ACK_WAIT    app does not want it; a delete is outstanding (for a next hop during a
//                   re-sync, possibly parked until the audit ends: stale routes still use it)
//   RENEW_WAIT      app wants it again while its delete is in flight; re-added at the ack (or
//                   kept as it is, if the Fib refused the delete)
//   FREE_WAIT       released: out of the Fib, unwanted, unreferenced; dropped from the tables and
//                   its index returned (a stale queue slot may still point at it and is skipped)
//
// Transitions (self-loops: re-evaluated, same state: a change while waiting, a re-send):
//   INIT           -> TEMP | ADD_DEFER | SYNC_WAIT
//   TEMP           -> ADD_DEFER | SYNC_WAIT | FREE_WAIT
//   ADD_DEFER      -> ADD_DEFER | SYNC_WAIT | TEMP | FREE_WAIT
//   SYNC_WAIT      -> SYNC_WAIT | IN_SYNC | NEED_SYNC | DEL_DEFER_SYNC | ADD_DEFER | CHANGE_DEFER
//                     | TEMP | FREE_WAIT | DEL_DEFER_REF | DEL_ACK_WAIT
//   IN_SYNC        -> SYNC_WAIT | CHANGE_DEFER | DEL_DEFER_REF | DEL_ACK_WAIT
//   NEED_SYNC      -> IN_SYNC | SYNC_WAIT | CHANGE_DEFER | ADD_DEFER | DEL_DEFER_SYNC
//   CHANGE_DEFER   -> CHANGE_DEFER | SYNC_WAIT | IN_SYNC | DEL_ACK_WAIT
//   DEL_DEFER_SYNC -> NEED_SYNC | DEL_DEFER_REF | DEL_ACK_WAIT | TEMP | FREE_WAIT
//   DEL_DEFER_REF  -> DEL_ACK_WAIT | IN_SYNC | SYNC_WAIT
//   DEL_ACK_WAIT   -> RENEW_WAIT | IN_SYNC | SYNC_WAIT | CHANGE_DEFER | TEMP | FREE_WAIT
//   RENEW_WAIT     -> SYNC_WAIT | IN_SYNC | ADD_DEFER | DEL_ACK_WAIT
//   FREE_WAIT      (final)

export const KSyncState = {
  INIT: 'INIT',
  TEMP: 'TEMP',
  ADD_DEFER: 'ADD_DEFER',
  SYNC_WAIT: 'SYNC_WAIT',
  IN_SYNC: 'IN_SYNC',
  NEED_SYNC: 'NEED_SYNC',
  CHANGE_DEFER: 'CHANGE_DEFER',
  DEL_DEFER_SYNC: 'DEL_DEFER_SYNC',
  DEL_DEFER_REF: 'DEL_DEFER_REF',
  DEL_ACK_WAIT: 'DEL_ACK_WAIT',
  RENEW_WAIT: 'RENEW_WAIT',
  FREE_WAIT: 'FREE_WAIT',
} as const
export type KSyncState = (typeof KSyncState)[keyof typeof KSyncState]

const S = KSyncState

export const KSYNC_TRANSITIONS: { readonly [F in KSyncState]: readonly KSyncState[] } = {
  INIT: [S.TEMP, S.ADD_DEFER, S.SYNC_WAIT],
  TEMP: [S.ADD_DEFER, S.SYNC_WAIT, S.FREE_WAIT],
  ADD_DEFER: [S.ADD_DEFER, S.SYNC_WAIT, S.TEMP, S.FREE_WAIT],
  SYNC_WAIT: [
    S.SYNC_WAIT,
    S.IN_SYNC,
    S.NEED_SYNC,
    S.DEL_DEFER_SYNC,
    S.ADD_DEFER,
    S.CHANGE_DEFER,
    S.TEMP,
    S.FREE_WAIT,
    S.DEL_DEFER_REF,
    S.DEL_ACK_WAIT,
  ],
  IN_SYNC: [S.SYNC_WAIT, S.CHANGE_DEFER, S.DEL_DEFER_REF, S.DEL_ACK_WAIT],
  NEED_SYNC: [S.IN_SYNC, S.SYNC_WAIT, S.CHANGE_DEFER, S.ADD_DEFER, S.DEL_DEFER_SYNC],
  CHANGE_DEFER: [S.CHANGE_DEFER, S.SYNC_WAIT, S.IN_SYNC, S.DEL_ACK_WAIT],
  DEL_DEFER_SYNC: [S.NEED_SYNC, S.DEL_DEFER_REF, S.DEL_ACK_WAIT, S.TEMP, S.FREE_WAIT],
  DEL_DEFER_REF: [S.DEL_ACK_WAIT, S.IN_SYNC, S.SYNC_WAIT],
  DEL_ACK_WAIT: [S.RENEW_WAIT, S.IN_SYNC, S.SYNC_WAIT, S.CHANGE_DEFER, S.TEMP, S.FREE_WAIT],
  RENEW_WAIT: [S.SYNC_WAIT, S.IN_SYNC, S.ADD_DEFER, S.DEL_ACK_WAIT],
  FREE_WAIT: [],
}

const legal = new Map<KSyncState, ReadonlySet<KSyncState>>()
for (const [from, tos] of Object.entries(KSYNC_TRANSITIONS)) legal.set(from as KSyncState, new Set(tos))

export function isLegalTransition(from: KSyncState, to: KSyncState): boolean {
  return legal.get(from)?.has(to) === true
}

/** Every legal transition as [from, to] pairs (tests check each is exercised). */
export function allTransitions(): [KSyncState, KSyncState][] {
  const out: [KSyncState, KSyncState][] = []
  for (const [from, tos] of Object.entries(KSYNC_TRANSITIONS)) for (const to of tos) out.push([from as KSyncState, to])
  return out
}

