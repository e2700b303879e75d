// Runs examples/echo/main.ts in a child process (Node through tsx, Bun or Deno) on 127.0.0.1 with
// an ephemeral port, and reads its JSON event lines. Tests send the signals to the pid the started
// line names, wait on events, and read the child's memory from /proc.

import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

export const root = fileURLToPath(new URL('../../', import.meta.url))
const main = fileURLToPath(new URL('../../examples/echo/main.ts', import.meta.url))

export type Runtime = 'node' | 'bun' | 'deno'
export type EchoEvent = { event: string } & Record<string, unknown>

export function runtimeCommand(rt: Runtime): [string, string[]] {
  if (rt === 'node') return [process.execPath, ['--import', 'tsx']]
  const bin = `${root}node_modules/.bin/${rt}`
  if (!existsSync(bin)) throw new Error(`${bin} is missing: npm install`)
  return rt === 'bun' ? [bin, []] : [bin, ['run', '-A', '--no-lock']]
}

/** Seeded xorshift32: tests print the seed; FAULT_SEED=n replays a schedule. */
export function prng(seed: number): () => number {
  let s = seed >>> 0 || 1
  return () => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return (s >>> 0) / 2 ** 32
  }
}

export class EchoProcess {
  readonly child: ChildProcess
  readonly events: EchoEvent[] = []
  stderr = ''
  exitCode: number | null = null
  exited: Promise<number | null>
  private partial = ''
  private waiters: Array<() => void> = []

  constructor(rt: Runtime, args: string[]) {
    const [cmd, pre] = runtimeCommand(rt)
    this.child = spawn(cmd, [...pre, main, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    this.child.stdout!.setEncoding('utf8')
    this.child.stdout!.on('data', (d: string) => this.onData(d))
    this.child.stderr!.setEncoding('utf8')
    this.child.stderr!.on('data', (d: string) => {
      if (this.stderr.length < 64 * 1024) this.stderr += d
    })
    this.exited = new Promise((resolve) =>
      this.child.on('exit', (code) => {
        this.exitCode = code
        this.wake()
        resolve(code)
      }),
    )
  }

  private onData(d: string): void {
    const s = this.partial + d
    const lines = s.split('\n')
    this.partial = lines.pop()!
    for (const l of lines) {
      if (!l.trim()) continue
      try {
        this.events.push(JSON.parse(l) as EchoEvent)
      } catch {
        this.events.push({ event: 'unparsable', line: l })
      }
    }
    this.wake()
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w()
  }

  count(event: string): number {
    return this.events.filter((e) => e.event === event).length
  }

  /** Resolves with the first event (from index `from`) that matches, failing after `timeoutMs`. */
  async waitFor(pred: (e: EchoEvent) => boolean, timeoutMs = 30_000, from = 0): Promise<EchoEvent> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const hit = this.events.slice(from).find(pred)
      if (hit) return hit
      if (this.exitCode !== null) throw new Error(`echo exited (${this.exitCode}) while waiting; stderr: ${this.stderr.slice(-2000)}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for an event; last events: ${JSON.stringify(this.events.slice(-5))}; stderr: ${this.stderr.slice(-2000)}`)
      await new Promise<void>((r) => {
        const t = setTimeout(r, left)
        this.waiters.push(() => {
          clearTimeout(t)
          r()
        })
      })
    }
  }

  /** Waits until `event` has been seen `n` times. */
  async waitCount(event: string, n: number, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (this.count(event) < n) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} '${event}' events (have ${this.count(event)}); stderr: ${this.stderr.slice(-2000)}`)
      await this.waitFor(() => true, deadline - Date.now(), this.events.length)
    }
  }

  async started(): Promise<{ pid: number; port: number; runtime: string }> {
    const s = await this.waitFor((e) => e.event === 'started', 60_000)
    const l = await this.waitFor((e) => e.event === 'listening', 60_000)
    await this.waitFor((e) => e.event === 'ready', 60_000)
    return { pid: s.pid as number, port: l.port as number, runtime: s.runtime as string }
  }

  signal(pid: number, sig: NodeJS.Signals): void {
    process.kill(pid, sig)
  }

  /** SIGTERM, then the exit code (SIGKILL after `graceMs`). */
  async stop(pid: number, graceMs = 10_000): Promise<number | null> {
    if (this.exitCode !== null) return this.exitCode
    try {
      process.kill(pid, 'SIGTERM')
    } catch {
      // gone already
    }
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs)
    const code = await this.exited
    clearTimeout(t)
    return code
  }
}

/** Resident memory of a process in MiB (Linux /proc). */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : Number.NaN
}
