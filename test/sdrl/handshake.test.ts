// The init handshake (IHA), one transition at a time on both sides, then every message that is
// unexpected in each state: rejected with its reason, counted, and the state left as it was.
// Frames travel on the simulation's SimLinks, delivered by hand (test/sdrl/duo.ts).

import { describe, expect, it } from 'vitest'
import { NsrError } from '../../engine/errors.ts'
import { Flag, MsgType } from '../../engine/protocol/header.ts'
import { InitStep, SR, SRI } from '../../engine/sdrl/flags.ts'
import type { Socket } from '../../engine/socket/socket.ts'
import { Duo } from './duo.ts'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)

/** How far the handshake has gone. Each stage leaves the link to the side under test empty. */
const primaryStages = ['init', 'params', 'rcvdata', 'snddata', 'done', 'functional'] as const
const secondaryStages = ['setparams', 'setrcvdata', 'setsnddata', 'done', 'functional'] as const
type PrimaryStage = (typeof primaryStages)[number]
type SecondaryStage = (typeof secondaryStages)[number]

async function setup(): Promise<{ duo: Duo; sock: Socket; h: number; done: Promise<void> }> {
  const duo = new Duo()
  const { sock } = await duo.connect()
  const done = sock.replicate()
  done.catch(() => {})
  return { duo, sock, h: sock.handle, done }
}

/** Drives the primary to `stage`; the next frame from the secondary has not been sent yet. */
async function primaryAt(stage: PrimaryStage) {
  const t = await setup()
  const steps = primaryStages.indexOf(stage)
  if (steps >= 1) await t.duo.chassisRound() // prl hold answered: INIT_PARAMS sent
  for (let i = 1; i < steps; i++) {
    await t.duo.deliver(t.duo.ps) // the secondary acks the step
    await t.duo.deliver(t.duo.sp) // the primary moves on
  }
  return t
}

/** Drives the secondary to `stage`; the primary's next frame has not been sent yet. */
async function secondaryAt(stage: SecondaryStage) {
  const t = await setup()
  await t.duo.chassisRound()
  await t.duo.deliver(t.duo.ps)
  for (let i = 0; i < secondaryStages.indexOf(stage); i++) {
    await t.duo.deliver(t.duo.sp)
    await t.duo.deliver(t.duo.ps)
  }
  return t
}

