// The ack timer (seed 7.6), its three cases on a ManualClock:
//   an ack arrives             -> ACK_PENDING cleared
//   pops with ACK_PENDING      -> replication fails: pending records reinjected, the app told,
//                                 the secondary told to drop its (now stale) pair
//   pops without, outstanding  -> restarted with ACK_PENDING set

import { describe, expect, it } from 'vitest'
import { MsgType } from '../../engine/protocol/header.ts'
import { SR } from '../../engine/sdrl/flags.ts'
import type { SrPrimary } from '../../engine/sdrl/primary.ts'
import type { Socket } from '../../engine/socket/socket.ts'
import { Duo } from './duo.ts'

const ACK_TIMEOUT_MS = 100
const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const pending = (sr: SrPrimary): boolean => (sr.state & SR.SR_ACK_PENDING) !== 0
const timerRunning = (sr: SrPrimary): boolean => (sr as unknown as { ackTimer: { running: boolean } }).ackTimer.running

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
