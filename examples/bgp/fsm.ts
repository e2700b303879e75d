// The BGP session FSM (RFC 4271 section 8), sans-IO: it reacts to inputs (start, stop, TCP up and
// down, decoded messages, wire errors, timer expiry) and acts through FsmActions (send a message,
// open or close the connection, report a state change). Timers are named objects on an injected
// Clock. It runs in two modes:
//   active  - the RFC FSM: it sends OPEN, KEEPALIVE and NOTIFICATION and reacts to its timers;
//   snoop   - NSR secondary: it never acts. It follows the primary from what the primary sent
//             (observedSent) and what the peer sent (received), so its state, negotiated
//             parameters and timer deadlines match the primary's; its timers only record that
//             they fell due. takeover() turns it active where the snoop left it.
//
// States: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
// Legal transitions (no DelayOpen, no collision detection: one connection per FSM):
//   Idle        -> Connect      start() (active open), the automatic restart after an error, or
//                               (snoop) the primary's connection or OPEN seen
//   Idle        -> Active       the same with `passive`
//   Connect     -> OpenSent     TCP connected: OPEN sent
//   Connect     -> Active       TCP connection failed
//   Connect     -> Idle         stop(), or a message before our OPEN
//   Active      -> Connect      ConnectRetry timer expired (not passive)
//   Active      -> OpenSent     TCP connected (incoming): OPEN sent
//   Active      -> Idle         stop(), or a message before our OPEN
//   OpenSent    -> OpenConfirm  acceptable OPEN received: KEEPALIVE sent
//   OpenSent    -> Active       TCP closed before the peer's OPEN
//   OpenSent    -> Idle         OPEN error, NOTIFICATION received, hold timer expired, stop(), FSM error
//   OpenConfirm -> Established  KEEPALIVE received
//   OpenConfirm -> Idle         NOTIFICATION received, hold timer expired, TCP closed, stop(), FSM error
//   Established -> Idle         NOTIFICATION received, hold timer expired, UPDATE error, TCP closed, stop(), FSM error
//   Idle        -> any          (snoop, fresh FSM only) restore(): a secondary that joins a running
//                               session takes the primary's state from a snapshot
// Snoop mode walks the same edges, driven by the records of what the primary sent (our OPEN moves
// Connect/Active -> OpenSent; our NOTIFICATION moves to Idle) and by what the peer sent. The peer's
// messages that arrive before the record of our OPEN wait in the speaker (both sides send OPEN at
// once, so the peer's OPEN proves nothing about ours).
//
// Timers: hold (OpenSent: 4 minutes; then the negotiated hold time, restarted by every KEEPALIVE
// or UPDATE received), keepalive (hold/3, restarted by every KEEPALIVE or UPDATE sent), and
// ConnectRetry (Connect/Active retries; also the delay of the automatic restart from Idle).
// Negotiated hold 0 disables both hold and keepalive timers. Deadlines are data (lastRecv + hold,
// lastSent + keepalive); a Timer fires at or before its deadline and re-arms when it moved.

import { type Clock, Timer } from '../../engine/clock.ts'
import { assert } from '../../engine/errors.ts'
import {
  AFI_IPV4,
  AS_TRANS,
  BGP_VERSION,
  CapCode,
  CeaseSub,
  ErrCode,
  FsmSub,
  MsgType,
  OpenSub,
  SAFI_UNICAST,
  as4Capability,
  capAs4,
  capMp,
  hasMpCapabilities,
  mpCapability,
  type BgpMessage,
  type KeepaliveMessage,
  type NotificationMessage,
  type OpenMessage,
  type WireError,
} from './codec.ts'

export const State = {
  Idle: 'Idle',
  Connect: 'Connect',
  Active: 'Active',
  OpenSent: 'OpenSent',
  OpenConfirm: 'OpenConfirm',
  Established: 'Established',
} as const
export type State = (typeof State)[keyof typeof State]

