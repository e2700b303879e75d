// A sans-IO BGP speaker: the codec, the session FSM and the RIBs tied together, with no sockets
// and no timers of its own (an injected Clock). It is what the NSR application drives, in one of
// two modes:
//   active - the primary: onReceived(bytes) takes the peer's byte stream (any splits); every
//            call of the `send` option writes exactly one whole BGP message (one replicated
//            record, so a takeover never tears a message);
//   snoop  - the secondary: observeSent(bytes) takes what the primary wrote, observeReceived(bytes)
//            what the peer sent; its FSM state, negotiated parameters, timer deadlines and RIBs
//            follow the primary's, and it never sends. takeover() makes it active: no second
//            OPEN; in Established a KEEPALIVE at once, restarted timers, and the announcements the
//            primary had not sent yet.
// It originates the configured prefixes (next hop: its local address), keeps an Adj-RIB-In and a
// Loc-RIB of what the peer announces, and reports Loc-RIB changes (onRibChange) and events
// ('state', 'route-add', 'route-withdraw', 'notification', 'message').
//
// Inputs are serialized: a call made while the speaker is busy (a synchronous callback chain that
// loops back into it, a timer firing inside an input) is queued and run right after.

import { type Clock, systemClock } from '../../engine/clock.ts'
import { assert, NsrError } from '../../engine/errors.ts'
import {
  MessageReader,
  MsgType,
  capAs4,
  Origin,
  SegType,
  encodeAttributes,
  encodeKeepalive,
  encodeNotification,
  encodeOpen,
  formatIp,
  formatPrefix,
  keyAddr,
  keyLen,
  packAnnounce,
  packWithdraw,
  parseIp,
  parsePrefix,
  prefixKey,
  type BgpMessage,
  type PathAttributes,
  type UpdateMessage,
} from './codec.ts'
import { BgpFsm, State, type FsmMode, type FsmSnapshot, type Negotiated, type OutboundFsmMessage, type StateChange, type TimerDeadlines } from './fsm.ts'
import { AdjRibIn, DEFAULT_LOCAL_PREF, LocRib, RibChange, RibOp, type RibPeer } from './rib.ts'

export interface SpeakerOptions {
  localAs: number
  /** Expected peer AS; 0 accepts any. */
  peerAs: number
  /** BGP identifier, dotted quad. */
  routerId: string
  /** Next hop of announced routes; defaults to routerId. */
  localAddress?: string
  /** Hold time we offer, seconds (0, or 3 and up). Default 90. */
  holdTimeS?: number
  /** ConnectRetry time, also the delay before an automatic restart. Default 5000. */
  connectRetryMs?: number
  /** Wait for the peer to connect instead of connecting. Default false. */
  passive?: boolean
  /** Advertise the 4-octet AS capability. Default true. */
  as4?: boolean
  /** Accept next hops in 127/8 from the peer (a lab on one host's loopback). Default false. */
  loopbackNextHop?: boolean
  /** Restart the session automatically after an error drops it. Default true. */
  autoRestart?: boolean
  /** Prefixes to originate, 'A.B.C.D/LEN'. */
  announce?: readonly string[]
  /** More prefixes to originate, as prefix keys (codec prefixKey): for generated bulk tables. */
  announceKeys?: ArrayLike<number>
  /** 'active' (default) or 'snoop'. */
  mode?: FsmMode
  clock?: Clock
  /**
   * Writes one whole BGP message (active mode only; never called while snooping). Return false to
   * ask the speaker to pause bulk UPDATEs until onWritable(); the message itself was taken.
   */
  send?: (message: Uint8Array) => boolean | void
  /** Asks the owner to open the TCP connection (active, not passive). */
  connect?: () => void
  /** Asks the owner to close the TCP connection. */
  disconnect?: () => void
  /** Every Loc-RIB change: what the application programs into the forwarding plane. */
  onRibChange?: (change: RibChange) => void
}

export interface RouteAddEvent {
  prefix: string
  key: number
  nextHop: string
  attrs: PathAttributes
  /** A route for this prefix was already in the Loc-RIB (a change, not an add). */
  replaced: boolean
}
export interface RouteWithdrawEvent {
  prefix: string
  key: number
}
export interface NotificationEvent {
  code: number
  subcode: number
  data: Uint8Array
  dir: 'in' | 'out'
}
export interface MessageEvent {
  dir: 'in' | 'out'
  type: number
  atMs: number
}

