// Real worker threads on the in-memory transport: the primary is killed at random moments while a
// peer streams numbered lines in and the application streams numbered records out. After every
// kill the secondary has taken over and a fresh secondary is back in sync. The peer checks its
// received stream record by record: sequence contiguous from 1 (nothing lost, nothing twice, in
// order), the application's view of the inbound stream never going back (no received data lost in
// a takeover), and no gap ever seen by the application.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Prng } from '../sim/prng.ts'
import { expectStreamGoesOn, startStream, type StreamSession } from './stream-session.ts'

// 200 kills in the normal run (a warm spare makes each rebuilt secondary quick); FAILOVER_KILLS=N to change.
const KILLS = Number(process.env.FAILOVER_KILLS ?? 200)
const SEED = Number(process.env.FAILOVER_SEED ?? Date.now() % 100000)
const SIZE = 200

/** Uniform [0, 1) from the simulation's seeded PRNG. */
function prng(seed: number): () => number {
  const p = new Prng(seed)
  return () => p.next() / 2 ** 32
}

describe(`failover with real workers (seed ${SEED}; replay: FAILOVER_SEED=${SEED} npx vitest run test/chassis/failover.test.ts)`, () => {
  let session: StreamSession
  beforeAll(async () => {
    // The test kills on purpose; a loaded CI machine must not add spurious hang detections.
    session = await startStream({ port: 7000, size: SIZE, deadIntervalMs: 5000, keepaliveIntervalMs: 50 })
  })
  afterAll(async () => {
    await session?.chassis.close()
  })

  it(`survives ${KILLS} kills of the primary with a byte-exact stream both ways`, async () => {
    const rand = prng(SEED)
    const { chassis, check, lines } = session
    const takeovers: number[] = []
    chassis.on('failover', (e) => takeovers.push(e.takeoverMs))
    const t0 = performance.now()
    for (let k = 0; k < KILLS; k++) {
      await chassis.ready(20_000)
      // A random moment: sometimes at once, sometimes after the stream has moved on.
      const waitMs = rand() < 0.3 ? 0 : Math.floor(rand() * 30)
      if (waitMs) await new Promise((r) => setTimeout(r, waitMs))
      const before = check.next
      await chassis.kill('primary')
      if (check.errors.length) console.log('chassis counters at failure', JSON.stringify(chassis.core.counters), JSON.stringify(chassis.failovers.at(-1)), 'terminateMs', chassis.lastTerminateMs, 'drained', chassis.lastDrained)
      expect(check.errors).toEqual([])
      if (k % 25 === 0) console.log(`kill ${k}: ${before - 1} records, ${lines.sent} lines sent, ${Math.round(performance.now() - t0)} ms`)
    }
    await chassis.ready(20_000)
    await expectStreamGoesOn(session)
    expect(chassis.failovers.length).toBe(KILLS)
    // Kills are handled before the dying primary's thread has ended (chassis retire()): once its
    // rings are fenced, or, when it was stopped mid-task, once its secondary is halted. The
    // byte-exact checks above cover both paths. How many take which depends on the load (about 1
    // in 4 kills lands mid-task under the failover bench's stream); that both are taken does not.
    expect(chassis.counters.fencedRetires).toBeGreaterThan(0)
    expect(chassis.counters.haltedRetires).toBeGreaterThan(0)
    const s = await chassis.stats()
    expect(s.chassis.counters.txDuplicates).toBe(0)
    expect(s.chassis.counters.txGaps).toBe(0)
    expect(s.chassis.counters.txFromSecondary).toBe(0)
    expect(s.primary!.counters.resumeGaps).toBe(0)
    expect(s.ready).toBe(true)
    takeovers.sort((a, b) => a - b)
    console.log(`${KILLS} kills; takeover p50 ${takeovers[Math.floor(takeovers.length / 2)].toFixed(2)} ms, max ${takeovers[takeovers.length - 1].toFixed(2)} ms`)
  }, 600_000)
})
