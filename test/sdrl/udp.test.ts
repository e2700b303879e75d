// UDP: every datagram's address survives replication (the secondary's snoops carry it) and a
// takeover (records the new primary resends go where the dead primary addressed them).

import { describe, expect, it } from 'vitest'
import type { Socket } from '../../engine/socket/socket.ts'
import { Duo } from './duo.ts'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const dec = (b: Uint8Array): string => new TextDecoder().decode(b)
const ENGINE_PORT = 2000
const to = (port: number) => ({ address: 'mem', port })

async function udpSocket(duo: Duo): Promise<Socket> {
  const req = duo.p.udp({ port: ENGINE_PORT })
  await duo.chassisRound()
  return req
}

describe('UDP through replication and takeover', () => {
  it('received datagrams reach both REs with their source address', async () => {
    const duo = new Duo()
    const a = duo.net.udpPeer(3001)
    const b = duo.net.udpPeer(3002)
    const sock = await udpSocket(duo)
    await duo.replicate(sock)
    a.send(enc('from-a'), to(ENGINE_PORT))
    b.send(enc('from-b'), to(ENGINE_PORT))
    await duo.run()
    const pair = duo.pair(sock.handle)!
    const live = [sock.read(), sock.read()].map((r) => [dec(r!.data), r!.addr?.port])
    const snoop = [pair.recv.read(), pair.recv.read()].map((r) => [dec(r!.data), r!.addr?.port])
    expect(live).toEqual([
      ['from-a', 3001],
      ['from-b', 3002],
    ])
    expect(snoop).toEqual(live)
  })

  it("written datagrams keep their destination in the secondary's send snoop and on the wire", async () => {
    const duo = new Duo()
    const a = duo.net.udpPeer(3001)
    const b = duo.net.udpPeer(3002)
    const sock = await udpSocket(duo)
    await duo.replicate(sock)
    sock.write(enc('to-a'), to(3001))
    sock.write(enc('to-b'), to(3002))
    await duo.run()
    const pair = duo.pair(sock.handle)!
    const snoop = [pair.send.read(), pair.send.read()].map((r) => [dec(r!.data), r!.addr?.port])
    expect(snoop).toEqual([
      ['to-a', 3001],
      ['to-b', 3002],
    ])
    expect(a.received.map((m) => [dec(m.data), m.from.port])).toEqual([['to-a', ENGINE_PORT]])
    expect(b.received.map((m) => [dec(m.data), m.from.port])).toEqual([['to-b', ENGINE_PORT]])
  })

  it('after a takeover, replicated datagrams the transport never took go out to their own addresses', async () => {
    const duo = new Duo()
    const a = duo.net.udpPeer(3001)
    const b = duo.net.udpPeer(3002)
    const sock = await udpSocket(duo)
    await duo.replicate(sock)
    sock.write(enc('d1'), to(3001))
    await duo.run()
    // No transport credit: the next datagrams are replicated and acked, never transmitted.
    sock.txCredit = 0
    sock.write(enc('d2'), to(3002))
    sock.write(enc('d3'), to(3001))
    await duo.run()
    expect(duo.sr(sock).ack).toBe(3)
    expect(duo.pair(sock.handle)!.retained.length).toBe(2)
    const r = await duo.takeover()
    expect(r.adopted).toContain(sock.handle)
    await duo.run([duo.pc, duo.ps, duo.sp])
    expect(a.received.map((m) => dec(m.data))).toEqual(['d1', 'd3'])
    expect(b.received.map((m) => dec(m.data))).toEqual(['d2'])
    // The merged socket sends from the same local address.
    const merged = duo.s.merge(sock.handle)
    expect(merged.kind).toBe('udp')
    expect(merged.local?.port).toBe(ENGINE_PORT)
    merged.write(enc('d4'), to(3002))
    await duo.run([duo.pc, duo.ps, duo.sp])
    expect(b.received.map((m) => [dec(m.data), m.from.port])).toEqual([
      ['d2', ENGINE_PORT],
      ['d4', ENGINE_PORT],
    ])
    expect(duo.s.counters.resumeGaps).toBe(0)
    expect(duo.core.counters.txDuplicates + duo.core.counters.txGaps).toBe(0)
  })
})
