// An automatic replication policy written as an ordinary hook user: "replicate every TCP
// connection to or from port 179". It registers a connect hook on a HookRegistry and calls the
// provided `replicate(conn)` for each matching connection (and, by default, for matching ones
// already live when it is installed), so the application never calls getHandle()/replicate()
// itself. A replicate() that throws or rejects is reported by the registry like any hook error.

import { ErrorCode, NsrError } from '../errors.ts'
import type { HookRegistry } from './registry.ts'
import { HookEvent, isPort, type ConnectCall, type StackId } from './types.ts'

/** Which end's port must be in `ports`: the peer's (foreign), ours (local), or either. */
export type PortMatch = 'foreign' | 'local' | 'either'

export const MAX_POLICY_PORTS = 64

export interface ReplicationPolicyOptions {
  ports: readonly number[]
  /** Default 'either'. */
  match?: PortMatch
  /** Only connections of this stack (RE); default every stack. */
  stackId?: StackId
  /** Also replicate matching connections live at install time. Default true. */
  existing?: boolean
  /** Sets up replication of one connection; may return a promise. */
  replicate: (conn: ConnectCall) => unknown
}

export interface ReplicationPolicyStats {
  /** Connect events seen, and how many matched. */
  seen: number
  matched: number
  /** replicate() calls that returned (or resolved), and that threw (or rejected). */
  replicated: number
  failed: number
}

export interface ReplicationPolicy {
  matches(conn: ConnectCall): boolean
  stats(): ReplicationPolicyStats
  /** Unregisters the hook; connections already replicated stay replicated. */
  dispose(): void
}

export function replicationPolicy(registry: HookRegistry, options: ReplicationPolicyOptions): ReplicationPolicy {
  const { replicate } = options
  if (typeof replicate !== 'function') throw new NsrError(ErrorCode.EINVAL, 'replicationPolicy needs a replicate function')
  if (!Array.isArray(options.ports) || options.ports.length === 0 || options.ports.length > MAX_POLICY_PORTS || !options.ports.every(isPort))
    throw new NsrError(ErrorCode.EINVAL, `ports must be 1..${MAX_POLICY_PORTS} port numbers`)
  const match = options.match ?? 'either'
  if (match !== 'foreign' && match !== 'local' && match !== 'either') throw new NsrError(ErrorCode.EINVAL, "match must be 'foreign', 'local' or 'either'")
  const ports = new Set(options.ports)
  const s: ReplicationPolicyStats = { seen: 0, matched: 0, replicated: 0, failed: 0 }

  const matches = (c: ConnectCall): boolean =>
    c.protocol === 'tcp' &&
    (options.stackId === undefined || c.stackId === options.stackId) &&
    ((match !== 'local' && ports.has(c.fport)) || (match !== 'foreign' && ports.has(c.lport)))

  const hook = (conn: ConnectCall): unknown => {
    s.seen++
    if (!matches(conn)) return undefined
    s.matched++
    let result: unknown
    try {
      result = replicate(conn)
    } catch (err) {
      s.failed++
      throw err // the registry reports it; the connection goes on unreplicated
    }
    if (typeof (result as PromiseLike<unknown> | null)?.then !== 'function') {
      s.replicated++
      return undefined
    }
    return (result as PromiseLike<unknown>).then(
      () => void s.replicated++,
      (err: unknown) => {
        s.failed++
        throw err
      },
    )
  }

  const off = registry.on(HookEvent.CONNECT, hook, { name: 'replicationPolicy', replay: options.existing !== false })
  return { matches, stats: () => ({ ...s }), dispose: off }
}
