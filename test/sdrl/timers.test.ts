// The primary's two timers on a ManualClock.
// The ack timer (seed 7.6), its three cases:
//   an ack arrives             -> ACK_PENDING cleared
//   pops with ACK_PENDING      -> replication fails: pending records reinjected, the app told,
//                                 the secondary told to drop its (now stale) pair
//   pops without, outstanding  -> restarted with ACK_PENDING set
// The handshake timer (initTimeoutMs), armed by replicate() and re-armed by every INIT_ACK (the
// primary sends the whole handshake at once; the secondary still acks each step):
//   a step never answered      -> the handshake fails ('init-timeout'): replicate() rejects, the
//                                 socket carries on unreplicated, held received data is released
//   each step answered in time -> the handshake completes, however long it takes in total
//   functional                 -> the timer is off and never pops

import { describe, expect, it } from 'vitest'
import { NsrError } from '../../engine/errors.ts'
import { MsgType } from '../../engine/protocol/header.ts'
import { InitStep, SR, SRI } from '../../engine/sdrl/flags.ts'
import type { SrPrimary } from '../../engine/sdrl/primary.ts'
import type { Socket } from '../../engine/socket/socket.ts'
import { Duo } from './duo.ts'

const ACK_TIMEOUT_MS = 100
const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const pending = (sr: SrPrimary): boolean => (sr.state & SR.SR_ACK_PENDING) !== 0
const timerRunning = (sr: SrPrimary): boolean => (sr as unknown as { ackTimer: { running: boolean } }).ackTimer.running
const INIT_TIMEOUT_MS = 300
const initTimerRunning = (sr: SrPrimary): boolean => (sr as unknown as { initTimer: { running: boolean } }).initTimer.running

async function functional(): Promise<{ duo: Duo; sock: Socket; sr: SrPrimary; text: () => string }> {
  const duo = new Duo({ re: { ackTimeoutMs: ACK_TIMEOUT_MS } })
  const { sock, peer } = await duo.connect()
  await duo.replicate(sock)
  return { duo, sock, sr: duo.sr(sock), text: () => Buffer.concat(peer.received).toString() }
}

describe('ack timer (seed 7.6)', () => {
  it('a record sent starts the timer and sets ACK_PENDING; its ack clears the flag', async () => {
    const { duo, sock, sr, text } = await functional()
    expect(timerRunning(sr)).toBe(false)
    sock.write(enc('r1'))
    expect(sr.seq).toBe(1)
    expect(pending(sr)).toBe(true)
    expect(timerRunning(sr)).toBe(true)
    await duo.deliver(duo.ps)
    await duo.deliver(duo.sp)
    expect(sr.ack).toBe(1)
    expect(pending(sr)).toBe(false)
    // The pop finds nothing outstanding: nothing happens, the timer stays off.
    duo.clock.advance(ACK_TIMEOUT_MS)
    expect(sr.functional).toBe(true)
    expect(timerRunning(sr)).toBe(false)
    await duo.run()
    expect(text()).toBe('r1')
  })

  it('popping with ACK_PENDING fails replication: records reinjected, the app and the secondary told', async () => {
    const { duo, sock, sr, text } = await functional()
    const events: string[] = []
    sock.on('replication', (e: { functional: boolean; reason: string }) => events.push(`${e.functional} ${e.reason}`))
    duo.p.on('replication-error', (e: { reason: string }) => events.push(`error ${e.reason}`))
    sock.write(enc('a'))
    sock.write(enc('b'))
    const toSecondary = Duo.recorder(duo.ps)
    // The secondary never answers: a whole window passes with ACK_PENDING set.
    duo.clock.advance(ACK_TIMEOUT_MS - 1)
    expect(sr.functional).toBe(true)
    duo.clock.advance(1)
    expect(duo.p.counters.ackTimeouts).toBe(1)
    expect(sr.functional).toBe(false)
    expect(pending(sr)).toBe(false)
    expect(events).toEqual(['false ack-timeout', 'error ack-timeout'])
    // The secondary is told to drop its pair before the records bypass it.
    expect(toSecondary.map((f) => f.type).filter((t) => t !== MsgType.KEEPALIVE)).toEqual([MsgType.UNREPLICATE])
    await duo.run()
    expect(text()).toBe('ab')
    expect(duo.pair(sock.handle)).toBeUndefined()
    // Losing replication never stops the primary: later writes go straight out.
    sock.write(enc('c'))
    await duo.run()
    expect(text()).toBe('abc')
    // The application may replicate again.
    await duo.replicate(sock)
    expect(duo.sr(sock).functional).toBe(true)
    expect(duo.pair(sock.handle)!.functional).toBe(true)
  })

  it('popping without ACK_PENDING while records are outstanding restarts the timer with ACK_PENDING', async () => {
    const { duo, sock, sr, text } = await functional()
    sock.write(enc('1')) // t=0: timer started, ACK_PENDING
    await duo.deliver(duo.ps)
    await duo.deliver(duo.sp)
    expect(pending(sr)).toBe(false) // acked within the window
    duo.clock.advance(ACK_TIMEOUT_MS / 2)
    sock.write(enc('2')) // the timer is running: not restarted, ACK_PENDING stays clear
    expect(pending(sr)).toBe(false)
    duo.clock.advance(ACK_TIMEOUT_MS / 2) // pop: record 2 outstanding
    expect(sr.functional).toBe(true)
    expect(pending(sr)).toBe(true)
    expect(timerRunning(sr)).toBe(true)
    expect(duo.p.counters.ackTimeouts).toBe(0)
    // Its ack arrives within the new window.
    await duo.deliver(duo.ps)
    await duo.deliver(duo.sp)
    expect(sr.ack).toBe(2)
    expect(pending(sr)).toBe(false)
    duo.clock.advance(ACK_TIMEOUT_MS)
    expect(sr.functional).toBe(true)
    await duo.run()
    expect(text()).toBe('12')
  })

  it('a restarted timer that pops again with no ack fails replication', async () => {
    const { duo, sock, sr } = await functional()
    sock.write(enc('1'))
    await duo.deliver(duo.ps)
    await duo.deliver(duo.sp)
    duo.clock.advance(ACK_TIMEOUT_MS / 2)
    sock.write(enc('2'))
    duo.clock.advance(ACK_TIMEOUT_MS / 2)
    expect(pending(sr)).toBe(true)
    duo.clock.advance(ACK_TIMEOUT_MS)
    expect(sr.functional).toBe(false)
    expect(duo.p.counters.ackTimeouts).toBe(1)
  })
})

