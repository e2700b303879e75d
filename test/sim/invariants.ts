// The invariants of DESIGN.md as the simulation checks them: checkStep() after every step,
// checkFinal() once a schedule has drained. Invariants 1 and 2 are also checked as frames go by
// (World.onReToChassis, World.onTransmit, the peers' 'data'), and 3 by the applications' stream
// cursors (test/sim/app.ts).

import { seqLe } from '../../engine/protocol/header.ts'
import type { SrPrimary } from '../../engine/sdrl/primary.ts'
import type { World } from './world.ts'

/** Bounds (invariant 5), cursor order, the secondary never behind (3), counters that stay zero (2). */
export function checkStep(w: World): void {
  w.raise()
  const cfg = w.cfg
  const lim = cfg.limits
  const P = w.primary
  const S = w.secondary
  // Invariant 5: every queue bounded. Received data: the chassis charges each RE's unread bytes
  // against its window, but a snoop's pre-existing data (copied over the KKCM) is charged only
  // when its RE takes over, so an application that never reads holds at most one more window per
  // takeover (known limit, see the report).
  const rxBound = cfg.chassis.rxWindowBytes * (2 + w.stats.takeovers)
  for (const sock of P.re.sockets.values()) {
    if (sock.snd.bytes > lim.sndbufBytes) w.violation(`socket ${sock.handle}: send buffer ${sock.snd.bytes} > ${lim.sndbufBytes}`)
    if (sock.rcv.bytes > rxBound) w.violation(`socket ${sock.handle}: ${sock.rcv.bytes} unread bytes, window ${cfg.chassis.rxWindowBytes}`)
    const sr = sock.sr as SrPrimary | null
    if (sr?.functional) {
      // Cursor order: ack <= seq <= sndSeq, txSeq <= seq (a record reaches the chassis no earlier
      // than it is replicated, except in lockstep, TX first then REPLICATE at once).
      if (!seqLe(sock.txSeq, sr.seq) || !seqLe(sr.ack, sr.seq) || !seqLe(sr.seq, sock.sndSeq)) {
        w.violation(`socket ${sock.handle}: cursors out of order tx ${sock.txSeq} ack ${sr.ack} seq ${sr.seq} snd ${sock.sndSeq}`)
      }
    }
  }
  if (S && !S.dead) {
    let held = 0
    for (const pair of S.re.pairs.values()) {
      held += pair.heldBytes()
      const cap = cfg.snoopBufBytes + lim.sndbufBytes + lim.maxRecordBytes
      if (pair.retained.bytes > cap) w.violation(`pair ${pair.handle}: retains ${pair.retained.bytes} bytes (cap ${cap})`)
      if (pair.recv.queue.bytes > rxBound) w.violation(`pair ${pair.handle}: ${pair.recv.queue.bytes} unread received bytes`)
    }
    const reHeld = (S.re as unknown as { secondary: { heldBytes: number } }).secondary.heldBytes
    if (reHeld !== held) w.violation(`secondary ${S.id}: heldBytes ${reHeld} but its pairs hold ${held}`)
  }
  for (const c of w.chassis.conns.values()) {
    if (c.qBytes > cfg.chassis.rxQueueBytes + cfg.maxChunkBytes) w.violation(`chassis conn ${c.handle}: rx queue ${c.qBytes} bytes`)
    if (c.priOut > rxBound || c.secOut > cfg.chassis.rxWindowBytes) w.violation(`chassis conn ${c.handle}: rx window overrun pri ${c.priOut} sec ${c.secOut}`)
    if (c.txOutstanding > cfg.chassis.txWindowBytes) w.violation(`chassis conn ${c.handle}: ${c.txOutstanding} bytes in the transport`)
    // Invariant 3: the secondary never lags the primary.
    if (c.mode === 'both' && c.secIdx < c.priIdx) w.violation(`chassis conn ${c.handle}: primary got chunk ${c.priIdx} before the secondary (${c.secIdx})`)
  }
  for (const n of [P, S]) {
    if (!n) continue
    const backlog = (n.re as unknown as { cmdBacklog: unknown[] }).cmdBacklog.length
    if (backlog > 256) w.violation(`${n.id}: ${backlog} chassis commands backlogged`)
  }
  // Counters that must stay zero.
  const cc = w.chassis.counters
  if (cc.txDuplicates || cc.txGaps) w.violation(`chassis counted ${cc.txDuplicates} duplicate and ${cc.txGaps} out-of-order records`)
  if (cc.txFromSecondary) w.violation(`chassis got ${cc.txFromSecondary} TX frames from a secondary`)
  for (const n of w.nodes) if (n.re.counters.resumeGaps) w.violation(`${n.id}: resumeGaps ${n.re.counters.resumeGaps}`)
}

/** After the drain: nothing accepted was lost, nothing waits forever (2, 3, 4, 6, 7). */
export function checkFinal(w: World): void {
  const P = w.primary
  const S = w.secondary
  for (const t of w.truths) {
    if (t.closed || t.handle === 0) continue
    if (t.txNext - 1 !== t.ledgerLen) w.violation(`peer ${t.id}: the transport sent ${t.txNext - 1} of ${t.ledgerLen} accepted records`)
    if (t.peerNext - 1 !== t.ledgerLen) w.violation(`peer ${t.id}: received ${t.peerNext - 1} of ${t.ledgerLen} accepted records`)
    const as = P.app.socks.get(t.handle)
    if (!as) w.violation(`peer ${t.id}: the primary's app has no socket for handle ${t.handle}`)
    if (t.kind === 'tcp' && as.rx.next !== t.rxWritten && !(as.rx.next === -1 && t.rxWritten === 0)) {
      w.violation(`peer ${t.id}: wrote ${t.rxWritten} bytes, the primary's app read up to ${as.rx.next}`)
    }
    if (as.waitingWritable) w.violation(`socket ${t.handle}: EAGAIN/ENOBUFS never followed by 'writable'`)
  }
  // Invariant 6 and handshake liveness.
  for (const c of w.chassis.conns.values()) {
    if (c.mode === 'hold') w.violation(`chassis conn ${c.handle} still holds received data after the drain`)
  }
  if (S) {
    const wanted = (P.re as unknown as { replicateWanted: Set<number> }).replicateWanted
    for (const h of wanted) {
      const sock = P.re.sockets.get(h)
      if (!sock) continue
      const sr = sock.sr as SrPrimary | null
      if (!sr?.functional) w.violation(`socket ${h}: still not replicated after the drain (state ${sr?.state}/${sr?.initState})`)
      if (!S.re.pairs.get(h)?.functional) w.violation(`secondary has no functional pair for socket ${h} after the drain`)
    }
  }
}
