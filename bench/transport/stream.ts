// Shared by the transport benchmarks: starts an echo server in a child process (the example, or the
// plain baseline) and streams fixed-size lines at it over several connections, each keeping a window
// of lines in flight, counting replies and their bytes and noting when each reply chunk arrived.

import { spawn, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../../', import.meta.url))
export const ECHO_MAIN = fileURLToPath(new URL('../../examples/echo/main.ts', import.meta.url))
export const DIRECT_MAIN = fileURLToPath(new URL('./fixtures/direct-echo.ts', import.meta.url))

export type ServerEvent = { event: string } & Record<string, unknown>

export class Server {
  readonly child: ChildProcess
  readonly events: ServerEvent[] = []
  private partial = ''
  private waiters: Array<() => void> = []

  constructor(main: string, args: string[]) {
    this.child = spawn(process.execPath, ['--import', 'tsx', main, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] })
    this.child.stdout!.setEncoding('utf8')
    this.child.stdout!.on('data', (d: string) => {
      const lines = (this.partial + d).split('\n')
      this.partial = lines.pop()!
      for (const l of lines) if (l.trim()) this.events.push(JSON.parse(l) as ServerEvent)
      for (const w of this.waiters.splice(0)) w()
    })
  }

  count(event: string): number {
    return this.events.filter((e) => e.event === event).length
  }

  async waitFor(pred: (e: ServerEvent) => boolean, timeoutMs = 60_000): Promise<ServerEvent> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const hit = this.events.find(pred)
      if (hit) return hit
      if (Date.now() > deadline) throw new Error(`server: timed out; last events ${JSON.stringify(this.events.slice(-3))}`)
      await new Promise<void>((r) => {
        const t = setTimeout(r, 200)
        this.waiters.push(() => {
          clearTimeout(t)
          r()
        })
      })
    }
  }

  async started(): Promise<{ pid: number; port: number }> {
    const s = await this.waitFor((e) => e.event === 'started')
    const l = await this.waitFor((e) => e.event === 'listening')
    await this.waitFor((e) => e.event === 'ready')
    return { pid: s.pid as number, port: l.port as number }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return
    const exited = new Promise((r) => this.child.once('exit', r))
    this.child.kill('SIGTERM')
    await exited
  }
}

export interface StreamOptions {
  port: number
  connections: number
  lineBytes: number
  /** Lines in flight per connection. */
  window: number
}

/** One streaming connection: fixed lines out, replies counted (and their n checked) as they come. */
class StreamConn {
  readonly sock: net.Socket
  replies = 0
  replyBytes = 0
  /** performance.now() of every reply chunk (kept only while `recording`). */
  arrivals: number[] = []
  recording = false
  broken: string | null = null
  private sent = 0
  private stopped = false
  private readonly block: Buffer
  private readonly window: number

  constructor(o: StreamOptions) {
    this.window = o.window
    const line = Buffer.alloc(o.lineBytes, 0x61)
    line[o.lineBytes - 1] = 0x0a
    this.block = Buffer.concat(Array<Buffer>(64).fill(line))
    this.sock = net.connect(o.port, '127.0.0.1')
    this.sock.setNoDelay(true)
    this.sock.on('connect', () => this.pump())
    this.sock.on('data', (d: Buffer) => {
      let nl = 0
      for (let i = d.indexOf(0x0a); i >= 0; i = d.indexOf(0x0a, i + 1)) nl++
      this.replies += nl
      this.replyBytes += d.length
      if (this.recording) this.arrivals.push(performance.now())
      this.pump()
    })
    this.sock.on('error', (e) => (this.broken = e.message))
    this.sock.on('end', () => (this.broken ??= 'server ended'))
  }

  private pump(): void {
    while (!this.stopped && this.sent - this.replies + 64 <= this.window) {
      this.sock.write(this.block)
      this.sent += 64
    }
  }

  stop(): void {
    this.stopped = true
  }

  get outstanding(): number {
    return this.sent - this.replies
  }
}

export class Stream {
  readonly conns: StreamConn[]
  constructor(o: StreamOptions) {
    this.conns = Array.from({ length: o.connections }, () => new StreamConn(o))
  }
  get replyBytes(): number {
    return this.conns.reduce((a, c) => a + c.replyBytes, 0)
  }
  get broken(): string | null {
    return this.conns.find((c) => c.broken)?.broken ?? null
  }
  record(on: boolean): void {
    for (const c of this.conns) {
      c.recording = on
      if (on) c.arrivals = []
    }
  }
  /** The longest time between consecutive reply chunks on any connection among those recorded. */
  longestGapMs(): number {
    let gap = 0
    for (const c of this.conns) for (let i = 1; i < c.arrivals.length; i++) gap = Math.max(gap, c.arrivals[i] - c.arrivals[i - 1])
    return gap
  }
  async close(): Promise<void> {
    for (const c of this.conns) c.stop()
    const deadline = Date.now() + 10_000
    while (this.conns.some((c) => c.outstanding > 0) && Date.now() < deadline && !this.broken) await new Promise((r) => setTimeout(r, 20))
    for (const c of this.conns) c.sock.destroy()
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