describe('init handshake, transition by transition', () => {
  it('walks both sides through every SR_*/SRI_* state, with pre-existing data on both buffers', async () => {
    const duo = new Duo()
    const { sock, peer } = await duo.connect()
    const h = sock.handle
    // Pre-existing receive data (unread) and send data (accepted, not transmitted: no tx credit).
    peer.write(enc('hello'))
    peer.write(enc('world!'))
    await duo.chassisRound()
    expect(sock.rcv.length).toBe(2)
    sock.txCredit = 0
    sock.write(enc('rec-1'))
    sock.write(enc('rec-2'))
    expect(sock.snd.length).toBe(2)
    const toSecondary = Duo.recorder(duo.ps)
    const toPrimary = Duo.recorder(duo.sp)
    const app: string[] = []
    duo.s.on('split', (pair) => app.push(`split ${pair.handle}`))

    // (none) --replicate--> SR_INIT_PRIMARY / SRI_INITINPROGRESS; writes refused with EAGAIN.
    const done = sock.replicate()
    const sr = duo.sr(sock)
    expect(sr.state).toBe(SR.SR_INIT_PRIMARY)
    expect(sr.initState).toBe(SRI.SRI_INITINPROGRESS)
    expect(() => sock.write(enc('x'))).toThrow(expect.objectContaining({ code: 'EAGAIN' }))
    expect(toSecondary).toHaveLength(0)

    // The chassis holds received data, then the primary sends its parameters: SRI_SENDPARAMS.
    await duo.chassisRound()
    expect(duo.core.conns.get(h)!.mode).toBe('hold')
    expect(sr.initState).toBe(SRI.SRI_INITINPROGRESS | SRI.SRI_SENDPARAMS)
    expect(toSecondary.map((f) => f.type)).toEqual([MsgType.INIT_PARAMS])

    // Secondary: (none) --INIT_PARAMS--> SR_INIT_SECONDARY / SRI_INITINPROGRESS|SRI_SETPARAMS, 'split'.
    await duo.deliver(duo.ps)
    const pair = duo.pair(h)!
    expect(pair.state).toBe(SR.SR_INIT_SECONDARY)
    expect(pair.initState).toBe(SRI.SRI_INITINPROGRESS | SRI.SRI_SETPARAMS)
    expect(app).toEqual([`split ${h}`])
    expect(toPrimary.at(-1)).toMatchObject({ type: MsgType.INIT_ACK, seq: InitStep.PARAMS })

    // Primary: SRI_SENDPARAMS --INIT_ACK PARAMS--> +SRI_SENDRCVDATA: both chunks, then FIN.
    await duo.deliver(duo.sp)
    expect(sr.initState).toBe(SRI.SRI_INITINPROGRESS | SRI.SRI_SENDPARAMS | SRI.SRI_SENDRCVDATA)
    expect(toSecondary.slice(1).map((f) => [f.type, f.flags & Flag.FIN])).toEqual([
      [MsgType.INIT_RCVDATA, 0],
      [MsgType.INIT_RCVDATA, 0],
      [MsgType.INIT_RCVDATA, Flag.FIN],
    ])

    // Secondary: --INIT_RCVDATA FIN--> +SRI_SETRCVDATA, the chunks in the receive snoop.
    await duo.deliver(duo.ps)
    expect(pair.initState).toBe(SRI.SRI_INITINPROGRESS | SRI.SRI_SETPARAMS | SRI.SRI_SETRCVDATA)
    expect(pair.recv.queue.length).toBe(2)
    expect(toPrimary.at(-1)).toMatchObject({ type: MsgType.INIT_ACK, seq: InitStep.RCVDATA })

    // Primary: --INIT_ACK RCVDATA--> +SRI_SENDSNDDATA: both records, then FIN.
    await duo.deliver(duo.sp)
    expect(sr.initState & SRI.SRI_SENDSNDDATA).toBeTruthy()
    expect(toSecondary.slice(4).map((f) => [f.type, f.seq, f.flags & Flag.FIN])).toEqual([
      [MsgType.INIT_SNDDATA, 1, 0],
      [MsgType.INIT_SNDDATA, 2, 0],
      [MsgType.INIT_SNDDATA, 2, Flag.FIN],
    ])

    // Secondary: --INIT_SNDDATA FIN--> +SRI_SETSNDDATA, records in the send snoop and retained.
    await duo.deliver(duo.ps)
    expect(pair.initState & SRI.SRI_SETSNDDATA).toBeTruthy()
    expect(pair.seq).toBe(2)
    expect(pair.retained.length).toBe(2)
    expect(toPrimary.at(-1)).toMatchObject({ type: MsgType.INIT_ACK, seq: InitStep.SNDDATA })

    // Primary: --INIT_ACK SNDDATA--> SRI_DONE (INITINPROGRESS cleared), INIT_DONE sent.
    await duo.deliver(duo.sp)
    expect(sr.initState & SRI.SRI_DONE).toBeTruthy()
    expect(sr.initState & SRI.SRI_INITINPROGRESS).toBe(0)
    expect(toSecondary.at(-1)!.type).toBe(MsgType.INIT_DONE)

    // Secondary: --INIT_DONE--> SRI_DONE: complete (a takeover could adopt it now); DONE ack has the window.
    await duo.deliver(duo.ps)
    expect(pair.initState).toBe(SRI.SRI_DONE)
    expect(pair.complete).toBe(true)
    expect(pair.functional).toBe(false)
    expect(toPrimary.at(-1)).toMatchObject({ type: MsgType.INIT_ACK, seq: InitStep.DONE, credit: pair.window() })

    // Primary: --INIT_ACK DONE--> SR_REP_PRIMARY|SR_REP_FUNCTIONAL, FUNCTIONAL sent, fan-out released.
    await duo.deliver(duo.sp)
    expect(sr.state).toBe(SR.SR_REP_PRIMARY | SR.SR_REP_FUNCTIONAL)
    expect(sr.credit).toBe(pair.window())
    expect(toSecondary.at(-1)!.type).toBe(MsgType.FUNCTIONAL)
    await done
    await duo.chassisRound()
    expect(duo.core.conns.get(h)!.mode).toBe('both')

    // Secondary: --FUNCTIONAL--> SR_REP_SECONDARY|SR_REP_FUNCTIONAL.
    await duo.deliver(duo.ps)
    expect(pair.state).toBe(SR.SR_REP_SECONDARY | SR.SR_REP_FUNCTIONAL)

    // The pre-existing records reach the transport once credit comes, and the secondary forgets them.
    sock.addTxCredit(1000)
    await duo.run()
    expect(Buffer.concat(peer.received).toString()).toBe('rec-1rec-2')
    expect(pair.retained.length).toBe(0)
    expect(duo.p.counters.rejected + duo.s.counters.rejected).toBe(0)
  })

  it('split() before INIT_PARAMS gives the application its pair early, and the handshake fills it', async () => {
    const { duo, sock, h, done } = await setup()
    const early = duo.s.split(h)
    expect(early.state).toBe(SR.SR_INIT_SECONDARY)
    expect(early.initState).toBe(SRI.SRI_INITINPROGRESS)
    await duo.run()
    await done
    expect(duo.pair(h)).toBe(early)
    expect(early.functional).toBe(true)
    expect(duo.sr(sock).functional).toBe(true)
  })

  it('split() on the primary and replicate() on the secondary are refused with EINVAL', async () => {
    const duo = new Duo()
    expect(() => duo.p.split(1)).toThrow(NsrError)
    expect(() => duo.p.split(1)).toThrow(expect.objectContaining({ code: 'EINVAL' }))
    await expect(duo.s.replicate({ handle: 1 } as Socket)).rejects.toMatchObject({ code: 'EINVAL' })
  })

  it('a second replicate() during the handshake joins it instead of restarting it', async () => {
    const { duo, sock, done } = await setup()
    await duo.chassisRound()
    const again = sock.replicate()
    await duo.run()
    await Promise.all([done, again])
    expect(duo.sr(sock).round).toBe(1)
    expect(duo.p.counters.rejected + duo.s.counters.rejected).toBe(0)
  })
})

