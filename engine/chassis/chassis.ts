// Chassis: the host-thread object users hold. It starts the primary and secondary REs as worker
// threads, gives each a KKCM ring channel to the chassis and one between the two REs, pumps the
// rings into ChassisCore, and supervises: a worker that exits, or whose heartbeat stops for the
// dead interval (a hung RE), is replaced. Losing the primary promotes the secondary; losing
// either starts a fresh secondary, which the primary re-replicates every socket to.
//
// Supervisor states per RE slot: starting -> up -> (dead | retired). Failover sequence:
//   primary dead -> drain its chassis ring -> core.beginPromotion -> secondary.promote (merge)
//   -> core.promoted -> 'failover' event -> fresh secondary started -> primary.attachPeer -> 'secondary-up'
//   -> every socket in sync -> the next warm spare boots -> 'spare-up'

import { EventEmitter } from 'node:events'
import { fileURLToPath } from 'node:url'
import type { Worker } from 'node:worker_threads'
import { wrap, type Remote } from 'comlink'
import { NsrError } from '../errors.ts'
import { createChannelSab, openEndpoint, type Endpoint } from '../kkcm/channel.ts'
import { RingSink, drainNow, pumpRing } from '../re/ring-sink.ts'
import type { Ring } from '../kkcm/ring.ts'
import type { ReOptions } from '../re/re.ts'
import type { ReControl, ReWorkerData } from '../re/worker-main.ts'
import type { WarmupReport } from '../re/warmup.ts'
import { portEndpoint } from '../runtime/endpoint.ts'
import { runtimeName, spawnWorker } from '../runtime/worker.ts'
import { ChassisCore, type ChassisLimits } from './core.ts'
import { FibLink } from './fib-link.ts'
import type { FibOptions } from '../ksync/fib.ts'
import { MemoryNetwork } from './memory.ts'
import { NetTransport } from './net.ts'
import type { Transport } from './transport.ts'
import { ConnHooks } from './conn-hooks.ts'
import { HookRegistry } from '../hooks/registry.ts'
import { replicationPolicy, type ReplicationPolicy, type ReplicationPolicyOptions } from '../hooks/replication-policy.ts'
import type { ConnectCall } from '../hooks/types.ts'
import type { WalkFilter } from '../hooks/connection-table.ts'

export interface ChassisOptions {
  /** The application module (its default export receives the RE). */
  app: URL | string
  /** Passed to the application as `re.options`. */
  appOptions?: unknown
  /** Transports by name: 'memory' (in-process), 'tcp' and 'udp' (OS sockets) are there by default; these add or replace. */
  transports?: Record<string, Transport>
  /** Replicate every TCP connection whose port matches, without the application asking (a hook user). */
  replicatePorts?: Omit<ReplicationPolicyOptions, 'replicate'>
  /** Registers socket lifecycle hooks before the REs start, so the application's first sockets are seen too. */
  hooks?: (registry: HookRegistry) => void
  re?: Partial<Omit<ReOptions, 'id' | 'role' | 'clock'>>
  limits?: Partial<ChassisLimits>
  /** Bytes of each KKCM ring (a power of two). */
  ringBytes?: number
  /** The chassis declares an RE hung when its heartbeat stalls this long. */
  deadIntervalMs?: number
  keepaliveIntervalMs?: number
  /** Start a fresh secondary after each failover (default true). */
  restoreRedundancy?: boolean
  /** Keep a warm spare worker so a fresh secondary is up fast after a failover (default: on Node). */
  spare?: boolean
  /** Delay before the replacement secondary starts (tests model a slow RE). */
  respawnDelayMs?: number
  /** Sizes of the chassis FIB that the primary RE programs through KSync (re.ksync). */
  fib?: Omit<FibOptions, 'inject'>
}