export interface SpeakerEvents {
  state: StateChange
  'route-add': RouteAddEvent
  'route-withdraw': RouteWithdrawEvent
  notification: NotificationEvent
  message: MessageEvent
}

export interface MessageCounts {
  open: number
  update: number
  notification: number
  keepalive: number
}

export interface SpeakerStats {
  state: State
  mode: FsmMode
  messagesIn: MessageCounts
  messagesOut: MessageCounts
  bytesIn: number
  bytesOut: number
  adjRibIn: number
  locRib: number
  updatesProcessed: number
  prefixesReceived: number
  prefixesWithdrawn: number
  /** Originated prefixes the peer has (sent, or seen sent by the primary). */
  advertised: number
  /** Originated prefixes still to send. */
  pendingAnnouncements: number
  establishedCount: number
  wireErrors: number
  /** Received bytes dropped because the session was Idle. */
  droppedBytes: number
  /** Routes ignored: our AS in the AS_PATH, or our address as next hop. */
  routesIgnored: number
  /** Snoop: records of the primary's writes that did not decode. */
  sentDecodeErrors: number
  holdExpired: number
  /** Snoop: peer messages held until the record of our OPEN arrived. */
  snoopDeferred: number
  snoopAnomalies: number
}

/**
 * A speaker's state at one instant, for a secondary that joins a running session (state transfer:
 * snooping alone cannot rebuild what the session carried before the secondary existed). The
 * Adj-RIB-In travels apart, in RouteChunks. Plain data: it goes through msgpackr unchanged.
 */
export interface SpeakerSnapshot {
  version: 1
  fsm: FsmSnapshot
  connected: boolean
  /** How the reader decodes AS_PATHs (set by the peer's OPEN). */
  rxAs4: boolean
  /** The incomplete peer message the reader holds: the rest of it comes after the cut. */
  rxPending: Uint8Array
  /** Originated prefixes the peer has. */
  advertised: number[]
  counters: SpeakerCounters
  /** Adj-RIB-In routes that follow in chunks. */
  routes: number
}

/** Part of an Adj-RIB-In: attribute sets (each sent once, by id) and the prefixes that use them. */
export interface RouteChunk {
  attrs: Array<[number, PathAttributes]>
  groups: Array<[number, number[]]>
}

/** Routes per RouteChunk by default: a chunk stays well under 100 KB through msgpackr. */
export const SNAPSHOT_ROUTES_PER_CHUNK = 8192

/** The speaker's own counters (what stats() reports besides the FSM's and the RIBs'). */
export interface SpeakerCounters {
  messagesIn: MessageCounts
  messagesOut: MessageCounts
  bytesIn: number
  bytesOut: number
  updatesProcessed: number
  prefixesReceived: number
  prefixesWithdrawn: number
  establishedCount: number
  wireErrors: number
  droppedBytes: number
  routesIgnored: number
  sentDecodeErrors: number
  snoopDeferred: number
  snoopOverflow: number
}

/** Reentrant inputs queued at most; more means a callback loop (a programmer error). */
const MAX_QUEUED_INPUTS = 100_000
/**
 * Snoop: peer messages held while the record of our OPEN has not arrived. Causally the peer sends
 * only its OPEN (and perhaps a NOTIFICATION) before it has ours; the rest of the room absorbs a
 * secondary that reads its two snoop streams out of step. Past it the snoop is out of sync
 * (counted in snoopAnomalies) and later messages are dropped.
 */
const MAX_DEFERRED_MESSAGES = 1024

type Listener<T> = (event: T) => void

function counts(): MessageCounts {
  return { open: 0, update: 0, notification: 0, keepalive: 0 }
}

function countType(c: MessageCounts, type: number): void {
  if (type === MsgType.OPEN) c.open++
  else if (type === MsgType.UPDATE) c.update++
  else if (type === MsgType.NOTIFICATION) c.notification++
  else if (type === MsgType.KEEPALIVE) c.keepalive++
}

function parseIpOption(name: string, text: string): number {
  const v = parseIp(text)
  if (v === null) throw new NsrError('EINVAL', `${name}: bad IPv4 address '${text}'`)
  return v
}

