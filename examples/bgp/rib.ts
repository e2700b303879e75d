// The RIBs of the BGP example: one Adj-RIB-In per peer session (prefix key -> path attributes, as
// received and accepted) and the Loc-RIB (prefix key -> the peer whose route won best-path
// selection; with a single peer, that peer's Adj-RIB-In itself). Keys are prefixKey numbers, never
// strings; one PathAttributes object is shared by every prefix of the UPDATE that carried it, so a
// million routes from one peer cost a million map entries and no per-route objects. Every Loc-RIB change (add, change, delete) is reported through one
// callback: that feed is what the application programs into the forwarding plane (KSync).
//
// Best path (RFC 4271 9.1.2.2, simplified): highest LOCAL_PREF (iBGP only; 100 otherwise), shortest
// AS_PATH (an AS_SET counts 1), lowest ORIGIN, lowest MED among routes from the same neighbour AS,
// eBGP over iBGP, lowest peer BGP identifier.

import { assert } from '../../engine/errors.ts'
import { asPathLength, firstAs, formatIp, formatPrefix, type PathAttributes } from './codec.ts'

export const DEFAULT_LOCAL_PREF = 100

export interface RibPeer {
  /** BGP identifier, unsigned 32-bit. */
  routerId: number
  as: number
  ibgp: boolean
}

export class AdjRibIn {
  readonly peer: RibPeer
  readonly routes = new Map<number, PathAttributes>()

  constructor(peer: RibPeer) {
    this.peer = peer
  }

  get size(): number {
    return this.routes.size
  }
}

export const RibOp = { ADD: 'add', CHANGE: 'change', DELETE: 'delete' } as const
export type RibOp = (typeof RibOp)[keyof typeof RibOp]

/** One Loc-RIB change. Numbers first; the text forms are computed only when read. */
export class RibChange {
  readonly op: RibOp
  readonly key: number
  /** The new best route (add, change) or null (delete). */
  readonly attrs: PathAttributes | null
  readonly peer: RibPeer | null
  /** The route it replaces (change, delete) or null (add). */
  readonly previous: PathAttributes | null

  constructor(op: RibOp, key: number, attrs: PathAttributes | null, peer: RibPeer | null, previous: PathAttributes | null) {
    this.op = op
    this.key = key
    this.attrs = attrs
    this.peer = peer
    this.previous = previous
  }

  /** Next hop of the new best route, unsigned 32-bit; null on delete. */
  get nextHop(): number | null {
    return this.attrs ? this.attrs.nextHop : null
  }

  get prefix(): string {
    return formatPrefix(this.key)
  }

  get nextHopAddress(): string | null {
    const nh = this.nextHop
    return nh === null ? null : formatIp(nh)
  }
}

export type RibChangeHandler = (op: RibOp, key: number, best: AdjRibIn | null, attrs: PathAttributes | null, previous: PathAttributes | null) => void

function effectiveLocalPref(peer: RibPeer, a: PathAttributes): number {
  return peer.ibgp && a.localPref !== null ? a.localPref : DEFAULT_LOCAL_PREF
}

/** Negative when route a (from pa) is better than route b (from pb). */
export function compareRoutes(pa: RibPeer, a: PathAttributes, pb: RibPeer, b: PathAttributes): number {
  const lp = effectiveLocalPref(pb, b) - effectiveLocalPref(pa, a)
  if (lp !== 0) return lp
  const len = asPathLength(a.asPath) - asPathLength(b.asPath)
  if (len !== 0) return len
  const origin = (a.origin ?? 0) - (b.origin ?? 0)
  if (origin !== 0) return origin
  const na = firstAs(a.asPath) ?? pa.as
  const nb = firstAs(b.asPath) ?? pb.as
  if (na === nb) {
    const med = (a.med ?? 0) - (b.med ?? 0)
    if (med !== 0) return med
  }
  if (pa.ibgp !== pb.ibgp) return pa.ibgp ? 1 : -1
  return pa.routerId - pb.routerId
}