interface ReSlotState {
  id: string
  slot: Slot
  worker: Worker
  api: Remote<ReControl>
  chassisEp: Endpoint
  sink: RingSink
  /** The ring this RE writes to its peer RE (the chassis's view of it, to fence it in retire()). */
  peerOut: Ring | null
  alive: boolean
  dying: boolean
  /** When the chassis began retiring it (retire()), or 0: a takeover's time runs from there. */
  retiredAt: number
  gen: number
  lastBeat: number
  /** Heartbeat silence accumulated by the supervisor (see supervise()). */
  silentMs: number
}

export interface FailoverEvent {
  reason: string
  from: string
  to: string
  /**
   * From the primary's death to the first record of the new primary at the transport (or to the end
   * of the promotion when it had nothing to send). Death: the chassis retiring it (a kill, a crash's
   * 'error' event, a hang, keepalive silence, a switchover), so waiting for a thread that could not
   * be fenced counts; or its exit.
   */
  takeoverMs: number
  /** The death, on this thread's performance.now() clock (takeoverMs counts from it). */
  at: number
  /** Until the new primary finished promoting (its application's mastership handlers included). */
  promoteMs: number
  adopted: number
  lost: number
}

/**
 * Hung-RE detection: an RE beats its heartbeat word every keepalive interval (50 ms by default); the
 * supervisor looks SUPERVISE_PER_INTERVAL times per interval and declares the RE hung after
 * DEAD_INTERVALS intervals of silence (125 ms by default), so a hang is caught within three
 * keepalive intervals of its start whatever its phase against the beat.
 */
const SUPERVISE_PER_INTERVAL = 5
const DEAD_INTERVALS = 2.5

const ENTRY = [
  new URL('../../workers/re-a.ts', import.meta.url),
  new URL('../../workers/re-b.ts', import.meta.url),
  new URL('../../workers/re-c.ts', import.meta.url),
] as const

type Slot = 0 | 1 | 2

/** The most a new spare waits for the sockets to be in sync before it boots anyway. */
const SPARE_AFTER_SYNC_TIMEOUT_MS = 10_000

/** A booted worker with the engine and the application loaded, waiting for a role. */
interface Spare {
  slot: Slot
  /** The application module is loaded and the warm-up ran ('spare-up'). */
  warm: boolean
  worker: Worker
  api: Remote<ReControl & { activate(d: Partial<ReWorkerData>): Promise<void>; warmed(): Promise<WarmupReport | { error: string } | null> }>
}

export class Chassis extends EventEmitter {
  readonly memory: MemoryNetwork
  /** TCP and UDP over the OS (registered as 'tcp' and 'udp'). */
  readonly net: NetTransport
  readonly core: ChassisCore
  /** The FIB (KSync's target), here so it outlives every RE; audited after each failover ('fib-audit'). */
  readonly ksync: FibLink
  /** Socket lifecycle hooks (bind, unbind, listen, unlisten, connect, disconnect) and the live TCP connections. */
  readonly hooks: HookRegistry
  private readonly connHooks: ConnHooks
  private readonly opts: ChassisOptions
  private readonly ringBytes: number
  private readonly heartbeat = new Int32Array(new SharedArrayBuffer(4 * ENTRY.length))
  private spare: Spare | null = null
  primary: ReSlotState | null = null
  secondary: ReSlotState | null = null
  private nextId = 1
  private closing = false
  private supervisor: ReturnType<typeof setInterval> | null = null
  private failing: Promise<void> | null = null
  private lastSupervise = performance.now()
  /** How long the last retire() waited before handling the loss (its fences, or the thread's end). */
  lastTerminateMs = 0
  lastDrained = 0
  private readyWaiters: Array<() => void> = []
  readonly failovers: FailoverEvent[] = []
  /**
   * fencedRetires: retired REs whose rings were fenced before their thread ended; haltedRetires:
   * primaries stopped mid-task whose secondary was halted instead (retire()). The others waited for
   * their thread to end.
   */
  readonly counters = { failovers: 0, secondaryLosses: 0, hungDetected: 0, respawns: 0, fencedRetires: 0, haltedRetires: 0 }

