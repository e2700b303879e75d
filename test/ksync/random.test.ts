// Seeded random schedules: app adds/changes/deletes, request batches delivered late and out of
// order, replies late (in the order the Fib applied the requests), transient Fib refusals, retry timers, and primaries that die at any point (a fresh client
// re-syncs by audit, the dead one's requests still in the ring are fenced off). Invariants are
// checked after every step; after quiescence the Fib must be exactly what the client says it
// holds, and that must be what the app wants. Replay a failure with KSYNC_SEED=<seed>; soak with
// KSYNC_RUNS=<n> KSYNC_STEPS=<n>.

import { describe, expect, it } from 'vitest'
import { pack, unpack } from 'msgpackr'
import { ManualClock } from '../../engine/clock.ts'
import { Fib } from '../../engine/ksync/fib.ts'
import { KSyncClient } from '../../engine/ksync/client.ts'
import { sameData, type KSyncData, type KSyncReply, type KSyncRequest, type NhKey } from '../../engine/ksync/wire.ts'

function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const NH_KEYS: NhKey[] = ['a', 'b', 'c', 1, 2, 0xffffffff, '2001:db8::1']
const ROUTE_KEYS = Array.from({ length: 12 }, (_, i) => (i % 3 === 2 ? `2001:db8:${i}::/48` : `10.${i}.0.0/16`))
const MAX_NEXT_HOPS = 8
const MAX_ROUTES = 12
const RETRY_DELAY_MS = 10

interface InFlight<T> {
  batch: T
  dueStep: number
  from: KSyncClient
}

/** KSYNC_TRACE=1 prints every step and transition (for replaying one seed). */
const trace = process.env.KSYNC_TRACE ? (line: string) => console.log(line) : null

