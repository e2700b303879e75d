// The BGP session FSM, one transition at a time on a ManualClock: start, connect and retry, the
// OPEN exchange and what it negotiates, hold timer expiry, keepalive cadence, hold time 0, errors
// and the NOTIFICATION each produces, and the snoop mode that follows without acting.

import { beforeEach, describe, expect, it } from 'vitest'
import { ManualClock } from '../../engine/clock.ts'
import { CeaseSub, ErrCode, FsmSub, MsgType, OpenSub, as4Capability, capAs4, mpCapability, type BgpMessage, type OpenMessage } from '../../examples/bgp/codec.ts'
import { BgpFsm, OPEN_HOLD_MS, State, buildOpen, type FsmConfig, type OutboundFsmMessage, type StateChange } from '../../examples/bgp/fsm.ts'
import { ip } from './fixtures.ts'

const legal = new Set([
  'Idle>Connect',
  'Idle>Active',
  'Connect>OpenSent',
  'Connect>Active',
  'Connect>Idle',
  'Active>Connect',
  'Active>OpenSent',
  'Active>Idle',
  'OpenSent>OpenConfirm',
  'OpenSent>Active',
  'OpenSent>Idle',
  'OpenConfirm>Established',
  'OpenConfirm>Idle',
  'Established>Idle',
])

const cfg: FsmConfig = {
  localAs: 65001,
  peerAs: 65002,
  routerId: ip('10.0.0.1'),
  holdTimeS: 90,
  connectRetryMs: 5000,
  passive: false,
  as4Capability: true,
  autoRestart: true,
}

function peerOpen(over: Partial<OpenMessage> = {}): OpenMessage {
  return { type: MsgType.OPEN, version: 4, myAs: 65002, holdTimeS: 30, routerId: ip('10.0.0.2'), capabilities: [mpCapability(1, 1), as4Capability(65002)], ...over }
}

const KEEPALIVE: BgpMessage = { type: MsgType.KEEPALIVE }
const UPDATE: BgpMessage = { type: MsgType.UPDATE, withdrawn: [], attrs: null, nlri: [], mpReach: null }

class Rig {
  readonly clock = new ManualClock()
  readonly sent: OutboundFsmMessage[] = []
  readonly sentAt: number[] = []
  readonly changes: StateChange[] = []
  connects = 0
  disconnects = 0
  readonly fsm: BgpFsm

  constructor(c: Partial<FsmConfig> = {}, mode: 'active' | 'snoop' = 'active') {
    this.fsm = new BgpFsm(
      this.clock,
      { ...cfg, ...c },
      {
        send: (m) => {
          this.sent.push(m)
          this.sentAt.push(this.clock.now())
        },
        connect: () => this.connects++,
        disconnect: () => this.disconnects++,
        stateChanged: (ch) => {
          expect(legal.has(`${ch.from}>${ch.to}`), `${ch.from} -> ${ch.to}`).toBe(true)
          this.changes.push(ch)
        },
      },
      mode,
    )
  }

  get types(): number[] {
    return this.sent.map((m) => m.type)
  }

  last(): OutboundFsmMessage {
    return this.sent[this.sent.length - 1]
  }

  /** Drives Idle -> Established with the given peer OPEN. */
  establish(open = peerOpen()): void {
    this.fsm.start()
    this.fsm.tcpConnected()
    this.fsm.received(open)
    this.fsm.received(KEEPALIVE)
    expect(this.fsm.state).toBe(State.Established)
  }
}