  private constructor(opts: ChassisOptions) {
    super()
    this.opts = opts
    this.ringBytes = opts.ringBytes ?? 1 << 22
    this.memory = new MemoryNetwork()
    this.net = new NetTransport('net')
    this.core = new ChassisCore({ memory: this.memory, tcp: this.net, udp: this.net, ...opts.transports }, opts.limits)
    this.hooks = new HookRegistry({
      onHookError: (e) => this.emit('hook-error', { event: e.event, hook: e.hook, handle: e.call.args.handle, error: e.error instanceof Error ? e.error.message : String(e.error) }),
    })
    this.connHooks = new ConnHooks(this.hooks, this.core)
    this.core.observer = this.connHooks
    if (opts.replicatePorts) this.replicationPolicy(opts.replicatePorts)
    opts.hooks?.(this.hooks)
    this.core.onSync = () => this.checkReady()
    this.core.onSecondarySilent = () => {
      const st = this.secondary
      if (!st || !st.alive || st.dying) return
      // The same fact the heartbeat supervisor reports, seen first by the primary's keepalives.
      this.counters.hungDetected++
      this.emit('re-hung', { id: st.id, silentMs: Math.round(st.silentMs), via: 'keepalive' })
      void this.retire(st, 'keepalive-silence')
    }
    this.on('error', () => {})
    this.ksync = new FibLink(this.core, { ...opts.fib, onAudit: (e) => this.emit('fib-audit', e) })
    // Applications' own events: re.request({ op: 'app-event', event }) is emitted as 'app-event'.
    const next = this.core.onCmd
    this.core.onCmd = (reId, cmd) => {
      if (cmd.op !== 'app-event') return next(reId, cmd)
      this.emit('app-event', { re: reId, primary: this.core.primary?.id === reId, event: cmd.event })
      return { ok: true }
    }
  }

  static async start(opts: ChassisOptions): Promise<Chassis> {
    const c = new Chassis(opts)
    await c.boot()
    return c
  }

  private get keepaliveMs(): number {
    return this.opts.keepaliveIntervalMs ?? this.opts.re?.keepaliveIntervalMs ?? 50
  }

  private get deadMs(): number {
    return this.opts.deadIntervalMs ?? this.opts.re?.deadIntervalMs ?? DEAD_INTERVALS * this.keepaliveMs
  }

  private async boot(): Promise<void> {
    const peerSab = createChannelSab(this.ringBytes)
    const pri = this.spawn(0, 'primary', peerSab, 'a')
    const sec = this.spawn(1, 'secondary', peerSab, 'b')
    this.primary = pri
    this.secondary = sec
    this.core.setPrimary(pri.id, pri.sink)
    this.core.setSecondary(sec.id, sec.sink)
    await Promise.all([pri.api.started(), sec.api.started()])
    this.spawnSpare(2)
    this.supervisor = setInterval(() => this.supervise(), this.keepaliveMs / SUPERVISE_PER_INTERVAL)
    this.supervisor.unref?.()
    this.emit('secondary-up', { id: sec.id })
  }

