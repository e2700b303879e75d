// The RoutingEngine's figures: its counter block (a counter for every drop, retry and error branch,
// incremented in place by the RE and its secondary side) and the stats() snapshot assembled from
// the RE's sockets, snoop pairs and counters. Reading only: nothing here changes engine state.

import type { Socket } from '../socket/socket.ts'
import type { SrPrimary } from '../sdrl/primary.ts'
import type { SnoopPair } from '../sdrl/secondary.ts'
import type { Role } from './re.ts'

export function newReCounters() {
  return {
    rejected: 0,
    rejectReasons: {} as Record<string, number>,
    ackTimeouts: 0,
    initTimeouts: 0,
    initRetries: 0,
    peerMessages: 0,
    chassisMessages: 0,
    acksSent: 0,
    releasesSent: 0,
    flowctlSent: 0,
    keepalivesSent: 0,
    keepalivesHeard: 0,
    resumeGaps: 0,
    resentAfterTakeover: 0,
    lostAtTakeover: 0,
    unreadSentAtMerge: 0,
    rxDropped: 0,
    rxStale: 0,
    /** Secondary: frames of a handshake it had refused with INIT_NAK, dropped (RefusedHandshakes). */
    initDroppedAfterNak: 0,
    hookErrors: 0,
    /** Primary: a socket's appState() threw when a handshake snapshotted it (reported as 'error'). */
    appStateErrors: 0,
  }
}

export type ReCounters = ReturnType<typeof newReCounters>

/** What stats() reads from the RE. */
export interface ReStatsSource {
  readonly id: string
  readonly role: Role
  readonly peer: boolean
  readonly congested: boolean
  readonly heldBytes: number
  readonly sockets: Map<number, Socket>
  readonly pairs: Map<number, SnoopPair>
  readonly counters: ReCounters
  readonly appStats: Record<string, number>
}

/** A snapshot of the RE (copies: later changes do not show through). */
export function reStats(re: ReStatsSource) {
  const sockets = [...re.sockets.values()].map((s) => ({
    handle: s.handle,
    kind: s.kind,
    state: s.state,
    sndSeq: s.sndSeq,
    txSeq: s.txSeq,
    pendingRecords: s.snd.length,
    pendingBytes: s.snd.bytes,
    unreadBytes: s.rcv.bytes,
    sr: s.sr ? (s.sr as SrPrimary).snapshot() : null,
    ...s.counters,
  }))
  const pairs = [...re.pairs.values()].map((p) => p.snapshot())
  return { id: re.id, role: re.role, peer: re.peer, congested: re.congested, heldBytes: re.heldBytes, sockets, pairs, counters: { ...re.counters }, app: { ...re.appStats } }
}
