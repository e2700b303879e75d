// Test harness for the BGP example: a seeded PRNG, and an in-memory "network" joining a speaker
// under test (the primary, active), an EmbeddedPeer, and optionally a snooping secondary that sees
// what the primary sends (before the peer does, as replication guarantees) and what the peer sends
// (split differently). Delivery is queued and pumped by the test, so time only moves in advance().

import { ManualClock } from '../../engine/clock.ts'
import { messageType } from '../../examples/bgp/codec.ts'
import { EmbeddedPeer, type EmbeddedPeerOptions } from '../../examples/bgp/peer.ts'
import { BgpSpeaker, type SpeakerOptions } from '../../examples/bgp/speaker.ts'

/** mulberry32: small, fast, seedable. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export function concat(chunks: readonly Uint8Array[]): Uint8Array {
  let n = 0
  for (const c of chunks) n += c.length
  const out = new Uint8Array(n)
  let p = 0
  for (const c of chunks) {
    out.set(c, p)
    p += c.length
  }
  return out
}

/** Splits `bytes` into random chunks of 1..maxChunk bytes. */
export function randomSplits(bytes: Uint8Array, rand: () => number, maxChunk: number): Uint8Array[] {
  const out: Uint8Array[] = []
  let p = 0
  while (p < bytes.length) {
    const n = 1 + Math.floor(rand() * maxChunk)
    out.push(bytes.subarray(p, Math.min(bytes.length, p + n)))
    p += n
  }
  return out
}

export interface NetOptions {
  seed?: number
  speaker: Omit<SpeakerOptions, 'clock' | 'send' | 'mode'>
  peer: Omit<EmbeddedPeerOptions, 'clock' | 'send'>
  /** Add a snooping secondary. */
  snoop?: boolean
  /** Largest chunk the peer's stream is cut into. Default 700. */
  maxChunk?: number
}

/**
 * primary (BgpSpeaker, active) <-> peer (EmbeddedPeer, passive), plus an optional snooping
 * secondary. `kill()` stops the primary; `takeover()` makes the secondary the one the peer talks to.
 */
export class Net {
  readonly clock = new ManualClock()
  readonly rand: () => number
  readonly primary: BgpSpeaker
  readonly peer: EmbeddedPeer
  readonly secondary: BgpSpeaker | null
  /** What reached the peer, message by message, with who sent it. */
  readonly toPeerLog: { from: 'primary' | 'secondary'; type: number; bytes: Uint8Array }[] = []
  /** Records the primary wrote that the secondary has not been given yet (hold them to delay replication). */
  holdReplication = false
  readonly heldRecords: Uint8Array[] = []
  /** The primary dies when it tries to write more than this many messages: the write that finds
   *  the budget spent is neither replicated nor transmitted (nothing reaches the peer unreplicated). */
  primaryWriteBudget = Infinity
  primaryDead = false
  private toPeer: Uint8Array[] = []
  private toSpeaker: Uint8Array[] = []
  private readonly maxChunk: number

  constructor(o: NetOptions) {
    this.rand = prng(o.seed ?? 1)
    this.maxChunk = o.maxChunk ?? 700
    this.peer = new EmbeddedPeer({ ...o.peer, clock: this.clock, send: (b) => this.toSpeaker.push(b) })
    this.secondary = o.snoop ? new BgpSpeaker({ ...o.speaker, clock: this.clock, mode: 'snoop', send: (b) => this.fromSecondary(b) }) : null
    this.primary = new BgpSpeaker({ ...o.speaker, clock: this.clock, send: (b) => this.fromPrimary(b) })
  }

  private fromPrimary(b: Uint8Array): void {
    if (this.primaryDead) return // its timers still run in this process: its writes go nowhere
    if (this.primaryWriteBudget <= 0) {
      this.kill()
      return
    }
    this.primaryWriteBudget--
    if (this.holdReplication) this.heldRecords.push(b)
    else this.secondary?.observeSent(b)
    this.toPeerLog.push({ from: 'primary', type: messageType(b), bytes: b })
    this.toPeer.push(b)
  }

  private fromSecondary(b: Uint8Array): void {
    this.toPeerLog.push({ from: 'secondary', type: messageType(b), bytes: b })
    this.toPeer.push(b)
  }

  /** Queues raw bytes as if the peer had sent them. */
  injectFromPeer(bytes: Uint8Array): void {
    this.toSpeaker.push(bytes)
  }

  /** Gives the secondary the records held back. */
  releaseReplication(): void {
    this.holdReplication = false
    for (const b of this.heldRecords.splice(0)) this.secondary?.observeSent(b)
  }

  /** TCP connects: primary and peer (and the secondary learns of the connection). */
  connect(): void {
    this.secondary?.onConnected()
    this.primary.onConnected()
    this.peer.onConnected()
  }

  /** Delivers queued bytes both ways until quiet. */
  pump(maxRounds = 10_000): void {
    for (let round = 0; round < maxRounds; round++) {
      if (this.toPeer.length === 0 && this.toSpeaker.length === 0) return
      const toPeer = this.toPeer.splice(0)
      for (const b of toPeer) this.peer.onBytes(b)
      const toSpeaker = this.toSpeaker.splice(0)
      if (toSpeaker.length > 0) {
        const stream = concat(toSpeaker)
        if (!this.primaryDead) for (const c of randomSplits(stream, this.rand, this.maxChunk)) this.primary.onReceived(c)
        const s = this.secondary
        if (s) {
          for (const c of randomSplits(stream, this.rand, this.maxChunk)) {
            if (s.mode === 'snoop') s.observeReceived(c)
            else s.onReceived(c)
          }
        }
      }
    }
    throw new Error('pump did not settle')
  }

  /** Delivers what the peer has sent so far to the speakers, and nothing else. */
  deliverFromPeer(): void {
    const stream = concat(this.toSpeaker.splice(0))
    if (!this.primaryDead) this.primary.onReceived(stream)
    this.secondary?.observeReceived(stream)
  }

  /** Moves time in steps, pumping after each. */
  run(ms: number, stepMs = 100): void {
    for (let t = 0; t < ms; t += stepMs) {
      this.clock.advance(Math.min(stepMs, ms - t))
      this.pump()
    }
  }

  kill(): void {
    this.primaryDead = true
    this.primary.close()
  }

  takeover(): void {
    if (!this.secondary) throw new Error('no secondary')
    this.kill()
    this.secondary.takeover()
    this.pump()
  }

  /** Messages the peer got from `from`, by type. */
  typesTo(from: 'primary' | 'secondary'): number[] {
    return this.toPeerLog.filter((m) => m.from === from).map((m) => m.type)
  }
}
