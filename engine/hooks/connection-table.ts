// The live TCP connections of the stacks the registry hears about, fed by its connect and
// disconnect events, and walked like the seed's cl_tcp_walk_list: the callback sees each live
// connection in the order it connected and returns false to stop. Bounded: past maxConnections a
// connection is not tracked (and counted), the socket operation itself is never refused.

import { ErrorCode, NsrError } from '../errors.ts'
import type { ConnectCall, HookCall, StackId } from './types.ts'

export const DEFAULT_MAX_CONNECTIONS = 1 << 16

export interface ConnectionTableStats {
  live: number
  added: number
  removed: number
  /** A connect for a 4-tuple already live: the newer record replaces the older. */
  duplicates: number
  /** Connects not tracked because the table was full. */
  dropped: number
  /** Disconnects of a connection the table did not hold. */
  unknownRemovals: number
}

export interface WalkFilter {
  stackId?: StackId
}

/** The identity of a connection: stack and 4-tuple (1 and '1' are different stacks). */
export function connectionKey(c: HookCall): string {
  return `${typeof c.stackId}:${c.stackId}|${c.family}|${c.laddr}|${c.lport}|${c.faddr}|${c.fport}`
}

export class ConnectionTable {
  readonly maxConnections: number
  private readonly live = new Map<string, ConnectCall>()
  private readonly s = { added: 0, removed: 0, duplicates: 0, dropped: 0, unknownRemovals: 0 }

  constructor(options: { maxConnections?: number } = {}) {
    const max = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS
    if (!Number.isInteger(max) || max < 1) throw new NsrError(ErrorCode.EINVAL, 'maxConnections must be a positive integer')
    this.maxConnections = max
  }

  get size(): number {
    return this.live.size
  }

  /** Records a TCP connection; false if the table is full and it is not tracked. */
  add(conn: ConnectCall): boolean {
    const key = connectionKey(conn)
    if (this.live.has(key)) {
      this.s.duplicates++
      this.live.delete(key) // re-inserted last: walk order stays connect order
    } else if (this.live.size >= this.maxConnections) {
      this.s.dropped++
      return false
    }
    this.live.set(key, conn)
    this.s.added++
    return true
  }

  /** Forgets a connection; returns its connect record, if it was tracked. */
  remove(call: HookCall): ConnectCall | undefined {
    const key = connectionKey(call)
    const conn = this.live.get(key)
    if (conn === undefined) {
      this.s.unknownRemovals++
      return undefined
    }
    this.live.delete(key)
    this.s.removed++
    return conn
  }

  get(call: HookCall): ConnectCall | undefined {
    return this.live.get(connectionKey(call))
  }

  /**
   * Visits live connections in connect order until `fn` returns false; returns how many it
   * visited. Connections that disconnect during the walk and are not visited yet are skipped;
   * ones that connect during it are visited.
   */
  walk(fn: (conn: ConnectCall) => boolean | void, filter: WalkFilter = {}): number {
    let visited = 0
    for (const conn of this.live.values()) {
      if (filter.stackId !== undefined && conn.stackId !== filter.stackId) continue
      visited++
      if (fn(conn) === false) break
    }
    return visited
  }

  stats(): ConnectionTableStats {
    return { live: this.live.size, ...this.s }
  }
}
