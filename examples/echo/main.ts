// The echo example: a line-echo service (TCP) or a datagram echo (UDP) whose count survives every
// failover. The chassis owns the OS sockets; the primary and secondary REs run ./app.ts.
//
//   npm run example:echo -- --listen 127.0.0.1:7007      each line gets "<n> <line>", n per connection
//   npm run example:echo -- --udp 127.0.0.1:7007         each datagram gets "<n> <payload>", n per source
//   options: --dead-interval-ms N (hang detection, default 2000)
//
// One JSON object per line on stdout for every event; the first is {"event":"started","pid":N,...},
// N being the process that takes the signals: SIGUSR1 crashes the primary RE (chassis.kill), SIGUSR2
// switches over gracefully, SIGINT / SIGTERM exit cleanly. Faults run one at a time, each once the
// system is redundant again (killing a primary with no secondary would drop every connection).
// Runs on Node (tsx), Bun (bun examples/echo/main.ts ...) and Deno (deno run -A examples/echo/main.ts ...).

import process from 'node:process'
import { Chassis } from '../../engine/index.ts'
import { runtimeName } from '../../engine/runtime/worker.ts'
import type { EchoOptions } from './app.ts'

const READY_TIMEOUT_MS = 60_000

function emit(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n')
}

function usage(why: string): never {
  process.stderr.write(`${why}\nusage: echo (--listen HOST:PORT | --udp HOST:PORT) [--dead-interval-ms N]\n`)
  process.exit(2)
}

function option(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}

function hostPort(s: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s)
  if (!m || Number(m[2]) > 65535) usage(`not HOST:PORT: ${s}`)
  return { host: m[1], port: Number(m[2]) }
}

const listenArg = option('listen')
const udpArg = option('udp')
if (!listenArg === !udpArg) usage('give exactly one of --listen and --udp')
const mode: EchoOptions['mode'] = listenArg ? 'tcp' : 'udp'
const { host, port } = hostPort((listenArg ?? udpArg)!)
const deadIntervalMs = Number(option('dead-interval-ms') ?? 2000)
if (!(deadIntervalMs > 0)) usage('--dead-interval-ms takes a positive number')

emit('started', { pid: process.pid, runtime: runtimeName(), mode, host, port })

// Signals first: one arriving while the REs boot waits for them (Node's own SIGUSR1 handler would
// start the inspector instead).
let chassis: Chassis | null = null
let booted: () => void = () => {}
const up = new Promise<void>((r) => (booted = r))
let faults = Promise.resolve()
let exiting = false

function fault(signal: string, action: 'kill' | 'switchover'): void {
  emit('signal', { signal, action })
  faults = faults
    .then(async () => {
      await up
      if (exiting || !chassis) return
      await chassis.ready(READY_TIMEOUT_MS)
      if (exiting) return
      if (action === 'kill') await chassis.kill('primary')
      else await chassis.switchover()
    })
    .catch((err: unknown) => emit('error', { action, message: err instanceof Error ? err.message : String(err) }))
}

async function exit(signal: string): Promise<void> {
  if (exiting) return
  exiting = true
  const c = chassis
  emit('exit', { signal, failovers: c?.failovers.length ?? 0 })
  if (c) await c.close().catch(() => {})
  process.exit(0)
}

process.on('SIGUSR1', () => fault('SIGUSR1', 'kill'))
process.on('SIGUSR2', () => fault('SIGUSR2', 'switchover'))
process.on('SIGINT', () => void exit('SIGINT'))
process.on('SIGTERM', () => void exit('SIGTERM'))

const appOptions: EchoOptions = { mode, host, port }
chassis = await Chassis.start({
  app: new URL('./app.ts', import.meta.url),
  appOptions,
  re: { deadIntervalMs },
  deadIntervalMs,
  // What the chassis's sockets do, from its lifecycle hooks (registered before the REs open any).
  hooks: (h) => {
    h.on('listen', (c) => emit('listening', { transport: c.protocol, address: c.laddr, port: c.lport }))
    h.on('bind', (c) => {
      if (c.protocol === 'udp') emit('listening', { transport: 'udp', address: c.laddr, port: c.lport })
    })
    h.on('connect', (c) => emit('connection', { handle: c.args.handle, remote: `${c.faddr}:${c.fport}`, outgoing: c.args.outgoing }))
    h.on('disconnect', (c) => emit('disconnect', { handle: c.args.handle, remote: `${c.faddr}:${c.fport}`, reason: c.args.reason }))
  },
})
const c = chassis
c.on('failover', (e) =>
  emit('failover', { reason: e.reason, from: e.from, to: e.to, takeoverMs: Number(e.takeoverMs.toFixed(2)), adopted: e.adopted, lost: e.lost }),
)
c.on('secondary-up', (e: { id: string }) => emit('secondary-up', { id: e.id }))
c.on('spare-up', (e: { slot: number }) => emit('spare-up', { slot: e.slot }))
c.on('replication-down', (e: { id: string; reason: string }) => emit('replication-down', e))
c.on('re-hung', (e: { id: string; silentMs: number }) => emit('re-hung', e))
c.on('re-error', (e: { id: string; error: string }) => emit('re-error', e))
c.on('hook-error', (e: Record<string, unknown>) => emit('hook-error', e))
c.on('error', (err: Error) => emit('error', { message: err.message }))
// Redundant: the app's socket (the listener or the UDP socket) is replicated.
while (c.core.sync.total < 1) await new Promise((r) => setTimeout(r, 5))
await c.ready(READY_TIMEOUT_MS)
booted()
emit('ready', { primary: c.primary?.id, secondary: c.secondary?.id })

// A session (npm run -s example:echo -- --listen 127.0.0.1:7007; a client connects and sends
// "hello\nworld\n", then kill -USR1 <pid>, sends "again\n", kill -USR2 <pid>, sends "and again\n",
// closes; then kill -INT <pid>). stdout:
// {"event":"started","pid":28144,"runtime":"node","mode":"tcp","host":"127.0.0.1","port":7007}
// {"event":"listening","transport":"tcp","address":"127.0.0.1","port":7007}
// {"event":"ready","primary":"re1","secondary":"re2"}
// {"event":"spare-up","slot":2}
// {"event":"connection","handle":2,"remote":"127.0.0.1:55668","outgoing":false}
// {"event":"signal","signal":"SIGUSR1","action":"kill"}
// {"event":"failover","reason":"killed","from":"re1","to":"re2","takeoverMs":6.3,"adopted":2,"lost":0}
// {"event":"secondary-up","id":"re3"}
// {"event":"spare-up","slot":0}
// {"event":"signal","signal":"SIGUSR2","action":"switchover"}
// {"event":"failover","reason":"switchover","from":"re2","to":"re3","takeoverMs":5.33,"adopted":2,"lost":0}
// {"event":"secondary-up","id":"re4"}
// {"event":"spare-up","slot":1}
// {"event":"disconnect","handle":2,"remote":"127.0.0.1:55668","reason":"close"}
// {"event":"exit","signal":"SIGINT","failovers":2}
// The client, on one connection that never noticed either failover, read:
// 1 hello
// 2 world
// 3 again
// 4 and again
