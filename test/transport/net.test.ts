// engine/chassis/net.ts on its own (no REs): the TCP and UDP transports keep the Transport contract
// the chassis relies on: reading starts only once handlers are attached; pause() closes the peer's
// window and resume() reopens it; write's `done` comes when the OS took the bytes; a peer's FIN, a
// reset and a refused connect are reported with the right codes; a peer's FIN leaves our side open;
// a paused UDP socket keeps a bounded backlog and counts its drops; a connected UDP socket talks to
// its remote only.

import dgram from 'node:dgram'
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { NetTransport, UDP_BACKLOG_DATAGRAMS } from '../../engine/chassis/net.ts'
import type { ConnEvents, TransportConn, TransportListener } from '../../engine/chassis/transport.ts'
import type { Addr } from '../../engine/socket/records.ts'

const wait = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

async function until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await wait(5)
  }
}

/** Records what a connection reports. */
function recorder(conn: TransportConn) {
  const r = { bytes: 0, chunks: [] as Buffer[], from: [] as Array<Addr | null>, ended: false, error: null as string | null }
  const ev: ConnEvents = {
    data: (d, addr) => {
      r.bytes += d.length
      r.chunks.push(Buffer.from(d))
      r.from.push(addr)
    },
    end: () => void (r.ended = true),
    error: (code) => void (r.error = code),
  }
  conn.events = ev
  return r
}