export class BgpSpeaker {
  readonly locRib: LocRib
  private readonly fsm: BgpFsm
  private readonly clock: Clock
  private readonly opts: SpeakerOptions
  private modeNow: FsmMode
  private readonly localAddress: number
  private readonly rx = new MessageReader()
  /** Snoop: the primary's writes. UPDATEs are followed by their prefixes only (no attribute context needed). */
  private readonly tx = new MessageReader({ prefixesOnly: true })
  private adj: AdjRibIn | null = null
  private connected = false

  /** Originated prefixes, in announcement order, and as a set. */
  private readonly originated: number[]
  private readonly originatedSet: Set<number>
  /** Originated prefixes the peer has. */
  private readonly advertised = new Set<number>()
  private pendingAnnounce: number[] = []
  private announceIdx = 0
  private pendingWithdraw: number[] = []
  private withdrawIdx = 0
  private attrBytes: Uint8Array | null = null
  private blocked = false

  /** Snoop: peer messages waiting for the record of our OPEN. */
  private deferred: BgpMessage[] = []
  private busy = false
  private closed = false
  private readonly queue: (() => void)[] = []
  private readonly listeners = new Map<keyof SpeakerEvents, Set<Listener<never>>>()

  /** restore(): attribute sets by id, and routes still to come. */
  private restoring: { attrs: Map<number, PathAttributes>; left: number } | null = null

  private readonly st: SpeakerCounters = {
    messagesIn: counts(),
    messagesOut: counts(),
    bytesIn: 0,
    bytesOut: 0,
    updatesProcessed: 0,
    prefixesReceived: 0,
    prefixesWithdrawn: 0,
    establishedCount: 0,
    wireErrors: 0,
    droppedBytes: 0,
    routesIgnored: 0,
    sentDecodeErrors: 0,
    snoopDeferred: 0,
    snoopOverflow: 0,
  }

  constructor(opts: SpeakerOptions) {
    this.opts = opts
    this.clock = opts.clock ?? systemClock
    this.modeNow = opts.mode ?? 'active'
    const routerId = parseIpOption('routerId', opts.routerId)
    this.localAddress = parseIpOption('localAddress', opts.localAddress ?? opts.routerId)
    const holdTimeS = opts.holdTimeS ?? 90
    if (!Number.isInteger(holdTimeS) || holdTimeS < 0 || holdTimeS > 0xffff || holdTimeS === 1 || holdTimeS === 2) {
      throw new NsrError('EINVAL', `holdTimeS ${holdTimeS}: 0 or 3..65535`)
    }
    for (const [name, as] of [['localAs', opts.localAs], ['peerAs', opts.peerAs]] as const) {
      if (!Number.isInteger(as) || as < 0 || as > 0xffffffff || (name === 'localAs' && as === 0)) throw new NsrError('EINVAL', `${name} ${as}`)
    }
    if (opts.as4 === false && opts.localAs > 0xffff) throw new NsrError('EINVAL', 'a 4-octet localAs needs the as4 capability')
    this.originated = []
    for (const p of opts.announce ?? []) {
      const key = parsePrefix(p)
      if (key === null) throw new NsrError('EINVAL', `announce: bad prefix '${p}'`)
      this.originated.push(key)
    }
    const extra = opts.announceKeys
    if (extra) {
      for (let i = 0; i < extra.length; i++) {
        const key = extra[i]
        if (!Number.isInteger(key) || prefixKey(keyAddr(key), keyLen(key)) !== key) throw new NsrError('EINVAL', `announceKeys[${i}]: not a prefix key`)
        this.originated.push(key)
      }
    }
    this.rx.loopbackNextHop = opts.loopbackNextHop === true
    this.originatedSet = new Set(this.originated)
    if (this.originatedSet.size !== this.originated.length) {
      this.originated = [...this.originatedSet] // first occurrence wins, order kept
    }
    this.locRib = new LocRib((op, key, best, attrs, previous) => this.onLocRibChange(op, key, best?.peer ?? null, attrs, previous))
    const guarded: Clock = {
      now: () => this.clock.now(),
      schedule: (delayMs, fn) => this.clock.schedule(delayMs, () => this.exec(fn)),
    }
    this.fsm = new BgpFsm(
      guarded,
      {
        localAs: opts.localAs,
        peerAs: opts.peerAs,
        routerId,
        holdTimeS,
        connectRetryMs: opts.connectRetryMs ?? 5000,
        passive: opts.passive ?? false,
        as4Capability: opts.as4 ?? true,
        autoRestart: opts.autoRestart ?? true,
      },
      {
        send: (m) => this.sendFsmMessage(m),
        connect: () => opts.connect?.(),
        disconnect: () => {
          this.connected = false
          opts.disconnect?.()
        },
        stateChanged: (c) => this.onStateChange(c),
      },
      this.modeNow,
    )
  }

