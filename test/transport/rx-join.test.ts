// The chassis joins a peer's small stream chunks while no RE has been given them yet (core.ts,
// join(), up to rxJoinBytes). A backlog of single lines then reaches an RE as a few large RX frames instead of one frame
// per line (tens of thousands of them held the host thread for 25-110 ms at a takeover), and both
// REs still see exactly the same chunks, numbered alike, with the same bytes.
import { expect, it } from 'vitest'
import { defaultChassisLimits } from '../../engine/chassis/core.ts'
import { MsgType, type Header } from '../../engine/protocol/header.ts'
import { Duo } from '../sdrl/duo.ts'

interface Seen {
  seq: number
  bytes: number[]
}

/** RX frames on a link as (chunk number, bytes), chaining any observer already there. */
function rxOf(link: Duo['cp']): Seen[] {
  const seen: Seen[] = []
  const prev = link.onSend
  link.onSend = (h: Header, p: Uint8Array, a) => {
    if (h.type === MsgType.RX) seen.push({ seq: h.seq, bytes: [...p] })
    prev?.(h, p, a)
  }
  return seen
}

it('joins a backlog of tiny chunks into few RX frames, the same chunks to both REs', async () => {
  // A window of 4 KiB per RE: past it, the peer's bytes wait in the chassis queue, and join up to 1 KiB.
  const WINDOW = 4096
  const d = new Duo({ chassis: { rxWindowBytes: WINDOW, rxQueueBytes: 1 << 20 } })
  const { sock, peer } = await d.connect()
  await d.replicate(sock)
  const pair = d.pair(sock.handle)!
  const toP = rxOf(d.cp)
  const toS = rxOf(d.cs)
  const sent: number[] = []
  const LINES = 20_000
  const gotP: number[] = []
  const gotS: number[] = []
  // For the first EAGER lines the secondary reads as they come in while the primary does not:
  // chunks then reach the secondary alone, and none may grow after it did. Then neither reads.
  const EAGER = 2000
  for (let i = 0; i < LINES; i++) {
    const b = new Uint8Array([i & 255, (i >> 8) & 255, 10])
    sent.push(...b)
    peer.write(b)
    if (i < EAGER && i % 100 === 99) {
      await d.run()
      for (let r = pair.recv.read(); r; r = pair.recv.read()) gotS.push(...r.data)
      await d.run()
    }
  }
  for (let round = 0; round < 200 && (gotP.length < sent.length || gotS.length < sent.length); round++) {
    await d.run()
    for (let r = sock.read(); r; r = sock.read()) gotP.push(...r.data)
    for (let r = pair.recv.read(); r; r = pair.recv.read()) gotS.push(...r.data)
    await d.run()
  }
  expect(Buffer.from(gotP).equals(Buffer.from(sent))).toBe(true)
  expect(Buffer.from(gotS).equals(Buffer.from(sent))).toBe(true)
  // The same chunks, numbered the same, went to both.
  expect(toS).toEqual(toP)
  // Numbered from where the stream stood, without a hole.
  for (let i = 1; i < toP.length; i++) expect(toP[i].seq).toBe(toP[i - 1].seq + 1)
  // Only the eager lines and what fit in a window went out line by line; the rest was joined, none beyond the cap.
  const cap = Math.min(defaultChassisLimits.rxJoinBytes, WINDOW / 4)
  expect(toP.length).toBeLessThan(EAGER + Math.ceil(WINDOW / 3) + Math.ceil((3 * LINES) / cap) + 16)
  for (const f of toP) expect(f.bytes.length).toBeLessThanOrEqual(cap)
  expect(d.core.counters.rxJoined).toBeGreaterThan(LINES - EAGER - WINDOW / 3 - Math.ceil((3 * LINES) / cap) - 16)
})

it('keeps the end-of-stream marker a chunk of its own', async () => {
  const d = new Duo({ chassis: { rxWindowBytes: 64, rxQueueBytes: 1 << 20 } })
  const { sock, peer } = await d.connect()
  await d.replicate(sock)
  const toP = rxOf(d.cp)
  for (let i = 0; i < 40; i++) peer.write(new Uint8Array([i, i, i, i]))
  peer.end()
  const got: number[] = []
  for (let round = 0; round < 50 && got.length < 160; round++) {
    await d.run()
    for (let r = sock.read(); r; r = sock.read()) got.push(...r.data)
    for (let r = d.pair(sock.handle)!.recv.read(); r; r = d.pair(sock.handle)!.recv.read());
    await d.run()
  }
  await d.run()
  expect(got.length).toBe(160)
  expect(sock.peerEnded).toBe(true)
  // The FIN is a chunk of its own, after the joined data (16-byte chunks: a quarter of the window).
  const last = toP.at(-1)!
  expect(last.bytes.length).toBe(0)
  expect(toP.slice(0, -1).reduce((n, f) => n + f.bytes.length, 0)).toBe(160)
  expect(toP.length).toBeLessThan(30)
})

it('delivers a chunk larger than the whole RE window once the window is empty', async () => {
  // A window below the transport's read size (64 KiB for TCP): such a chunk used to wait forever.
  const d = new Duo({ chassis: { rxWindowBytes: 256, rxQueueBytes: 1 << 20 } })
  const { sock, peer } = await d.connect()
  await d.replicate(sock)
  const big = new Uint8Array(1000).map((_, i) => i & 255)
  peer.write(new Uint8Array([1, 2, 3]))
  peer.write(big)
  peer.write(new Uint8Array([4]))
  const gotP: number[] = []
  const gotS: number[] = []
  for (let round = 0; round < 20 && (gotP.length < 1004 || gotS.length < 1004); round++) {
    await d.run()
    for (let r = sock.read(); r; r = sock.read()) gotP.push(...r.data)
    for (let r = d.pair(sock.handle)!.recv.read(); r; r = d.pair(sock.handle)!.recv.read()) gotS.push(...r.data)
    await d.run()
  }
  const want = [1, 2, 3, ...big, 4]
  expect(gotP).toEqual(want)
  expect(gotS).toEqual(want)
})