// ---- unexpected messages, state by state ---------------------------------------------------------

interface Msg {
  name: string
  type: number
  flags?: number
  seq?: number | ((t: { duo: Duo; h: number }) => number)
  ack?: number
  credit?: number
}

const toPrimary: Msg[] = [
  { name: 'INIT_ACK PARAMS', type: MsgType.INIT_ACK, seq: InitStep.PARAMS },
  { name: 'INIT_ACK RCVDATA', type: MsgType.INIT_ACK, seq: InitStep.RCVDATA },
  { name: 'INIT_ACK SNDDATA', type: MsgType.INIT_ACK, seq: InitStep.SNDDATA },
  { name: 'INIT_ACK DONE', type: MsgType.INIT_ACK, seq: InitStep.DONE, credit: 12345 },
  { name: 'INIT_ACK step 77', type: MsgType.INIT_ACK, seq: 77 },
  { name: 'ACK beyond sent', type: MsgType.ACK, ack: 99, credit: 1000 },
  { name: 'FLOWCTL beyond sent', type: MsgType.FLOWCTL, ack: 99, credit: 1000 },
  { name: 'INIT_NAK', type: MsgType.INIT_NAK },
  { name: 'REPLICATE (wrong direction)', type: MsgType.REPLICATE, seq: 1 },
]

// Expected reject reason per primary stage; undefined: the message is the legitimate next one.
const primaryExpect: Record<PrimaryStage, Record<string, string | undefined>> = {
  init: {
    'INIT_ACK PARAMS': 'init-ack-params-unexpected',
    'INIT_ACK RCVDATA': 'init-ack-rcvdata-unexpected',
    'INIT_ACK SNDDATA': 'init-ack-snddata-unexpected',
    'INIT_ACK DONE': 'init-ack-done-unexpected',
  },
  params: {
    'INIT_ACK RCVDATA': 'init-ack-rcvdata-unexpected',
    'INIT_ACK SNDDATA': 'init-ack-snddata-unexpected',
    'INIT_ACK DONE': 'init-ack-done-unexpected',
  },
  rcvdata: {
    'INIT_ACK PARAMS': 'init-ack-params-unexpected',
    'INIT_ACK SNDDATA': 'init-ack-snddata-unexpected',
    'INIT_ACK DONE': 'init-ack-done-unexpected',
  },
  snddata: {
    'INIT_ACK PARAMS': 'init-ack-params-unexpected',
    'INIT_ACK RCVDATA': 'init-ack-rcvdata-unexpected',
    'INIT_ACK DONE': 'init-ack-done-unexpected',
  },
  done: {
    'INIT_ACK PARAMS': 'init-ack-params-unexpected',
    'INIT_ACK RCVDATA': 'init-ack-rcvdata-unexpected',
    'INIT_ACK SNDDATA': 'init-ack-snddata-unexpected',
  },
  functional: {
    'INIT_ACK PARAMS': 'init-ack-not-initializing',
    'INIT_ACK RCVDATA': 'init-ack-not-initializing',
    'INIT_ACK SNDDATA': 'init-ack-not-initializing',
    'INIT_ACK DONE': 'init-ack-not-initializing',
    'INIT_ACK step 77': 'init-ack-not-initializing',
    'ACK beyond sent': 'ack-beyond-sent',
    'FLOWCTL beyond sent': 'ack-beyond-sent',
    INIT_NAK: 'init-nak-not-initializing',
  },
}
for (const stage of primaryStages) {
  if (stage !== 'functional') {
    primaryExpect[stage]['INIT_ACK step 77'] = 'init-ack-bad-step'
    primaryExpect[stage]['ACK beyond sent'] = 'not-functional'
    primaryExpect[stage]['FLOWCTL beyond sent'] = 'not-functional'
  }
  primaryExpect[stage]['REPLICATE (wrong direction)'] = 'primary-unexpected-type-1'
}