describe('BgpFsm transitions, one by one', () => {
  let r: Rig
  beforeEach(() => {
    r = new Rig()
  })

  it('Idle -> Connect on start: asks to connect, arms ConnectRetry', () => {
    expect(r.fsm.state).toBe(State.Idle)
    r.fsm.start()
    expect(r.fsm.state).toBe(State.Connect)
    expect(r.connects).toBe(1)
    expect(r.fsm.deadlines().connectRetryMs).toBe(5000)
    expect(r.changes.map((c) => c.reason)).toEqual(['start'])
  })

  it('Connect: ConnectRetry expiry retries the connection, staying in Connect', () => {
    r.fsm.start()
    r.clock.advance(5000)
    expect(r.fsm.state).toBe(State.Connect)
    expect([r.connects, r.disconnects]).toEqual([2, 1])
    expect(r.fsm.deadlines().connectRetryMs).toBe(10000)
  })

  it('Connect -> Active on TCP failure, Active -> Connect when ConnectRetry expires', () => {
    r.fsm.start()
    r.clock.advance(1000)
    r.fsm.tcpClosed('refused')
    expect(r.fsm.state).toBe(State.Active)
    expect(r.fsm.deadlines().connectRetryMs).toBe(6000)
    r.clock.advance(5000)
    expect(r.fsm.state).toBe(State.Connect)
    expect(r.connects).toBe(2)
  })

  it('Idle -> Active when passive; Active -> OpenSent on an incoming connection', () => {
    const p = new Rig({ passive: true })
    p.fsm.start()
    expect(p.fsm.state).toBe(State.Active)
    expect(p.connects).toBe(0)
    p.fsm.tcpConnected()
    expect(p.fsm.state).toBe(State.OpenSent)
    expect(p.types).toEqual([MsgType.OPEN])
  })

  it('Connect -> OpenSent on TCP up: sends our OPEN, hold timer at 4 minutes, ConnectRetry off', () => {
    r.fsm.start()
    r.fsm.tcpConnected()
    expect(r.fsm.state).toBe(State.OpenSent)
    expect(r.sent).toEqual([buildOpen(cfg)])
    expect(r.fsm.deadlines()).toEqual({ holdMs: OPEN_HOLD_MS, keepaliveMs: null, connectRetryMs: null })
  })

  it('the OPEN we send: AS_TRANS for a 4-octet AS, with the real AS in the capability', () => {
    const open = buildOpen({ ...cfg, localAs: 4200000000 })
    expect(open.myAs).toBe(23456)
    expect(capAs4(open)).toBe(4200000000)
  })

  it('OpenSent -> OpenConfirm on an acceptable OPEN: KEEPALIVE sent, hold = min of both, keepalive = hold/3', () => {
    r.fsm.start()
    r.fsm.tcpConnected()
    r.clock.advance(100)
    r.fsm.received(peerOpen({ holdTimeS: 30 }))
    expect(r.fsm.state).toBe(State.OpenConfirm)
    expect(r.types).toEqual([MsgType.OPEN, MsgType.KEEPALIVE])
    const neg = r.fsm.negotiated!
    expect([neg.holdTimeS, neg.keepaliveMs, neg.as4, neg.peerAs, neg.ibgp]).toEqual([30, 10000, true, 65002, false])
    expect(r.fsm.deadlines()).toEqual({ holdMs: 30100, keepaliveMs: 10100, connectRetryMs: null })
  })

  it('OpenConfirm -> Established on KEEPALIVE; Established -> Idle on NOTIFICATION (no reply)', () => {
    r.establish()
    expect(r.changes.map((c) => `${c.from}>${c.to}`)).toEqual(['Idle>Connect', 'Connect>OpenSent', 'OpenSent>OpenConfirm', 'OpenConfirm>Established'])
    r.fsm.received({ type: MsgType.NOTIFICATION, code: 6, subcode: 2, data: new Uint8Array(0) })
    expect(r.fsm.state).toBe(State.Idle)
    expect(r.types).toEqual([MsgType.OPEN, MsgType.KEEPALIVE])
    expect(r.disconnects).toBe(1)
  })

  it('OpenSent -> Active when TCP closes before the peer OPEN', () => {
    r.fsm.start()
    r.fsm.tcpConnected()
    r.fsm.tcpClosed()
    expect(r.fsm.state).toBe(State.Active)
    expect(r.fsm.deadlines()).toEqual({ holdMs: null, keepaliveMs: null, connectRetryMs: 5000 })
  })

  it('OpenSent: the 4-minute hold timer expires -> NOTIFICATION hold timer expired, Idle', () => {
    r.fsm.start()
    r.fsm.tcpConnected()
    r.clock.advance(OPEN_HOLD_MS - 1)
    expect(r.fsm.state).toBe(State.OpenSent)
    r.clock.advance(1)
    expect(r.fsm.state).toBe(State.Idle)
    expect(r.last()).toMatchObject({ type: MsgType.NOTIFICATION, code: ErrCode.HOLD_TIMER_EXPIRED, subcode: 0 })
  })

  it('Established: hold timer expiry -> NOTIFICATION hold timer expired, Idle, automatic restart', () => {
    r.establish(peerOpen({ holdTimeS: 9 }))
    r.clock.advance(8999)
    expect(r.fsm.state).toBe(State.Established)
    r.clock.advance(1)
    expect(r.fsm.state).toBe(State.Idle)
    expect(r.last()).toMatchObject({ type: MsgType.NOTIFICATION, code: ErrCode.HOLD_TIMER_EXPIRED })
    expect(r.changes.at(-1)?.reason).toBe('hold timer expired')
    expect(r.fsm.counters.holdExpired).toBe(1)
    r.clock.advance(5000)
    expect(r.fsm.state).toBe(State.Connect)
    expect(r.changes.at(-1)?.reason).toBe('automatic restart')
  })

  it('every KEEPALIVE or UPDATE received restarts the hold timer', () => {
    r.establish(peerOpen({ holdTimeS: 9 }))
    for (let i = 0; i < 10; i++) {
      r.clock.advance(8000)
      r.fsm.received(i % 2 ? KEEPALIVE : UPDATE)
    }
    expect(r.fsm.state).toBe(State.Established)
    expect(r.fsm.deadlines().holdMs).toBe(r.clock.now() + 9000)
  })

  it('keepalive cadence: one KEEPALIVE every hold/3; a sent UPDATE postpones the next', () => {
    r.establish(peerOpen({ holdTimeS: 30 }))
    for (let t = 0; t < 60_000; t += 5000) {
      r.clock.advance(5000)
      r.fsm.received(KEEPALIVE)
    }
    const kas = r.sentAt.filter((_, i) => r.sent[i].type === MsgType.KEEPALIVE)
    expect(kas).toEqual([0, 10000, 20000, 30000, 40000, 50000, 60000])
    r.clock.advance(5000) // t = 65000
    r.fsm.updateSent()
    r.clock.advance(9999)
    r.fsm.received(KEEPALIVE)
    expect(r.sent.length).toBe(8) // 70000 came and went: the UPDATE at 65000 counts
    r.clock.advance(1)
    expect(r.sentAt.at(-1)).toBe(75000)
  })

  it('hold time 0: no hold timer, no keepalives, ever', () => {
    const z = new Rig({ holdTimeS: 0 })
    z.establish(peerOpen({ holdTimeS: 90 }))
    expect(z.fsm.negotiated!.holdTimeS).toBe(0)
    expect(z.fsm.deadlines()).toEqual({ holdMs: null, keepaliveMs: null, connectRetryMs: null })
    z.clock.advance(3_600_000)
    expect(z.fsm.state).toBe(State.Established)
    expect(z.types).toEqual([MsgType.OPEN, MsgType.KEEPALIVE])
  })

  it('OPEN errors: bad peer AS, our own identifier (iBGP), no IPv4 unicast -> NOTIFICATION, Idle', () => {
    const cases: [Partial<FsmConfig>, OpenMessage, number][] = [
      [{}, peerOpen({ capabilities: [as4Capability(65003)] }), OpenSub.BAD_PEER_AS],
      [{ peerAs: 65001 }, peerOpen({ myAs: 65001, capabilities: [], routerId: cfg.routerId }), OpenSub.BAD_BGP_IDENTIFIER],
      [{}, peerOpen({ capabilities: [mpCapability(2, 1)] }), OpenSub.UNSUPPORTED_CAPABILITY],
    ]
    for (const [c, open, subcode] of cases) {
      const x = new Rig(c)
      x.fsm.start()
      x.fsm.tcpConnected()
      x.fsm.received(open)
      expect(x.fsm.state).toBe(State.Idle)
      expect(x.last()).toMatchObject({ type: MsgType.NOTIFICATION, code: ErrCode.OPEN, subcode })
    }
  })

  it('a 2-octet peer (no AS4 capability) is identified by My AS; no MP capability at all implies IPv4 unicast', () => {
    r.establish(peerOpen({ capabilities: [] }))
    expect(r.fsm.negotiated!.as4).toBe(false)
  })

  it('messages the state does not allow -> FSM error NOTIFICATION with the RFC 6608 subcode', () => {
    const inOpenSent = new Rig()
    inOpenSent.fsm.start()
    inOpenSent.fsm.tcpConnected()
    inOpenSent.fsm.received(KEEPALIVE)
    expect(inOpenSent.last()).toMatchObject({ code: ErrCode.FSM, subcode: FsmSub.IN_OPENSENT })

    const inOpenConfirm = new Rig()
    inOpenConfirm.fsm.start()
    inOpenConfirm.fsm.tcpConnected()
    inOpenConfirm.fsm.received(peerOpen())
    expect(inOpenConfirm.fsm.received(UPDATE)).toBe(false)
    expect(inOpenConfirm.last()).toMatchObject({ code: ErrCode.FSM, subcode: FsmSub.IN_OPENCONFIRM })

    r.establish()
    r.fsm.received(peerOpen())
    expect(r.last()).toMatchObject({ code: ErrCode.FSM, subcode: FsmSub.IN_ESTABLISHED })
    expect(r.fsm.state).toBe(State.Idle)
  })

  it('UPDATE in Established is accepted for processing; a wire error sends its NOTIFICATION', () => {
    r.establish()
    expect(r.fsm.received(UPDATE)).toBe(true)
    r.fsm.error({ code: 3, subcode: 6, data: new Uint8Array([0x40, 1, 1, 9]), reason: 'bad origin' })
    expect(r.last()).toEqual({ type: MsgType.NOTIFICATION, code: 3, subcode: 6, data: new Uint8Array([0x40, 1, 1, 9]) })
    expect(r.fsm.state).toBe(State.Idle)
  })

  it('stop() sends Cease/administrative shutdown once the peer has our OPEN, and does not restart', () => {
    r.establish()
    r.fsm.stop('maintenance')
    expect(r.last()).toMatchObject({ code: ErrCode.CEASE, subcode: CeaseSub.ADMIN_SHUTDOWN })
    expect(r.fsm.state).toBe(State.Idle)
    r.clock.advance(60_000)
    expect(r.fsm.state).toBe(State.Idle)
    const c = new Rig()
    c.fsm.start()
    c.fsm.stop()
    expect(c.sent).toEqual([])
  })
})