  private spawn(slot: Slot, role: 'primary' | 'secondary', peerSab: SharedArrayBuffer | null, peerSide: 'a' | 'b', spare: Spare | null = null): ReSlotState {
    const id = `re${this.nextId++}`
    const chassisSab = createChannelSab(this.ringBytes)
    Atomics.store(this.heartbeat, slot, 0)
    const app = typeof this.opts.app === 'string' ? this.opts.app : this.opts.app.href
    const data: ReWorkerData = {
      id,
      role,
      app,
      appOptions: this.opts.appOptions ?? null,
      chassisSab,
      peerSab,
      peerSide,
      heartbeatSab: this.heartbeat.buffer as SharedArrayBuffer,
      heartbeatIndex: slot,
      re: { keepaliveIntervalMs: this.keepaliveMs, deadIntervalMs: this.deadMs, ...this.opts.re },
    }
    const worker = spare ? spare.worker : spawnWorker(ENTRY[slot], { workerData: data, name: `nsr-${id}` })
    // A spare gets its role and rings now; calls made after this one queue behind it.
    if (spare) void spare.api.activate(data).catch((err) => this.emit('re-error', { id, error: String(err) }))
    const chassisEp = openEndpoint(chassisSab, 'a')
    const st: ReSlotState = {
      id,
      slot,
      worker,
      api: spare ? (spare.api as unknown as Remote<ReControl>) : wrap<ReControl>(portEndpoint(worker)),
      chassisEp,
      sink: new RingSink(chassisEp.tx),
      peerOut: peerSab ? peerRingOf(peerSab, peerSide) : null,
      alive: true,
      dying: false,
      retiredAt: 0,
      gen: 0,
      lastBeat: 0,
      silentMs: 0,
    }
    worker.on('exit', (code) => this.onExit(st, `exit ${code}`))
    worker.on('error', (err) => {
      this.emit('re-error', { id, error: String(err) })
      // An uncaught exception: the RE is dying and its rings are abandoned (worker-main.ts). Its
      // 'exit' comes after the thread's teardown, 20 ms and more later; the takeover need not wait.
      if (st.alive && !st.dying) void this.retire(st, 'crashed')
    })
    void pumpRing(
      chassisEp.rx,
      (h, b, o) => this.core.onReMessage(id, h, b, o),
      () => this.core.onReBatchEnd(),
      () => !st.alive,
    )
    return st
  }

  /** Boots a warm spare in `slot` (the engine and the application module load now, not at failover). */
  private spawnSpare(slot: Slot): void {
    // Validated on Node; on Bun and Deno a fresh secondary still starts from cold unless asked.
    const wanted = this.opts.spare ?? runtimeName() === 'node'
    if (this.closing || !wanted || this.spare) return
    const app = typeof this.opts.app === 'string' ? this.opts.app : this.opts.app.href
    const data = {
      spare: true,
      app,
      appOptions: this.opts.appOptions ?? null,
      heartbeatSab: this.heartbeat.buffer as SharedArrayBuffer,
      re: { keepaliveIntervalMs: this.keepaliveMs, deadIntervalMs: this.deadMs, ...this.opts.re },
    }
    const worker = spawnWorker(ENTRY[slot], { workerData: data, name: `nsr-spare-${slot}` })
    const spare: Spare = { slot, worker, api: wrap(portEndpoint(worker)), warm: false }
    worker.on('exit', () => {
      if (this.spare === spare) this.spare = null
    })
    // While it is a spare only: an activated spare is an RE, whose own listener reports (it was
    // reported twice, under both names).
    worker.on('error', (err) => {
      if (this.spare === spare) this.emit('re-error', { id: `spare-${slot}`, error: String(err) })
    })
    this.spare = spare
    // Full redundancy again: primary, secondary in sync, and a spare that can take the next failure.
    spare.api.warmed().then(
      (w) => {
        spare.warm = true
        if (w && 'error' in w) this.emit('re-error', { id: `spare-${slot}`, error: `warm-up failed: ${w.error}` })
        if (this.spare === spare) this.emit('spare-up', { slot, warmupMs: w && 'ms' in w ? Math.round(w.ms) : null })
      },
      () => {},
    )
  }

  /** The slot neither the primary, the secondary nor the spare uses. */
  private freeSlot(): Slot {
    const used = new Set([this.primary?.slot, this.secondary?.slot, this.spare?.slot])
    return ([0, 1, 2] as const).find((s) => !used.has(s)) ?? 2
  }

  // ---- supervision -------------------------------------------------------------------------------

