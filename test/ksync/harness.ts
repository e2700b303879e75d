// Test wiring for KSync: a Link carries request batches from a KSyncClient to a Fib and reply
// batches back, held until the test delivers them (so tests choose when acks arrive), optionally
// through msgpackr as on the real KKCM ring. Not a test file itself.

import { pack, unpack } from 'msgpackr'
import { ManualClock } from '../../engine/clock.ts'
import { Fib, type FibOptions } from '../../engine/ksync/fib.ts'
import { KSyncClient, type KSyncClientOptions, type KSyncEvent } from '../../engine/ksync/client.ts'
import type { KSyncReply, KSyncRequest } from '../../engine/ksync/wire.ts'

export interface LinkOptions {
  /** Round-trip every batch through msgpackr. */
  msgpack?: boolean
}

export class Link {
  readonly fib: Fib
  client: KSyncClient | null = null
  readonly toFib: KSyncRequest[][] = []
  readonly toClient: KSyncReply[][] = []
  private readonly msgpack: boolean

  constructor(fib: Fib, options: LinkOptions = {}) {
    this.fib = fib
    this.msgpack = options.msgpack === true
  }

  /** The `send` to give a client. */
  readonly send = (batch: KSyncRequest[]): void => {
    this.toFib.push(this.msgpack ? (unpack(pack(batch)) as KSyncRequest[]) : batch)
  }

  /** Delivers the oldest request batch to the Fib; its replies wait in toClient. */
  deliverToFib(): boolean {
    const b = this.toFib.shift()
    if (b === undefined) return false
    const replies = this.fib.applyBatch(b)
    this.toClient.push(this.msgpack ? (unpack(pack(replies)) as KSyncReply[]) : replies)
    return true
  }

  /** Delivers the oldest reply batch to the client. */
  deliverToClient(): boolean {
    const b = this.toClient.shift()
    if (b === undefined) return false
    this.client?.onAck(b)
    return true
  }

  /** Flushes the client and delivers everything both ways until nothing moves. Returns rounds. */
  pump(maxRounds = 1_000_000): number {
    this.client?.flush()
    let rounds = 0
    while (this.toFib.length > 0 || this.toClient.length > 0) {
      if (++rounds > maxRounds) throw new Error('link did not go quiet')
      this.deliverToFib()
      this.deliverToClient()
    }
    return rounds
  }
}

export interface Rig {
  fib: Fib
  link: Link
  client: KSyncClient
  clock: ManualClock
  events: KSyncEvent[]
  /** A fresh client on the same link and Fib (the old one is dropped), e.g. after failover. */
  restart(options?: Partial<KSyncClientOptions>): KSyncClient
}

export function rig(
  options: { fib?: FibOptions; client?: Partial<KSyncClientOptions>; link?: LinkOptions; record?: (e: KSyncEvent) => void } = {},
): Rig {
  const fib = new Fib(options.fib)
  const link = new Link(fib, options.link)
  const clock = new ManualClock()
  const events: KSyncEvent[] = []
  const make = (extra: Partial<KSyncClientOptions>) =>
    new KSyncClient({
      send: link.send,
      clock,
      maxNextHops: options.fib?.maxNextHops,
      maxRoutes: options.fib?.maxRoutes,
      onEvent: (e) => {
        events.push(e)
        options.record?.(e)
      },
      ...options.client,
      ...extra,
    })
  const r: Rig = {
    fib,
    link,
    clock,
    events,
    client: make({}),
    restart(extra = {}) {
      r.client = make(extra)
      link.client = r.client
      return r.client
    },
  }
  link.client = r.client
  return r
}