  // -------------------------------------------------------------------------------------------
  // Views

  get state(): State {
    return this.fsm.state
  }

  get mode(): FsmMode {
    return this.modeNow
  }

  get negotiated(): Negotiated | null {
    return this.fsm.negotiated
  }

  /** The Adj-RIB-In of the current session (null outside Established). */
  get adjRibIn(): AdjRibIn | null {
    return this.adj
  }

  /** Timer deadlines on the clock (ms), null when disarmed. */
  timers(): TimerDeadlines {
    return this.fsm.deadlines()
  }

  /** Originated prefixes the peer has, as prefix keys. */
  advertisedKeys(): ReadonlySet<number> {
    return this.advertised
  }

  /** The Loc-RIB route for 'A.B.C.D/LEN', or null. */
  lookup(prefix: string): { nextHop: string; attrs: PathAttributes; peer: RibPeer } | null {
    const key = parsePrefix(prefix)
    const r = key === null ? null : this.locRib.get(key)
    return r ? { nextHop: formatIp(r.attrs.nextHop ?? 0), attrs: r.attrs, peer: r.peer } : null
  }

  stats(): SpeakerStats {
    const s = this.st
    const c = this.fsm.counters
    return {
      state: this.fsm.state,
      mode: this.modeNow,
      messagesIn: { ...s.messagesIn },
      messagesOut: { ...s.messagesOut },
      bytesIn: s.bytesIn,
      bytesOut: s.bytesOut,
      adjRibIn: this.adj?.size ?? 0,
      locRib: this.locRib.size,
      updatesProcessed: s.updatesProcessed,
      prefixesReceived: s.prefixesReceived,
      prefixesWithdrawn: s.prefixesWithdrawn,
      advertised: this.advertised.size,
      pendingAnnouncements: this.pendingAnnounce.length - this.announceIdx,
      establishedCount: s.establishedCount,
      wireErrors: s.wireErrors,
      droppedBytes: s.droppedBytes,
      routesIgnored: s.routesIgnored,
      sentDecodeErrors: s.sentDecodeErrors,
      holdExpired: c.holdExpired,
      snoopDeferred: s.snoopDeferred,
      snoopAnomalies: c.snoopAnomalies + s.snoopOverflow,
    }
  }

  on<K extends keyof SpeakerEvents>(name: K, fn: Listener<SpeakerEvents[K]>): () => void {
    let set = this.listeners.get(name)
    if (!set) this.listeners.set(name, (set = new Set()))
    set.add(fn as Listener<never>)
    return () => this.off(name, fn)
  }

  off<K extends keyof SpeakerEvents>(name: K, fn: Listener<SpeakerEvents[K]>): void {
    this.listeners.get(name)?.delete(fn as Listener<never>)
  }

  // -------------------------------------------------------------------------------------------
  // Inputs (both modes unless noted)

  /** ManualStart: connect (or, passive, wait for the peer). */
  start(): void {
    this.exec(() => this.fsm.start())
  }

  /** ManualStop: Cease to the peer if it has our OPEN, then Idle. */
  stop(reason = 'administrative shutdown'): void {
    this.exec(() => this.fsm.stop(reason))
  }

  /**
   * The TCP connection is up. Snoop mode: the primary's connection is (the secondary learned of
   * it). Call it once per connection, before its bytes: it starts the streams afresh.
   */
  onConnected(): void {
    this.exec(() => {
      this.connected = true
      const s = this.fsm.state
      if (s === State.Idle || s === State.Connect || s === State.Active) {
        this.rx.reset()
        this.tx.reset()
        this.deferred = []
      }
      this.fsm.tcpConnected()
    })
  }

  /** The TCP connection failed or closed. */
  onDisconnected(reason = 'TCP closed'): void {
    this.exec(() => {
      this.connected = false
      this.fsm.tcpClosed(reason)
    })
  }

