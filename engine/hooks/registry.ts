// HookRegistry: where the socket layer announces bind, unbind, listen, unlisten, connect and
// disconnect, and where anyone (clustering, a replication policy, tests) registers callbacks for
// them, after the seed's cl_inet_* hooks. The socket layer calls one firing method per event; each
// registered hook gets the same frozen HookCall. A hook that throws, or returns a promise that
// rejects, is counted and reported through onHookError; the socket operation goes on regardless.
// The registry also keeps the table of live TCP connections (connect/disconnect) and walks it.

import { ErrorCode, NsrError } from '../errors.ts'
import { ConnectionTable, type ConnectionTableStats, type WalkFilter } from './connection-table.ts'
import {
  HOOK_EVENTS,
  HookEvent,
  hookCallProblem,
  unspecifiedAddress,
  type ConnectCall,
  type ConnectCallInput,
  type Hook,
  type HookArgs,
  type HookCall,
  type HookCallInput,
  type HookErrorEvent,
} from './types.ts'

export const DEFAULT_MAX_HOOKS_PER_EVENT = 32
/** Hooks that fire hooks: deeper nesting than this is not run (and counted). */
export const MAX_HOOK_DEPTH = 8

export interface HookRegistryOptions {
  /** Called for every hook failure; the same as registering with onHookError(). */
  onHookError?: (e: HookErrorEvent) => void
  maxHooksPerEvent?: number
  maxConnections?: number
}

export interface HookOptions {
  /** Shown in error reports; defaults to the function's name. */
  name?: string
  /** connect only: call the hook at once for every TCP connection already live. */
  replay?: boolean
}

export interface HookRegistryStats {
  hooks: Record<HookEvent, number>
  calls: Record<HookEvent, number>
  hookErrors: number
  hookErrorsByEvent: Record<HookEvent, number>
  /** onHookError listeners that threw themselves (swallowed). */
  reporterErrors: number
  /** Hook runs skipped because hooks nested deeper than MAX_HOOK_DEPTH. */
  depthDrops: number
  connections: ConnectionTableStats
}

interface Registered {
  readonly fn: (call: HookCall) => unknown
  readonly name: string
}

function perEvent(): Record<HookEvent, number> {
  const r = {} as Record<HookEvent, number>
  for (const e of HOOK_EVENTS) r[e] = 0
  return r
}

function isThenable(x: unknown): x is PromiseLike<unknown> {
  return (typeof x === 'object' || typeof x === 'function') && x !== null && typeof (x as { then?: unknown }).then === 'function'
}

export class HookRegistry {
  readonly connections: ConnectionTable
  readonly maxHooksPerEvent: number
  /** Per event, replaced (never mutated) on every on/off, so a firing iterates a stable list. */
  private readonly hooks = new Map<HookEvent, readonly Registered[]>()
  private errorListeners: readonly ((e: HookErrorEvent) => void)[] = []
  private depth = 0
  private readonly calls = perEvent()
  private readonly errorsByEvent = perEvent()
  private readonly s = { hookErrors: 0, reporterErrors: 0, depthDrops: 0 }

  constructor(options: HookRegistryOptions = {}) {
    const max = options.maxHooksPerEvent ?? DEFAULT_MAX_HOOKS_PER_EVENT
    if (!Number.isInteger(max) || max < 1) throw new NsrError(ErrorCode.EINVAL, 'maxHooksPerEvent must be a positive integer')
    this.maxHooksPerEvent = max
    this.connections = new ConnectionTable({ maxConnections: options.maxConnections })
    for (const e of HOOK_EVENTS) this.hooks.set(e, [])
    if (options.onHookError) this.onHookError(options.onHookError)
  }

  // ---- registration ------------------------------------------------------------------------

  /** Registers `hook` for `event`; returns the function that unregisters it. */
  on<E extends HookEvent>(event: E, hook: Hook<E>, options: HookOptions = {}): () => void {
    const list = this.hooks.get(event)
    if (list === undefined) throw new NsrError(ErrorCode.EINVAL, `unknown hook event ${String(event)}`)
    if (typeof hook !== 'function') throw new NsrError(ErrorCode.EINVAL, 'a hook must be a function')
    if (list.length >= this.maxHooksPerEvent) throw new NsrError(ErrorCode.ENOBUFS, `at most ${this.maxHooksPerEvent} hooks per event`)
    if (options.replay && event !== HookEvent.CONNECT) throw new NsrError(ErrorCode.EINVAL, 'only connect hooks can replay live connections')
    const reg: Registered = { fn: hook as (call: HookCall) => unknown, name: options.name ?? (hook.name || 'anonymous') }
    this.hooks.set(event, [...list, reg])
    if (options.replay) {
      const live: ConnectCall[] = []
      this.connections.walk((c) => void live.push(c))
      for (const c of live) this.run(event, reg, c)
    }
    return () => this.remove(event, reg)
  }

