// A chassis running test/fixtures/stream-app.ts on real workers and the in-memory transport, with a
// peer streaming numbered lines in and checking the records that come back (stream-check.ts): the
// setup and the final check of the tests that fault it (failover, crash, faults).
import { expect } from 'vitest'
import { Chassis } from '../../engine/index.ts'
import type { MemoryPeer } from '../../engine/chassis/memory.ts'
import { StreamChecker, lineWriter } from '../fixtures/stream-check.ts'

export interface StreamSession {
  chassis: Chassis
  peer: MemoryPeer
  check: StreamChecker
  lines: ReturnType<typeof lineWriter>
}

/** Starts the chassis and the stream; resolves once the connection is replicated and functional. */
export async function startStream(opts: { port: number; size: number; deadIntervalMs: number; keepaliveIntervalMs: number }): Promise<StreamSession> {
  const chassis = await Chassis.start({
    app: new URL('../fixtures/stream-app.ts', import.meta.url),
    appOptions: { port: opts.port, total: 1e12, size: opts.size },
    re: { deadIntervalMs: opts.deadIntervalMs, keepaliveIntervalMs: opts.keepaliveIntervalMs },
    deadIntervalMs: opts.deadIntervalMs,
    keepaliveIntervalMs: opts.keepaliveIntervalMs,
  })
  const peer = chassis.memory.dial(opts.port)
  peer.keepReceived = false
  const check = new StreamChecker(opts.size)
  peer.on('data', (d: Uint8Array) => check.feed(d))
  const lines = lineWriter(peer)
  // Ready means every replicated socket is functional: wait until the connection counts too.
  while (chassis.core.sync.total < 2) await new Promise((r) => setTimeout(r, 5))
  await chassis.ready(20_000)
  return { chassis, peer, check, lines }
}

/** After the last fault: the stream keeps flowing, and the application has seen every line sent. */
export async function expectStreamGoesOn({ check, lines }: StreamSession): Promise<void> {
  lines.stop()
  const target = check.next + 2000
  const deadline = performance.now() + 20_000
  while ((check.next < target || check.lastLine < lines.sent) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  expect(check.errors).toEqual([])
  expect(check.next).toBeGreaterThanOrEqual(target)
  expect(check.lastLine).toBe(lines.sent)
}
