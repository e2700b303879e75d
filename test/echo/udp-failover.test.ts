// The echo example's UDP mode in a child process: several client sockets (distinct source
// addresses) each keep a window of datagrams in flight while the test crashes and switches over the
// primary at seeded random moments. Each datagram gets "<n> <payload>" back exactly once, n counting
// that source's datagrams from 1, in order, across every failover. The window stays small so that
// loopback never drops a datagram (a drop would be UDP's right, and this test could not tell).
// Replay: FAULT_SEED=n npx vitest run test/echo/udp-failover.test.ts

import dgram from 'node:dgram'
import { afterAll, describe, expect, it } from 'vitest'
import { EchoProcess, prng } from './harness.ts'

const SEED = Number(process.env.FAULT_SEED ?? Date.now() % 1_000_000)
const FAILOVERS = Number(process.env.ECHO_UDP_FAILOVERS ?? 8)
const MIN_DATAGRAMS = 40_000
const SOURCES = 4
const WINDOW = 16

class DatagramClient {
  readonly sock = dgram.createSocket('udp4')
  sent = 0
  answered = 0
  errors: string[] = []
  stopped = false
  private readonly rand: () => number
  private readonly port: number
  private readonly payloads: string[] = []
  constructor(port: number, seed: number) {
    this.port = port
    this.rand = prng(seed)
  }
  async start(): Promise<void> {
    this.sock.on('message', (m) => this.onMessage(m.toString('latin1')))
    await new Promise<void>((r) => this.sock.bind(0, '127.0.0.1', r))
    this.pump()
  }
  private pump(): void {
    while (!this.stopped && this.sent - this.answered < WINDOW) {
      this.sent++
      let p = `${this.sent}:`
      const len = Math.floor(this.rand() * 200)
      while (p.length < len) p += String.fromCharCode(65 + Math.floor(this.rand() * 26))
      this.payloads.push(p)
      this.sock.send(p, this.port, '127.0.0.1')
    }
  }
  private onMessage(m: string): void {
    const n = this.answered + 1
    const want = `${n} ${this.payloads[n - 1]}`
    if (m !== want && this.errors.length < 10) this.errors.push(`datagram ${n}: got ${JSON.stringify(m.slice(0, 50))}, want ${JSON.stringify(want.slice(0, 50))}`)
    this.payloads[n - 1] = ''
    this.answered = n
    this.pump()
  }
}

describe(`echo over UDP across failovers (seed ${SEED})`, () => {
  let echo: EchoProcess | null = null
  let pid = 0
  afterAll(async () => {
    if (echo) await echo.stop(pid)
  })

  it(`answers every datagram once with n per source through ${FAILOVERS} failovers`, { timeout: 120_000 }, async () => {
    console.log(`udp failover seed ${SEED} (replay: FAULT_SEED=${SEED})`)
    const rand = prng(SEED)
    echo = new EchoProcess('node', ['--udp', '127.0.0.1:0', '--dead-interval-ms', '20000'])
    const s = await echo.started()
    pid = s.pid
    const clients = Array.from({ length: SOURCES }, (_, k) => new DatagramClient(s.port, SEED * 17 + k))
    await Promise.all(clients.map((c) => c.start()))
    const answered = (): number => clients.reduce((a, c) => a + c.answered, 0)
    // A quiet source: one datagram every third failover, so its count survives a promotion of a
    // secondary that never saw it answered (it learnt it from the table the primary handed over).
    const quiet = dgram.createSocket('udp4')
    await new Promise<void>((r) => quiet.bind(0, '127.0.0.1', r))
    let quietN = 0
    const quietPing = async (): Promise<void> => {
      quietN++
      const got = new Promise<string>((r) => quiet.once('message', (m) => r(m.toString())))
      quiet.send(`quiet ${quietN}`, s.port, '127.0.0.1')
      expect(await got).toBe(`${quietN} quiet ${quietN}`)
    }
    await quietPing()
    for (let k = 0; k < FAILOVERS; k++) {
      if (k % 3 === 2) await quietPing()
      const waitMs = rand() < 0.25 ? 0 : Math.floor(rand() * 150)
      if (waitMs) await new Promise((r) => setTimeout(r, waitMs))
      const before = echo.count('failover')
      echo.signal(pid, rand() < 0.6 ? 'SIGUSR1' : 'SIGUSR2')
      await echo.waitCount('failover', before + 1, 60_000)
      for (const c of clients) expect(c.errors).toEqual([])
    }
    while (answered() < MIN_DATAGRAMS) await new Promise((r) => setTimeout(r, 50))
    for (const c of clients) c.stopped = true
    const deadline = Date.now() + 20_000
    while (clients.some((c) => c.answered < c.sent) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    await quietPing()
    quiet.close()
    for (const c of clients) {
      expect(c.errors).toEqual([])
      expect(c.answered).toBe(c.sent)
      c.sock.close()
    }
    const failovers = echo.events.filter((e) => e.event === 'failover')
    expect(failovers.length).toBe(FAILOVERS)
    expect(failovers.every((e) => e.lost === 0)).toBe(true)
    expect(echo.events.filter((e) => e.event === 'error' || e.event === 're-hung')).toEqual([])
    console.log(`${answered()} datagrams from ${SOURCES} sources through ${FAILOVERS} failovers`)
    expect(await echo.stop(pid)).toBe(0)
    echo = null
  })
})