  /** Unregisters `hook` (its first registration for `event`); false if it was not registered. */
  off<E extends HookEvent>(event: E, hook: Hook<E>): boolean {
    const reg = this.hooks.get(event)?.find((r) => r.fn === hook)
    return reg !== undefined && this.remove(event, reg)
  }

  /** Subscribes to hook failures; returns the unsubscribe function. */
  onHookError(listener: (e: HookErrorEvent) => void): () => void {
    this.errorListeners = [...this.errorListeners, listener]
    return () => {
      this.errorListeners = this.errorListeners.filter((l) => l !== listener)
    }
  }

  count(event: HookEvent): number {
    return this.hooks.get(event)?.length ?? 0
  }

  private remove(event: HookEvent, reg: Registered): boolean {
    const list = this.hooks.get(event)!
    if (!list.includes(reg)) return false
    this.hooks.set(
      event,
      list.filter((r) => r !== reg),
    )
    return true
  }

  // ---- firing points (the socket layer) ----------------------------------------------------

  bind(call: HookCallInput): void {
    this.fire(HookEvent.BIND, this.freeze(call))
  }

  unbind(call: HookCallInput): void {
    this.fire(HookEvent.UNBIND, this.freeze(call))
  }

  listen(call: HookCallInput): void {
    this.fire(HookEvent.LISTEN, this.freeze(call))
  }

  unlisten(call: HookCallInput): void {
    this.fire(HookEvent.UNLISTEN, this.freeze(call))
  }

  /** A connection was set up (args.outgoing says which way). TCP connections join the table before the hooks run. */
  connect(call: ConnectCallInput): void {
    if (typeof call?.args?.outgoing !== 'boolean') throw new NsrError(ErrorCode.EINVAL, 'connect args must say outgoing: true or false')
    const c = this.freeze(call) as ConnectCall
    if (c.protocol === 'tcp') this.connections.add(c)
    this.fire(HookEvent.CONNECT, c)
  }

  /** A connection went away. TCP connections leave the table before the hooks run. */
  disconnect(call: HookCallInput): void {
    const c = this.freeze(call)
    if (c.protocol === 'tcp') this.connections.remove(c)
    this.fire(HookEvent.DISCONNECT, c)
  }

  /** Visits live TCP connections (optionally of one stack) until `fn` returns false; returns how many it visited. */
  walk(fn: (conn: ConnectCall) => boolean | void, filter?: WalkFilter): number {
    return this.connections.walk(fn, filter)
  }

  stats(): HookRegistryStats {
    const hooks = perEvent()
    for (const e of HOOK_EVENTS) hooks[e] = this.count(e)
    return {
      hooks,
      calls: { ...this.calls },
      hookErrorsByEvent: { ...this.errorsByEvent },
      ...this.s,
      connections: this.connections.stats(),
    }
  }

  // ---- inside ------------------------------------------------------------------------------

  /** Validates the socket layer's call (a malformed one is a programmer error: EINVAL) and fills in the defaults. */
  private freeze<A extends HookArgs>(input: HookCallInput<A>): HookCall<A | HookArgs> {
    const problem = hookCallProblem(input)
    if (problem !== null) throw new NsrError(ErrorCode.EINVAL, problem)
    return Object.freeze({
      stackId: input.stackId,
      protocol: input.protocol,
      family: input.family,
      laddr: input.laddr,
      lport: input.lport,
      faddr: input.faddr ?? unspecifiedAddress(input.family),
      fport: input.fport ?? 0,
      args: input.args ?? Object.freeze({}),
    })
  }

  private fire(event: HookEvent, call: HookCall): void {
    this.calls[event]++
    const list = this.hooks.get(event)!
    if (list.length === 0) return
    if (this.depth >= MAX_HOOK_DEPTH) {
      this.s.depthDrops += list.length
      return
    }
    this.depth++
    try {
      for (const reg of list) this.run(event, reg, call)
    } finally {
      this.depth--
    }
  }

  /** Runs one hook; whatever it throws or rejects with is reported, never rethrown. */
  private run(event: HookEvent, reg: Registered, call: HookCall): void {
    try {
      const result = reg.fn(call)
      if (isThenable(result)) result.then(undefined, (error: unknown) => this.report(event, reg, call, error))
    } catch (error) {
      this.report(event, reg, call, error)
    }
  }

  private report(event: HookEvent, reg: Registered, call: HookCall, error: unknown): void {
    this.s.hookErrors++
    this.errorsByEvent[event]++
    const e: HookErrorEvent = { event, hook: reg.name, call, error }
    for (const listener of this.errorListeners) {
      try {
        listener(e)
      } catch {
        this.s.reporterErrors++
      }
    }
  }
}