  /** Active mode: bytes from the peer, split anyhow. In Connect/Active they imply onConnected(). */
  onReceived(bytes: Uint8Array): void {
    assert(this.modeNow === 'active', 'onReceived in snoop mode: use observeReceived')
    this.exec(() => this.receive(bytes))
  }

  /** Active mode: the transport has room again: resume bulk UPDATEs. */
  onWritable(): void {
    this.exec(() => {
      this.blocked = false
      this.pump()
    })
  }

  /** Snoop mode: bytes the peer sent the primary, split anyhow. */
  observeReceived(bytes: Uint8Array): void {
    assert(this.modeNow === 'snoop', 'observeReceived outside snoop mode')
    this.exec(() => this.receive(bytes))
  }

  /** Snoop mode: whole messages the primary wrote (one or more per call). */
  observeSent(bytes: Uint8Array): void {
    assert(this.modeNow === 'snoop', 'observeSent outside snoop mode')
    this.exec(() => {
      this.st.bytesOut += bytes.length
      const err = this.tx.feed(bytes, (m) => this.onObservedSent(m))
      if (err) {
        this.st.sentDecodeErrors++
        this.tx.reset()
      }
    })
  }

  /** Snoop -> active, carrying on from where the snoop left the session. */
  takeover(): void {
    this.exec(() => {
      assert(this.modeNow === 'snoop', 'takeover outside snoop mode')
      this.modeNow = 'active'
      this.blocked = false
      this.fsm.takeover(this.connected)
      this.replayDeferred()
      if (this.fsm.state === State.Established) {
        this.planAnnouncements()
        this.pump()
      }
    })
  }

  /**
   * Ends this speaker without a word to the peer: timers stop, later inputs are ignored, nothing is
   * sent. For an RE that is going away (demoted, or shutting down while another carries on).
   */
  close(): void {
    this.exec(() => {
      this.closed = true
      this.fsm.halt()
    })
  }

  // -------------------------------------------------------------------------------------------
  // Internals

  private exec(fn: () => void): void {
    if (this.closed) return
    if (this.busy) {
      assert(this.queue.length < MAX_QUEUED_INPUTS, 'speaker input queue overflow: a callback loop')
      this.queue.push(fn)
      return
    }
    this.busy = true
    try {
      fn()
      for (let i = 0; i < this.queue.length && !this.closed; i++) this.queue[i]()
    } finally {
      this.queue.length = 0
      this.busy = false
    }
  }

  private emit<K extends keyof SpeakerEvents>(name: K, event: SpeakerEvents[K]): void {
    const set = this.listeners.get(name)
    if (set) for (const fn of set) (fn as Listener<SpeakerEvents[K]>)(event)
  }

  private has(name: keyof SpeakerEvents): boolean {
    const set = this.listeners.get(name)
    return set !== undefined && set.size > 0
  }

  private receive(bytes: Uint8Array): void {
    if (this.fsm.state === State.Idle) {
      this.st.droppedBytes += bytes.length
      return
    }
    if (this.modeNow === 'active' && (this.fsm.state === State.Connect || this.fsm.state === State.Active)) {
      // Bytes prove the connection is up even if onConnected() has not been called yet.
      this.connected = true
      this.fsm.tcpConnected()
    }
    this.st.bytesIn += bytes.length
    const err = this.rx.feed(bytes, (m) => this.onMessage(m))
    if (err) {
      this.st.wireErrors++
      this.fsm.error(err)
    }
  }

  private onMessage(m: BgpMessage): void {
    if (this.fsm.state === State.Idle) return // the rest of a chunk after the session ended
    countType(this.st.messagesIn, m.type)
    if (this.has('message')) this.emit('message', { dir: 'in', type: m.type, atMs: this.clock.now() })
    if (m.type === MsgType.NOTIFICATION) this.emit('notification', { code: m.code, subcode: m.subcode, data: m.data, dir: 'in' })
    // How UPDATEs that follow are read depends only on our config and this OPEN (the snoop may
    // hold the OPEN itself back, but must read what follows it right).
    if (m.type === MsgType.OPEN) this.rx.as4 = this.fsm.config.as4Capability && capAs4(m) !== null
    this.dispatch(m)
  }