  private supervise(): void {
    const now = performance.now()
    // Silence accumulates per tick, each tick counting for at most one keepalive interval: a host
    // thread starved for a while (its tick late) then cannot blame an RE for the delay all at once,
    // yet sustained starvation only slows detection down, it never prevents it.
    const dt = Math.min(now - this.lastSupervise, this.keepaliveMs)
    this.lastSupervise = now
    for (const st of [this.primary, this.secondary]) {
      if (!st || !st.alive || st.dying) continue
      const beat = Atomics.load(this.heartbeat, st.slot)
      if (beat !== st.lastBeat) {
        st.lastBeat = beat
        st.silentMs = 0
      } else if (beat > 0) {
        st.silentMs += dt
        if (st.silentMs > this.deadMs) {
          this.counters.hungDetected++
          this.emit('re-hung', { id: st.id, silentMs: Math.round(st.silentMs), via: 'heartbeat' })
          void this.retire(st, 'hung')
        }
      }
    }
  }

  private onExit(st: ReSlotState, reason: string): void {
    if (!st.alive || st.dying) return
    void this.lost(st, reason)
  }

  /**
   * Terminates an RE, then handles its loss. The order matters: until the thread stops it could
   * still commit frames (a TX to the chassis, a TXDONE to the secondary) after we drained. Its rings
   * are fenced (ring.ts): once both hold, nothing it does can land, and its loss is handled while
   * the thread is torn down (10 ms that the takeover used to wait for). The ring to its peer first:
   * between the two fences it may commit a TX the secondary never hears of (the chassis drops it
   * at RESUME), never a REPLICATE or TXDONE for a TX the chassis lacks. A fence holds at once only
   * for an RE stopped between tasks (8 of 10 kills in a quiet trace, 3 of 4 under the failover
   * bench's stream); termination aborts a task, and its fence would hold only once the thread is
   * gone, 15-60 ms later. A primary stopped mid-task is therefore retired another way: its
   * secondary stops reading from it (Ring.halt), so the secondary's view of its history is final,
   * and the chassis takes every frame the primary committed up to now (primaryLost), which covers
   * every TX that view refers to; what it commits later is never read. Should the fence hold first
   * after all, the halt is undone and the secondary takes the rest of its ring at promotion. Fencing
   * a switched-over RE first and terminating it once its task ended, tried, showed no shorter
   * client pause (15 switchovers each way).
   */
  private async retire(st: ReSlotState, reason: string): Promise<void> {
    if (!st.alive || st.dying) return
    st.dying = true
    const t = performance.now()
    st.retiredAt = t
    const terminated = st.worker.terminate()
    const rings = st.peerOut ? [st.peerOut, st.chassisEp.rx] : [st.chassisEp.rx]
    let gone = false
    void terminated.then(() => (gone = true))
    let held = rings.map((r) => r.fence()).every(Boolean)
    const peer = !held && st === this.primary && this.secondary?.alive ? st.peerOut : null
    let halted = peer ? peer.halt() : false
    while (!held && !halted && !gone) {
      await new Promise((r) => setImmediate(r))
      held = rings.map((r) => r.fenced()).every(Boolean)
      if (peer && !held) halted = peer.haltHeld()
    }
    if (held && peer) peer.unhalt()
    if (!held && !halted) await terminated
    this.lastTerminateMs = performance.now() - t
    if (held) this.counters.fencedRetires++
    else if (halted) this.counters.haltedRetires++
    await this.lost(st, reason)
  }

  private lost(st: ReSlotState, reason: string): Promise<void> {
    if (!st.alive) return this.failing ?? Promise.resolve()
    st.alive = false
    const run = async () => {
      if (this.failing) await this.failing
      try {
        if (st === this.primary) await this.primaryLost(st, reason)
        else if (st === this.secondary) await this.secondaryLost(st, reason)
      } finally {
        // Its ring to the chassis is read (primaryLost drained it): closing it ends the pump parked
        // on it, whose parking holds a referenced timer. Left parked, it kept the process alive
        // after close() (seen once records came batched and the pump idled more often). The ring
        // towards it stays open: a send there fails as FULL at worst, never in a retry loop.
        st.chassisEp.rx.close()
      }
    }
    const p = run().catch((err) => {
      this.emit('error', err)
    })
    const f: Promise<void> = p.finally(() => {
      if (this.failing === f) this.failing = null
    })
    this.failing = f
    return f
  }

