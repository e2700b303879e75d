// A streaming line client for the echo tests and the transport benchmarks: it keeps up to `window`
// lines outstanding on one TCP connection and checks every reply as it comes: "<n> <line>" with n
// contiguous from 1 and the line it sent as the n-th. Lines are seeded (length and content).

import net from 'node:net'
import { prng } from './harness.ts'

export interface LineClientOptions {
  port: number
  host?: string
  seed: number
  /** Lines in flight at most. */
  window?: number
  /** Longest line in bytes (lengths are uniform in 0..maxLine). */
  maxLine?: number
  /** Called with the arrival time of every reply (gap measurements). */
  onReply?: (t: number) => void
}

export class LineClient {
  readonly sock: net.Socket
  sent = 0
  answered = 0
  errors: string[] = []
  /** Set when the connection ended, failed or closed before we ended it. */
  broken: string | null = null
  private readonly rand: () => number
  private readonly window: number
  private readonly maxLine: number
  private readonly lines: string[] = []
  private head = 0
  private partial = ''
  private writing = false
  private stopped = false
  private ending = false
  private ended: Promise<void>
  private waiters: Array<() => void> = []
  private readonly onReply?: (t: number) => void

  constructor(o: LineClientOptions) {
    this.rand = prng(o.seed)
    this.window = o.window ?? 1000
    this.maxLine = o.maxLine ?? 100
    this.onReply = o.onReply
    this.sock = net.connect(o.port, o.host ?? '127.0.0.1')
    this.sock.setEncoding('latin1')
    this.sock.on('connect', () => this.pump())
    this.sock.on('data', (d: string) => this.onData(d))
    this.sock.on('error', (e) => this.break(`error ${e.message}`))
    this.ended = new Promise((resolve) => {
      this.sock.on('end', () => {
        if (!this.ending) this.break('end before we ended')
        resolve()
      })
      this.sock.on('close', () => {
        if (!this.ending) this.break('closed before we ended')
        resolve()
      })
    })
  }

  private break(why: string): void {
    if (this.broken === null) this.broken = why
    this.wake()
  }

  private nextLine(): string {
    const len = Math.floor(this.rand() * (this.maxLine + 1))
    let s = `${this.sent}:`
    while (s.length < len) s += String.fromCharCode(97 + Math.floor(this.rand() * 26))
    return s
  }

  private pump(): void {
    if (this.writing || this.stopped) return
    let batch = ''
    while (this.sent - this.answered < this.window) {
      this.sent++
      const line = this.nextLine()
      this.lines.push(line)
      batch += line + '\n'
      // Random write sizes: TCP segments split lines anywhere.
      if (batch.length > 256 + this.rand() * 8192) {
        if (!this.sock.write(batch, 'latin1')) {
          this.writing = true
          this.sock.once('drain', () => {
            this.writing = false
            this.pump()
          })
          return
        }
        batch = ''
      }
    }
    if (batch) this.sock.write(batch, 'latin1')
  }

  private onData(d: string): void {
    const t = performance.now()
    let s = this.partial + d
    let i: number
    while ((i = s.indexOf('\n')) >= 0) {
      const got = s.slice(0, i)
      s = s.slice(i + 1)
      const n = this.answered + 1
      const want = `${n} ${this.lines[this.head]}`
      if (got !== want && this.errors.length < 10) this.errors.push(`reply ${n}: got ${JSON.stringify(got.slice(0, 60))}, want ${JSON.stringify(want.slice(0, 60))}`)
      this.lines[this.head++] = ''
      this.answered = n
      this.onReply?.(t)
    }
    this.partial = s
    if (this.head > 4096) {
      this.lines.splice(0, this.head)
      this.head = 0
    }
    this.pump()
    this.wake()
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w()
  }

  /** Stops sending new lines. */
  stop(): void {
    this.stopped = true
  }

  /** Resolves once every line sent was answered (or the connection broke). */
  async drained(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (this.answered < this.sent && this.broken === null) {
      if (Date.now() > deadline) throw new Error(`client: ${this.sent - this.answered} lines unanswered after ${timeoutMs} ms`)
      await new Promise<void>((r) => {
        const t = setTimeout(r, 200)
        this.waiters.push(() => {
          clearTimeout(t)
          r()
        })
      })
    }
  }

  /** Ends our side and waits for the server's FIN. */
  async end(): Promise<void> {
    this.ending = true
    this.sock.end()
    await this.ended
  }
}
