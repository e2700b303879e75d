// The body of an RE worker thread: builds a RoutingEngine over the rings the chassis handed in
// workerData, runs the application module's default export with it, pumps the rings, beats the
// heartbeat the chassis supervisor watches, and exposes the control plane (comlink) to the chassis.
// workers/re-a.ts, re-b.ts and re-c.ts are the entry files (one per slot: Bun wants each worker to
// have its own entry file). A worker may boot as a warm spare: it loads the engine and the
// application module (the slow part of a start), then waits for activate() to give it its role and
// rings, so a fresh secondary after a failover is up as fast as its handshake.

import { parentPort, workerData } from 'node:worker_threads'
import { expose } from 'comlink'
import { systemClock } from '../clock.ts'
import { openEndpoint, type Endpoint, type Side } from '../kkcm/channel.ts'
import { abandonRings } from '../kkcm/ring.ts'
import { portEndpoint } from '../runtime/endpoint.ts'
import { attachKSync } from './ksync-link.ts'
import { RingSink, drainNow, pumpRing } from './ring-sink.ts'
import { warmUp, type WarmupReport } from './warmup.ts'
import { RoutingEngine, type PromoteInfo, type ReOptions, type Role } from './re.ts'

export interface ReWorkerData {
  id: string
  role: Role
  app: string // module URL
  appOptions: unknown
  chassisSab: SharedArrayBuffer
  peerSab: SharedArrayBuffer | null
  peerSide: Side
  heartbeatSab: SharedArrayBuffer
  heartbeatIndex: number
  re: Partial<Omit<ReOptions, 'id' | 'role' | 'clock'>>
  /** Boot as a warm spare: only app, appOptions, heartbeatSab and re are meaningful until activate(). */
  spare?: boolean
}

export interface PromoteResult {
  adopted: number[]
  lost: number[]
  uncharged: Record<number, number>
  at: number
  ms: number
  drainMs: number
  drained: number
  mergeMs: number
  appMs: number
}

export interface ReControl {
  started(): Promise<boolean>
  promote(info: PromoteInfo): PromoteResult | Promise<PromoteResult>
  attachPeer(sab: SharedArrayBuffer, side: Side): void
  peerLost(reason: string): void
  quiesce(timeoutMs: number): Promise<boolean>
  thaw(): void
  stats(): ReturnType<RoutingEngine['stats']>
  hang(ms: number): void
  crash(): void
}

/**
 * An uncaught exception ends this RE (unless the application handles it: then this does nothing).
 * Its rings are abandoned first (ring.ts), so the chassis, told by the worker's 'error' event about
 * 2 ms after the throw, can fence them and take over at once instead of waiting 20 ms and more
 * for the thread's 'exit'. The error then goes on as uncaught: the worker dies with it.
 */
function dieOnUncaught(err: unknown): void {
  if (process.listenerCount('uncaughtException') > 1) return // the application handles it
  abandonRings()
  process.removeListener('uncaughtException', dieOnUncaught)
  throw err
}

export async function runRe(): Promise<void> {
  process.on('uncaughtException', dieOnUncaught)
  const boot = workerData as ReWorkerData
  if (!boot.spare) {
    const control = runActive(boot)
    expose(control, portEndpoint(parentPort!))
    await control.started().catch(failedStart(boot))
    return
  }
  // A warm spare: the module loads now, then the engine's failover paths run once on a private rig
  // (warmup.ts) so that the first handshake after activation does not compile them. The RE is built
  // when the chassis activates this worker. A warm-up that fails costs speed, never the spare.
  let warmup: WarmupReport | { error: string } | null = null
  const warm = import(boot.app)
    .catch(() => null)
    .then(() => warmUp())
    .then(
      (r) => void (warmup = r),
      (err: unknown) => void (warmup = { error: String(err) }),
    )
  let inner: ReControl | null = null
  let activated!: (c: ReControl) => void
  const active = new Promise<ReControl>((r) => (activated = r))
  // Every call waits for the activation: a spare still loading its application when it is
  // activated (it boots once the previous resync is done) must queue what the chassis asks next.
  const need = (): Promise<ReControl> => (inner ? Promise.resolve(inner) : active)
  const proxy: SpareControl = {
    async activate(d) {
      await warm
      inner = runActive({ ...boot, ...d, spare: false } as ReWorkerData)
      activated(inner)
      void inner.started().catch(failedStart(boot))
    },
    started: () => active.then((c) => c.started()),
    warmed: async () => {
      await warm
      return warmup
    },
    promote: (info) => need().then((c) => c.promote(info)),
    attachPeer: (sab, side) => need().then((c) => c.attachPeer(sab, side)),
    peerLost: (reason) => need().then((c) => c.peerLost(reason)),
    quiesce: (ms) => need().then((c) => c.quiesce(ms)),
    thaw: () => need().then((c) => c.thaw()),
    stats: () => need().then((c) => c.stats()),
    hang: (ms) => need().then((c) => c.hang(ms)),
    crash: () => need().then((c) => c.crash()),
  }
  expose(proxy, portEndpoint(parentPort!))
}