describe('BgpFsm snoop mode', () => {
  it('follows the observed OPEN and the peer, never acts, and its deadlines match the active FSM', () => {
    const a = new Rig()
    const s = new Rig({}, 'snoop')
    a.fsm.start()
    s.fsm.start()
    a.fsm.tcpConnected()
    s.fsm.tcpConnected()
    expect(s.fsm.state).toBe(State.Connect)
    s.fsm.observedSent(a.sent[0])
    expect(s.fsm.state).toBe(State.OpenSent)
    a.clock.advance(700)
    s.clock.advance(700)
    for (const f of [a, s]) f.fsm.received(peerOpen({ holdTimeS: 9 }))
    s.fsm.observedSent(a.sent[1])
    for (const f of [a, s]) f.fsm.received(KEEPALIVE)
    expect(s.fsm.state).toBe(State.Established)
    expect(s.fsm.negotiated).toEqual(a.fsm.negotiated)
    expect(s.fsm.deadlines()).toEqual(a.fsm.deadlines())
    // Time passes; the snoop's timers fall due but it sends nothing and stays Established.
    a.clock.advance(20_000)
    s.clock.advance(20_000)
    expect(s.sent).toEqual([])
    expect([s.connects, s.disconnects]).toEqual([0, 0])
    expect(s.fsm.state).toBe(State.Established)
    expect(s.fsm.holdDueWhileSnooping).toBe(true)
    expect(a.changes.map((c) => c.reason)).toContain('hold timer expired') // the active one was not fed
  })

  it('the record of our OPEN starts a snoop that was Idle: Idle -> Connect -> OpenSent, as the primary went', () => {
    const s = new Rig({}, 'snoop')
    s.fsm.observedSent(buildOpen(cfg))
    expect(s.changes.map((c) => `${c.from}>${c.to} ${c.reason}`)).toEqual(['Idle>Connect observed start', 'Connect>OpenSent observed OPEN sent'])
    s.fsm.observedSent(buildOpen(cfg))
    expect(s.fsm.counters.snoopAnomalies).toBe(1) // a second OPEN on one connection
    expect(s.sent).toEqual([])
  })

  it('an error seen while snooping is owed, not sent; the observed NOTIFICATION settles it', () => {
    const s = new Rig({}, 'snoop')
    s.fsm.start()
    s.fsm.observedSent(buildOpen(cfg))
    s.fsm.received(peerOpen({ myAs: 1, capabilities: [] }))
    expect(s.fsm.state).toBe(State.Idle)
    expect(s.sent).toEqual([])
    expect(s.fsm.owedNotification?.subcode).toBe(OpenSub.BAD_PEER_AS)
    s.fsm.observedSent({ type: MsgType.NOTIFICATION, code: 2, subcode: 2, data: new Uint8Array(0) })
    expect(s.fsm.owedNotification).toBeNull()
  })

  it('takeover in Established: one KEEPALIVE at once, timers restarted from now', () => {
    const s = new Rig({}, 'snoop')
    s.fsm.start()
    s.fsm.observedSent(buildOpen(cfg))
    s.fsm.received(peerOpen({ holdTimeS: 9 }))
    s.fsm.received(KEEPALIVE)
    s.clock.advance(12_000)
    s.fsm.takeover(true)
    expect(s.types).toEqual([MsgType.KEEPALIVE])
    expect(s.fsm.deadlines()).toEqual({ holdMs: 21_000, keepaliveMs: 15_000, connectRetryMs: null })
    s.clock.advance(3000)
    expect(s.types).toEqual([MsgType.KEEPALIVE, MsgType.KEEPALIVE])
  })
})
