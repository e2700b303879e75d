// Regressions the simulation (test/sim) found, each replayed by hand at the moment it broke.

import { unpack } from 'msgpackr'
import { describe, expect, it } from 'vitest'
import { MsgType, type Header } from '../../engine/protocol/header.ts'
import { LISTEN_PORT } from '../sim/app.ts'
import { chassisReceiver } from '../sim/link.ts'
import type { MemoryPeer } from '../../engine/chassis/memory.ts'
import type { Socket } from '../../engine/socket/socket.ts'
import { Duo, SERVE_PORT } from './duo.ts'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const text = (chunks: Iterable<{ data: Uint8Array }>): string => [...chunks].map((c) => Buffer.from(c.data).toString()).join('')

describe('regressions', () => {
  it('RX in the same batch as the connect() reply reaches the new socket', async () => {
    const duo = new Duo()
    const req = duo.p.connect({ port: SERVE_PORT })
    await duo.deliver(duo.pc) // the chassis connects and replies
    duo.peers[0].write(enc('early'))
    expect(duo.cp.length).toBeGreaterThanOrEqual(2) // the reply, then RX
    await duo.deliver(duo.cp) // one batch
    const sock = await req
    expect(text([sock.read()!])).toBe('early')
    expect(duo.p.counters.rxDropped).toBe(0)
  })

  it('RX never overtakes the event that announces its connection when that event waits for room', async () => {
    const duo = new Duo({ linkBytes: 1024 })
    const req = duo.p.connect({ port: SERVE_PORT })
    // Fill the chassis-to-primary link so the reply must wait for room.
    while (duo.cp.inject(new Uint8Array(0)) || false);
    await duo.deliver(duo.pc)
    expect(duo.cp.waitingForRoom).toBeGreaterThan(0)
    // Room comes back; before the waiting reply is retried, the peer sends.
    duo.cp.deliver(chassisReceiver(duo.p), 1 << 20)
    duo.peers[0].write(enc('data'))
    await duo.run()
    const sock = await req
    expect(text([sock.read()!])).toBe('data')
    expect(duo.p.counters.rxDropped).toBe(0)
  })

  it("'connection' fires after listen() resolves even when the accept arrives in the reply's batch", async () => {
    const duo = new Duo()
    const req = duo.p.listen({ port: LISTEN_PORT, replicate: false })
    await duo.deliver(duo.pc)
    duo.net.dial(LISTEN_PORT)
    const seen: number[] = []
    const l = req.then((listener) => listener.on('connection', (s) => seen.push(s.handle)))
    await duo.deliver(duo.cp) // listen reply and 'accepted' in one batch
    await l
    await duo.settle()
    expect(seen).toHaveLength(1)
  })

  it('data the application reads during the handshake still reaches the secondary (one snapshot)', async () => {
    const duo = new Duo()
    const { sock, peer } = await duo.connect()
    for (const s of ['a1', 'b22', 'c333']) peer.write(enc(s))
    await duo.chassisRound()
    const done = sock.replicate()
    await duo.chassisRound() // held: parameters sent, the snapshot taken
    expect(text([sock.read()!])).toBe('a1') // the application reads before the secondary acks
    await duo.run()
    await done
    const pair = duo.pair(sock.handle)!
    expect(pair.recv.readOffset).toBe(0)
    expect(text(pair.recv.queue)).toBe('a1b22c333')
  })

  it('a TXDONE that finds the KKCM link full is sent later: the secondary window reopens', async () => {
    const duo = new Duo({ linkBytes: 1024, limits: { maxRecordBytes: 100 } })
    const { sock, peer } = await duo.connect()
    await duo.replicate(sock)
    sock.txCredit = 0
    sock.write(enc('one'))
    sock.write(enc('two'))
    await duo.run()
    const pair = duo.pair(sock.handle)!
    expect(pair.retained.length).toBe(2)
    while (duo.ps.inject(new Uint8Array(0)) || false); // the KKCM is full when the records go out
    sock.addTxCredit(1000)
    await duo.run()
    expect(Buffer.concat(peer.received).toString()).toBe('onetwo')
    expect(pair.retained.length).toBe(0)
  })

  it('transport room freed after the batch (a peer that reads late) goes back to the primary', async () => {
    const duo = new Duo({ chassis: { txWindowBytes: 10 }, limits: { maxRecordBytes: 10, sndbufBytes: 100 } })
    const { sock, peer } = await duo.connect()
    peer.pauseReading()
    for (let i = 0; i < 5; i++) sock.write(enc('abcdefghij'))
    await duo.run()
    expect(sock.txSeq).toBe(1) // the transport window is full
    peer.resumeReading() // nothing else moves: only the chassis can restart the primary
    await duo.run()
    expect(sock.txSeq).toBe(5)
    expect(peer.receivedBytes).toBe(50)
  })

  it('records written after a handshake failed (peer lost) reach the transport', async () => {
    const duo = new Duo()
    const { sock, peer } = await duo.connect()
    const done = sock.replicate()
    await duo.chassisRound()
    duo.p.peerLost('crash')
    await expect(done).rejects.toMatchObject({ code: 'ECLOSED' })
    sock.write(enc('still'))
    await duo.run([duo.ps, duo.sp])
    expect(Buffer.concat(peer.received).toString()).toBe('still')
  })

  it('a connection accepted for a secondary that died before its handshake is not held forever', async () => {
    const duo = new Duo()
    const req = duo.p.listen({ port: LISTEN_PORT, replicate: true })
    await duo.run()
    await req
    const peer = duo.net.dial(LISTEN_PORT) // the chassis holds it for the handshake
    expect([...duo.core.conns.values()].at(-1)!.mode).toBe('hold')
    duo.core.setSecondary('s', null)
    duo.p.peerLost('crash')
    peer.write(enc('hi'))
    await duo.run([duo.ps, duo.sp])
    const sock = [...duo.p.sockets.values()].find((s) => s.kind === 'tcp')!
    expect(text([sock.read()!])).toBe('hi')
  })

  it('a connection accepted on a listener the secondary unreplicated is released from hold', async () => {
    const duo = new Duo()
    const req = duo.p.listen({ port: LISTEN_PORT, replicate: true })
    await duo.run()
    const listener = await req
    duo.s.unreplicate(duo.pair(listener.handle)!)
    await duo.run()
    expect(duo.sr(listener)).toBeNull()
    const peer = duo.net.dial(LISTEN_PORT)
    peer.write(enc('hi'))
    await duo.run()
    const sock = [...duo.p.sockets.values()].find((s) => s.kind === 'tcp')!
    expect(text([sock.read()!])).toBe('hi')
  })

  it('after an ack timeout a takeover does not adopt the stale pair (no resume gap)', async () => {
    const duo = new Duo({ re: { ackTimeoutMs: 100 } })
    const { sock, peer } = await duo.connect()
    await duo.replicate(sock)
    sock.write(enc('x'))
    duo.clock.advance(100) // no ack: replication fails, the record goes out alone
    await duo.run([duo.ps])
    expect(Buffer.concat(peer.received).toString()).toBe('x')
    const r = await duo.takeover() // the KKCM (with UNREPLICATE) is drained first
    expect(r.adopted).not.toContain(sock.handle)
    expect(duo.s.counters.resumeGaps).toBe(0)
  })

  /** A replicated socket whose round ended while RX it fanned out still waits on the secondary's chassis link. */
  async function rxLeftFromEarlierRound(): Promise<{ duo: Duo; sock: Socket; peer: MemoryPeer }> {
    const duo = new Duo()
    const { sock, peer } = await duo.connect()
    await duo.replicate(sock)
    peer.write(enc('once')) // RX to both; the secondary's copy stays in its link
    sock.unreplicate()
    await duo.run([duo.cs])
    return { duo, sock, peer }
  }

  it('RX sent for an earlier replication round is not appended to the next round\'s pair', async () => {
    const { duo, sock } = await rxLeftFromEarlierRound()
    const again = sock.replicate()
    await duo.run([duo.cs])
    expect(duo.pair(sock.handle)!.complete).toBe(true)
    await duo.run() // the old round's RX arrives now
    await again
    expect(duo.s.counters.rxStale).toBe(1)
    expect(text(duo.pair(sock.handle)!.recv.queue)).toBe('once')
  })

  for (const heard of [true, false]) {
    it(`RX sent to the secondary for an earlier round and still queued at a takeover does not reach the new primary twice (${heard ? 'functional' : 'DONE not yet acked'})`, async () => {
      // The secondary's chassis link lagged a whole handshake behind its KKCM. The simulation found
      // it once the handshake took one round trip (the new round's pair is complete sooner).
      const { duo, sock, peer } = await rxLeftFromEarlierRound()
      sock.replicate().catch(() => {})
      await duo.run(heard ? [duo.cs] : [duo.cs, duo.sp]) // the new round's pre-existing data has the chunk
      expect(duo.pair(sock.handle)!.complete).toBe(true)
      expect(duo.sr(sock).functional).toBe(heard)
      expect(duo.cs.length).toBeGreaterThan(0)
      const r = await duo.takeover()
      expect(r.adopted).toContain(sock.handle)
      await duo.run() // the old round's RX arrives at the new primary now
      const merged = duo.s.sockets.get(sock.handle)!
      expect(text(merged.rcv)).toBe('once')
      expect(duo.s.counters.rxStale).toBe(1)
      peer.write(enc('+next'))
      await duo.run()
      expect(text(merged.rcv)).toBe('once+next')
    })
  }

  it("a late 'hold' reply from a failed round does not start the next round's snapshot", async () => {
    const duo = new Duo()
    const { sock, peer } = await duo.connect()
    const ops: string[] = []
    duo.pc.onSend = (h, payload) => {
      if (h.type === MsgType.CMD) ops.push(String((unpack(payload) as { op: string; mode?: string }).mode ?? 'other'))
    }
    const first = sock.replicate() // prl hold, round 1
    first.catch(() => {})
    duo.p.peerLost('crash') // prl off
    duo.p.attachPeer(duo.ps) // prl hold, round 2
    expect(ops.filter((o) => o !== 'other')).toEqual(['hold', 'off', 'hold'])
    await duo.deliver(duo.pc, ops.indexOf('off') + 1) // the chassis answers up to the 'off' only
    await duo.deliver(duo.cp) // the primary sees round 1's late 'hold' reply
    expect(duo.core.conns.get(sock.handle)!.mode).toBe('primary')
    peer.write(enc('between')) // the chassis is not holding: this goes to the primary alone
    await duo.run()
    const pair = duo.pair(sock.handle)!
    expect(duo.sr(sock).functional).toBe(true)
    expect(text(pair.recv.queue)).toBe('between')
    expect(duo.p.counters.rejected + duo.s.counters.rejected).toBe(0)
  })

  it('a release sent for a secondary that died does not fan out to the next one', async () => {
    const duo = new Duo()
    const { sock, peer } = await duo.connect()
    const done = sock.replicate()
    await duo.chassisRound() // held
    const ops: string[] = []
    duo.pc.onSend = (h, payload) => {
      if (h.type === MsgType.CMD) ops.push(String((unpack(payload) as { mode?: string }).mode ?? 'other'))
    }
    for (let i = 0; i < 4; i++) {
      await duo.deliver(duo.ps)
      await duo.deliver(duo.sp)
    }
    await done // functional; the chassis has not seen the release yet
    const c = duo.core.conns.get(sock.handle)!
    expect(c.mode).toBe('hold')
    duo.core.setSecondary('s', null) // the secondary dies: the hold ends
    duo.p.peerLost('crash')
    duo.core.setSecondary('s2', duo.cs) // a fresh secondary is up, nothing replicated to it yet
    const sentBefore = duo.cs.counters.sent
    await duo.deliver(duo.pc, ops.indexOf('release') + 1) // the stale release arrives
    peer.write(enc('only-primary')) // before the primary's 'off' does
    expect(duo.cs.counters.sent).toBe(sentBefore)
    expect(c.mode).toBe('primary')
    await duo.run([duo.ps, duo.sp])
    expect(text([sock.read()!])).toBe('only-primary')
  })

  it('a new round does not inherit CONGESTED from the previous one', async () => {
    const duo = new Duo({ re: { congestionBytes: 10 } })
    const { sock } = await duo.connect()
    await duo.replicate(sock)
    sock.write(enc('0123456789abcdef'))
    await duo.run()
    expect(duo.sr(sock).congested).toBe(true)
    duo.sr(sock).fail('test') // the secondary drops its pair (and its memory)
    await duo.run()
    expect(duo.s.stats().congested).toBe(false)
    void sock.replicate()
    await duo.run()
    expect(duo.sr(sock).functional).toBe(true)
    expect(duo.sr(sock).congested).toBe(false)
    expect(() => sock.write(enc('ok'))).not.toThrow()
  })

  it("a failed round's TX_RELEASE that waits for chassis room goes out before the next round is functional", async () => {
    // Simulation seed 3211892687: the release waited for room while the next round's handshake ran,
    // then went out with the socket functional again (the check: only a round that is off releases).
    const duo = new Duo()
    const { sock, peer } = await duo.connect()
    await duo.replicate(sock)
    const functionalAtRelease: boolean[] = []
    duo.pc.onSend = (h) => {
      if (h.type === MsgType.TX_RELEASE) functionalAtRelease.push(duo.sr(sock).functional)
    }
    while (duo.ps.inject(new Uint8Array(0)) || false); // the UNREPLICATE must wait
    duo.sr(sock).fail('test')
    const again = sock.replicate()
    await duo.chassisRound() // held: the new round's handshake waits behind the UNREPLICATE
    while (duo.pc.inject(new Uint8Array(0)) || false); // the TX_RELEASE will wait too
    for (let i = 0; i < 8; i++) {
      await duo.deliver(duo.ps) // the UNREPLICATE goes, then the handshake could
      await duo.deliver(duo.sp)
    }
    expect(duo.sr(sock).functional).toBe(false) // no init frame went out before the release
    await duo.run()
    await again
    expect(functionalAtRelease).toEqual([false])
    sock.write(enc('after'))
    await duo.run()
    expect(Buffer.concat(peer.received).toString()).toBe('after')
  })

  it('a stray INIT_NAK or INIT_PARAMS cannot undo functional replication', async () => {
    const duo = new Duo()
    const { sock } = await duo.connect()
    await duo.replicate(sock)
    await duo.inject(duo.sp, MsgType.INIT_NAK, 0, sock.handle, 0, 0, 0)
    await duo.inject(duo.ps, MsgType.INIT_PARAMS, 0, sock.handle, 0, 0, 0, new Uint8Array([0xc0]))
    expect(duo.sr(sock).functional).toBe(true)
    expect(duo.pair(sock.handle)!.functional).toBe(true)
    expect(duo.p.counters.rejectReasons['init-nak-not-initializing']).toBe(1)
    expect(duo.s.counters.rejectReasons['params-unexpected']).toBe(1)
  })

  /** Unreplicates `sock` and runs everything: nothing more goes out for its handle, nothing is rejected. */
  async function expectSilentAfterDrop(duo: Duo, sock: Socket, sent: Header[]): Promise<void> {
    sock.unreplicate()
    await duo.deliver(duo.ps) // the UNREPLICATE drops the pair
    expect(duo.pair(sock.handle)).toBeUndefined()
    await duo.run()
    expect(sent.filter((h) => h.handle === sock.handle)).toEqual([])
    expect(duo.p.counters.rejected + duo.s.counters.rejected).toBe(0)
  }

  it('an ACK that waits for room on the KKCM is not sent once UNREPLICATE dropped its pair', async () => {
    // Simulation seed 1310568947: the retry went out later for a handle the secondary no longer
    // replicated (an ACK names no round, so it would also ack and credit the handle's next one).
    const duo = new Duo()
    const { sock } = await duo.connect()
    await duo.replicate(sock)
    const sent = Duo.recorder(duo.sp)
    Duo.fill(duo.sp) // the ring to the primary is full when the ack is due
    sock.write(enc('x'))
    await duo.deliver(duo.ps, 1) // the REPLICATE: its ack waits for room
    expect(duo.sp.waitingForRoom).toBeGreaterThan(0)
    await expectSilentAfterDrop(duo, sock, sent)
  })

  it('INIT_ACKs that wait for room on the KKCM are not sent once UNREPLICATE dropped their pair', async () => {
    const duo = new Duo()
    const { sock } = await duo.connect()
    const sent = Duo.recorder(duo.sp)
    Duo.fill(duo.sp) // the ring to the primary is full for the whole handshake
    sock.replicate().catch(() => {})
    await duo.chassisRound() // held: the handshake goes out
    await duo.deliver(duo.ps) // every step's INIT_ACK waits for room
    expect(duo.pair(sock.handle)!.complete).toBe(true)
    await expectSilentAfterDrop(duo, sock, sent)
  })
})