// Both ways of reading: into the transport's one lent buffer (onread, Node's default here) and
// Node's own buffer per read (what Bun and Deno do).
describe.each([{ lendReads: true }, { lendReads: false }])('NetTransport: TCP (%o)', ({ lendReads }) => {
  const t = new NetTransport('tcp', { lendReads })
  const cleanup: Array<() => void> = []
  afterEach(() => {
    for (const c of cleanup.splice(0)) c()
  })

  async function pair(): Promise<{ server: TransportConn; client: net.Socket; listener: TransportListener }> {
    let accepted: TransportConn | null = null
    const listener = await t.listen('127.0.0.1', 0, (c) => (accepted = c))
    cleanup.push(() => listener.close())
    const client = net.connect({ port: listener.local.port, host: '127.0.0.1', allowHalfOpen: true })
    client.on('error', () => {}) // tests destroy the server side, which resets this one
    cleanup.push(() => client.destroy())
    await new Promise((r) => client.once('connect', r))
    await until(() => accepted !== null)
    cleanup.push(() => accepted!.destroy())
    return { server: accepted!, client, listener }
  }

  it('accepts, exchanges data both ways, and reports addresses', async () => {
    const { server, client, listener } = await pair()
    expect(server.local).toEqual({ address: '127.0.0.1', port: listener.local.port })
    expect(server.remote).toEqual({ address: '127.0.0.1', port: client.localPort })
    // On Node an accepted socket reads through onread, into the transport's one buffer, lent.
    expect(server.lendsReads).toBe(lendReads)
    // Data sent before the chassis attaches its handlers waits for them.
    client.write('early')
    await wait(50)
    const r = recorder(server)
    await until(() => r.bytes === 5)
    let done = 0
    const got: Buffer[] = []
    client.on('data', (d: Buffer) => got.push(d))
    server.write(new TextEncoder().encode('reply'), null, () => done++)
    await until(() => done === 1 && Buffer.concat(got).toString() === 'reply')
  })

  it('connections reading into the one lent buffer each get their own bytes, exactly', async () => {
    const a = await pair()
    const b = await pair()
    const ra = recorder(a.server)
    const rb = recorder(b.server)
    // Interleaved writes of two patterns, large enough that reads of both fill the shared buffer.
    const pa = Buffer.alloc(200_000, 0x61)
    const pb = Buffer.alloc(200_000, 0x62)
    for (let i = 0; i < 10; i++) {
      a.client.write(pa.subarray(i * 20_000, (i + 1) * 20_000))
      b.client.write(pb.subarray(i * 20_000, (i + 1) * 20_000))
    }
    await until(() => ra.bytes === pa.length && rb.bytes === pb.length, 10_000)
    expect(Buffer.concat(ra.chunks).equals(pa)).toBe(true)
    expect(Buffer.concat(rb.chunks).equals(pb)).toBe(true)
  })

  it('pause() closes the peer window; resume() delivers everything in order', async () => {
    const { server, client } = await pair()
    const r = recorder(server)
    server.pause()
    const block = Buffer.alloc(64 * 1024, 7)
    let written = 0
    let stalled = false
    for (let i = 0; i < 2000 && !stalled; i++) {
      written += block.length
      if (!client.write(block)) {
        // The kernel buffers fill, then the client's own: wait to see that no drain comes.
        stalled = await Promise.race([new Promise<boolean>((res) => client.once('drain', () => res(false))), wait(300).then(() => true)])
      }
    }
    expect(stalled).toBe(true)
    const whilePaused = r.bytes
    expect(whilePaused).toBeLessThan(written)
    await wait(100)
    expect(r.bytes).toBe(whilePaused) // nothing more read while paused
    server.resume()
    await until(() => r.bytes === written, 10_000)
  })

  it("write's done waits for the OS to take the bytes (a peer that does not read)", async () => {
    const { server, client } = await pair()
    recorder(server)
    client.pause()
    const big = new Uint8Array(1024 * 1024)
    let done = 0
    for (let i = 0; i < 64; i++) server.write(big, null, () => done++)
    await wait(300)
    expect(done).toBeLessThan(64) // the peer's window closed: the rest waits
    client.resume()
    await until(() => done === 64, 10_000)
  })

  it('what one task writes leaves in one writev, as given, and each write gets its done', async () => {
    const { server, client } = await pair()
    recorder(server)
    const sock = (server as unknown as { sock: net.Socket & { _writev: (...a: unknown[]) => unknown; _write: (...a: unknown[]) => unknown } }).sock
    const calls = { writev: 0, write: 0 }
    const writev = sock._writev.bind(sock)
    const write = sock._write.bind(sock)
    sock._writev = (...a: unknown[]) => (calls.writev++, writev(...a))
    sock._write = (...a: unknown[]) => (calls.write++, write(...a))
    const got: Buffer[] = []
    client.on('data', (d: Buffer) => got.push(d))
    // Views into one slab, as the chassis's out queue hands them over.
    const slab = new TextEncoder().encode('one;two;three;')
    let done = 0
    for (const [from, to] of [[0, 4], [4, 8], [8, 14]]) server.write(slab.subarray(from, to), null, () => done++)
    await until(() => done === 3 && Buffer.concat(got).toString() === 'one;two;three;')
    expect(calls).toEqual({ writev: 1, write: 0 })
  })

  it("reports the peer's FIN and keeps our side open (half-close)", async () => {
    const { server, client } = await pair()
    const r = recorder(server)
    client.end('bye')
    await until(() => r.ended)
    expect(Buffer.concat(r.chunks).toString()).toBe('bye')
    const got: Buffer[] = []
    client.on('data', (d: Buffer) => got.push(d))
    const clientEnded = new Promise((res) => client.once('end', res))
    server.write(Buffer.from('still here'), null, () => {})
    server.end()
    await clientEnded
    expect(Buffer.concat(got).toString()).toBe('still here')
    expect(r.error).toBeNull()
  })

  it('reports a reset as ECONNRESET, once', async () => {
    const { server, client } = await pair()
    const r = recorder(server)
    let errors = 0
    server.events = { ...server.events!, error: (code) => ((r.error = code), errors++) }
    client.resetAndDestroy()
    await until(() => r.error !== null)
    expect(r.error).toBe('ECONNRESET')
    await wait(50)
    expect(errors).toBe(1)
    expect(r.ended).toBe(false)
    // Writing to it afterwards is harmless and still returns the credit.
    let done = 0
    server.write(Buffer.from('late'), null, () => done++)
    await until(() => done === 1)
  })

  it('destroy() resets the peer', async () => {
    const { server, client } = await pair()
    recorder(server)
    const err = new Promise<string>((res) => client.once('error', (e: NodeJS.ErrnoException) => res(e.code ?? '')))
    server.destroy()
    expect(await err).toBe('ECONNRESET')
  })

  it('connects out, and a refused connect rejects with ECONNREFUSED', async () => {
    const srv = net.createServer((s) => {
      s.on('error', () => {}) // our destroy() resets it
      s.end('hi')
    })
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()))
    cleanup.push(() => srv.close())
    const port = (srv.address() as net.AddressInfo).port
    const c = await t.connect('127.0.0.1', port)
    cleanup.push(() => c.destroy())
    expect(c.remote).toEqual({ address: '127.0.0.1', port })
    expect(c.lendsReads).toBe(lendReads)
    const r = recorder(c)
    await until(() => r.ended)
    expect(Buffer.concat(r.chunks).toString()).toBe('hi')
    srv.close()
    await wait(20)
    await expect(t.connect('127.0.0.1', port)).rejects.toMatchObject({ code: 'ECONNREFUSED' })
  })

  it('a port in use rejects listen with EADDRINUSE', async () => {
    const l = await t.listen('127.0.0.1', 0, () => {})
    cleanup.push(() => l.close())
    await expect(t.listen('127.0.0.1', l.local.port, () => {})).rejects.toMatchObject({ code: 'EADDRINUSE' })
  })
})

