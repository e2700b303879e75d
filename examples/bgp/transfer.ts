// State transfer for a secondary that joins a running BGP session, sans-IO. Snooping alone cannot
// rebuild a session the secondary never saw open (the OPENs, the routes learned before it existed),
// and after every failover a fresh secondary joins mid-session. So the primary sends a snapshot
// of its speaker once replication of the session's socket is functional, and the secondary:
//
//   replication cut (the init handshake)        snapshot cut (later, when replication is functional)
//   |-- snoop streams start here ------------------|-- the snapshot covers everything before --|->
//
// holds its snoop streams (they start at the replication cut, which is never after the snapshot
// cut), restores the speaker from the snapshot, then feeds it only what the snapshot does not
// cover: records written after the snapshot's last record, received bytes after the bytes its
// speaker had read. Messages the primary's speaker had handed over but the socket had not yet
// accepted (EAGAIN: the application's queue) are `owed`: they become the next records, which the
// secondary skips as it sees them; any still owed at takeover are written first by the new primary.
//
// Wire messages (re.sendToPeer, msgpackr): one SnapshotHead, then `chunks` SnapshotRoutes.

import { seqDiff, seqLe } from '../../engine/protocol/header.ts'
import { assert } from '../../engine/errors.ts'
import type { BgpSpeaker, RouteChunk, SpeakerSnapshot } from './speaker.ts'

/** Where the snapshot was taken on the replicated socket. */
export interface SnapshotCut {
  /** The last record the socket had accepted (its sndSeq). */
  sndSeq: number
  /** Received stream bytes the speaker had read (the socket's read offset). */
  rcvOffset: number
  /** Messages the speaker sent that the socket had not accepted yet: the next records, in order. */
  owed: Uint8Array[]
}

export interface SnapshotHead {
  t: 'bgp-snapshot'
  /** Distinguishes snapshots: the secondary applies chunks of the head it holds only. */
  id: number
  /** The replication handle of the session's socket. */
  handle: number
  cut: SnapshotCut
  speaker: SpeakerSnapshot
  chunks: number
}

export interface SnapshotRoutes {
  t: 'bgp-snapshot-routes'
  id: number
  index: number
  chunk: RouteChunk
}

export type TransferMessage = SnapshotHead | SnapshotRoutes

export function isTransferMessage(m: unknown): m is TransferMessage {
  const t = (m as { t?: unknown } | null)?.t
  return t === 'bgp-snapshot' || t === 'bgp-snapshot-routes'
}

/** The primary's side: its speaker and socket position as transfer messages (head first). */
export function takeSnapshot(id: number, handle: number, speaker: BgpSpeaker, cut: SnapshotCut, routesPerChunk?: number): TransferMessage[] {
  const { head, chunks } = speaker.snapshot(routesPerChunk)
  const out: TransferMessage[] = [{ t: 'bgp-snapshot', id, handle, cut: { ...cut, owed: [...cut.owed] }, speaker: head, chunks: chunks.length }]
  chunks.forEach((chunk, index) => out.push({ t: 'bgp-snapshot-routes', id, index, chunk }))
  return out
}

/**
 * The secondary's side: feeds a restored speaker what its snapshot does not cover. Works on in
 * both modes, so after a takeover the same object keeps filtering the merged socket's bytes.
 */
export class Follower {
  readonly speaker: BgpSpeaker
  private readonly cut: SnapshotCut
  /** Owed messages seen as records so far. */
  private owedSeen = 0
  readonly counters = { recordsSkipped: 0, bytesSkipped: 0, owedSeen: 0, recordsFed: 0, bytesFed: 0 }

  constructor(speaker: BgpSpeaker, cut: SnapshotCut) {
    this.speaker = speaker
    this.cut = cut
  }

  /** A record the primary wrote (one whole message), with its record sequence number. */
  sent(seq: number, bytes: Uint8Array): void {
    const c = this.cut
    if (seqLe(seq, c.sndSeq)) {
      this.counters.recordsSkipped++
      return
    }
    if (seqDiff(seq, c.sndSeq) <= c.owed.length) {
      // One of the owed messages, now written: the snapshot already holds its effect.
      assert(seqDiff(seq, c.sndSeq) === this.owedSeen + 1, 'owed records arrive in order')
      this.owedSeen++
      this.counters.owedSeen++
      return
    }
    this.counters.recordsFed++
    this.speaker.observeSent(bytes)
  }

  /** Bytes the peer sent, starting at received-stream offset `offset`. */
  received(offset: number, bytes: Uint8Array): void {
    const skip = this.cut.rcvOffset - offset
    if (skip >= bytes.length) {
      this.counters.bytesSkipped += bytes.length
      return
    }
    let data = bytes
    if (skip > 0) {
      this.counters.bytesSkipped += skip
      data = bytes.subarray(skip)
    }
    this.counters.bytesFed += data.length
    if (this.speaker.mode === 'snoop') this.speaker.observeReceived(data)
    else this.speaker.onReceived(data)
  }

  /** At takeover: the owed messages the dead primary never wrote, to be written first. */
  owedUnsent(): Uint8Array[] {
    return this.cut.owed.slice(this.owedSeen)
  }
}
