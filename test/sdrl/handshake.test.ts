// The init handshake (IHA), one transition at a time on both sides, then every message that is
// unexpected in each state: rejected with its reason, counted, and the state left as it was.
// Frames travel on the simulation's SimLinks, delivered by hand (test/sdrl/duo.ts).
//
// The primary sends the whole handshake at once when the chassis holds (INIT_PARAMS, INIT_RCVDATA
// ... FIN, INIT_SNDDATA ... FIN, INIT_DONE); the secondary acks every step, and those acks move
// the primary's sub-states. So a stage is reached by delivering that many frames to the secondary
// (one per step when no data is pre-existing) and, for the primary, their acks.

import { pack } from 'msgpackr'
import { describe, expect, it } from 'vitest'
import { NsrError } from '../../engine/errors.ts'
import { Flag, MsgType } from '../../engine/protocol/header.ts'
import { InitStep, SR, SRI } from '../../engine/sdrl/flags.ts'
import { RefusedHandshakes } from '../../engine/sdrl/secondary.ts'
import type { Socket } from '../../engine/socket/socket.ts'
import { Duo } from './duo.ts'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)

/** How far the handshake has gone. */
const primaryStages = ['init', 'params', 'rcvdata', 'snddata', 'done', 'functional'] as const
const secondaryStages = ['setparams', 'setrcvdata', 'setsnddata', 'done', 'functional'] as const
type PrimaryStage = (typeof primaryStages)[number]
type SecondaryStage = (typeof secondaryStages)[number]

/** The frames of a handshake with no pre-existing data: PARAMS, RCVDATA FIN, SNDDATA FIN, DONE. */
const HANDSHAKE_FRAMES = 4

const refusedOf = (duo: Duo): RefusedHandshakes =>
  (duo.s as unknown as { secondary: { refusedInit: RefusedHandshakes } }).secondary.refusedInit

async function setup(): Promise<{ duo: Duo; sock: Socket; h: number; done: Promise<void> }> {
  const duo = new Duo()
  const { sock } = await duo.connect()
  const done = sock.replicate()
  done.catch(() => {})
  return { duo, sock, h: sock.handle, done }
}

/**
 * Drives the primary to `stage`: the secondary has taken one frame per step before it and the
 * primary every ack of those; the link to the primary is empty, the rest of the handshake is still
 * on the link to the secondary.
 */
async function primaryAt(stage: PrimaryStage) {
  const t = await setup()
  const steps = primaryStages.indexOf(stage)
  if (steps >= 1) await t.duo.chassisRound() // prl hold answered: the whole handshake sent
  if (steps >= 2) {
    await t.duo.deliver(t.duo.ps, steps - 1) // the secondary takes (and acks) that many steps
    await t.duo.deliver(t.duo.sp) // the primary takes the acks
  }
  if (stage === 'functional') await t.duo.deliver(t.duo.ps) // FUNCTIONAL: the link to the secondary is empty
  return t
}