  private dispatch(m: BgpMessage): void {
    const s = this.fsm.state
    if (this.modeNow === 'snoop' && (s === State.Connect || s === State.Active)) {
      // The peer sends its OPEN without waiting for ours: hold its messages until the record of
      // our OPEN says where the primary's FSM is.
      if (this.deferred.length < MAX_DEFERRED_MESSAGES) this.deferred.push(m)
      else this.st.snoopOverflow++
      this.st.snoopDeferred++
      return
    }
    if (this.fsm.received(m)) this.processUpdate(m as UpdateMessage)
  }

  /** Replays held peer messages once our OPEN is out (observed, or sent at takeover). */
  private replayDeferred(): void {
    if (this.deferred.length === 0 || this.fsm.state !== State.OpenSent) return
    const held = this.deferred
    this.deferred = []
    for (const m of held) if ((this.fsm.state as State) !== State.Idle) this.dispatch(m)
  }

  private onObservedSent(m: BgpMessage): void {
    this.noteSent(m.type)
    if (m.type === MsgType.NOTIFICATION) this.emit('notification', { code: m.code, subcode: m.subcode, data: m.data, dir: 'out' })
    if (m.type === MsgType.UPDATE) {
      for (const k of m.withdrawn) this.advertised.delete(k)
      for (const k of m.nlri) if (this.originatedSet.has(k)) this.advertised.add(k)
    }
    this.fsm.observedSent(m)
    if (m.type === MsgType.OPEN) this.replayDeferred()
  }

  private noteSent(type: number): void {
    countType(this.st.messagesOut, type)
    if (this.has('message')) this.emit('message', { dir: 'out', type, atMs: this.clock.now() })
  }

  /** Writes one whole message. */
  private write(bytes: Uint8Array, type: number): boolean {
    assert(this.modeNow === 'active', 'a snooping speaker never sends')
    this.noteSent(type)
    this.st.bytesOut += bytes.length
    return this.opts.send?.(bytes) !== false
  }

  private sendFsmMessage(m: OutboundFsmMessage): void {
    switch (m.type) {
      case MsgType.OPEN:
        this.write(encodeOpen(m), m.type)
        break
      case MsgType.KEEPALIVE:
        this.write(encodeKeepalive(), m.type)
        break
      case MsgType.NOTIFICATION:
        this.write(encodeNotification(m), m.type)
        this.emit('notification', { code: m.code, subcode: m.subcode, data: m.data, dir: 'out' })
        break
    }
  }

  private onStateChange(c: StateChange): void {
    if (c.from === State.Established) this.sessionDown()
    if (c.to === State.Idle) {
      this.connected = false // the primary (or we) closed it
      this.rx.reset()
      this.tx.reset()
      this.deferred = []
    }
    this.emit('state', c)
    if (c.to === State.Established) this.sessionUp()
  }

  private sessionUp(): void {
    const neg = this.fsm.negotiated!
    this.st.establishedCount++
    this.adj = new AdjRibIn({ routerId: neg.peerRouterId, as: neg.peerAs, ibgp: neg.ibgp })
    this.locRib.addPeer(this.adj)
    this.attrBytes = encodeAttributes(this.originAttributes(neg), neg.as4)
    if (this.modeNow === 'active') {
      this.planAnnouncements()
      this.pump()
    }
  }

  private sessionDown(): void {
    if (this.adj) {
      const adj = this.adj
      this.locRib.removePeer(adj)
      this.adj = null
    }
    this.advertised.clear()
    this.pendingAnnounce = []
    this.announceIdx = 0
    this.pendingWithdraw = []
    this.withdrawIdx = 0
    this.attrBytes = null
    this.blocked = false
  }

  private originAttributes(neg: Negotiated): PathAttributes {
    return {
      origin: Origin.IGP,
      asPath: neg.ibgp ? [] : [{ type: SegType.AS_SEQUENCE, asns: [this.opts.localAs] }],
      nextHop: this.localAddress,
      med: null,
      localPref: neg.ibgp ? DEFAULT_LOCAL_PREF : null,
      atomicAggregate: false,
      other: [],
    }
  }

  /** What the peer lacks: originated prefixes not advertised, advertised ones no longer originated. */
  private planAnnouncements(): void {
    this.pendingAnnounce = this.advertised.size === 0 ? this.originated : this.originated.filter((k) => !this.advertised.has(k))
    this.announceIdx = 0
    this.pendingWithdraw = [...this.advertised].filter((k) => !this.originatedSet.has(k))
    this.withdrawIdx = 0
  }

