// The echo example in a child process, on real TCP: several connections stream lines while the test
// crashes the primary (SIGUSR1) and switches over (SIGUSR2) at seeded random moments, at least
// FAILOVERS times. Every reply arrives exactly once, "<n> <line>" with n contiguous from 1 per
// connection and the line that was sent n-th; no connection is ever reset or closed by the server.
// Replay a schedule: FAULT_SEED=n npx vitest run test/echo/tcp-failover.test.ts

import { afterAll, describe, expect, it } from 'vitest'
import { LineClient } from './client.ts'
import { EchoProcess, prng } from './harness.ts'

const SEED = Number(process.env.FAULT_SEED ?? Date.now() % 1_000_000)
const FAILOVERS = Number(process.env.ECHO_FAILOVERS ?? 20)
const MIN_LINES = 100_000
const CONNECTIONS = 4

describe(`echo over TCP across failovers (seed ${SEED})`, () => {
  let echo: EchoProcess | null = null
  let pid = 0
  afterAll(async () => {
    if (echo) await echo.stop(pid)
  })

  it(`answers ${MIN_LINES}+ lines on ${CONNECTIONS} connections exactly once through ${FAILOVERS} failovers`, { timeout: 150_000 }, async () => {
    console.log(`tcp failover seed ${SEED} (replay: FAULT_SEED=${SEED})`)
    const rand = prng(SEED)
    // A loaded two-core machine must not add hang detections of its own: only our faults fail over.
    echo = new EchoProcess('node', ['--listen', '127.0.0.1:0', '--dead-interval-ms', '20000'])
    const s = await echo.started()
    pid = s.pid
    const clients = Array.from({ length: CONNECTIONS }, (_, k) => new LineClient({ port: s.port, seed: SEED * 31 + k, window: 500 + k * 500, maxLine: 40 + k * 60 }))
    const answered = (): number => clients.reduce((a, c) => a + c.answered, 0)
    const t0 = performance.now()
    let kills = 0
    for (let k = 0; k < FAILOVERS; k++) {
      // A random moment: at once, or after the streams moved on.
      const waitMs = rand() < 0.25 ? 0 : Math.floor(rand() * 150)
      if (waitMs) await new Promise((r) => setTimeout(r, waitMs))
      const before = echo.count('failover')
      const kill = rand() < 0.6
      if (kill) kills++
      echo.signal(pid, kill ? 'SIGUSR1' : 'SIGUSR2')
      await echo.waitCount('failover', before + 1, 60_000)
      for (const c of clients) expect(c.broken, `connection broken after failover ${k + 1}: ${JSON.stringify(echo.events.slice(-6))}`).toBeNull()
      for (const c of clients) expect(c.errors).toEqual([])
    }
    // Keep streaming until enough lines went through, then let every reply come home.
    while (answered() < MIN_LINES) await new Promise((r) => setTimeout(r, 50))
    for (const c of clients) c.stop()
    await Promise.all(clients.map((c) => c.drained(30_000)))
    const seconds = (performance.now() - t0) / 1000
    for (const c of clients) {
      expect(c.broken).toBeNull()
      expect(c.errors).toEqual([])
      expect(c.answered).toBe(c.sent)
    }
    // Our FIN: the server answers what is left and closes in turn.
    await Promise.all(clients.map((c) => c.end()))
    const failovers = echo.events.filter((e) => e.event === 'failover')
    expect(failovers.length).toBe(FAILOVERS)
    expect(failovers.every((e) => e.lost === 0)).toBe(true)
    expect(echo.events.filter((e) => e.event === 'error' || e.event === 're-hung')).toEqual([])
    const takeovers = failovers.map((e) => e.takeoverMs as number).sort((a, b) => a - b)
    console.log(
      `${answered()} lines on ${CONNECTIONS} connections in ${seconds.toFixed(1)} s through ${FAILOVERS} failovers (${kills} kills); ` +
        `takeover p50 ${takeovers[takeovers.length >> 1]} ms, max ${takeovers[takeovers.length - 1]} ms`,
    )
    expect(await echo.stop(pid)).toBe(0)
    echo = null
  })
})