/** The hold time while waiting for the peer's OPEN (RFC 4271 8.2.2 suggests 4 minutes). */
export const OPEN_HOLD_MS = 240_000

/** What both OPENs agreed on. Exists in OpenConfirm and Established only. */
export interface Negotiated {
  holdTimeS: number
  /** 0 when the hold time is 0: no keepalives. */
  keepaliveMs: number
  /** Both advertised the 4-octet AS capability. */
  as4: boolean
  peerAs: number
  peerRouterId: number
  ibgp: boolean
  localOpen: OpenMessage
  peerOpen: OpenMessage
}

/** State is data: each variant carries what exists only in that state. */
export type Phase =
  | { state: typeof State.Idle }
  | { state: typeof State.Connect }
  | { state: typeof State.Active }
  | { state: typeof State.OpenSent; localOpen: OpenMessage }
  | { state: typeof State.OpenConfirm; localOpen: OpenMessage; neg: Negotiated }
  | { state: typeof State.Established; localOpen: OpenMessage; neg: Negotiated }

export interface StateChange {
  from: State
  to: State
  reason: string
  atMs: number
}

export interface FsmConfig {
  localAs: number
  /** Expected peer AS; 0 accepts any. */
  peerAs: number
  /** Our BGP identifier, unsigned 32-bit. */
  routerId: number
  holdTimeS: number
  connectRetryMs: number
  /** Wait for the peer to connect (Idle -> Active) instead of connecting (Idle -> Connect). */
  passive: boolean
  /** Advertise the 4-octet AS capability (RFC 6793). */
  as4Capability: boolean
  /** After an error drops the session to Idle, start again after connectRetryMs. */
  autoRestart: boolean
}

export type OutboundFsmMessage = OpenMessage | KeepaliveMessage | NotificationMessage

export interface FsmActions {
  /** Write one whole message. Called in active mode only. */
  send(msg: OutboundFsmMessage): void
  /** Open the TCP connection. Active mode only. */
  connect(): void
  /** Close the TCP connection. Active mode only. */
  disconnect(): void
  /** Every transition, in both modes. */
  stateChanged(change: StateChange): void
}

export type FsmMode = 'active' | 'snoop'

/**
 * The FSM as data, for a state transfer to a fresh snooping secondary (the speaker's snapshot()).
 * Timer deadlines travel as time left, since each thread's clock has its own origin.
 */
export interface FsmSnapshot {
  state: State
  localOpen: OpenMessage | null
  neg: Negotiated | null
  manuallyStopped: boolean
  owedNotification: WireError | null
  holdLeftMs: number | null
  keepaliveLeftMs: number | null
  connectRetryLeftMs: number | null
  counters: BgpFsm['counters']
}

export interface TimerDeadlines {
  holdMs: number | null
  keepaliveMs: number | null
  connectRetryMs: number | null
}

/** A named timer with a deadline that may move later without rescheduling. */
class DeadlineTimer {
  deadlineMs: number | null = null
  private firesAtMs = 0
  private readonly clock: Clock
  private readonly timer: Timer
  private readonly onDue: () => void

  constructor(clock: Clock, name: string, onDue: () => void) {
    this.clock = clock
    this.onDue = onDue
    this.timer = new Timer(clock, name, () => this.fire())
  }

  get running(): boolean {
    return this.timer.running
  }

  set(deadlineMs: number): void {
    this.deadlineMs = deadlineMs
    if (!this.timer.running || this.firesAtMs > deadlineMs) {
      this.firesAtMs = deadlineMs
      this.timer.start(Math.max(0, deadlineMs - this.clock.now()))
    }
  }

  clear(): void {
    this.deadlineMs = null
    this.timer.stop()
  }

  private fire(): void {
    if (this.deadlineMs === null) return
    if (this.clock.now() >= this.deadlineMs) this.onDue()
    else this.set(this.deadlineMs)
  }
}

export function keepaliveMsFor(holdTimeS: number): number {
  return holdTimeS === 0 ? 0 : Math.floor((holdTimeS * 1000) / 3)
}