  private async primaryLost(dead: ReSlotState, reason: string): Promise<void> {
    const t0 = dead.retiredAt || performance.now()
    // Every frame the dead primary committed is taken, published or not: a thread publishes its
    // rings one after another, so it can die with a REPLICATE visible to the secondary and the TX
    // committed before it still in its unpublished batch. The chassis must have every record the
    // secondary has (FAILOVER_SEED=9145 lost 104 records at the first kill without this). A primary
    // retired by halting its secondary (retire()) may still be running: what it commits after this
    // is never read, and the secondary saw nothing that refers to it.
    dead.chassisEp.rx.recoverCommitted()
    const drained = drainNow(dead.chassisEp.rx, (h, b, o) => this.core.onReMessage(dead.id, h, b, o), () => this.core.onReBatchEnd())
    const tDrained = performance.now()
    this.lastDrained = drained
    this.primary = null
    const next = this.secondary
    if (!next || !next.alive || this.closing) {
      this.emit('error', new NsrError('ENOTCONN', `primary ${dead.id} lost (${reason}) with no secondary to take over`))
      return
    }
    this.secondary = null
    let firstTx = 0
    this.core.onFirstTxAfterPromotion = () => {
      if (!firstTx) firstTx = performance.now()
    }
    // The FIB's audit begins as the secondary becomes the core's primary; its epoch goes with the promotion.
    const info = { ...this.core.beginPromotion(next.id, next.sink), ksync: this.ksync.beginAudit() }
    const tCall = performance.now()
    const r = await next.api.promote(info)
    const tDone = performance.now()
    this.core.promoted(next.id, next.sink, r.adopted, r.lost, r.uncharged)
    // deliveryMs: from the promote call to the worker starting it (its event loop's latency).
    const deliveryMs = r.at - (performance.timeOrigin + tCall)
    this.emit('takeover-trace', { firstTxMs: firstTx ? firstTx - t0 : -1, drained, drainMs: tDrained - t0, callMs: tDone - tCall, deliveryMs, inWorker: r, waitedMs: tCall - tDrained })
    this.primary = next
    this.core.onFirstTxAfterPromotion = null
    // Takeover: see FailoverEvent.
    const takeoverMs = (firstTx || performance.now()) - t0
    const ev: FailoverEvent = { reason, from: dead.id, to: next.id, takeoverMs, at: t0, promoteMs: performance.now() - t0, adopted: r.adopted.length, lost: r.lost.length }
    this.counters.failovers++
    this.failovers.push(ev)
    this.emit('failover', ev)
    this.restoreSecondary(dead.slot)
  }

  private async secondaryLost(dead: ReSlotState, reason: string): Promise<void> {
    this.counters.secondaryLosses++
    this.secondary = null
    this.core.setSecondary(dead.id, null)
    if (this.primary?.alive) await this.primary.api.peerLost(`secondary ${dead.id}: ${reason}`)
    this.emit('replication-down', { id: dead.id, reason })
    this.restoreSecondary(dead.slot)
  }