describe('handshake timer (initTimeoutMs)', () => {
  async function connected() {
    const duo = new Duo({ re: { initTimeoutMs: INIT_TIMEOUT_MS } })
    const { sock, peer } = await duo.connect()
    return { duo, sock, peer, text: () => Buffer.concat(peer.received).toString() }
  }

  it('a secondary that never answers INIT_PARAMS: the handshake fails after initTimeoutMs and the socket carries on alone', async () => {
    const { duo, sock, peer, text } = await connected()
    const events: string[] = []
    sock.on('replication', (e: { functional: boolean; reason: string }) => events.push(`${e.functional} ${e.reason}`))
    duo.p.on('replication-error', (e: { reason: string }) => events.push(`error ${e.reason}`))
    const toSecondary = Duo.recorder(duo.ps)
    const done = sock.replicate()
    let outcome: unknown = 'pending'
    done.then(
      () => (outcome = 'resolved'),
      (err: unknown) => (outcome = err),
    )
    const sr = duo.sr(sock)
    expect(initTimerRunning(sr)).toBe(true)
    await duo.chassisRound() // 'hold' answered: the whole handshake is on the link, and the secondary never reads it
    expect(sr.initState).toBe(SRI.SRI_INITINPROGRESS | SRI.SRI_SENDPARAMS)
    const handshake = [MsgType.INIT_PARAMS, MsgType.INIT_RCVDATA, MsgType.INIT_SNDDATA, MsgType.INIT_DONE]
    expect(toSecondary.map((f) => f.type).filter((t) => t !== MsgType.KEEPALIVE)).toEqual(handshake)
    // Received data while initializing is held by the chassis, and writes are refused.
    peer.write(enc('held'))
    await duo.chassisRound()
    expect(duo.core.conns.get(sock.handle)!.mode).toBe('hold')
    expect(sock.rcv.length).toBe(0)
    expect(() => sock.write(enc('x'))).toThrow(expect.objectContaining({ code: 'EAGAIN' }))

    duo.clock.advance(INIT_TIMEOUT_MS - 1)
    await duo.settle()
    expect(sr.initializing).toBe(true)
    expect(outcome).toBe('pending')
    duo.clock.advance(1)
    await duo.settle()
    expect(duo.p.counters.initTimeouts).toBe(1)
    expect(sr.initializing).toBe(false)
    expect(sr.functional).toBe(false)
    expect(initTimerRunning(sr)).toBe(false)
    expect(outcome).toBeInstanceOf(NsrError)
    expect(outcome).toMatchObject({ code: 'ETIMEDOUT' })
    await expect(done).rejects.toThrow(/init-timeout/)
    expect(events).toEqual(['false init-timeout', 'error init-timeout'])
    // The secondary is told to drop its half-built pair.
    expect(toSecondary.map((f) => f.type).filter((t) => t !== MsgType.KEEPALIVE)).toEqual([...handshake, MsgType.UNREPLICATE])

    // Unreplicated from here: writes go straight out, the held data reaches the primary.
    sock.write(enc('alone'))
    await duo.run()
    expect(text()).toBe('alone')
    expect(duo.core.conns.get(sock.handle)!.mode).toBe('primary')
    expect(Buffer.from(sock.read()!.data).toString()).toBe('held')
    // The secondary answered every step late, then dropped the pair: the late acks are refused and counted.
    expect(duo.pair(sock.handle)).toBeUndefined()
    expect(duo.p.counters.rejectReasons['init-ack-not-initializing']).toBe(4)
    expect(duo.p.counters.initTimeouts).toBe(1)
    // A later replicate() starts afresh and completes.
    await duo.replicate(sock)
    expect(sr.functional).toBe(true)
    expect(duo.pair(sock.handle)!.functional).toBe(true)
  })

  it('a chassis that never answers hold: the same window bounds the wait for INIT_PARAMS to go out', async () => {
    const { duo, sock } = await connected()
    const toSecondary = Duo.recorder(duo.ps)
    const done = sock.replicate()
    done.catch(() => {})
    const sr = duo.sr(sock)
    duo.clock.advance(INIT_TIMEOUT_MS)
    await duo.settle()
    expect(duo.p.counters.initTimeouts).toBe(1)
    await expect(done).rejects.toMatchObject({ code: 'ETIMEDOUT' })
    // The late 'hold' reply starts nothing: no INIT_PARAMS, the chassis ends up fanning out to the primary.
    await duo.run()
    expect(sr.initializing).toBe(false)
    expect(toSecondary.some((f) => f.type === MsgType.INIT_PARAMS)).toBe(false)
    expect(duo.core.conns.get(sock.handle)!.mode).toBe('primary')
  })

  it('each step answered just before the timeout: the handshake completes (progress restarts the timer)', async () => {
    const { duo, sock } = await connected()
    const toPrimary = Duo.recorder(duo.sp)
    // Pre-existing data on both buffers, so every step carries some.
    sock.txCredit = 0
    sock.write(enc('pre'))
    const done = sock.replicate()
    const sr = duo.sr(sock)
    await duo.chassisRound() // the whole handshake sent, at the time replicate() armed the timer
    // Frames per step: PARAMS; RCVDATA FIN; SNDDATA 'pre' and FIN; DONE.
    const steps: Array<[InitStep, number]> = [
      [InitStep.PARAMS, 1],
      [InitStep.RCVDATA, 1],
      [InitStep.SNDDATA, 2],
      [InitStep.DONE, 1],
    ]
    for (const [step, frames] of steps) {
      duo.clock.advance(INIT_TIMEOUT_MS - 1)
      await duo.settle()
      expect(sr.initializing).toBe(true)
      await duo.deliver(duo.ps, frames) // the secondary answers the step
      await duo.deliver(duo.sp) // the primary takes the ack: a whole window again for the next step
      expect(toPrimary.filter((f) => f.type === MsgType.INIT_ACK).map((f) => f.seq).at(-1)).toBe(step)
    }
    // Four windows all but over: without the restarts the timer would have popped in the second.
    expect(duo.clock.now()).toBeGreaterThan(INIT_TIMEOUT_MS)
    await done
    expect(sr.functional).toBe(true)
    expect(duo.p.counters.initTimeouts).toBe(0)
    expect(duo.p.counters.rejected).toBe(0)
  })

  it('a secondary that stalls after some steps: the step it leaves unanswered fails the handshake a window after the last ack', async () => {
    const { duo, sock } = await connected()
    const done = sock.replicate()
    done.catch(() => {})
    const sr = duo.sr(sock)
    await duo.chassisRound() // the whole handshake is on the link
    duo.clock.advance(INIT_TIMEOUT_MS - 1)
    await duo.deliver(duo.ps, 2) // PARAMS and RCVDATA FIN taken and acked; the rest is never read
    await duo.deliver(duo.sp)
    expect(sr.initState & SRI.SRI_SENDSNDDATA).toBeTruthy()
    duo.clock.advance(INIT_TIMEOUT_MS - 1) // long past the first window: the acks re-armed it
    await duo.settle()
    expect(sr.initializing).toBe(true)
    duo.clock.advance(1)
    await duo.settle()
    expect(duo.p.counters.initTimeouts).toBe(1)
    await expect(done).rejects.toMatchObject({ code: 'ETIMEDOUT' })
    // The secondary reads on: its pair completes, then UNREPLICATE drops it; the late acks are refused.
    await duo.run()
    expect(duo.pair(sock.handle)).toBeUndefined()
    expect(duo.p.counters.rejectReasons['init-ack-not-initializing']).toBe(2)
  })

  it('no timeout once functional: the clock runs far past initTimeoutMs and the state stays functional', async () => {
    const { duo, sock, text } = await connected()
    await duo.replicate(sock)
    const sr = duo.sr(sock)
    expect(initTimerRunning(sr)).toBe(false)
    for (let i = 0; i < 10; i++) {
      duo.clock.advance(INIT_TIMEOUT_MS)
      await duo.run()
    }
    expect(sr.state).toBe(SR.SR_REP_PRIMARY | SR.SR_REP_FUNCTIONAL)
    expect(duo.pair(sock.handle)!.functional).toBe(true)
    expect(duo.p.counters.initTimeouts).toBe(0)
    sock.write(enc('still replicated'))
    await duo.run()
    expect(sr.ack).toBe(1)
    expect(text()).toBe('still replicated')
  })
})