/** The OPEN a speaker with this config sends. */
export function buildOpen(cfg: FsmConfig): OpenMessage {
  const capabilities = [mpCapability(AFI_IPV4, SAFI_UNICAST)]
  if (cfg.as4Capability) capabilities.push(as4Capability(cfg.localAs))
  return {
    type: MsgType.OPEN,
    version: BGP_VERSION,
    myAs: cfg.localAs > 0xffff ? AS_TRANS : cfg.localAs,
    holdTimeS: cfg.holdTimeS,
    routerId: cfg.routerId,
    capabilities,
  }
}

/** Checks the peer's OPEN against ours and the config (RFC 4271 6.2). */
export function negotiate(localOpen: OpenMessage, peerOpen: OpenMessage, cfg: FsmConfig): Negotiated | WireError {
  // A speaker that did not advertise the 4-octet capability sees the peer as a 2-octet one would.
  const as4 = capAs4(localOpen) !== null ? capAs4(peerOpen) : null
  const peerAs = as4 ?? peerOpen.myAs
  if (cfg.peerAs !== 0 && peerAs !== cfg.peerAs) {
    return { code: ErrCode.OPEN, subcode: OpenSub.BAD_PEER_AS, data: new Uint8Array(0), reason: `peer AS ${peerAs}, expected ${cfg.peerAs}` }
  }
  const ibgp = peerAs === cfg.localAs
  if (ibgp && peerOpen.routerId === cfg.routerId) {
    return { code: ErrCode.OPEN, subcode: OpenSub.BAD_BGP_IDENTIFIER, data: new Uint8Array(0), reason: 'peer uses our BGP identifier' }
  }
  if (hasMpCapabilities(peerOpen) && !capMp(peerOpen, AFI_IPV4, SAFI_UNICAST)) {
    const cap = mpCapability(AFI_IPV4, SAFI_UNICAST)
    return {
      code: ErrCode.OPEN,
      subcode: OpenSub.UNSUPPORTED_CAPABILITY,
      data: new Uint8Array([CapCode.MULTIPROTOCOL, cap.value.length, ...cap.value]),
      reason: 'peer does not support IPv4 unicast',
    }
  }
  const holdTimeS = Math.min(localOpen.holdTimeS, peerOpen.holdTimeS)
  return {
    holdTimeS,
    keepaliveMs: keepaliveMsFor(holdTimeS),
    as4: as4 !== null,
    peerAs,
    peerRouterId: peerOpen.routerId,
    ibgp,
    localOpen,
    peerOpen,
  }
}

export class BgpFsm {
  private phase: Phase = { state: State.Idle }
  private modeNow: FsmMode
  private readonly clock: Clock
  private readonly cfg: FsmConfig
  private readonly actions: FsmActions
  private readonly hold: DeadlineTimer
  private readonly keepalive: DeadlineTimer
  private readonly connectRetry: DeadlineTimer
  /** stop() was called: no automatic restart until start(). */
  private manuallyStopped = true
  /** Snoop: a NOTIFICATION the primary owes the peer (we saw the error; not yet its record). */
  owedNotification: WireError | null = null
  /** Snoop: the hold timer fell due while snooping (the primary acts on it, not us). */
  holdDueWhileSnooping = false
  readonly counters = { transitions: 0, holdExpired: 0, keepalivesSent: 0, connectRetries: 0, snoopAnomalies: 0 }

  constructor(clock: Clock, cfg: FsmConfig, actions: FsmActions, mode: FsmMode = 'active') {
    this.clock = clock
    this.cfg = cfg
    this.actions = actions
    this.modeNow = mode
    this.hold = new DeadlineTimer(clock, 'hold', () => this.onHoldTimer())
    this.keepalive = new DeadlineTimer(clock, 'keepalive', () => this.onKeepaliveTimer())
    this.connectRetry = new DeadlineTimer(clock, 'connectRetry', () => this.onConnectRetryTimer())
  }

  get state(): State {
    return this.phase.state
  }