describe('NetTransport: UDP', () => {
  const t = new NetTransport('udp')

  it('carries datagrams with their addresses both ways', async () => {
    const conn = await t.udp('127.0.0.1', 0)
    const r = recorder(conn)
    const peer = dgram.createSocket('udp4')
    await new Promise<void>((res) => peer.bind(0, '127.0.0.1', res))
    const got: Array<{ m: string; port: number }> = []
    peer.on('message', (m, rinfo) => got.push({ m: m.toString(), port: rinfo.port }))
    peer.send('ping', conn.local.port, '127.0.0.1')
    await until(() => r.chunks.length === 1)
    expect(r.from[0]).toEqual({ address: '127.0.0.1', port: peer.address().port })
    let done = 0
    conn.write(Buffer.from('pong'), r.from[0], () => done++)
    await until(() => got.length === 1 && done === 1)
    expect(got[0]).toEqual({ m: 'pong', port: conn.local.port })
    peer.close()
    conn.end()
  })

  it('a paused socket keeps a bounded backlog, drops past it (counted), and delivers the backlog on resume', async () => {
    const conn = await t.udp('127.0.0.1', 0)
    const r = recorder(conn)
    conn.pause()
    const peer = dgram.createSocket('udp4')
    await new Promise<void>((res) => peer.bind(0, '127.0.0.1', res))
    const dropsBefore = t.counters.udpDropped
    const total = UDP_BACKLOG_DATAGRAMS + 100
    for (let i = 0; i < total; i++) {
      peer.send(String(i), conn.local.port, '127.0.0.1')
      if (i % 32 === 31) await wait(2) // loopback's own buffer must not be what drops them
    }
    await until(() => t.counters.udpBacklogged + t.counters.udpDropped - dropsBefore >= total || t.counters.udpDropped - dropsBefore >= 100, 5000)
    expect(r.chunks.length).toBe(0)
    expect(t.counters.udpDropped - dropsBefore).toBeGreaterThanOrEqual(100)
    conn.resume()
    expect(r.chunks.length).toBe(UDP_BACKLOG_DATAGRAMS)
    expect(r.chunks.slice(0, 3).map((b) => b.toString())).toEqual(['0', '1', '2'])
    peer.close()
    conn.end()
  })

  it('a socket opened with a remote is connected: it sends to and hears from that remote only', async () => {
    const peer = dgram.createSocket('udp4')
    const other = dgram.createSocket('udp4')
    await new Promise<void>((res) => peer.bind(0, '127.0.0.1', res))
    await new Promise<void>((res) => other.bind(0, '127.0.0.1', res))
    const remote = { address: '127.0.0.1', port: peer.address().port }
    const conn = await t.udp('127.0.0.1', 0, remote)
    expect(conn.remote).toEqual(remote)
    const r = recorder(conn)
    const got: string[] = []
    const otherGot: string[] = []
    peer.on('message', (m) => got.push(m.toString()))
    other.on('message', (m) => otherGot.push(m.toString()))
    const misaddressed = t.counters.udpMisaddressed
    let done = 0
    conn.write(Buffer.from('implied'), null, () => done++)
    conn.write(Buffer.from('explicit'), remote, () => done++)
    conn.write(Buffer.from('elsewhere'), { address: '127.0.0.1', port: other.address().port }, () => done++)
    await until(() => got.length === 2 && done === 3)
    expect(got).toEqual(['implied', 'explicit'])
    expect(t.counters.udpMisaddressed - misaddressed).toBe(1)
    other.send('stranger', conn.local.port, '127.0.0.1')
    peer.send('peer', conn.local.port, '127.0.0.1')
    await until(() => r.chunks.length === 1)
    await wait(20)
    expect(r.chunks.map((b) => b.toString())).toEqual(['peer'])
    expect(otherGot).toEqual([])
    peer.close()
    other.close()
    conn.end()
  })

  it("a connected socket's remote going away (ICMP port unreachable) is counted, not the end of it", async () => {
    const gone = dgram.createSocket('udp4')
    await new Promise<void>((res) => gone.bind(0, '127.0.0.1', res))
    const remote = { address: '127.0.0.1', port: gone.address().port }
    await new Promise<void>((res) => gone.close(() => res()))
    const conn = await t.udp('127.0.0.1', 0, remote)
    const r = recorder(conn)
    const unreachable = t.counters.udpUnreachable
    conn.write(Buffer.from('anyone?'), null, () => {})
    await until(() => t.counters.udpUnreachable > unreachable)
    expect(r.error).toBeNull()
    // The remote is back on the same port: the socket still works both ways.
    const back = dgram.createSocket('udp4')
    await new Promise<void>((res) => back.bind(remote.port, '127.0.0.1', res))
    const got: string[] = []
    back.on('message', (m) => got.push(m.toString()))
    conn.write(Buffer.from('again'), null, () => {})
    back.send('hello', conn.local.port, '127.0.0.1')
    await until(() => got.length === 1 && r.chunks.length === 1)
    expect([got, r.chunks.map((b) => b.toString()), r.error]).toEqual([['again'], ['hello'], null])
    back.close()
    conn.end()
  })
})
