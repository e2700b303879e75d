// The BGP example's command line: a BGP-4 speaker with non-stop routing. It runs in two RE worker
// threads on a chassis that owns the TCP connection to the peer; the primary's speaker is active,
// the secondary follows by snooping and takes over without the peer noticing.
//
//   npm run example:bgp -- --peer HOST:PORT --as N --peer-as N --router-id A.B.C.D
//                          [--announce PREFIX/LEN ...] [--local HOST] [--hold SECONDS]
//                          [--generate N] [--connect-retry MS] [--dead-interval MS]
//
// One JSON object per line on stdout, first {"event":"started","pid":N,...}: session state changes,
// routes received, failover, secondary-up, synced (a secondary holds the session), fib-audit (FIB
// churn after a takeover). Signals to pid N: SIGUSR1 kills the primary RE, SIGUSR2 switches over
// gracefully, SIGINT/SIGTERM send a Cease NOTIFICATION and exit.

import process from 'node:process'
import { Chassis } from '../../engine/chassis/chassis.ts'
import { parseIp, parsePrefix } from './codec.ts'
import type { BgpAppOptions } from './app.ts'

const STOP_TIMEOUT_MS = 3000

function out(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`)
}

function fail(message: string): never {
  out({ event: 'error', message })
  process.exit(2)
}

function parseArgs(argv: string[]): BgpAppOptions & { deadIntervalMs: number } {
  const one = new Map<string, string>()
  const announce: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith('--')) fail(`unexpected argument '${a}'`)
    const v = argv[i + 1]
    if (v === undefined || v.startsWith('--')) fail(`${a} needs a value`)
    i++
    if (a === '--announce') announce.push(v)
    else one.set(a.slice(2), v)
  }
  const known = new Set(['peer', 'as', 'peer-as', 'router-id', 'local', 'hold', 'generate', 'connect-retry', 'dead-interval'])
  for (const k of one.keys()) if (!known.has(k)) fail(`unknown option --${k}`)
  const num = (k: string, dflt?: number): number => {
    const v = one.get(k)
    if (v === undefined) {
      if (dflt === undefined) fail(`--${k} is required`)
      return dflt
    }
    const n = Number(v)
    if (!Number.isInteger(n) || n < 0) fail(`--${k} takes a non-negative integer, not '${v}'`)
    return n
  }
  const peer = one.get('peer') ?? fail('--peer HOST:PORT is required')
  const colon = peer.lastIndexOf(':')
  const port = Number(peer.slice(colon + 1))
  if (colon <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) fail(`--peer takes HOST:PORT, not '${peer}'`)
  const routerId = one.get('router-id') ?? fail('--router-id A.B.C.D is required')
  if (parseIp(routerId) === null) fail(`--router-id takes A.B.C.D, not '${routerId}'`)
  for (const p of announce) if (parsePrefix(p) === null) fail(`--announce takes PREFIX/LEN, not '${p}'`)
  const local = one.get('local')
  const generate = num('generate', 0)
  return {
    peer: { host: peer.slice(0, colon), port, transport: 'tcp', local },
    localAs: num('as'),
    peerAs: num('peer-as'),
    routerId,
    localAddress: local !== undefined && parseIp(local) !== null ? local : undefined,
    holdTimeS: num('hold', 90),
    connectRetryMs: num('connect-retry', 5000),
    // A peer on this host's loopback (a lab, e.g. BIRD on 127.0.0.2) announces 127/8 next hops.
    loopbackNextHop: (parseIp(peer.slice(0, colon)) ?? 0) >>> 24 === 127,
    announce,
    generate: generate > 0 ? { count: generate, first: '20.0.0.0/24' } : undefined,
    deadIntervalMs: num('dead-interval', 3000),
  }
}

const { deadIntervalMs, ...appOptions } = parseArgs(process.argv.slice(2))
let chassis: Chassis | null = null
let stopping = false

// Our own handlers (SIGUSR1 would otherwise start Node's inspector), installed before anything runs.
process.on('SIGUSR1', () => {
  if (!chassis || stopping) return
  out({ event: 'signal', signal: 'SIGUSR1', action: 'kill-primary', primary: chassis.primary?.id ?? null })
  void chassis.kill('primary')
})
process.on('SIGUSR2', () => {
  if (!chassis || stopping) return
  out({ event: 'signal', signal: 'SIGUSR2', action: 'switchover', primary: chassis.primary?.id ?? null })
  chassis.switchover().catch((err: Error) => out({ event: 'error', during: 'switchover', message: err.message }))
})
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => void shutdown(sig))

async function shutdown(signal: string): Promise<void> {
  if (stopping) return
  stopping = true
  out({ event: 'signal', signal, action: 'cease' })
  const c = chassis
  if (c?.core.primary) {
    // The primary's speaker sends a Cease NOTIFICATION and closes once it reached the transport.
    const stopped = new Promise<void>((resolve) => {
      c.on('app-event', (e: { primary: boolean; event: { type: string } }) => {
        if (e.primary && e.event.type === 'stopped') resolve()
      })
      setTimeout(resolve, STOP_TIMEOUT_MS).unref()
    })
    c.core.sendEvent(c.core.primary, 0, { ev: 'bgp-stop' })
    await stopped
  }
  await c?.close()
  out({ event: 'exit', signal })
  process.exit(0)
}

chassis = await Chassis.start({
  app: new URL('./app.ts', import.meta.url),
  appOptions,
  deadIntervalMs,
  re: { deadIntervalMs },
})
const c = chassis
out({
  event: 'started',
  pid: process.pid,
  peer: `${appOptions.peer.host}:${appOptions.peer.port}`,
  as: appOptions.localAs,
  peerAs: appOptions.peerAs,
  routerId: appOptions.routerId,
  primary: c.primary?.id ?? null,
  secondary: c.secondary?.id ?? null,
})
c.on('app-event', (e: { re: string; primary: boolean; event: Record<string, unknown> & { type: string } }) => {
  const { type, ...rest } = e.event
  // The primary speaks for the session; a secondary only says when it holds the session.
  if (e.primary || type === 'synced' || type === 'status') out({ event: type, re: e.re, ...rest })
})
c.on('failover', (e) => out({ event: 'failover', reason: e.reason, from: e.from, to: e.to, takeoverMs: Number(e.takeoverMs.toFixed(2)) }))
c.on('secondary-up', (e: { id: string }) => out({ event: 'secondary-up', id: e.id }))
c.on('replication-down', (e: { id: string; reason: string }) => out({ event: 'replication-down', id: e.id, reason: e.reason }))
c.on('fib-audit', (e: { epoch: number; refreshed: number; swept: number; churn: Record<string, number>; ms: number }) =>
  out({ event: 'fib-audit', epoch: e.epoch, refreshed: e.refreshed, swept: e.swept, churn: e.churn, ms: Number(e.ms.toFixed(1)) }),
)
c.on('re-hung', (e: { id: string; silentMs: number }) => out({ event: 're-hung', ...e }))
c.on('error', (err: Error) => out({ event: 'error', message: err.message }))
// Events from before these listeners: ask both REs where they stand.
for (const re of [c.core.primary, c.core.secondary]) if (re) c.core.sendEvent(re, 0, { ev: 'bgp-status' })

// Output of a session with BIRD (README's commands), kill -USR1 then kill -USR2 then Ctrl-C, abridged:
// {"event":"started","pid":19160,"peer":"127.0.0.2:1179","as":65001,"peerAs":65002,"routerId":"10.0.0.1","primary":"re1","secondary":"re2"}
// {"event":"state","re":"re1","from":"Connect","to":"OpenSent","reason":"TCP connected"}
// {"event":"state","re":"re1","from":"OpenSent","to":"OpenConfirm","reason":"OPEN received"}
// {"event":"synced","re":"re2","state":"Connect","routes":0,"ms":2.49}
// {"event":"state","re":"re1","from":"OpenConfirm","to":"Established","reason":"KEEPALIVE received"}
// {"event":"routes","re":"re1","locRib":2,"received":2,"withdrawn":0,"advertised":1,"updates":2,"lastChangeAt":1795357348993.91}
// {"event":"signal","signal":"SIGUSR1","action":"kill-primary","primary":"re1"}
// {"event":"takeover","re":"re2","carried":true,"state":"Established","routes":2,"owed":0,"ms":0.82}
// {"event":"failover","reason":"killed","from":"re1","to":"re2","takeoverMs":10.01}
// {"event":"fib-audit","epoch":1,"refreshed":3,"swept":0,"churn":{"adds":0,"changes":0,"deletes":0,"swept":0,"reAdds":0},"ms":31.2}
// {"event":"secondary-up","id":"re3"}
// {"event":"synced","re":"re3","state":"Established","routes":2,"ms":1.04}
// {"event":"signal","signal":"SIGUSR2","action":"switchover","primary":"re2"}
// {"event":"failover","reason":"switchover","from":"re2","to":"re3","takeoverMs":3.92}
// {"event":"signal","signal":"SIGINT","action":"cease"}
// {"event":"notification","re":"re3","dir":"out","code":6,"subcode":2}
// {"event":"state","re":"re3","from":"Established","to":"Idle","reason":"administrative shutdown"}
// {"event":"stopped","re":"re3"}
// {"event":"exit","signal":"SIGINT"}