describe('the primary rejects what its state does not expect', () => {
  for (const stage of primaryStages) {
    for (const m of toPrimary) {
      const reason = primaryExpect[stage][m.name]
      if (!reason) continue
      it(`${stage}: ${m.name} -> ${reason}`, async () => {
        const { duo, sock, h } = await primaryAt(stage)
        const sr = duo.sr(sock)
        const before = { state: sr.state, initState: sr.initState, credit: sr.credit, ack: sr.ack, rejected: duo.p.counters.rejected }
        await duo.inject(duo.sp, m.type, m.flags ?? 0, h, typeof m.seq === 'number' ? m.seq : 0, m.ack ?? 0, m.credit ?? 0)
        expect(duo.p.counters.rejected).toBe(before.rejected + 1)
        expect(duo.p.counters.rejectReasons[reason]).toBe(1)
        expect({ state: sr.state, initState: sr.initState, credit: sr.credit, ack: sr.ack, rejected: before.rejected }).toEqual(before)
        // Nothing was lost: the handshake still completes.
        await duo.run()
        expect(duo.sr(sock).functional).toBe(true)
      })
    }
  }

  it('INIT_NAK during the handshake fails it: writes go straight to the transport again', async () => {
    const { duo, sock, peer } = await (async () => {
      const duo = new Duo()
      const c = await duo.connect()
      return { duo, ...c }
    })()
    const done = sock.replicate()
    await duo.chassisRound()
    await duo.inject(duo.sp, MsgType.INIT_NAK, 0, sock.handle, 0, 0, 0)
    await expect(done).rejects.toMatchObject({ code: 'ECLOSED' })
    expect(duo.sr(sock).functional).toBe(false)
    expect(duo.sr(sock).initializing).toBe(false)
    sock.write(enc('alone'))
    await duo.run([duo.ps])
    expect(Buffer.concat(peer.received).toString()).toBe('alone')
  })

  it('messages for a handle it does not know are rejected per type', async () => {
    const duo = new Duo()
    const cases: Array<[number, number, string]> = [
      [MsgType.ACK, 0, 'ack-unknown-handle'],
      [MsgType.FLOWCTL, 0, 'ack-unknown-handle'],
      [MsgType.INIT_ACK, InitStep.PARAMS, 'init-ack-unknown-handle'],
      [MsgType.INIT_NAK, 0, 'init-nak-unknown-handle'],
      [MsgType.UNREPLICATE, 0, 'unreplicate-unknown-handle'],
    ]
    for (const [type, seq, reason] of cases) {
      await duo.inject(duo.sp, type, 0, 4242, seq, 0, 0)
      expect(duo.p.counters.rejectReasons[reason]).toBeGreaterThan(0)
    }
    expect(duo.p.counters.rejected).toBe(cases.length)
  })
})

const toSecondary: Msg[] = [
  { name: 'INIT_RCVDATA FIN', type: MsgType.INIT_RCVDATA, flags: Flag.FIN },
  { name: 'INIT_SNDDATA FIN', type: MsgType.INIT_SNDDATA, flags: Flag.FIN, seq: 0 },
  { name: 'INIT_DONE', type: MsgType.INIT_DONE },
  { name: 'FUNCTIONAL', type: MsgType.FUNCTIONAL },
  { name: 'REPLICATE out of order', type: MsgType.REPLICATE, seq: 40 },
  { name: 'INIT_PARAMS again', type: MsgType.INIT_PARAMS },
  { name: 'ACK (wrong direction)', type: MsgType.ACK },
]

