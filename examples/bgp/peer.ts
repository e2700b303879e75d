// An embedded BGP peer for the in-memory demo and the tests: a BgpSpeaker configured passively
// that announces N deterministically generated routes (100.0.0.0/24 upward by default) over a
// byte-stream interface (onBytes in, `send` out). It keeps the evidence NSR is judged by: how many
// times the session came up (must stay 1 across failovers), OPENs and NOTIFICATIONs seen (no
// second OPEN, no NOTIFICATION), and when the last message arrived (the hold timer never fired).

import { type Clock, systemClock } from '../../engine/clock.ts'
import { assert } from '../../engine/errors.ts'
import { MsgType, keyAddr, keyLen, parsePrefix, prefixKey } from './codec.ts'
import { State } from './fsm.ts'
import { BgpSpeaker, type NotificationEvent, type SpeakerStats } from './speaker.ts'
import type { AdjRibIn } from './rib.ts'

export interface EmbeddedPeerOptions {
  as: number
  /** The AS of the speaker under test; 0 accepts any. */
  peerAs: number
  routerId: string
  /** Next hop of the generated routes; defaults to routerId. */
  localAddress?: string
  holdTimeS?: number
  /** How many routes to announce. Default 0. */
  routes?: number
  /** The first generated prefix; the rest follow at its size. Default '100.0.0.0/24'. */
  firstPrefix?: string
  /** Advertise the 4-octet AS capability. Default true. */
  as4?: boolean
  clock?: Clock
  /** Writes one whole message towards the speaker under test. */
  send: (bytes: Uint8Array) => void
}

/** N consecutive prefixes of the size of `first`, as prefix keys. */
export function generateRoutes(n: number, first = '100.0.0.0/24'): number[] {
  const key = parsePrefix(first)
  assert(key !== null, `bad prefix ${first}`)
  const len = keyLen(key)
  const base = keyAddr(key)
  const step = 2 ** (32 - len)
  assert(base + n * step <= 2 ** 32, `${n} prefixes from ${first} overflow the address space`)
  const keys = new Array<number>(n)
  for (let i = 0; i < n; i++) keys[i] = prefixKey(base + i * step, len)
  return keys
}

export class EmbeddedPeer {
  readonly speaker: BgpSpeaker
  /** How many times the session reached Established. NSR requires it stays 1. */
  establishedSince = 0
  opensReceived = 0
  keepalivesReceived = 0
  updatesReceived = 0
  readonly notificationsReceived: NotificationEvent[] = []
  readonly notificationsSent: NotificationEvent[] = []
  /** Clock time of the last message received, null before the first. */
  lastMessageReceivedMs: number | null = null

  constructor(opts: EmbeddedPeerOptions) {
    const clock = opts.clock ?? systemClock
    this.speaker = new BgpSpeaker({
      localAs: opts.as,
      peerAs: opts.peerAs,
      routerId: opts.routerId,
      localAddress: opts.localAddress,
      holdTimeS: opts.holdTimeS,
      passive: true,
      as4: opts.as4,
      announceKeys: generateRoutes(opts.routes ?? 0, opts.firstPrefix),
      clock,
      send: (bytes) => opts.send(bytes),
    })
    this.speaker.on('state', (c) => {
      if (c.to === State.Established) this.establishedSince++
    })
    this.speaker.on('message', (m) => {
      if (m.dir !== 'in') return
      this.lastMessageReceivedMs = m.atMs
      if (m.type === MsgType.OPEN) this.opensReceived++
      else if (m.type === MsgType.KEEPALIVE) this.keepalivesReceived++
      else if (m.type === MsgType.UPDATE) this.updatesReceived++
    })
    this.speaker.on('notification', (n) => (n.dir === 'in' ? this.notificationsReceived : this.notificationsSent).push(n))
    this.speaker.start()
  }

  /** The speaker under test connected to us. */
  onConnected(): void {
    this.speaker.onConnected()
  }

  /** Bytes from the speaker under test, split anyhow. */
  onBytes(bytes: Uint8Array): void {
    this.speaker.onReceived(bytes)
  }

  onClosed(): void {
    this.speaker.onDisconnected()
  }

  get sessionUp(): boolean {
    return this.speaker.state === State.Established
  }

  /** NOTIFICATIONs in either direction. NSR requires 0. */
  get notificationsSeen(): number {
    return this.notificationsReceived.length + this.notificationsSent.length
  }

  /** Routes received from the speaker under test (prefix key -> attributes). */
  get receivedRoutes(): AdjRibIn['routes'] {
    return this.speaker.adjRibIn?.routes ?? new Map()
  }

  stats(): SpeakerStats & { establishedSince: number; opensReceived: number; notificationsSeen: number; lastMessageReceivedMs: number | null } {
    return {
      ...this.speaker.stats(),
      establishedSince: this.establishedSince,
      opensReceived: this.opensReceived,
      notificationsSeen: this.notificationsSeen,
      lastMessageReceivedMs: this.lastMessageReceivedMs,
    }
  }
}
