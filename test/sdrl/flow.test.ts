// Flow control and write() errors: a secondary application that stops reading closes the window
// (EAGAIN, then 'writable' once it reads, nothing lost), a congested secondary turns EAGAIN into
// ENOBUFS, and a record that can never fit is EMSGSIZE in every state.

import { describe, expect, it } from 'vitest'
import { NsrError } from '../../engine/errors.ts'
import type { Socket } from '../../engine/socket/socket.ts'
import { Duo } from './duo.ts'

const RECORD_BYTES = 100
const record = (i: number): Uint8Array => new Uint8Array(RECORD_BYTES).fill(i & 0xff)

/** Writes records numbered from `from` until write() refuses; returns the next number and the error. */
function writeUntilRefused(sock: Socket, from: number, max = 1000): { next: number; err: NsrError } {
  for (let i = from; i < from + max; i++) {
    try {
      sock.write(record(i))
    } catch (err) {
      if (!(err instanceof NsrError)) throw err
      return { next: i, err }
    }
  }
  throw new Error('write() never refused')
}

function received(bytes: Uint8Array[]): number[] {
  const all = Buffer.concat(bytes)
  const out: number[] = []
  for (let i = 0; i < all.length; i += RECORD_BYTES) out.push(all[i])
  return out
}

/**
 * A replicated socket whose secondary holds at most 1000 snoop bytes (ten records), and a count of
 * its 'writable' events.
 */
async function smallWindow() {
  const duo = new Duo({ limits: { maxRecordBytes: RECORD_BYTES, sndbufBytes: 2000, sndLowatBytes: 200 }, re: { snoopBufBytes: 1000 } })
  const { sock, peer } = await duo.connect()
  await duo.replicate(sock)
  const events = { writable: 0 }
  sock.on('writable', () => events.writable++)
  return { duo, sock, peer, pair: duo.pair(sock.handle)!, events }
}

