// The in-memory transport's contract where it matters to NSR: bytes in order, nothing dropped.
import { describe, expect, it } from 'vitest'
import { MemoryNetwork, type MemoryPeer } from '../../engine/chassis/memory.ts'
import type { ConnEvents, TransportConn } from '../../engine/chassis/transport.ts'

/** A peer dialled to an engine listener on `port`, and the accepted connection with `events` attached. */
async function accepted(port: number, events: ConnEvents): Promise<{ peer: MemoryPeer; conn: TransportConn }> {
  const net = new MemoryNetwork()
  const listening = new Promise<TransportConn>((resolve) => {
    void net.listen('mem', port, (c) => resolve(c))
  })
  await Promise.resolve()
  const peer = net.dial(port)
  const conn = await listening
  conn.events = events
  await new Promise((r) => setTimeout(r, 0))
  return { peer, conn }
}

describe('memory transport', () => {
  it('keeps what a server writes before the chassis attached its handlers (was dropped)', async () => {
    const net = new MemoryNetwork()
    // The server greets as soon as it is served, which runs before connect()'s caller resumes.
    net.serve(5000, (peer) => {
      peer.write(Buffer.from('hello '))
      peer.write(Buffer.from('world'))
    })
    const conn = await net.connect('mem', 5000)
    const got: Uint8Array[] = []
    const events: ConnEvents = { data: (d) => got.push(d), end: () => {}, error: () => {} }
    conn.events = events
    await new Promise((r) => setTimeout(r, 0))
    expect(Buffer.concat(got).toString()).toBe('hello world')
  })

  it('holds bytes while paused and delivers them in order on resume', async () => {
    const got: string[] = []
    const { peer, conn } = await accepted(5001, { data: (d) => got.push(Buffer.from(d).toString()), end: () => got.push('<end>'), error: () => {} })
    conn.pause()
    peer.write(Buffer.from('a'))
    peer.write(Buffer.from('b'))
    expect(got).toEqual([])
    conn.resume()
    peer.end()
    // Writes queued behind a paused reader come as one read, as from a TCP receive buffer.
    expect(got).toEqual(['ab', '<end>'])
  })

  it('hands a paused backlog over in reads of at most 64 KiB, in order', async () => {
    const reads: Uint8Array[] = []
    const { peer, conn } = await accepted(5002, { data: (d) => reads.push(d.slice()), end: () => {}, error: () => {} })
    conn.pause()
    const writes = [30_000, 30_000, 30_000, 70_000, 1].map((n, i) => new Uint8Array(n).fill(0x61 + i))
    for (const w of writes) peer.write(w)
    expect(reads).toEqual([])
    conn.resume()
    // 30 + 30 KB fit in one read; the third does not; a write larger than a read goes whole.
    expect(reads.map((r) => r.length)).toEqual([60_000, 30_000, 70_000, 1])
    expect(Buffer.concat(reads)).toEqual(Buffer.concat(writes))
  })
})