const secondaryExpect: Record<SecondaryStage, Record<string, string | undefined>> = {
  setparams: {
    'INIT_SNDDATA FIN': 'snddata-unexpected',
    INIT_DONE: 'done-unexpected',
    FUNCTIONAL: 'functional-unexpected',
    'REPLICATE out of order': 'replicate-not-functional',
  },
  setrcvdata: {
    'INIT_RCVDATA FIN': 'rcvdata-unexpected',
    INIT_DONE: 'done-unexpected',
    FUNCTIONAL: 'functional-unexpected',
    'REPLICATE out of order': 'replicate-not-functional',
  },
  setsnddata: {
    'INIT_RCVDATA FIN': 'rcvdata-unexpected',
    'INIT_SNDDATA FIN': 'snddata-unexpected',
    FUNCTIONAL: 'functional-unexpected',
    'REPLICATE out of order': 'replicate-not-functional',
  },
  done: {
    'INIT_RCVDATA FIN': 'rcvdata-unexpected',
    'INIT_SNDDATA FIN': 'snddata-unexpected',
    INIT_DONE: 'done-unexpected',
    'REPLICATE out of order': 'replicate-not-functional',
    'INIT_PARAMS again': 'params-unexpected',
  },
  functional: {
    'INIT_RCVDATA FIN': 'rcvdata-unexpected',
    'INIT_SNDDATA FIN': 'snddata-unexpected',
    INIT_DONE: 'done-unexpected',
    FUNCTIONAL: 'functional-unexpected',
    'REPLICATE out of order': 'replicate-out-of-order',
    'INIT_PARAMS again': 'params-unexpected',
  },
}
for (const stage of secondaryStages) secondaryExpect[stage]['ACK (wrong direction)'] = 'secondary-unexpected-type-2'

describe('the secondary rejects what its state does not expect', () => {
  for (const stage of secondaryStages) {
    for (const m of toSecondary) {
      const reason = secondaryExpect[stage][m.name]
      if (!reason) continue
      it(`${stage}: ${m.name} -> ${reason}`, async () => {
        const { duo, sock, h } = await secondaryAt(stage)
        const pair = duo.pair(h)!
        const before = { state: pair.state, initState: pair.initState, seq: pair.seq }
        const naks = Duo.recorder(duo.sp)
        await duo.inject(duo.ps, m.type, m.flags ?? 0, h, typeof m.seq === 'number' ? m.seq : 0, 0, 0)
        expect(duo.s.counters.rejected).toBe(1)
        expect(duo.s.counters.rejectReasons[reason]).toBe(1)
        const nak = naks.some((f) => f.type === MsgType.INIT_NAK)
        if (nak) {
          // A handshake in progress is refused: the pair goes, the primary is told and carries on alone.
          expect(pair.complete).toBe(false)
          expect(duo.pair(h)).toBeUndefined()
          await duo.run()
          expect(duo.sr(sock).functional).toBe(false)
          expect(duo.sr(sock).initializing).toBe(false)
        } else {
          expect(duo.pair(h)).toBe(pair)
          expect({ state: pair.state, initState: pair.initState, seq: pair.seq }).toEqual(before)
          await duo.run()
          expect(duo.sr(sock).functional).toBe(true)
          expect(duo.pair(h)!.functional).toBe(true)
        }
      })
    }
  }

  it('messages for a handle it does not know are rejected per type', async () => {
    const duo = new Duo()
    const cases: Array<[number, number, string]> = [
      [MsgType.INIT_RCVDATA, Flag.FIN, 'initdata-unknown-handle'],
      [MsgType.INIT_SNDDATA, Flag.FIN, 'initdata-unknown-handle'],
      [MsgType.INIT_DONE, 0, 'done-unknown-handle'],
      [MsgType.FUNCTIONAL, 0, 'functional-unknown-handle'],
      [MsgType.REPLICATE, 0, 'replicate-unknown-handle'],
      [MsgType.TXDONE, 0, 'txdone-unknown-handle'],
      [MsgType.UNREPLICATE, 0, 'unreplicate-unknown-handle'],
    ]
    for (const [type, flags, reason] of cases) {
      await duo.inject(duo.ps, type, flags, 4242, 1, 0, 0)
      expect(duo.s.counters.rejectReasons[reason]).toBeGreaterThan(0)
    }
    expect(duo.s.counters.rejected).toBe(cases.length)
  })

  it('a corrupt header never reaches either RE: the link counts it', async () => {
    const duo = new Duo()
    const frame = new Uint8Array(32)
    frame[0] = 1
    frame[1] = MsgType.ACK
    expect(duo.sp.inject(frame)).toBe(true)
    await duo.deliver(duo.sp)
    expect(duo.sp.rejects.byReason['bad-checksum']).toBe(1)
    expect(duo.p.counters.peerMessages).toBe(0)
  })
})
