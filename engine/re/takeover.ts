// Takeover: what a promoted RE builds from one complete snoop pair (seed 7.4 A). The live socket
// adopts the pair's queues and sequence state as they are, and resumes transmission right after the
// last record both the chassis and this RE have; sendResume() tells the chassis where the socket's
// history ends. RoutingEngine.promote() walks the pairs, keeps the books (adopted, lost, uncharged)
// and registers each socket.

import type { FrameSink } from './sink.ts'
import type { ReCounters } from './stats.ts'
import { MsgType, Flag, seqLe, seqLt } from '../protocol/header.ts'
import { Socket, type SocketHost, type SocketLimits } from '../socket/socket.ts'
import type { SnoopPair, SocketParams } from '../sdrl/secondary.ts'

/** What the chassis says about one socket when it promotes a secondary. */
export interface ChassisTxState {
  txSeq: number
  txCredit: number
}

/** The promoted RE, as a merge sees it: the new socket's host, its limits and counters. */
export interface TakeoverHost extends SocketHost {
  readonly limits: SocketLimits
  readonly counters: ReCounters
  emit(event: 'resume-gap', gap: { handle: number; chassisTxSeq: number; txDoneSeq: number; seq: number }): boolean
}

/**
 * The live socket merged from `pair` (complete, with params `p`), its transmission resumed (or the
 * resume owed to the chassis). `t` is the chassis's view of the socket; `earlyTxCredit` is the
 * transport credit that reached this RE before promote().
 */
export function mergePair(host: TakeoverHost, chassis: FrameSink, pair: SnoopPair, p: SocketParams, t: ChassisTxState, earlyTxCredit: number): Socket {
  const sock = new Socket(host, pair.handle, p.kind, host.limits, p.local, p.remote)
  sock.parent = p.parent
  sock.setTxCredit(t.txCredit + earlyTxCredit)
  sock.sndSeq = pair.seq
  sock.sndOffset = pair.send.offset
  // `txSeq` from the chassis: the last record it has (held or sent). This RE's history ends at
  // pair.seq. It resumes after the smaller one: the chassis drops held records it never saw
  // (the old primary died between their TX and REPLICATE), and it resends what the chassis
  // lacks (pre-existing records it got in the handshake).
  let resume = seqLt(pair.seq, t.txSeq) ? pair.seq : t.txSeq
  if (seqLt(resume, pair.txDoneSeq)) {
    // The chassis lacks a record this RE was told it had: cannot happen while the chassis adopts
    // every frame a dead primary committed (TX goes before REPLICATE).
    host.counters.resumeGaps++
    host.emit('resume-gap', { handle: pair.handle, chassisTxSeq: t.txSeq, txDoneSeq: pair.txDoneSeq, seq: pair.seq })
    resume = pair.txDoneSeq
  }
  sock.txSeq = resume
  // The live socket adopts the snoop queues as they are (no per-record copy): what the chassis
  // has is dropped from the front, the rest is resent.
  const retained = pair.retained
  while (retained.length && seqLe(retained.peek()!.seq, resume)) retained.shift()
  sock.snd = retained
  host.counters.resentAfterTakeover += retained.length
  sendResume(chassis, sock)
  sock.rcv = pair.recv.queue
  sock.rcvSeq = pair.recv.seq
  sock.rcvOffset = pair.recv.offset
  if (pair.recv.ended) sock.peerEnded = true
  host.counters.unreadSentAtMerge += pair.send.queue.length
  return sock
}

/**
 * After a takeover: tells the chassis this socket's history ends at sock.txSeq (held records up
 * to there go out, the rest are dropped). Nothing leaves the socket before that is on the link.
 */
function sendResume(chassis: FrameSink, sock: Socket): void {
  if (chassis.send(MsgType.TX_RELEASE, Flag.RESUME, sock.handle, sock.txSeq, 0, 0, null)) {
    sock.txBlocked = false
    // Published at once: the chassis releases held records on it, and left to the ring's batching
    // it would wait for this socket's resends to fill a batch, or for the next socket's merge.
    chassis.flush()
    return
  }
  sock.txBlocked = true
  chassis.whenRoom(() => {
    sendResume(chassis, sock)
    sock.pump()
  })
}
