// The spare's warm-up (engine/re/warmup.ts) runs the failover paths on a private rig: it must move
// every byte it sends through the handshakes, the stream and the takeover, and leave nothing of
// the rig behind in this thread's ring registry.
import { expect, it } from 'vitest'
import { warmUp } from '../../engine/re/warmup.ts'

const UNPUBLISHED_KEY = Symbol.for('nsr-engine.kkcm.unpublished')

it('streams through the handshake and the takeover, and leaves no ring queued', async () => {
  const r = await warmUp(2)
  // Per round: 64 records of 200 bytes each way, on TCP and UDP, before and after the takeover,
  // plus one datagram written before the UDP handshake.
  expect(r).toMatchObject({ rounds: 2, bytes: 2 * (2 * 2 * 64 * 200 + 200) })
  await null
  const pending = (globalThis as Record<symbol, { rings: unknown[]; open: unknown[] }>)[UNPUBLISHED_KEY]
  expect(pending.rings.length + pending.open.length).toBe(0)
})