  get mode(): FsmMode {
    return this.modeNow
  }

  get negotiated(): Negotiated | null {
    return this.phase.state === State.OpenConfirm || this.phase.state === State.Established ? this.phase.neg : null
  }

  get localOpen(): OpenMessage | null {
    return 'localOpen' in this.phase ? this.phase.localOpen : null
  }

  get config(): Readonly<FsmConfig> {
    return this.cfg
  }

  deadlines(): TimerDeadlines {
    return { holdMs: this.hold.deadlineMs, keepaliveMs: this.keepalive.deadlineMs, connectRetryMs: this.connectRetry.deadlineMs }
  }

  // -------------------------------------------------------------------------------------------
  // Inputs

  /** ManualStart. */
  start(): void {
    this.manuallyStopped = false
    if (this.phase.state === State.Idle) this.enterConnectOrActive('start')
    this.invariants()
  }

  /** ManualStop: Cease if the peer has our OPEN, then Idle. */
  stop(reason = 'stop'): void {
    this.manuallyStopped = true
    if (this.phase.state !== State.Idle) {
      const s = this.phase.state
      if (s === State.OpenSent || s === State.OpenConfirm || s === State.Established) {
        this.notify({ code: ErrCode.CEASE, subcode: CeaseSub.ADMIN_SHUTDOWN, data: new Uint8Array(0), reason })
      }
      this.enterIdle(s, reason)
    }
    this.connectRetry.clear()
    this.invariants()
  }

  /** The TCP connection is up (our connect or the peer's). */
  tcpConnected(): void {
    const s = this.phase.state
    if (s === State.Connect || s === State.Active) {
      if (this.modeNow === 'active') this.enterOpenSent(s, buildOpen(this.cfg), 'TCP connected')
    } else if (s === State.Idle) {
      if (this.modeNow === 'active') this.actions.disconnect() // RFC 4271 8.2.2: Idle refuses connections
      else {
        // Snoop: the primary opened a connection, so it was started.
        this.manuallyStopped = false
        this.enterConnectOrActive('observed connection')
      }
    }
    this.invariants()
  }

  /** The TCP connection failed or closed. */
  tcpClosed(reason = 'TCP closed'): void {
    const s = this.phase.state
    switch (s) {
      case State.Connect:
      case State.OpenSent:
        this.transition(s, { state: State.Active }, reason)
        this.enterActive()
        break
      case State.OpenConfirm:
      case State.Established:
        this.enterIdle(s, reason)
        break
      default:
        break
    }
    this.invariants()
  }

  /** A decoded message from the peer. Returns true when the caller should process it (an UPDATE in Established). */
  received(msg: BgpMessage): boolean {
    let accept = false
    const s = this.phase.state
    switch (msg.type) {
      case MsgType.NOTIFICATION:
        if (s !== State.Idle) this.enterIdle(s, `NOTIFICATION received ${msg.code}/${msg.subcode}`)
        break
      case MsgType.OPEN:
        this.onOpen(msg)
        break
      case MsgType.KEEPALIVE:
        if (s === State.OpenConfirm) this.enterEstablished()
        else if (s === State.Established) this.touchHold()
        else this.unexpected('KEEPALIVE')
        break
      case MsgType.UPDATE:
        if (s === State.Established) {
          this.touchHold()
          accept = true
        } else this.unexpected('UPDATE')
        break
    }
    this.invariants()
    return accept
  }

  /** Bad input from the peer (a wire error or a semantic UPDATE error): NOTIFICATION, Idle. */
  error(e: WireError): void {
    const s = this.phase.state
    if (s !== State.Idle) {
      this.notify(e)
      this.enterIdle(s, e.reason)
    }
    this.invariants()
  }

  /** We sent (active) or the primary sent (snoop) an UPDATE: the keepalive deadline moves. */
  updateSent(): void {
    this.touchKeepalive()
  }