/** Drives the secondary to `stage`; the rest of the handshake is still queued on the link to it. */
async function secondaryAt(stage: SecondaryStage) {
  const t = await setup()
  await t.duo.chassisRound()
  if (stage !== 'functional') {
    await t.duo.deliver(t.duo.ps, secondaryStages.indexOf(stage) + 1)
    return t
  }
  await t.duo.deliver(t.duo.ps)
  await t.duo.deliver(t.duo.sp) // the DONE ack: the primary sends FUNCTIONAL
  await t.duo.deliver(t.duo.ps)
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

    // The chassis holds received data, then the primary sends the whole handshake at once, in
    // order, describing this instant; its sub-state waits for the first ack: SRI_SENDPARAMS.
    await duo.chassisRound()
    expect(duo.core.conns.get(h)!.mode).toBe('hold')
    expect(sr.initState).toBe(SRI.SRI_INITINPROGRESS | SRI.SRI_SENDPARAMS)
    const handshake = [
      [MsgType.INIT_PARAMS, 0, 0],
      [MsgType.INIT_RCVDATA, 1, 0],
      [MsgType.INIT_RCVDATA, 2, 0],
      [MsgType.INIT_RCVDATA, 2, Flag.FIN],
      [MsgType.INIT_SNDDATA, 1, 0],
      [MsgType.INIT_SNDDATA, 2, 0],
      [MsgType.INIT_SNDDATA, 2, Flag.FIN],
      [MsgType.INIT_DONE, 2, 0],
    ]
    const sent = () => toSecondary.map((f) => [f.type, f.seq, f.flags & Flag.FIN])
    expect(sent()).toEqual(handshake)

    // Secondary: (none) --INIT_PARAMS--> SR_INIT_SECONDARY / SRI_INITINPROGRESS|SRI_SETPARAMS, 'split'.
    await duo.deliver(duo.ps, 1)
    const pair = duo.pair(h)!
    expect(pair.state).toBe(SR.SR_INIT_SECONDARY)
    expect(pair.initState).toBe(SRI.SRI_INITINPROGRESS | SRI.SRI_SETPARAMS)
    expect(app).toEqual([`split ${h}`])
    expect(toPrimary.at(-1)).toMatchObject({ type: MsgType.INIT_ACK, seq: InitStep.PARAMS })

    // Primary: SRI_SENDPARAMS --INIT_ACK PARAMS--> +SRI_SENDRCVDATA, and sends nothing more.
    await duo.deliver(duo.sp)
    expect(sr.initState).toBe(SRI.SRI_INITINPROGRESS | SRI.SRI_SENDPARAMS | SRI.SRI_SENDRCVDATA)
    expect(sent()).toEqual(handshake)

    // Secondary: --INIT_RCVDATA FIN--> +SRI_SETRCVDATA, the chunks in the receive snoop.
    await duo.deliver(duo.ps, 3)
    expect(pair.initState).toBe(SRI.SRI_INITINPROGRESS | SRI.SRI_SETPARAMS | SRI.SRI_SETRCVDATA)
    expect(pair.recv.queue.length).toBe(2)
    expect(toPrimary.at(-1)).toMatchObject({ type: MsgType.INIT_ACK, seq: InitStep.RCVDATA })

    // Primary: --INIT_ACK RCVDATA--> +SRI_SENDSNDDATA.
    await duo.deliver(duo.sp)
    expect(sr.initState).toBe(SRI.SRI_INITINPROGRESS | SRI.SRI_SENDPARAMS | SRI.SRI_SENDRCVDATA | SRI.SRI_SENDSNDDATA)

    // Secondary: --INIT_SNDDATA FIN--> +SRI_SETSNDDATA, records in the send snoop and retained.
    await duo.deliver(duo.ps, 3)
    expect(pair.initState & SRI.SRI_SETSNDDATA).toBeTruthy()
    expect(pair.seq).toBe(2)
    expect(pair.retained.length).toBe(2)
    expect(toPrimary.at(-1)).toMatchObject({ type: MsgType.INIT_ACK, seq: InitStep.SNDDATA })

    // Primary: --INIT_ACK SNDDATA--> SRI_DONE (INITINPROGRESS cleared).
    await duo.deliver(duo.sp)
    expect(sr.initState & SRI.SRI_DONE).toBeTruthy()
    expect(sr.initState & SRI.SRI_INITINPROGRESS).toBe(0)
    expect(sent()).toEqual(handshake)

    // Secondary: --INIT_DONE--> SRI_DONE: complete (a takeover could adopt it now); DONE ack has the window.
    await duo.deliver(duo.ps, 1)
    expect(duo.ps.length).toBe(0)
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

  it('one round trip: the secondary takes the whole handshake in one delivery, the primary all four acks in one', async () => {
    const duo = new Duo()
    const { sock, peer } = await duo.connect()
    peer.write(enc('pre-rcv'))
    await duo.chassisRound()
    sock.txCredit = 0
    sock.write(enc('pre-snd'))
    const toPrimary = Duo.recorder(duo.sp)
    const done = sock.replicate()
    await duo.chassisRound()
    expect(await duo.deliver(duo.ps)).toBe(6) // PARAMS, RCVDATA + FIN, SNDDATA + FIN, DONE
    const pair = duo.pair(sock.handle)!
    expect(pair.complete).toBe(true)
    expect(toPrimary.map((f) => [f.type, f.seq])).toEqual([
      [MsgType.INIT_ACK, InitStep.PARAMS],
      [MsgType.INIT_ACK, InitStep.RCVDATA],
      [MsgType.INIT_ACK, InitStep.SNDDATA],
      [MsgType.INIT_ACK, InitStep.DONE],
    ])
    await duo.deliver(duo.sp)
    expect(duo.sr(sock).functional).toBe(true)
    await done
    // What went over describes the instant of 'held': the app reading on changes nothing.
    expect(Buffer.from(sock.read()!.data).toString()).toBe('pre-rcv')
    expect(Buffer.from(pair.recv.read()!.data).toString()).toBe('pre-rcv')
    expect(Buffer.from(pair.send.read()!.data).toString()).toBe('pre-snd')
    sock.addTxCredit(1000)
    sock.write(enc('+live'))
    await duo.run()
    expect(Buffer.concat(peer.received).toString()).toBe('pre-snd+live')
    expect(pair.retained.length).toBe(0)
    expect(duo.p.counters.rejected + duo.s.counters.rejected).toBe(0)
  })

  it('a full link: the handshake waits in the outbox and goes out in order as room comes', async () => {
    const duo = new Duo({ linkBytes: 4096 })
    const { sock, peer } = await duo.connect()
    const chunks = Array.from({ length: 12 }, (_, i) => `rcv-${i}-`.padEnd(200, '.'))
    for (const c of chunks) peer.write(enc(c))
    await duo.chassisRound()
    sock.txCredit = 0
    const records = Array.from({ length: 12 }, (_, i) => `snd-${i}-`.padEnd(200, '.'))
    for (const r of records) sock.write(enc(r))
    const toSecondary = Duo.recorder(duo.ps)
    const done = sock.replicate()
    await duo.chassisRound()
    const queued = toSecondary.length
    expect(queued).toBeLessThan(28) // the link is full: the rest waits for room
    // While the handshake is under way the app reads what the snapshot holds, and transport credit
    // comes back: the send buffer the handshake describes must not move (the primary asserts it).
    while (sock.read()) {}
    sock.addTxCredit(1 << 20)
    await duo.chassisRound()
    expect(peer.received).toHaveLength(0)
    expect(sock.snd.length).toBe(records.length)
    await duo.run()
    await done
    expect(duo.p.counters.initRetries).toBeGreaterThan(0)
    expect(toSecondary.slice(0, 28).map((f) => [f.type, f.flags & Flag.FIN])).toEqual([
      [MsgType.INIT_PARAMS, 0],
      ...chunks.map(() => [MsgType.INIT_RCVDATA, 0]),
      [MsgType.INIT_RCVDATA, Flag.FIN],
      ...records.map(() => [MsgType.INIT_SNDDATA, 0]),
      [MsgType.INIT_SNDDATA, Flag.FIN],
      [MsgType.INIT_DONE, 0],
    ])
    const pair = duo.pair(sock.handle)!
    expect(pair.functional).toBe(true)
    const got: string[] = []
    for (let r = pair.recv.read(); r; r = pair.recv.read()) got.push(Buffer.from(r.data).toString())
    expect(got).toEqual(chunks)
    expect(Buffer.concat(peer.received).toString()).toBe(records.join(''))
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

  it("carries the application's socket state as it is when the chassis holds the socket, and none when unset", async () => {
    const duo = new Duo()
    const { sock } = await duo.connect()
    let n = 1
    sock.appState = () => ({ n, note: 'lines answered' })
    const done = sock.replicate()
    n = 2 // still before the snapshot: the chassis has not held the socket yet
    await duo.run()
    await done
    expect(duo.pair(sock.handle)!.params!.app).toEqual({ n: 2, note: 'lines answered' })
    const other = (await duo.connect()).sock
    await duo.replicate(other)
    expect(duo.pair(other.handle)!.params!.app).toBeUndefined()
    // A callback that throws is reported; the handshake goes on without the state.
    const errors: unknown[] = []
    duo.p.on('error', (e) => errors.push(e))
    const third = (await duo.connect()).sock
    third.appState = () => {
      throw new Error('app bug')
    }
    await duo.replicate(third)
    expect(duo.pair(third.handle)!.params!.app).toBeUndefined()
    expect(duo.pair(third.handle)!.functional).toBe(true)
    expect(duo.p.counters.appStateErrors).toBe(1)
    expect(errors.map((e) => (e as Error).message)).toEqual(['app bug'])
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

// ---- INIT_NAK while the rest of the handshake is in flight ---------------------------------------

describe('INIT_NAK: the rest of the refused handshake is already on its way', () => {
  /** A connected socket with pre-existing data both ways, whose INIT_PARAMS the secondary cannot decode. */
  async function refusing(opts: { linkBytes?: number; chunks?: number } = {}) {
    const duo = new Duo({ linkBytes: opts.linkBytes })
    const { sock, peer } = await duo.connect()
    const n = opts.chunks ?? 2
    for (let i = 0; i < n; i++) peer.write(enc(`rcv-${i}-`.padEnd(200, '.')))
    await duo.chassisRound()
    sock.txCredit = 0
    for (let i = 0; i < n; i++) sock.write(enc(`snd-${i}-`.padEnd(200, '.')))
    duo.p.encodeParams = () => new Uint8Array([0x92]) // a two-element array, cut short: undecodable
    const splits: number[] = []
    duo.s.on('split', (pair) => splits.push(pair.handle))
    const toSecondary = Duo.recorder(duo.ps)
    const done = sock.replicate()
    done.catch(() => {})
    return { duo, sock, peer, done, splits, toSecondary, n }
  }

  it('the secondary refuses INIT_PARAMS: the tail is dropped quietly, the primary carries on alone, a new round succeeds', async () => {
    const { duo, sock, peer, done, splits, toSecondary, n } = await refusing()
    await duo.chassisRound()
    const frames = 1 + (n + 1) + (n + 1) + 1
    expect(toSecondary).toHaveLength(frames)
    // One delivery: INIT_PARAMS refused (INIT_NAK), then the rest of that handshake after it.
    expect(await duo.deliver(duo.ps)).toBe(frames)
    expect(duo.s.counters.rejectReasons).toEqual({ 'params-undecodable': 1 })
    expect(duo.s.counters.initDroppedAfterNak).toBe(frames - 1)
    expect(duo.pair(sock.handle)).toBeUndefined()
    expect(splits).toEqual([])
    expect(refusedOf(duo).size).toBe(0) // INIT_DONE ended the mark
    // The primary hears the NAK: the handshake fails, and nothing waits for the secondary any more.
    await duo.deliver(duo.sp)
    await expect(done).rejects.toMatchObject({ code: 'ECLOSED', message: expect.stringMatching(/secondary-refused/) })
    expect(duo.sr(sock).initializing).toBe(false)
    expect(duo.p.counters.rejected).toBe(0)
    sock.addTxCredit(1 << 20)
    sock.write(enc('alone'))
    await duo.run()
    expect(Buffer.concat(peer.received).toString()).toMatch(/^snd-0-\.+snd-1-\.+alone$/)
    expect(duo.core.conns.get(sock.handle)!.mode).toBe('primary')
    // A later round is a new handshake, not the tail of the refused one.
    delete (duo.p as { encodeParams?: unknown }).encodeParams
    const again = sock.replicate()
    await duo.run()
    expect(duo.sr(sock).functional).toBe(true)
    await again
    expect(duo.pair(sock.handle)!.functional).toBe(true)
    expect(duo.s.counters.rejected).toBe(1)
    expect(duo.p.counters.rejected).toBe(0)
  })

  it('a NAK while part of the handshake still waits for room: the outbox is dropped, and the next INIT_PARAMS ends the mark', async () => {
    const { duo, sock, done, toSecondary, n } = await refusing({ linkBytes: 4096, chunks: 12 })
    await duo.chassisRound()
    const frames = 1 + (n + 1) + (n + 1) + 1
    expect(toSecondary.length).toBeLessThan(frames)
    await duo.deliver(duo.ps, 1) // INIT_PARAMS refused; the room it frees lets more of the tail out
    await duo.deliver(duo.sp) // INIT_NAK: the handshake fails and the outbox is dropped
    await expect(done).rejects.toMatchObject({ code: 'ECLOSED' })
    const sent = toSecondary.length
    expect(sent).toBeLessThan(frames)
    expect(toSecondary.some((f) => f.type === MsgType.INIT_DONE)).toBe(false)
    await duo.run()
    expect(toSecondary).toHaveLength(sent) // nothing more of that handshake went out
    expect(duo.s.counters.initDroppedAfterNak).toBe(sent - 1)
    expect(duo.s.counters.rejected).toBe(1)
    expect(refusedOf(duo).size).toBe(1) // no INIT_DONE came: the mark waits for the next round
    delete (duo.p as { encodeParams?: unknown }).encodeParams
    const again = sock.replicate()
    await duo.run()
    expect(refusedOf(duo).size).toBe(0)
    expect(duo.pair(sock.handle)?.functional).toBe(true)
    await again
    expect(duo.s.counters.rejected).toBe(1)
    expect(duo.p.counters.rejected).toBe(0)
  })

  it('UNREPLICATE ends a mark, and at most a bounded number are kept', () => {
    const refused = new RefusedHandshakes()
    refused.refused(7)
    expect(refused.tail(7, false)).toBe(true)
    refused.end(7)
    expect(refused.tail(7, false)).toBe(false)
    for (let h = 1; h <= 5000; h++) refused.refused(h)
    expect(refused.size).toBe(4096)
    expect(refused.tail(1, false)).toBe(false) // the oldest went first
    expect(refused.tail(5000, true)).toBe(true)
    expect(refused.tail(5000, false)).toBe(false) // INIT_DONE ended it
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
        // Handshake answers carry this round (INIT_PARAMS's `ack`, echoed): only their state is wrong.
        const round = m.type === MsgType.INIT_ACK || m.type === MsgType.INIT_NAK ? sr.round : 0
        await duo.inject(duo.sp, m.type, m.flags ?? 0, h, typeof m.seq === 'number' ? m.seq : 0, m.ack ?? round, m.credit ?? 0)
        expect(duo.p.counters.rejected).toBe(before.rejected + 1)
        expect(duo.p.counters.rejectReasons[reason]).toBe(1)
        expect({ state: sr.state, initState: sr.initState, credit: sr.credit, ack: sr.ack, rejected: before.rejected }).toEqual(before)
        // Nothing was lost: the handshake still completes.
        await duo.run()
        expect(duo.sr(sock).functional).toBe(true)
      })
    }
  }

  it("an earlier round's INIT_ACK or INIT_NAK, still on its way, moves nothing in this round", async () => {
    const { duo, sock, h } = await primaryAt('params')
    const sr = duo.sr(sock)
    await duo.deliver(duo.ps)
    expect(duo.pair(h)!.initRound).toBe(sr.round) // the secondary learns the round from INIT_PARAMS
    const before = { state: sr.state, initState: sr.initState }
    // Ahead of this round's own acks, queued on the link.
    await duo.injectAhead(duo.sp, MsgType.INIT_ACK, 0, h, InitStep.PARAMS, sr.round - 1, 0)
    await duo.injectAhead(duo.sp, MsgType.INIT_NAK, 0, h, 0, sr.round - 1, 0)
    expect(duo.p.counters.rejectReasons['init-ack-stale-round']).toBe(1)
    expect(duo.p.counters.rejectReasons['init-nak-stale-round']).toBe(1)
    expect({ state: sr.state, initState: sr.initState }).toEqual(before)
    // The secondary's own answers echo the round: the handshake completes.
    await duo.run()
    expect(sr.functional).toBe(true)
  })

  it('INIT_NAK during the handshake fails it: writes go straight to the transport again', async () => {
    const { duo, sock, peer } = await (async () => {
      const duo = new Duo()
      const c = await duo.connect()
      return { duo, ...c }
    })()
    const done = sock.replicate()
    await duo.chassisRound()
    await duo.inject(duo.sp, MsgType.INIT_NAK, 0, sock.handle, 0, duo.sr(sock).round, 0)
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
        const rest = duo.ps.length // the rest of the handshake, still on its way
        await duo.injectAhead(duo.ps, m.type, m.flags ?? 0, h, typeof m.seq === 'number' ? m.seq : 0, 0, 0)
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
          // The rest of that handshake is dropped quietly: not rejected, not taken for a new pair.
          expect(duo.s.counters.rejected).toBe(1)
          expect(duo.s.counters.initDroppedAfterNak).toBe(rest)
          expect(duo.pair(h)).toBeUndefined()
          expect(refusedOf(duo).size).toBe(0) // INIT_DONE, the last of them, ended the mark
          expect(duo.p.counters.rejected).toBe(0)
        } else {
          expect(rest).toBe(stage === 'done' || stage === 'functional' ? 0 : HANDSHAKE_FRAMES - secondaryStages.indexOf(stage) - 1)
          expect(duo.pair(h)).toBe(pair)
          expect({ state: pair.state, initState: pair.initState, seq: pair.seq }).toEqual(before)
          await duo.run()
          expect(duo.sr(sock).functional).toBe(true)
          expect(duo.pair(h)!.functional).toBe(true)
          expect(duo.s.counters.rejected).toBe(1)
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

  it('INIT_PARAMS that decode to anything but socket parameters are refused with INIT_NAK, echoing the round', async () => {
    const duo = new Duo()
    const good = { kind: 'tcp', local: null, remote: { address: '10.0.0.1', port: 179 }, parent: 0, sndSeq: 0, txSeq: 0, rcvSeq: 0, sndOffset: 0, rcvOffset: 0, rcvReadOffset: 0 }
    const toPrimary = Duo.recorder(duo.sp)
    const bad: unknown[] = [5, null, 'tcp', { ...good, kind: 'sctp' }, { ...good, remote: { address: 1, port: 179 } }, { ...good, txSeq: -1 }, { ...good, rcvOffset: '0' }]
    for (const [i, p] of bad.entries()) {
      await duo.inject(duo.ps, MsgType.INIT_PARAMS, 0, 500 + i, 0, 7, 0, pack(p))
      expect(duo.pair(500 + i)).toBeUndefined()
    }
    expect(duo.s.counters.rejectReasons['params-invalid']).toBe(bad.length)
    await duo.deliver(duo.sp)
    expect(toPrimary.filter((f) => f.type === MsgType.INIT_NAK).map((f) => [f.handle, f.ack])).toEqual(bad.map((_, i) => [500 + i, 7]))
    // The same frame with good parameters starts a handshake.
    await duo.inject(duo.ps, MsgType.INIT_PARAMS, 0, 600, 0, 7, 0, pack(good))
    expect(duo.pair(600)?.initRound).toBe(7)
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