  /** Sends pending UPDATEs, each packing as many prefixes as fit, until done or blocked. */
  private pump(): void {
    if (this.modeNow !== 'active' || this.fsm.state !== State.Established || !this.attrBytes) return
    while (!this.blocked && this.withdrawIdx < this.pendingWithdraw.length) {
      const { message, next } = packWithdraw(this.pendingWithdraw, this.withdrawIdx)
      for (let i = this.withdrawIdx; i < next; i++) this.advertised.delete(this.pendingWithdraw[i])
      this.withdrawIdx = next
      this.sendUpdate(message)
    }
    while (!this.blocked && this.announceIdx < this.pendingAnnounce.length) {
      const { message, next } = packAnnounce(this.attrBytes, this.pendingAnnounce, this.announceIdx)
      for (let i = this.announceIdx; i < next; i++) this.advertised.add(this.pendingAnnounce[i])
      this.announceIdx = next
      this.sendUpdate(message)
    }
  }

  private sendUpdate(message: Uint8Array): void {
    if (!this.write(message, MsgType.UPDATE)) this.blocked = true
    this.fsm.updateSent()
  }

  private processUpdate(u: UpdateMessage): void {
    const adj = this.adj
    assert(adj !== null, 'UPDATE processed outside a session')
    this.st.updatesProcessed++
    this.st.prefixesWithdrawn += u.withdrawn.length
    for (const k of u.withdrawn) this.locRib.update(adj, k, null)
    if (u.nlri.length > 0) this.install(adj, u.nlri, u.attrs!)
    if (u.mpReach) this.install(adj, u.mpReach.nlri, { ...u.attrs!, nextHop: u.mpReach.nextHop })
  }

  private install(adj: AdjRibIn, keys: number[], attrs: PathAttributes): void {
    this.st.prefixesReceived += keys.length
    if (this.ignored(attrs)) {
      // RFC 4271 9.1.2: a looped route is not eligible; our own address as next hop is
      // semantically wrong (6.3): both are dropped quietly, replacing what the peer sent before.
      this.st.routesIgnored += keys.length
      for (const k of keys) this.locRib.update(adj, k, null)
      return
    }
    for (const k of keys) this.locRib.update(adj, k, attrs)
  }

  private ignored(attrs: PathAttributes): boolean {
    if (attrs.nextHop === this.localAddress) return true
    const as = this.opts.localAs
    if (attrs.asPath) for (const s of attrs.asPath) if (s.asns.includes(as)) return true
    return false
  }

  private onLocRibChange(op: RibOp, key: number, peer: RibPeer | null, attrs: PathAttributes | null, previous: PathAttributes | null): void {
    this.opts.onRibChange?.(new RibChange(op, key, attrs, peer, previous))
    if (op === RibOp.DELETE) {
      if (this.has('route-withdraw')) this.emit('route-withdraw', { prefix: formatPrefix(key), key })
    } else if (this.has('route-add')) {
      this.emit('route-add', { prefix: formatPrefix(key), key, nextHop: formatIp(attrs!.nextHop ?? 0), attrs: attrs!, replaced: op === RibOp.CHANGE })
    }
  }

  // -------------------------------------------------------------------------------------------
  // State transfer (a fresh secondary joining a running session)