  /** Snoop: a whole message the primary wrote. */
  observedSent(msg: BgpMessage): void {
    assert(this.modeNow === 'snoop', 'observedSent outside snoop mode')
    const s = this.phase.state
    switch (msg.type) {
      case MsgType.OPEN:
        if (s === State.Idle) {
          this.manuallyStopped = false
          this.enterConnectOrActive('observed start')
        }
        if (this.phase.state === State.Connect || this.phase.state === State.Active) {
          this.enterOpenSent(this.phase.state, msg, 'observed OPEN sent')
        } else this.counters.snoopAnomalies++ // a second OPEN on one connection
        break
      case MsgType.KEEPALIVE:
      case MsgType.UPDATE:
        this.touchKeepalive()
        break
      case MsgType.NOTIFICATION:
        this.owedNotification = null
        if (s !== State.Idle) this.enterIdle(s, `observed NOTIFICATION sent ${msg.code}/${msg.subcode}`)
        break
    }
    this.invariants()
  }

  /**
   * Snoop -> active. Never sends a second OPEN: in OpenSent it waits for the peer's; in OpenConfirm
   * and Established it sends a KEEPALIVE at once and restarts its timers; in Connect/Active it
   * sends the first OPEN if the connection is up (`connected`); in Idle it sends a NOTIFICATION
   * the primary owed.
   */
  takeover(connected: boolean): void {
    assert(this.modeNow === 'snoop', 'takeover outside snoop mode')
    this.modeNow = 'active'
    this.holdDueWhileSnooping = false
    const now = this.clock.now()
    const p = this.phase
    switch (p.state) {
      case State.Idle:
        if (this.owedNotification) {
          this.actions.send(toNotification(this.owedNotification))
          this.owedNotification = null
          this.actions.disconnect()
        }
        this.scheduleRestart()
        break
      case State.Connect:
      case State.Active:
        if (connected) this.enterOpenSent(p.state, buildOpen(this.cfg), 'takeover: TCP connected')
        else this.connectRetry.set(now + this.cfg.connectRetryMs)
        break
      case State.OpenSent:
        this.hold.set(now + OPEN_HOLD_MS)
        break
      case State.OpenConfirm:
      case State.Established:
        this.sendKeepalive()
        if (p.neg.keepaliveMs > 0) this.hold.set(now + p.neg.holdTimeS * 1000)
        break
    }
    this.invariants()
  }

  /** The FSM as data (see FsmSnapshot). */
  snapshot(): FsmSnapshot {
    const now = this.clock.now()
    const left = (t: DeadlineTimer): number | null => (t.deadlineMs === null ? null : Math.max(0, t.deadlineMs - now))
    const p = this.phase
    return {
      state: p.state,
      localOpen: 'localOpen' in p ? p.localOpen : null,
      neg: 'neg' in p ? p.neg : null,
      manuallyStopped: this.manuallyStopped,
      owedNotification: this.owedNotification,
      holdLeftMs: left(this.hold),
      keepaliveLeftMs: left(this.keepalive),
      connectRetryLeftMs: left(this.connectRetry),
      counters: { ...this.counters },
    }
  }

  /**
   * Snoop: becomes the FSM of `s` (taken from the primary) in one step, Idle -> s.state, reported
   * like any transition. Only a fresh FSM (Idle, never started) in snoop mode may be restored.
   */
  restore(s: FsmSnapshot): void {
    assert(this.modeNow === 'snoop' && this.phase.state === State.Idle, 'restore() needs a fresh snooping FSM')
    let to: Phase
    switch (s.state) {
      case State.OpenSent:
        assert(s.localOpen !== null, 'an OpenSent snapshot carries our OPEN')
        to = { state: s.state, localOpen: s.localOpen }
        break
      case State.OpenConfirm:
      case State.Established:
        assert(s.localOpen !== null && s.neg !== null, `an ${s.state} snapshot carries both OPENs`)
        to = { state: s.state, localOpen: s.localOpen, neg: s.neg }
        break
      default:
        to = { state: s.state }
    }
    this.manuallyStopped = s.manuallyStopped
    this.owedNotification = s.owedNotification
    if (to.state !== State.Idle) this.transition(State.Idle, to, 'restored from the primary')
    const now = this.clock.now()
    for (const [t, left] of [
      [this.hold, s.holdLeftMs],
      [this.keepalive, s.keepaliveLeftMs],
      [this.connectRetry, s.connectRetryLeftMs],
    ] as const) {
      if (left === null) t.clear()
      else t.set(now + left)
    }
    Object.assign(this.counters, s.counters)
    this.invariants()
  }