export class LocRib {
  /**
   * Prefix key -> the Adj-RIB-In holding the best route. null while there is at most one peer:
   * then its Adj-RIB-In is the Loc-RIB, and a new prefix costs two map operations, not three.
   */
  private best: Map<number, AdjRibIn> | null = null
  private readonly peers: AdjRibIn[] = []
  private readonly onChange: RibChangeHandler
  readonly counters = { adds: 0, changes: 0, deletes: 0 }

  constructor(onChange: RibChangeHandler) {
    this.onChange = onChange
  }

  get size(): number {
    if (this.best) return this.best.size
    return this.peers.length === 1 ? this.peers[0].size : 0
  }

  /** Prefix keys in the Loc-RIB. */
  keys(): IterableIterator<number> {
    if (this.best) return this.best.keys()
    return (this.peers.length === 1 ? this.peers[0].routes : new Map<number, PathAttributes>()).keys()
  }

  addPeer(adj: AdjRibIn): void {
    assert(!this.peers.includes(adj), 'peer added twice')
    assert(adj.size === 0, 'a new Adj-RIB-In starts empty')
    if (this.peers.length === 1) {
      const only = this.peers[0]
      this.best = new Map()
      for (const key of only.routes.keys()) this.best.set(key, only)
    }
    this.peers.push(adj)
  }

  /** Removes a peer (session down): its routes leave the Loc-RIB, others take over where they can. */
  removePeer(adj: AdjRibIn): void {
    const i = this.peers.indexOf(adj)
    assert(i >= 0, 'unknown peer')
    for (const key of [...adj.routes.keys()]) this.update(adj, key, null)
    this.peers.splice(i, 1)
    if (this.peers.length <= 1) this.best = null // the one left holds every best route
  }

  get(key: number): { peer: RibPeer; attrs: PathAttributes } | null {
    const adj = this.best ? this.best.get(key) : this.peers[0]
    const attrs = adj?.routes.get(key)
    return adj && attrs ? { peer: adj.peer, attrs } : null
  }

  /** Announces (attrs) or withdraws (null) `key` from `adj`, then reselects and reports a change. */
  update(adj: AdjRibIn, key: number, attrs: PathAttributes | null): void {
    if (!this.best) {
      assert(this.peers.length === 1 && this.peers[0] === adj, 'update from an unknown peer')
      this.updateSinglePeer(adj, key, attrs)
      return
    }
    const best = this.best
    const prevAdj = best.get(key)
    const prevAttrs = prevAdj ? prevAdj.routes.get(key)! : null
    if (attrs) adj.routes.set(key, attrs)
    else if (!adj.routes.delete(key)) return
    let winner: AdjRibIn | null = null
    let winnerAttrs: PathAttributes | null = null
    for (const p of this.peers) {
      const a = p.routes.get(key)
      if (a && (!winnerAttrs || compareRoutes(p.peer, a, winner!.peer, winnerAttrs) < 0)) {
        winner = p
        winnerAttrs = a
      }
    }
    if (winner) {
      if (winner !== prevAdj) best.set(key, winner)
      if (!prevAdj) {
        this.counters.adds++
        this.onChange(RibOp.ADD, key, winner, winnerAttrs, null)
      } else if (winner !== prevAdj || winnerAttrs !== prevAttrs) {
        this.counters.changes++
        this.onChange(RibOp.CHANGE, key, winner, winnerAttrs, prevAttrs)
      }
    } else if (prevAdj) {
      best.delete(key)
      this.counters.deletes++
      this.onChange(RibOp.DELETE, key, null, null, prevAttrs)
    }
  }

  /** One peer: its route is the best. */
  private updateSinglePeer(adj: AdjRibIn, key: number, attrs: PathAttributes | null): void {
    const prev = adj.routes.get(key)
    if (attrs) {
      adj.routes.set(key, attrs)
      if (prev === undefined) {
        this.counters.adds++
        this.onChange(RibOp.ADD, key, adj, attrs, null)
      } else if (prev !== attrs) {
        this.counters.changes++
        this.onChange(RibOp.CHANGE, key, adj, attrs, prev)
      }
    } else if (prev !== undefined) {
      adj.routes.delete(key)
      this.counters.deletes++
      this.onChange(RibOp.DELETE, key, null, null, prev)
    }
  }
}
