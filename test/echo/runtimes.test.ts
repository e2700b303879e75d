// A newcomer's run of the echo example on Bun and on Deno (from node_modules/.bin): the started
// line names the runtime, a few lines are echoed, a crash (SIGUSR1) and a switchover (SIGUSR2) go
// by without the connection noticing, and SIGTERM exits cleanly.

import { describe, expect, it } from 'vitest'
import { LineClient } from './client.ts'
import { EchoProcess, type Runtime } from './harness.ts'

describe('the echo example on other runtimes', () => {
  for (const rt of ['bun', 'deno'] as Runtime[]) {
    // One retry: an intermittent unanswered tail after a failover was seen once under Deno (see the issue note).
    it(`runs under ${rt}`, { timeout: 90_000, retry: 1 }, async () => {
      const echo = new EchoProcess(rt, ['--listen', '127.0.0.1:0', '--dead-interval-ms', '20000'])
      let pid = 0
      try {
        const s = await echo.started()
        pid = s.pid
        expect(s.runtime).toBe(rt)
        const client = new LineClient({ port: s.port, seed: 7, window: 20 })
        await echo.waitCount('connection', 1)
        while (client.answered < 200) await new Promise((r) => setTimeout(r, 20))
        for (const sig of ['SIGUSR1', 'SIGUSR2'] as const) {
          const before = echo.count('failover')
          echo.signal(pid, sig)
          await echo.waitCount('failover', before + 1, 60_000)
          const at = client.answered
          while (client.answered < at + 200) await new Promise((r) => setTimeout(r, 20))
        }
        client.stop()
        await client.drained()
        expect(client.broken).toBeNull()
        expect(client.errors).toEqual([])
        await client.end()
        expect(echo.events.filter((e) => e.event === 'failover').map((e) => e.reason)).toEqual(['killed', 'switchover'])
        expect(await echo.stop(pid)).toBe(0)
        expect(echo.events.at(-1)?.event === 'exit' || echo.events.some((e) => e.event === 'exit')).toBe(true)
      } finally {
        if (echo.exitCode === null) echo.child.kill('SIGKILL')
      }
    })
  }
})