describe('flow control', () => {
  it("a stalled secondary application stalls the primary's writes with EAGAIN; reading resumes them with 'writable'", async () => {
    const { duo, sock, peer, pair, events } = await smallWindow()
    // The secondary application reads nothing: every record stays in its send snoop.
    let next = 0
    for (let round = 0; round < 20; round++) {
      const r = writeUntilRefused(sock, next)
      next = r.next
      expect(r.err.code).toBe('EAGAIN')
      await duo.run()
    }
    expect(events.writable).toBe(0)
    expect(pair.send.queue.bytes).toBeLessThanOrEqual(1000)
    expect(received(peer.received)).toEqual([...Array(next).keys()])
    // The application reads: the window reopens, the primary hears it (FLOWCTL) and says 'writable'.
    while (pair.send.read());
    await duo.run()
    expect(events.writable).toBe(1)
    const r = writeUntilRefused(sock, next)
    expect(r.next).toBeGreaterThan(next)
    await duo.run()
    expect(received(peer.received)).toEqual([...Array(r.next).keys()])
    expect(duo.p.counters.rejected + duo.s.counters.rejected).toBe(0)
  })

  it('a window that reopens while the KKCM to the primary is full is advertised once the ring has room', async () => {
    const { duo, sock, peer, pair, events } = await smallWindow()
    const { next } = writeUntilRefused(sock, 0)
    await duo.run()
    expect(events.writable).toBe(0)
    // The ring from the secondary to the primary is full (keepalives fill it) when the app reads.
    Duo.fill(duo.sp)
    const sentBefore = duo.s.stats().counters.flowctlSent
    while (pair.send.read());
    expect(duo.s.stats().counters.flowctlSent).toBe(sentBefore)
    // Nothing else will make the secondary speak: no records flow, every TXDONE came already.
    await duo.run()
    expect(duo.s.stats().counters.flowctlSent).toBe(sentBefore + 1)
    expect(events.writable).toBe(1)
    const r = writeUntilRefused(sock, next)
    await duo.run()
    expect(received(peer.received)).toEqual([...Array(r.next).keys()])
    expect(duo.p.counters.rejected + duo.s.counters.rejected).toBe(0)
  })

  it('write() never waits: it returns or throws at once, whatever the secondary does', async () => {
    const duo = new Duo({ limits: { maxRecordBytes: RECORD_BYTES, sndbufBytes: 300 } })
    const { sock } = await duo.connect()
    await duo.replicate(sock)
    // Nothing is delivered: the secondary never acks. write() still returns synchronously.
    const r = writeUntilRefused(sock, 0)
    expect(r.err.code).toBe('EAGAIN')
    expect(r.next).toBe(3)
  })

  it('a congested secondary (over its memory budget) turns refusals into ENOBUFS until it drains', async () => {
    const duo = new Duo({ limits: { maxRecordBytes: RECORD_BYTES, sndbufBytes: 4000, sndLowatBytes: 100 }, re: { snoopBufBytes: 100_000, congestionBytes: 450 } })
    const { sock, peer } = await duo.connect()
    await duo.replicate(sock)
    const pair = duo.pair(sock.handle)!
    let writable = 0
    sock.on('writable', () => writable++)
    let next = 0
    let err: NsrError | null = null
    for (let round = 0; round < 10 && !err; round++) {
      for (let i = 0; i < 2; i++) sock.write(record(next++))
      await duo.run()
      try {
        sock.write(record(next))
        next++
      } catch (e) {
        err = e as NsrError
      }
    }
    expect(err?.code).toBe('ENOBUFS')
    expect(sock.counters.enobufs).toBe(1)
    // The secondary application reads its snoop: the budget frees up and the flag clears.
    while (pair.send.read());
    await duo.run()
    expect(writable).toBe(1)
    sock.write(record(next++))
    await duo.run()
    expect(received(peer.received)).toEqual([...Array(next).keys()])
  })

  it("'writable' after an ack waits for the transport credit of the acked records: the next burst goes straight out", async () => {
    // Send buffer and transport window alike: a full buffer of held records takes every byte of credit.
    const duo = new Duo({ chassis: { txWindowBytes: 2000 }, limits: { maxRecordBytes: RECORD_BYTES, sndbufBytes: 2000, sndLowatBytes: 200 } })
    const { sock, peer } = await duo.connect()
    await duo.replicate(sock)
    let writable = 0
    sock.on('writable', () => writable++)
    const { next, err } = writeUntilRefused(sock, 0)
    expect(err.code).toBe('EAGAIN')
    expect(sock.txCredit).toBe(0)
    // Everything moves but the chassis's link to the primary: the records are acked and sent, and
    // the TX_CREDIT that returns their bytes waits on that link.
    await duo.run([duo.cp])
    expect(received(peer.received)).toEqual([...Array(next).keys()])
    expect(sock.sendSpace()).toBe(2000)
    expect(writable).toBe(0) // a burst now would have queued (copied) every record: no credit
    await duo.run()
    expect(sock.txCredit).toBe(2000)
    expect(writable).toBe(1)
    // The burst 'writable' starts leaves without queueing: one record per write, none held back.
    const r = writeUntilRefused(sock, next)
    expect(r.next - next).toBe(20)
    expect(sock.snd.length).toBe(0)
    await duo.run()
    expect(received(peer.received)).toEqual([...Array(r.next).keys()])
  })

  it('EMSGSIZE for a record that can never fit, in every replication state, and nothing is queued', async () => {
    const duo = new Duo({ limits: { maxRecordBytes: RECORD_BYTES, sndbufBytes: 1000 } })
    const { sock } = await duo.connect()
    const big = new Uint8Array(RECORD_BYTES + 1)
    const emsgsize = expect.objectContaining({ code: 'EMSGSIZE' })
    expect(() => sock.write(big)).toThrow(emsgsize) // not replicated
    const done = sock.replicate()
    expect(() => sock.write(big)).toThrow(emsgsize) // initializing (other writes: EAGAIN)
    await duo.run()
    await done
    expect(() => sock.write(big)).toThrow(emsgsize) // functional
    void duo.p.quiesce(1000)
    expect(() => sock.write(big)).toThrow(emsgsize) // a switchover is under way (others: EAGAIN)
    expect(() => sock.write(new Uint8Array(1))).toThrow(expect.objectContaining({ code: 'EAGAIN' }))
    expect(sock.counters.emsgsize).toBe(4)
    expect(sock.sndSeq).toBe(0)
    expect(duo.sr(sock).seq).toBe(0)
  })
})