  /**
   * Active mode: the speaker at this instant. The caller pairs it with the replicated socket's
   * position (last record written, received bytes read) so the secondary knows which snooped
   * records and bytes it already covers. Routes are grouped by attribute set, synchronously, so
   * the chunks describe the same instant however slowly they are sent.
   */
  snapshot(routesPerChunk = SNAPSHOT_ROUTES_PER_CHUNK): { head: SpeakerSnapshot; chunks: RouteChunk[] } {
    assert(this.modeNow === 'active', 'only the active speaker is snapshotted')
    assert(Number.isInteger(routesPerChunk) && routesPerChunk > 0, 'routesPerChunk')
    const byAttrs = new Map<PathAttributes, number[]>()
    if (this.adj) {
      for (const [k, a] of this.adj.routes) {
        let keys = byAttrs.get(a)
        if (!keys) byAttrs.set(a, (keys = []))
        keys.push(k)
      }
    }
    const chunks: RouteChunk[] = []
    let chunk: RouteChunk = { attrs: [], groups: [] }
    let inChunk = 0
    let id = 0
    for (const [a, keys] of byAttrs) {
      id++
      chunk.attrs.push([id, a])
      for (let from = 0; from < keys.length; ) {
        if (inChunk === routesPerChunk) {
          chunks.push(chunk)
          chunk = { attrs: [], groups: [] }
          inChunk = 0
        }
        const n = Math.min(keys.length - from, routesPerChunk - inChunk)
        chunk.groups.push([id, from === 0 && n === keys.length ? keys : keys.slice(from, from + n)])
        inChunk += n
        from += n
      }
    }
    if (inChunk > 0 || chunk.attrs.length > 0) chunks.push(chunk)
    const head: SpeakerSnapshot = {
      version: 1,
      fsm: this.fsm.snapshot(),
      connected: this.connected,
      rxAs4: this.rx.as4,
      rxPending: this.rx.pendingBytes(),
      advertised: [...this.advertised],
      counters: { ...this.st, messagesIn: { ...this.st.messagesIn }, messagesOut: { ...this.st.messagesOut } },
      routes: this.adj?.size ?? 0,
    }
    return { head, chunks }
  }

  /**
   * Snoop mode, on a fresh speaker (never started): becomes the primary's speaker as of `head`.
   * The routes follow through importRoutes(); restoreComplete says when they all arrived. Then
   * feed it the snooped records and bytes after the snapshot's cut, as usual.
   */
  restore(head: SpeakerSnapshot): void {
    this.exec(() => {
      assert(head.version === 1, `snapshot version ${String(head.version)}`)
      assert(this.modeNow === 'snoop' && this.fsm.state === State.Idle && this.restoring === null, 'restore() needs a fresh snooping speaker')
      this.fsm.restore(head.fsm) // Established: sessionUp() makes the (empty) Adj-RIB-In
      this.connected = head.connected
      this.rx.reset()
      this.tx.reset()
      this.rx.as4 = head.rxAs4
      if (head.rxPending.length > 0) {
        const err = this.rx.feed(head.rxPending, () => assert(false, 'a snapshot holds an incomplete message only'))
        assert(err === null, 'a snapshot holds a well-formed partial message')
      }
      this.advertised.clear()
      for (const k of head.advertised) this.advertised.add(k)
      const c = head.counters
      Object.assign(this.st, c, { messagesIn: { ...c.messagesIn }, messagesOut: { ...c.messagesOut } })
      assert(head.routes === 0 || this.adj !== null, 'routes come with a session')
      this.restoring = head.routes > 0 ? { attrs: new Map(), left: head.routes } : null
    })
  }

  /** The next RouteChunk of the snapshot given to restore(). */
  importRoutes(chunk: RouteChunk): void {
    this.exec(() => {
      const r = this.restoring
      assert(r !== null && this.adj !== null, 'importRoutes() without a restore in progress')
      for (const [id, a] of chunk.attrs) r.attrs.set(id, a)
      const adj = this.adj
      for (const [id, keys] of chunk.groups) {
        const a = r.attrs.get(id)
        assert(a !== undefined, `route chunk names unknown attribute set ${id}`)
        assert(keys.length <= r.left, 'more routes than the snapshot announced')
        for (const k of keys) this.locRib.update(adj, k, a)
        r.left -= keys.length
      }
      if (r.left === 0) this.restoring = null
    })
  }

  /** Every route of the snapshot given to restore() has arrived. */
  get restoreComplete(): boolean {
    return this.restoring === null
  }

  /** Cross-checks of the parts; cheap enough to call after every step in tests. */
  invariants(): void {
    this.fsm.invariants()
    const s = this.fsm.state
    assert((s === State.Established) === (this.adj !== null), 'an Adj-RIB-In exists exactly in Established')
    if (this.modeNow === 'snoop') assert(this.pendingAnnounce.length === 0, 'a snooping speaker plans no announcements')
    assert(this.announceIdx <= this.pendingAnnounce.length && this.withdrawIdx <= this.pendingWithdraw.length, 'pump cursors in range')
    if (s !== State.Established && s !== State.OpenConfirm) assert(this.advertised.size === 0 || this.modeNow === 'snoop', 'nothing advertised outside a session')
  }
}