  private restoreSecondary(slot: Slot): void {
    if (this.closing || this.opts.restoreRedundancy === false) return
    const start = async () => {
      if (this.opts.respawnDelayMs) await new Promise((r) => setTimeout(r, this.opts.respawnDelayMs))
      if (this.closing || !this.primary || this.secondary) return
      const peerSab = createChannelSab(this.ringBytes)
      // A warm spare becomes the secondary at once. The next spare boots once every socket is in
      // sync again, not meanwhile: booting a worker (loading and compiling the engine and the app)
      // takes a core for the better part of a second, and on two cores it stretched the resync
      // handshakes, during which writes wait, from 25-50 ms to 40-80 ms (the client's longest pause
      // across a failover, bench/transport).
      const spare = this.spare
      this.spare = null
      const st = spare ? this.spawn(spare.slot, 'secondary', peerSab, 'b', spare) : this.spawn(slot, 'secondary', peerSab, 'b')
      this.primary.peerOut = peerRingOf(peerSab, 'a')
      this.secondary = st
      this.counters.respawns++
      const bootSpare = (): void => {
        if (!this.closing) this.spawnSpare(this.freeSlot())
      }
      await st.api.started()
      // A primary that died meanwhile promoted this RE before it ever synced (a spare activated
      // while still loading, then a double failure): it is the primary now, and the restore that
      // loss began brings up its secondary. Going on would make the primary its own secondary.
      if (st.alive && this.secondary !== st) return
      if (!st.alive || this.closing || !this.primary) return bootSpare()
      this.core.setSecondary(st.id, st.sink)
      await this.primary.api.attachPeer(peerSab, 'a')
      if (this.secondary !== st) return
      this.emit('secondary-up', { id: st.id })
      this.afterSync(SPARE_AFTER_SYNC_TIMEOUT_MS, bootSpare)
    }
    start().catch((err) => this.emit('error', err))
  }

  // ---- public control ----------------------------------------------------------------------------

  /** Fault injection: terminates an RE abruptly (the supervisor sees it die). */
  kill(which: 'primary' | 'secondary'): Promise<void> {
    const st = which === 'primary' ? this.primary : this.secondary
    if (!st || st.dying) return Promise.resolve()
    return this.retire(st, 'killed')
  }

  /**
   * Fault injection: an uncaught exception in the RE. Its 'error' event starts the takeover (reason
   * 'crashed') without waiting for the thread's 'exit'.
   */
  crash(which: 'primary' | 'secondary'): void {
    const st = which === 'primary' ? this.primary : this.secondary
    void st?.api.crash().catch(() => {})
  }

  /** Fault injection: the RE busy-loops for `ms` (its heartbeat stops; the supervisor replaces it). */
  hang(which: 'primary' | 'secondary', ms: number): void {
    const st = which === 'primary' ? this.primary : this.secondary
    void st?.api.hang(ms).catch(() => {})
  }

  /**
   * Graceful switchover: waits until every replicated socket is functional (unless forced), lets the
   * primary finish replicating what it accepted, then retires it; the secondary takes over.
   */
  async switchover(opts: { force?: boolean; timeoutMs?: number } = {}): Promise<FailoverEvent | null> {
    if (!opts.force) await this.ready(opts.timeoutMs ?? 10_000)
    const st = this.primary
    if (!st || !this.secondary) throw new NsrError('ENOTCONN', 'switchover needs a primary and a secondary')
    const quiesced = await st.api.quiesce(opts.timeoutMs ?? 2000)
    const sec = this.secondary
    if (!sec || !sec.alive || sec.dying || this.primary !== st) {
      // The secondary was lost while the primary drained: retiring the primary now would drop
      // every connection. The primary carries on.
      if (this.primary === st) await st.api.thaw()
      throw new NsrError('ENOTCONN', 'switchover aborted: the secondary was lost while the primary quiesced')
    }
    if (!quiesced && !opts.force) {
      // The secondary did not acknowledge everything in time: a switchover now could lose records.
      await st.api.thaw()
      throw new NsrError('ETIMEDOUT', `switchover aborted: ${st.id} still had unacknowledged records after ${opts.timeoutMs ?? 2000} ms`)
    }
    const before = this.failovers.length
    await this.retire(st, 'switchover')
    return this.failovers.length > before ? this.failovers[this.failovers.length - 1] : null
  }

