// An RE that dies of an uncaught exception (the common real failure), on real worker threads and the
// in-memory transport, while a peer streams numbered lines in and the application streams numbered
// records out. The worker abandons its rings as it dies (worker-main.ts, ring.ts), so the chassis
// takes over on the worker's 'error' event, with the rings fenced, instead of waiting for its
// 'exit' after the thread's teardown. The crash is thrown from a task that has just committed a
// frame: without the abandon, that task's COMMITTING mark would stay and no fence could hold.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { FailoverEvent } from '../../engine/index.ts'
import { expectStreamGoesOn, startStream, type StreamSession } from './stream-session.ts'

const CRASHES = 8

describe('an RE that dies of an uncaught exception', () => {
  let session: StreamSession
  beforeAll(async () => {
    session = await startStream({ port: 7000, size: 200, deadIntervalMs: 5000, keepaliveIntervalMs: 50 })
  })
  afterAll(async () => {
    await session?.chassis.close()
  })

  it(`is taken over on its 'error' event, fenced, ${CRASHES} times, with a byte-exact stream both ways`, async () => {
    const { chassis, check } = session
    const errors: string[] = []
    chassis.on('re-error', (e: { id: string; error: string }) => errors.push(e.id + ' ' + e.error))
    for (let k = 0; k < CRASHES; k++) {
      await chassis.ready(20_000)
      await new Promise((r) => setTimeout(r, 5 + ((k * 7) % 20)))
      const fenced = chassis.counters.fencedRetires
      const failover = new Promise<FailoverEvent>((r) => chassis.once('failover', r))
      chassis.crash('primary')
      const e = await failover
      expect(e.reason).toBe('crashed')
      // Its rings were abandoned as it died: the fence held at once, whatever the thread was doing.
      expect(chassis.counters.fencedRetires).toBe(fenced + 1)
      expect(check.errors).toEqual([])
    }
    // Each crash reported once, by the RE that died (an activated spare used to report it twice).
    expect(errors.filter((x) => x.includes('injected crash'))).toHaveLength(CRASHES)
    expect(errors.filter((x) => x.startsWith('spare-'))).toEqual([])
    // A secondary that crashes is replaced; the primary serves on.
    await chassis.ready(20_000)
    const lost = chassis.counters.secondaryLosses
    chassis.crash('secondary')
    while (chassis.counters.secondaryLosses === lost) await new Promise((r) => setTimeout(r, 5))
    await chassis.ready(20_000)
    await expectStreamGoesOn(session)
    expect(chassis.failovers.length).toBe(CRASHES)
    const s = await chassis.stats()
    expect(s.chassis.counters.txDuplicates).toBe(0)
    expect(s.chassis.counters.txGaps).toBe(0)
    expect(s.primary!.counters.resumeGaps).toBe(0)
  }, 180_000)
})
