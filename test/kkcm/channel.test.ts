// Channels across real threads: a duplex echo through a worker, ping-pong with parking forced on
// both sides (a lost wake-up would hang it), and a parked worker whose event loop must stay alive.

import { describe, expect, it, onTestFailed } from 'vitest'
import type { Worker } from 'node:worker_threads'
import { createChannel, createChannelSab, openEndpoint } from '../../engine/kkcm/channel.ts'
import { MessageReader, sendMessage } from '../../engine/kkcm/message.ts'
import { Ring, RingResult } from '../../engine/kkcm/ring.ts'
import { MsgType } from '../../engine/protocol/header.ts'
import { spawnWorker } from '../../engine/runtime/worker.ts'

const seed = Number(process.env.NSR_SEED ?? Math.floor(Math.random() * 2 ** 31))
const echoEntry = new URL('./fixtures/echo.worker.ts', import.meta.url)

/** Resolves once `holds()` is true, checking once per event-loop turn. */
async function until(holds: () => boolean): Promise<void> {
  while (!holds()) await new Promise((r) => setImmediate(r))
}

function nextMessage<T>(w: Worker): Promise<T> {
  return new Promise((resolve, reject) => {
    w.once('message', resolve)
    w.once('error', reject)
  })
}

describe('KKCM channel', () => {
  it('lays out two rings in one buffer; each side sends on its tx and reads its rx', () => {
    const { sab, a, b } = createChannel(4096)
    expect(a.tx.sab).toBe(sab)
    expect(a.tx.byteOffset).toBe(b.rx.byteOffset)
    expect(a.rx.byteOffset).toBe(b.tx.byteOffset)
    a.tx.send(new Uint8Array([1]))
    b.tx.send(new Uint8Array([2]))
    expect(Array.from(b.rx.receive()!)).toEqual([1])
    expect(Array.from(a.rx.receive()!)).toEqual([2])
    b.close()
    expect(a.closed).toBe(true)
    expect(a.tx.send(new Uint8Array(1))).toBe(RingResult.CLOSED)
    expect(() => openEndpoint(sab, 'c' as 'a')).toThrow(/EINVAL/)
  })

  it('echoes a seeded stream of messages through a worker', { timeout: 20_000 }, async () => {
    onTestFailed(() => console.error(`channel echo seed=${seed}`))
    const sab = createChannelSab(1 << 16)
    const a = openEndpoint(sab, 'a')
    const w = spawnWorker(echoEntry, { workerData: { sab }, name: 'echo' })
    const total = 20_000
    let rnd = seed || 1
    const lens: number[] = []
    let received = 0
    let bad = 0
    const reader = new MessageReader(a.rx, (h, bytes, off) => {
      if (h.seq !== received || h.length !== lens[received]) bad++
      for (let i = 0; i < h.length; i++) if (bytes[off + i] !== ((h.seq + i) & 255)) bad++
      received++
    })
    const payload = new Uint8Array(600)
    let sent = 0
    while (received < total) {
      while (sent < total) {
        rnd ^= rnd << 13
        rnd ^= rnd >>> 17
        rnd ^= rnd << 5
        const len = (rnd >>> 0) % 600
        for (let i = 0; i < len; i++) payload[i] = (sent + i) & 255
        if (sendMessage(a.tx, MsgType.REPLICATE, 0, 1, sent, 0, 0, payload, len) !== RingResult.OK) break
        lens.push(len)
        sent++
      }
      if (reader.poll() === 0) await a.rx.readable()
    }
    a.close()
    const stats = await nextMessage<{ echoed: number; rejects: number }>(w)
    await w.terminate()
    expect(bad).toBe(0)
    expect(stats).toMatchObject({ echoed: total, rejects: 0 })
  })

  it('never loses a wake-up when both sides park on every wait', { timeout: 20_000 }, async () => {
    for (const spinUs of [0, 1]) {
      const sab = createChannelSab(4096)
      const a = openEndpoint(sab, 'a', { spinUs })
      const w = spawnWorker(echoEntry, { workerData: { sab, spinUs }, name: 'echo-park' })
      const rounds = 1500
      let got = 0
      const reader = new MessageReader(a.rx, () => got++)
      for (let i = 0; i < rounds; i++) {
        expect(sendMessage(a.tx, MsgType.KEEPALIVE, 0, 0, i, 0, 0)).toBe(RingResult.OK)
        while (got <= i) if (reader.poll() === 0) await a.rx.readable()
      }
      a.close()
      const stats = await nextMessage<{ echoed: number; rx: { parks: number; notifies: number } }>(w)
      await w.terminate()
      expect(stats.echoed).toBe(rounds)
      if (spinUs === 0) expect(stats.rx.parks).toBeGreaterThan(rounds / 2)
    }
  })

  it('a parked worker stays alive until the frame comes', { timeout: 20_000 }, async () => {
    const ring = Ring.create(4096)
    const w = spawnWorker(new URL('./fixtures/park.worker.ts', import.meta.url), { workerData: { sab: ring.sab } })
    const messages: unknown[] = []
    const exited = new Promise<number>((resolve) => w.once('exit', resolve))
    w.on('message', (m) => messages.push(m))
    while (messages.length === 0) await new Promise((r) => setTimeout(r, 5))
    await new Promise((r) => setTimeout(r, 150))
    ring.send(new Uint8Array([4, 2]))
    expect(await exited).toBe(0)
    expect(messages[1]).toEqual({ got: [4, 2], parks: 1 })
  })

  it('a fenced producer commits nothing more, and every frame it committed before is drained in order', { timeout: 20_000 }, async () => {
    for (let round = 0; round < 5; round++) {
      const ring = Ring.create(1 << 20)
      const w = spawnWorker(new URL('./fixtures/fence-producer.worker.ts', import.meta.url), { workerData: { sab: ring.sab } })
      const seen: number[] = []
      const take = (): void => void ring.drain((_b, off) => seen.push(ring.view.getUint32(off, true)))
      // Let it stream for a while (draining, so it never fills), then fence it mid-stream.
      while (seen.length < 2000 * (round + 1)) {
        take()
        await new Promise((r) => setImmediate(r))
      }
      if (!ring.fence()) await until(() => ring.fenced())
      ring.recoverCommitted()
      take()
      const count = seen.length
      // The producer is still running: whatever it does now must not land.
      await new Promise((r) => setTimeout(r, 50))
      ring.recoverCommitted()
      take()
      await w.terminate()
      expect(seen.length).toBe(count)
      expect(seen).toEqual(Array.from({ length: count }, (_, i) => i))
    }
  })

  it('a halted consumer takes no frame more, across threads, once the halt holds', { timeout: 20_000 }, async () => {
    for (let round = 0; round < 5; round++) {
      const ring = Ring.create(1 << 16)
      const counter = new Int32Array(new SharedArrayBuffer(4))
      const w = spawnWorker(new URL('./fixtures/halt-consumer.worker.ts', import.meta.url), { workerData: { sab: ring.sab, counter: counter.buffer } })
      let i = 0
      const produce = (): void => {
        for (let k = 0; k < 200; k++) {
          const off = ring.reserve(64)
          if (off < 0) return
          ring.view.setUint32(off, i++, true)
          ring.commit()
        }
      }
      while (Atomics.load(counter, 0) < 2000 * (round + 1)) {
        produce()
        await new Promise((r) => setImmediate(r))
      }
      if (!ring.halt()) await until(() => ring.haltHeld())
      const taken = Atomics.load(counter, 0)
      // The consumer is still running and frames keep coming: it must not take one.
      for (let k = 0; k < 10; k++) {
        produce()
        await new Promise((r) => setTimeout(r, 5))
      }
      expect(Atomics.load(counter, 0)).toBe(taken)
      expect(taken).toBeGreaterThan(0) // -1: a frame out of order
      await w.terminate()
    }
  })

  it('recovers the committed but unpublished frames of a producer that was killed mid-batch', { timeout: 20_000 }, async () => {
    const ring = Ring.create(1 << 16)
    const frames = 100
    const w = spawnWorker(new URL('./fixtures/die-mid-batch.worker.ts', import.meta.url), { workerData: { sab: ring.sab, frames } })
    await nextMessage(w)
    expect(ring.isEmpty()).toBe(true) // all of it still in the dead-to-be producer's batch
    await w.terminate()
    expect(ring.recoverCommitted()).toBe(frames * 72)
    expect(ring.recoverCommitted()).toBe(0)
    const seen: number[] = []
    ring.drain((_b, off) => seen.push(ring.view.getUint32(off, true)))
    expect(seen).toEqual(Array.from({ length: frames }, (_, i) => i))
  })
})
