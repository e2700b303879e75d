// Regression: a connection the new primary opens while it is being promoted (its mastership
// handlers run inside the promotion) was reset by the chassis, which closed every connection the
// promotion did not adopt, including ones that did not exist when the promotion began.
import { afterEach, expect, it } from 'vitest'
import { Chassis } from '../../engine/index.ts'
import { MemoryNetwork, type MemoryPeer } from '../../engine/chassis/memory.ts'

let chassis: Chassis | null = null
afterEach(async () => {
  await chassis?.close()
  chassis = null
})

it('a connection opened from a mastership handler survives the end of the promotion', { timeout: 30_000 }, async () => {
  const memory = new MemoryNetwork()
  const peers: MemoryPeer[] = []
  memory.serve(9000, (p) => peers.push(p))
  // The new primary is busy on purpose: no hang detection here.
  chassis = await Chassis.start({
    app: new URL('../fixtures/connect-on-mastership-app.ts', import.meta.url),
    appOptions: { port: 9000, busyMs: 200 },
    transports: { memory },
    deadIntervalMs: 30_000,
    re: { deadIntervalMs: 30_000 },
  })
  await chassis.kill('primary')
  const t0 = performance.now()
  while ((peers.length === 0 || peers[0].receivedBytes === 0) && performance.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 10))
  expect(peers).toHaveLength(1)
  await new Promise((r) => setTimeout(r, 100))
  expect(peers[0].text()).toMatch(/^hello from re2\n$/)
  expect(peers[0].reset).toBe(false)
  expect(peers[0].ended).toBe(false)
  expect(chassis.core.conns.size).toBe(1)
})