  /** Stops every timer for good, sending nothing: the owner is going away (a dead or demoted RE). */
  halt(): void {
    this.clearTimers()
  }

  // -------------------------------------------------------------------------------------------
  // The one state-changing function, and entry actions

  private transition(from: State, to: Phase, reason: string): void {
    assert(this.phase.state === from, `transition ${from} -> ${to.state} from ${this.phase.state}`)
    this.phase = to
    this.counters.transitions++
    this.actions.stateChanged({ from, to: to.state, reason, atMs: this.clock.now() })
  }

  private enterConnectOrActive(reason: string): void {
    this.clearTimers()
    if (this.cfg.passive) {
      this.transition(State.Idle, { state: State.Active }, reason)
      this.enterActive()
    } else {
      this.transition(State.Idle, { state: State.Connect }, reason)
      this.enterConnect()
    }
  }

  private enterConnect(): void {
    if (this.modeNow !== 'active') return
    this.connectRetry.set(this.clock.now() + this.cfg.connectRetryMs)
    this.actions.connect()
  }

  private enterActive(): void {
    this.hold.clear()
    this.keepalive.clear()
    if (this.modeNow !== 'active') return
    this.connectRetry.set(this.clock.now() + this.cfg.connectRetryMs)
  }

  private enterOpenSent(from: typeof State.Connect | typeof State.Active, localOpen: OpenMessage, reason: string): void {
    this.connectRetry.clear()
    this.transition(from, { state: State.OpenSent, localOpen }, reason)
    if (this.modeNow === 'active') this.actions.send(localOpen)
    this.hold.set(this.clock.now() + OPEN_HOLD_MS)
  }

  private enterOpenConfirm(localOpen: OpenMessage, neg: Negotiated): void {
    this.transition(State.OpenSent, { state: State.OpenConfirm, localOpen, neg }, 'OPEN received')
    this.hold.clear()
    this.keepalive.clear()
    if (neg.keepaliveMs > 0) {
      this.hold.set(this.clock.now() + neg.holdTimeS * 1000)
      this.keepalive.set(this.clock.now() + neg.keepaliveMs)
    }
    if (this.modeNow === 'active') this.sendKeepalive()
  }

  private enterEstablished(): void {
    const p = this.phase
    assert(p.state === State.OpenConfirm, 'Established comes from OpenConfirm')
    this.transition(State.OpenConfirm, { state: State.Established, localOpen: p.localOpen, neg: p.neg }, 'KEEPALIVE received')
    this.touchHold()
  }

  private enterIdle(from: State, reason: string): void {
    this.clearTimers()
    this.transition(from, { state: State.Idle }, reason)
    if (this.modeNow === 'active') {
      this.actions.disconnect()
      this.scheduleRestart()
    }
  }

  private scheduleRestart(): void {
    if (this.cfg.autoRestart && !this.manuallyStopped && this.phase.state === State.Idle) {
      this.connectRetry.set(this.clock.now() + this.cfg.connectRetryMs)
    }
  }

  // -------------------------------------------------------------------------------------------
  // Handlers

  private onOpen(open: OpenMessage): void {
    if (this.phase.state !== State.OpenSent) {
      this.unexpected('OPEN')
      return
    }
    const localOpen = this.phase.localOpen
    const neg = negotiate(localOpen, open, this.cfg)
    if ('reason' in neg) {
      this.error(neg)
      return
    }
    this.enterOpenConfirm(localOpen, neg)
  }