  /**
   * Installs a replication policy (a connect hook): every TCP connection whose port matches is
   * replicated by the primary RE without the application calling replicate(); an accepted one from
   * its first byte. Connections already open are picked too unless `existing` is false.
   */
  replicationPolicy(opts: Omit<ReplicationPolicyOptions, 'replicate'>): ReplicationPolicy {
    return replicationPolicy(this.hooks, { ...opts, replicate: (conn) => this.connHooks.requestReplication(conn.args.handle as number) })
  }

  /** Visits the live TCP connections (optionally of one RE's stack) until `fn` returns false; returns how many it visited. */
  walk(fn: (conn: ConnectCall) => boolean | void, filter?: WalkFilter): number {
    return this.hooks.walk(fn, filter)
  }

  /** True when a secondary is up and every replicated socket is functional. */
  isReady(): boolean {
    const s = this.core.sync
    if (!this.primary || !this.secondary || !s.peer || s.functional !== s.total || this.failing) return false
    // A connection held for its handshake (just accepted on a replicated listener, say) is not
    // functional yet, though the primary may not have counted it.
    for (const c of this.core.conns.values()) if (c.mode === 'hold') return false
    return true
  }

  /** True when a warm spare is booted and waiting for the next failover (always, when the chassis keeps none). */
  get spareReady(): boolean {
    if (!(this.opts.spare ?? runtimeName() === 'node')) return true
    return this.spare !== null && this.spare.warm
  }

  /** Runs `fn` once every socket is in sync, or after `timeoutMs` (a timer that never holds the process open). */
  private afterSync(timeoutMs: number, fn: () => void): void {
    if (this.isReady()) return fn()
    let done = false
    const once = (): void => {
      if (done) return
      done = true
      clearTimeout(t)
      this.readyWaiters = this.readyWaiters.filter((w) => w !== once)
      fn()
    }
    const t = setTimeout(once, timeoutMs)
    t.unref?.()
    this.readyWaiters.push(once)
  }

  /** Resolves when it is safe to switch over (see isReady). */
  ready(timeoutMs = 30_000): Promise<void> {
    if (this.isReady()) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== done)
        reject(new NsrError('ETIMEDOUT', `not ready after ${timeoutMs} ms: ${JSON.stringify(this.core.sync)}`))
      }, timeoutMs)
      const done = () => {
        clearTimeout(t)
        resolve()
      }
      this.readyWaiters.push(done)
    })
  }

  private checkReady(): void {
    if (!this.isReady()) return
    const ws = this.readyWaiters
    this.readyWaiters = []
    for (const w of ws) w()
  }

  async stats() {
    const get = async (st: ReSlotState | null) => (st && st.alive ? await st.api.stats().catch(() => null) : null)
    const [primary, secondary] = await Promise.all([get(this.primary), get(this.secondary)])
    return { ready: this.isReady(), primary, secondary, chassis: this.core.stats(), net: { ...this.net.counters }, hooks: this.hooks.stats(), fib: this.ksync.stats(), failovers: this.failovers.length, counters: { ...this.counters } }
  }

  async close(): Promise<void> {
    this.closing = true
    if (this.supervisor) clearInterval(this.supervisor)
    for (const c of [...this.core.conns.values()]) this.core.closeConn(c, false)
    const spare = this.spare
    this.spare = null
    if (spare) void spare.worker.terminate()
    const sts = [this.primary, this.secondary].filter((s): s is ReSlotState => !!s)
    for (const st of sts) st.alive = false
    await Promise.all(sts.map((st) => st.worker.terminate()))
    for (const st of sts) st.chassisEp.close()
  }
}

export const workerEntries = ENTRY.map((u) => fileURLToPath(u))

/** From the chassis: the ring that the RE on `side` of the peer channel `sab` writes to the other. */
function peerRingOf(sab: SharedArrayBuffer, side: 'a' | 'b'): Ring {
  return openEndpoint(sab, side === 'a' ? 'b' : 'a').rx
}
