// KSyncClient's counters: the shape of stats() and the live counter block the client and its
// outbox (outbox.ts) bump in place. Every defer, coalesce, retry and error branch has one here.

import { KSyncState } from './state.ts'

export interface KSyncClientStats {
  epoch: number
  resyncing: boolean
  fenced: boolean
  nextHops: number
  routes: number
  inFlight: number
  inFlightHighWater: number
  queued: number
  retrying: number
  /** Next hop deletes parked until the audit ends. */
  parked: number
  states: Record<KSyncState, number>
  requests: number
  batches: number
  replies: number
  acks: number
  adds: number
  changes: number
  deletes: number
  /** Adds sent with INDEX_LEARN, and those the Fib did not know. */
  learns: number
  learnMisses: number
  /** Indexes taken from a Fib reply; of which taken over from a pending add of this client. */
  indexAdopted: number
  indexTransfers: number
  /** EEXIST: a new index held by an unknown (stale) Fib entry. */
  indexCollisions: number
  /** App calls that found a request in flight and were deferred to its ack. */
  deferred: number
  /** App calls absorbed into an outstanding or deferred request without a request of their own. */
  coalesced: number
  noopChanges: number
  depWaits: number
  indexWaits: number
  refDeferredDeletes: number
  /** Immediate re-sends after a learn miss or an index clash. */
  resends: number
  /** Re-sends after the retry timer. */
  retries: number
  deleteAlreadyGone: number
  /** Next hop deletes refused during a re-sync because stale routes used them: parked until auditEnded(). */
  parkedDeletes: number
  errors: number
  errorsByCode: Record<string, number>
  staleReplies: number
  badReplies: number
  protocolErrors: number
  repliesAfterFence: number
  freed: number
  /** Queue slots visited by flush(): stays linear in requests. */
  queuePops: number
}

/** The plain counters of KSyncClientStats, all zero; one object per client, bumped in place. */
export function newCounters() {
  return {
    inFlightHighWater: 0,
    requests: 0,
    batches: 0,
    replies: 0,
    acks: 0,
    adds: 0,
    changes: 0,
    deletes: 0,
    learns: 0,
    learnMisses: 0,
    indexAdopted: 0,
    indexTransfers: 0,
    indexCollisions: 0,
    deferred: 0,
    coalesced: 0,
    noopChanges: 0,
    depWaits: 0,
    indexWaits: 0,
    refDeferredDeletes: 0,
    resends: 0,
    retries: 0,
    deleteAlreadyGone: 0,
    parkedDeletes: 0,
    errors: 0,
    staleReplies: 0,
    badReplies: 0,
    protocolErrors: 0,
    repliesAfterFence: 0,
    freed: 0,
    queuePops: 0,
  }
}

export type KSyncCounters = ReturnType<typeof newCounters>

/** A count per state, all zero. */
export function zeroStates(): Record<KSyncState, number> {
  const r = {} as Record<KSyncState, number>
  for (const s of Object.values(KSyncState)) r[s] = 0
  return r
}