function runSchedule(seed: number, steps: number): { restarts: number; audits: number; requests: number } {
  const rnd = mulberry32(seed)
  const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]
  const chance = (p: number) => rnd() < p
  let faults = true
  const fib = new Fib({ maxNextHops: MAX_NEXT_HOPS, maxRoutes: MAX_ROUTES, inject: () => (faults && chance(0.05) ? 'ENOBUFS' : null) })
  const clock = new ManualClock()
  const toFib: InFlight<KSyncRequest[]>[] = []
  const toClient: InFlight<KSyncReply[]>[] = []
  let step = 0
  let client: KSyncClient
  const makeClient = (epoch: number, resync: boolean): KSyncClient => {
    const c: KSyncClient = new KSyncClient({
      send: (batch) => toFib.push({ batch: unpack(pack(batch)) as KSyncRequest[], dueStep: step + Math.floor(rnd() * 4), from: c }),
      epoch,
      resync,
      clock,
      maxNextHops: MAX_NEXT_HOPS,
      maxRoutes: MAX_ROUTES,
      maxInFlight: 1 + Math.floor(rnd() * 6),
      maxBatch: 1 + Math.floor(rnd() * 3),
      retryDelayMs: RETRY_DELAY_MS,
      onEvent: trace ? (e) => trace(`  ${c === client ? '' : '(dead) '}${JSON.stringify(e)}`) : undefined,
    })
    return c
  }
  client = makeClient(0, false)

  // What the app wants.
  const wantNh = new Map<NhKey, KSyncData>()
  const wantRoute = new Map<string, { nh: NhKey; data: KSyncData }>()
  const randomData = (): KSyncData => pick<KSyncData>([null, 1, 2, { v: 1 }, { v: 2 }, 'x', [1, 2], new Uint8Array([7])])

  const replay = (c: KSyncClient) => {
    const ops: (() => void)[] = []
    for (const [k, d] of wantNh) ops.push(() => c.addNextHop(k, d))
    for (const [p, w] of wantRoute) ops.push(() => c.addRoute(p, w.nh, w.data))
    for (let i = ops.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1))
      ;[ops[i], ops[j]] = [ops[j], ops[i]]
    }
    for (const op of ops) op()
  }

  const appOp = () => {
    const k = pick(NH_KEYS)
    const p = pick(ROUTE_KEYS)
    switch (Math.floor(rnd() * 6)) {
      case 0:
        if (!wantNh.has(k)) {
          const d = randomData()
          client.addNextHop(k, d)
          wantNh.set(k, d)
        }
        break
      case 1:
        if (wantNh.has(k)) {
          const d = randomData()
          client.changeNextHop(k, d)
          wantNh.set(k, d)
        }
        break
      case 2:
        if (wantNh.has(k)) {
          client.deleteNextHop(k)
          wantNh.delete(k)
        }
        break
      case 3:
        if (!wantRoute.has(p)) {
          const w = { nh: pick(NH_KEYS), data: randomData() }
          client.addRoute(p, w.nh, w.data)
          wantRoute.set(p, w)
        }
        break
      case 4:
        if (wantRoute.has(p)) {
          const w = chance(0.5) ? { nh: pick(NH_KEYS), data: wantRoute.get(p)!.data } : { nh: wantRoute.get(p)!.nh, data: randomData() }
          client.changeRoute(p, w.nh, w.data)
          wantRoute.set(p, w)
        }
        break
      case 5:
        if (wantRoute.has(p)) {
          client.deleteRoute(p)
          wantRoute.delete(p)
        }
        break
    }
  }

  /** Delivers one due batch, chosen at random among the due ones (so batches overtake each other). */
  const deliverFib = (all: boolean) => {
    const due = toFib.filter((b) => all || b.dueStep <= step)
    if (due.length === 0) return
    const b = pick(due)
    toFib.splice(toFib.indexOf(b), 1)
    const replies = fib.applyBatch(b.batch)
    trace?.(`  fib <- ${JSON.stringify(b.batch)}\n  fib -> ${JSON.stringify(replies)}`)
    toClient.push({ batch: unpack(pack(replies)) as KSyncReply[], dueStep: step + Math.floor(rnd() * 4), from: b.from })
  }
  /** Replies come back in the order the Fib applied the requests (the ring is FIFO), late. */
  const deliverClient = (all: boolean) => {
    const b = toClient[0]
    if (b === undefined || (!all && b.dueStep > step)) return
    toClient.shift()
    trace?.(`  client <- ${b.from === client ? '' : '(dead) '}${JSON.stringify(b.batch)}`)
    if (b.from === client) client.onAck(b.batch) // a dead primary's replies go nowhere
  }

  let restarts = 0
  let audits = 0
  let requests = 0
  const endAudit = () => {
    const result = fib.endAudit()
    trace?.(`  endAudit ${JSON.stringify(result)}`)
    client.auditEnded()
    audits++
  }
  const check = () => {
    client.invariants()
    fib.invariants()
  }

  for (; step < steps; step++) {
    const x = rnd()
    trace?.(`step ${step} x=${x.toFixed(3)} toFib=${toFib.length} toClient=${toClient.length}`)
    if (x < 0.4) appOp()
    else if (x < 0.5) client.flush()
    else if (x < 0.68) deliverFib(false)
    else if (x < 0.86) deliverClient(false)
    else if (x < 0.9) clock.advance(Math.floor(rnd() * 2 * RETRY_DELAY_MS))
    else if (x < 0.93) {
      // The primary dies: its in-memory view is gone; the chassis opens an audit for the new one.
      requests += client.stats().requests
      const { epoch } = fib.beginAudit()
      trace?.(`  restart: epoch ${epoch}`)
      client = makeClient(epoch, true)
      replay(client)
      restarts++
    } else if (fib.auditing && (client.quiescent || chance(0.1))) endAudit() // sometimes early
    check()
  }

  // Quiesce: no more faults; deliver everything, fire retries, close the audit.
  faults = false
  for (let rounds = 0; ; rounds++) {
    if (rounds > 10_000) {
      const stuck = client.entries().filter((v) => v.pending !== 'none')
      throw new Error(`did not quiesce: ${JSON.stringify({ stats: client.stats(), stuck, fib: fib.stats() })}`)
    }
    client.flush()
    if (toFib.length > 0) deliverFib(true)
    else if (toClient.length > 0) deliverClient(true)
    else if (!client.quiescent) clock.advance(RETRY_DELAY_MS)
    else if (fib.auditing) endAudit()
    else break
    check()
  }
  requests += client.stats().requests

  // 1. The Fib holds exactly what the client believes it holds.
  const views = client.entries()
  const inFib = views.filter((v) => v.fib !== null)
  const snap = fib.snapshot()
  expect(inFib.length).toBe(snap.nextHops.length + snap.routes.length)
  for (const v of inFib) {
    const f = fib.at(v.kind, v.index)
    expect(f?.key, `${v.kind} ${String(v.key)} at ${v.index}`).toBe(v.key)
    expect(sameData(f!.data, v.fib!.data), `${String(v.key)} data`).toBe(true)
    if (v.kind === 'route') expect(f!.nh).toBe(v.fib!.nhIndex)
  }
  // 2. What the client holds is what the app wants, but for routes whose next hop is not wanted.
  for (const [k, d] of wantNh) {
    const v = client.entry('nh', k)
    expect(v?.state, `next hop ${String(k)}`).toBe('IN_SYNC')
    expect(sameData(v!.fib!.data, d)).toBe(true)
  }
  for (const v of client.entries('nh')) {
    if (!wantNh.has(v.key as NhKey)) expect(['TEMP', 'DEL_DEFER_REF'], `unwanted next hop ${String(v.key)}`).toContain(v.state)
  }
  for (const [p, w] of wantRoute) {
    const v = client.entry('route', p)!
    const nh = client.entry('nh', w.nh)!
    if (wantNh.has(w.nh) || nh.state === 'DEL_DEFER_REF') {
      expect(v.state, `route ${p}`).toBe('IN_SYNC')
      expect(v.fib!.nh).toBe(w.nh)
      expect(sameData(v.fib!.data, w.data)).toBe(true)
    } else expect(['ADD_DEFER', 'CHANGE_DEFER'], `route ${p} waits for ${String(w.nh)}`).toContain(v.state)
  }
  expect(client.entries('route').length).toBe(wantRoute.size)
  expect(fib.stats().sweepSkippedReferenced).toBe(0)
  return { restarts, audits, requests }
}

describe('KSync under random schedules', () => {
  const base = process.env.KSYNC_SEED ? Number(process.env.KSYNC_SEED) : (Date.now() ^ (Math.random() * 0x7fffffff)) >>> 0
  const runs = Number(process.env.KSYNC_RUNS ?? (process.env.KSYNC_SEED ? 1 : 100))
  const steps = Number(process.env.KSYNC_STEPS ?? 400)

  it(`converges after any interleaving of app calls, acks, faults and failovers (base seed ${base})`, () => {
    let restarts = 0
    let audits = 0
    let requests = 0
    for (let i = 0; i < runs; i++) {
      const seed = (base + i) >>> 0
      try {
        const r = runSchedule(seed, steps)
        restarts += r.restarts
        audits += r.audits
        requests += r.requests
      } catch (err) {
        console.error(`KSync random schedule failed: replay with KSYNC_SEED=${seed}`)
        throw err
      }
    }
    expect(restarts).toBeGreaterThan(0)
    expect(audits).toBeGreaterThan(0)
    expect(requests).toBeGreaterThan(runs)
  })
})