/** A spare's control plane: ReControl's calls, each answered once the spare is activated. */
type SpareControl = { [K in keyof ReControl]: (...a: Parameters<ReControl[K]>) => Promise<Awaited<ReturnType<ReControl[K]>>> } & {
  activate(d: Partial<ReWorkerData>): Promise<void>
  /** Resolves once the application module is loaded and the warm-up ran (the chassis's 'spare-up'). */
  warmed(): Promise<WarmupReport | { error: string } | null>
}

function failedStart(wd: ReWorkerData): (err: unknown) => void {
  return (err) => {
    console.error(`RE ${wd.id}: application failed to start:`, err)
    process.exit(70)
  }
}

/** Builds the RE over the rings in `wd`, starts the application and returns the control plane. */
function runActive(wd: ReWorkerData): ReControl {
  const chassis = openEndpoint(wd.chassisSab, 'b')
  const chassisSink = new RingSink(chassis.tx)
  const re = new RoutingEngine({ ...wd.re, id: wd.id, role: wd.role, clock: systemClock }, chassisSink)
  const ksync = attachKSync(re, chassisSink)
  const heartbeat = new Int32Array(wd.heartbeatSab)
  Atomics.add(heartbeat, wd.heartbeatIndex, 1)
  re.on('tick', () => Atomics.add(heartbeat, wd.heartbeatIndex, 1))
  ;(re as unknown as { options: unknown }).options = wd.appOptions

  let peer: Endpoint | null = null
  let peerGen = 0
  const startPeer = (sab: SharedArrayBuffer, side: Side): void => {
    peer = openEndpoint(sab, side)
    const gen = ++peerGen
    const ep = peer
    re.attachPeer(new RingSink(ep.tx))
    void pumpRing(ep.rx, (h, b, o) => re.onPeerMessage(h, b, o), () => re.onPeerBatchEnd(), () => gen !== peerGen)
  }

  // The app's synchronous part registers its handlers; the rings start pumping right after it, before
  // its promise settles (an app that awaits listen() or replicate() needs replies to arrive).
  // A promotion waits for that registration. An RE promoted while its app still loaded (a spare
  // activated as secondary, then a double failure) started its app as a primary: it listened
  // afresh, got EADDRINUSE from the chassis that still held the old listener, and exited; and it
  // began pumping its peer ring after the promotion. Now the app starts in the role it was given
  // and hears 'mastership' like any secondary.
  let registered = false
  const registration = (async () => {
    const mod = (await import(wd.app)) as { default?: (re: RoutingEngine) => unknown }
    if (typeof mod.default !== 'function') throw new Error(`application module ${wd.app} has no default export function`)
    const result = mod.default(re)
    void pumpRing(chassis.rx, (h, b, o) => re.onChassisMessage(h, b, o), () => re.onChassisBatchEnd())
    if (wd.peerSab) startPeer(wd.peerSab, wd.peerSide)
    registered = true
    return { result } // boxed: the app's promise is started's to wait for
  })()
  const started = registration.then(async ({ result }) => {
    await result
    return true
  })

  const promoteNow = (info: PromoteInfo): PromoteResult => {
    const t0 = performance.now()
    const at = performance.timeOrigin + t0 // wall time the call began here (the chassis compares)
    // Everything the old primary managed to put on the KKCM is valid: take it all first.
    let drained = 0
    if (peer) {
      peerGen++
      drained = drainNow(peer.rx, (h, b, o) => re.onPeerMessage(h, b, o), () => re.onPeerBatchEnd())
      peer = null
    }
    const t1 = performance.now()
    // The new primary's KSync client re-syncs the chassis FIB under the audit begun for this
    // failover. It is made once the sockets have resumed, before the app hears mastership: making it
    // (its index tables, its code's first run in this worker) took 0.7-4.8 ms ahead of the first record.
    const r = re.promote(info, () => ksync.promoting((info as PromoteInfo & { ksync?: { epoch: number } }).ksync))
    return { ...r, at, ms: performance.now() - t0, drainMs: t1 - t0, drained, mergeMs: re.lastPromoteTrace.mergeMs, appMs: re.lastPromoteTrace.appMs }
  }

  const control: ReControl = {
    started: () => started,
    promote(info) {
      if (!registered) return registration.then(() => promoteNow(info))
      return promoteNow(info)
    },
    attachPeer: (sab, side) => startPeer(sab, side),
    peerLost(reason) {
      peerGen++
      peer?.close()
      peer = null
      re.peerLost(reason)
    },
    async quiesce(timeoutMs) {
      return re.quiesce(timeoutMs)
    },
    thaw: () => re.thaw(),
    stats: () => re.stats(),
    hang(ms) {
      // Fault injection: a hung RE, stuck in a busy loop (its event loop starves) in a task that has
      // just committed a frame (a keepalive to the peer), as an application stuck in the middle of
      // its work would be. Its rings cannot be fenced (chassis retire()).
      ;(re as unknown as { onKeepaliveTick(): void }).onKeepaliveTick()
      const until = performance.now() + ms
      while (performance.now() < until) {
        /* spin */
      }
    },
    crash() {
      // Fault injection: an uncaught exception, thrown from a task that has just committed a frame
      // (a keepalive to the peer), as a bug in the middle of the application's work would.
      setTimeout(() => {
        ;(re as unknown as { onKeepaliveTick(): void }).onKeepaliveTick()
        throw new Error('injected crash')
      }, 0)
    },
  }
  return control
}
