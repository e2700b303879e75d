// The warm spare: a failover activates it as the new secondary at once, and the next spare boots
// only once every socket is in sync again ('spare-up' after 'secondary-up', with the chassis
// ready), so booting a worker never competes with the resync handshakes for the two cores.
import { afterEach, expect, it } from 'vitest'
import { Chassis } from '../../engine/index.ts'
import { lineWriter } from '../fixtures/stream-check.ts'

let c: Chassis | null = null
afterEach(async () => {
  await c?.close()
  c = null
})

it('boots the next spare after the resync, and a spare activated while still loading works', async () => {
  c = await Chassis.start({
    app: new URL('../fixtures/stream-app.ts', import.meta.url),
    appOptions: { port: 7100, total: 1e12, size: 200 },
    spare: true,
    // Only the kills below fail over (a loaded test machine must not look like a hung RE).
    re: { deadIntervalMs: 5000 },
    deadIntervalMs: 5000,
  })
  const chassis = c
  const log: string[] = []
  chassis.on('secondary-up', (e: { id: string }) => log.push(`secondary-up ${e.id}`))
  const warmupMs: unknown[] = []
  chassis.on('spare-up', (e: { warmupMs: unknown }) => {
    log.push(`spare-up ready=${chassis.isReady()}`)
    warmupMs.push(e.warmupMs)
  })
  chassis.on('failover', (e: { to: string }) => log.push(`failover to ${e.to}`))
  chassis.on('re-error', (e: { error: string }) => log.push(`re-error ${e.error}`))
  chassis.on('error', (e: Error) => log.push(`error ${e.message}`))
  const peer = chassis.memory.dial(7100)
  peer.keepReceived = false
  const lines = lineWriter(peer)
  const until = async (pred: () => boolean): Promise<void> => {
    const deadline = Date.now() + 20_000
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`timed out; events: ${log.join(', ')}`)
      await new Promise((r) => setTimeout(r, 10))
    }
  }
  await chassis.ready(20_000)
  await until(() => log.some((l) => l.startsWith('spare-up')))
  for (let k = 0; k < 2; k++) {
    const from = log.length
    await chassis.kill('primary')
    await until(() => log.slice(from).some((l) => l.startsWith('spare-up')))
    const after = log.slice(from)
    // The spare was the new secondary (re3, re4: no cold start in between), then the next spare booted in sync.
    expect(after).toEqual([`failover to re${k + 2}`, `secondary-up re${k + 3}`, 'spare-up ready=true'])
  }
  // Every spare ran its warm-up (a failed one would have logged a re-error above).
  expect(warmupMs.length).toBe(3)
  for (const ms of warmupMs) expect(ms).toBeTypeOf('number')
  // A kill as soon as the resync is done: the next spare is still loading when it is activated,
  // and whatever the chassis asks of it meanwhile waits for the activation (it used to throw
  // 'spare RE not activated' and leave the chassis without a secondary).
  for (let k = 0; k < 3; k++) {
    const from = log.length
    await chassis.kill('primary')
    await until(() => log.slice(from).some((l) => l.startsWith('secondary-up')))
    await chassis.ready(20_000)
  }
  // A spare taken before it finished loading never announces itself; the one booted after the
  // last resync does.
  await until(() => log.at(-1) === 'spare-up ready=true')
  expect(log.filter((l) => /error/.test(l))).toEqual([])
  expect(log.filter((l) => l.startsWith('failover')).length).toBe(5)
  lines.stop()
  expect(chassis.counters.respawns).toBe(5)
  // Two failures in a row: the secondary being activated (its spare still loading) is promoted
  // before it ever synced. Its promote waits for the activation (it used to throw 'spare RE not
  // activated', leaving the chassis without a primary); the chassis goes on with what it has.
  await chassis.kill('primary')
  await until(() => log.at(-1)!.startsWith('secondary-up'))
  await chassis.ready(20_000) // the next spare starts loading now
  const from = log.length
  await chassis.kill('primary') // the new secondary is that spare, activated while it loads
  await chassis.kill('primary')
  // Settled: a cold secondary synced, and the spare booted after it announced itself. The spare
  // promoted while loading never does; its own restore, resumed after the promotion, once made the
  // new primary its own secondary ('secondary-up' naming the primary), depending on timing.
  await until(() => log.at(-1)!.startsWith('spare-up') && chassis.primary !== null)
  await chassis.ready(20_000)
  const primary = chassis.primary!.id
  const after = log.slice(from)
  expect(log.filter((l) => /error/.test(l))).toEqual([])
  expect(after.filter((l) => l.startsWith('failover'))).toEqual([expect.any(String), `failover to ${primary}`])
  expect(after.filter((l) => l.startsWith('secondary-up'))).toEqual([`secondary-up ${chassis.secondary!.id}`])
  expect(chassis.secondary!.id).not.toBe(primary)
  // After everything settled, the core fans received data out to that secondary, not to the primary.
  await new Promise((r) => setTimeout(r, 500))
  expect(chassis.core.secondary?.id).toBe(chassis.secondary!.id)
  expect(chassis.core.primary?.id).toBe(primary)
  expect(after.filter((l) => l.startsWith('spare-up'))).toEqual(['spare-up ready=true'])
}, 90_000)