  /** A message the state does not allow: FSM error (RFC 6608 subcodes), Idle. */
  private unexpected(what: string): void {
    const s = this.phase.state
    if (s === State.Idle) return
    const subcode = s === State.OpenSent ? FsmSub.IN_OPENSENT : s === State.OpenConfirm ? FsmSub.IN_OPENCONFIRM : s === State.Established ? FsmSub.IN_ESTABLISHED : FsmSub.UNSPECIFIED
    this.error({ code: ErrCode.FSM, subcode, data: new Uint8Array(0), reason: `${what} in ${s}` })
  }

  private onHoldTimer(): void {
    if (this.modeNow === 'snoop') {
      this.holdDueWhileSnooping = true
      return
    }
    const s = this.phase.state
    this.counters.holdExpired++
    this.notify({ code: ErrCode.HOLD_TIMER_EXPIRED, subcode: 0, data: new Uint8Array(0), reason: 'hold timer expired' })
    this.enterIdle(s, 'hold timer expired')
    this.invariants()
  }

  private onKeepaliveTimer(): void {
    if (this.modeNow === 'snoop') return
    this.sendKeepalive()
    this.invariants()
  }

  private onConnectRetryTimer(): void {
    if (this.modeNow === 'snoop') return
    this.connectRetry.deadlineMs = null
    this.counters.connectRetries++
    switch (this.phase.state) {
      case State.Idle:
        if (!this.manuallyStopped) this.enterConnectOrActive('automatic restart')
        break
      case State.Connect:
        this.actions.disconnect()
        this.enterConnect()
        break
      case State.Active:
        this.transition(State.Active, { state: State.Connect }, 'ConnectRetry timer expired')
        this.enterConnect()
        break
      default:
        break
    }
    this.invariants()
  }

  // -------------------------------------------------------------------------------------------
  // Helpers

  private sendKeepalive(): void {
    this.counters.keepalivesSent++
    this.actions.send({ type: MsgType.KEEPALIVE })
    this.touchKeepalive()
  }

  private notify(e: WireError): void {
    if (this.modeNow === 'active') this.actions.send(toNotification(e))
    else this.owedNotification = e
  }

  private touchHold(): void {
    const neg = this.negotiated
    if (neg && neg.keepaliveMs > 0) this.hold.set(this.clock.now() + neg.holdTimeS * 1000)
  }

  private touchKeepalive(): void {
    const neg = this.negotiated
    if (neg && neg.keepaliveMs > 0) this.keepalive.set(this.clock.now() + neg.keepaliveMs)
  }

  private clearTimers(): void {
    this.hold.clear()
    this.keepalive.clear()
    this.connectRetry.clear()
  }

  /** Checked after every input. */
  invariants(): void {
    const s = this.phase.state
    const neg = this.negotiated
    const timed = neg !== null && neg.keepaliveMs > 0
    assert((s === State.OpenConfirm || s === State.Established) === (neg !== null), 'negotiated parameters exist exactly in OpenConfirm/Established')
    if (s === State.OpenSent) assert(this.hold.deadlineMs !== null, 'OpenSent has a hold deadline')
    else assert((this.hold.deadlineMs !== null) === timed, `hold deadline in ${s}`)
    assert((this.keepalive.deadlineMs !== null) === timed, `keepalive deadline in ${s}`)
    if (this.modeNow === 'active') {
      if (s === State.Connect || s === State.Active) assert(this.connectRetry.running, `ConnectRetry armed in ${s}`)
      if (s !== State.Idle && s !== State.Connect && s !== State.Active) assert(!this.connectRetry.running, `ConnectRetry idle in ${s}`)
      if (this.hold.deadlineMs !== null) assert(this.hold.running, 'hold timer armed')
      if (this.keepalive.deadlineMs !== null) assert(this.keepalive.running, 'keepalive timer armed')
    }
  }
}

export function toNotification(e: WireError): NotificationMessage {
  return { type: MsgType.NOTIFICATION, code: e.code, subcode: e.subcode, data: e.data }
}
