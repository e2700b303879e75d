// The KSync vocabulary shared by the two halves: the request an RE's KSyncClient sends to the
// chassis Fib, and the reply that answers it. Both are plain objects of numbers, strings and
// nulls, so a batch goes through msgpackr unchanged (the wire is a KKCM ring: MsgType.KSYNC
// carries a request batch, MsgType.KSYNC_ACK the replies, in the same order).
//
// Requests carry the Fib epoch their client writes under: the Fib answers a request from an
// older epoch with ECLOSED, so a dead primary's requests still in the ring can never undo what
// the new primary re-synced. `index` is the KSync index of the entry; INDEX_LEARN (-1) on an add
// asks the Fib "use the index you already hold for this key" (re-sync after failover).

import { ErrorCode } from '../errors.ts'

export const KSyncOp = { ADD: 'add', CHANGE: 'change', DELETE: 'delete' } as const
export type KSyncOp = (typeof KSyncOp)[keyof typeof KSyncOp]

export const KSyncKind = { NH: 'nh', ROUTE: 'route' } as const
export type KSyncKind = (typeof KSyncKind)[keyof typeof KSyncKind]

/** A next hop's key: an address string or a u32. */
export type NhKey = string | number
/** A route's key: its prefix, "10.0.0.0/8" or "2001:db8::/32". */
export type RouteKey = string
export type KSyncKey = NhKey | RouteKey

/** What msgpackr carries without extensions. Treated as immutable once handed to KSync. */
export type KSyncData = null | boolean | number | string | Uint8Array | KSyncData[] | { [key: string]: KSyncData }

/** `index` of an add that asks the Fib for the index it already holds for the key. */
export const INDEX_LEARN = -1
/** `nh` of a request that is not a route's. */
export const NO_NEXT_HOP = -1

export interface KSyncRequest {
  /** Correlates the reply; u32, wraps. */
  id: number
  /** The Fib epoch the client writes under (Fib.beginAudit() hands out a new one). */
  epoch: number
  op: KSyncOp
  kind: KSyncKind
  /** KSync index, or INDEX_LEARN on an add. */
  index: number
  key: KSyncKey
  /** A route's next hop, by its KSync index; NO_NEXT_HOP for a next hop. */
  nh: number
  data: KSyncData
}

/** The codes a Fib answers with; a subset of the engine's ErrorCode. */
export const KSyncReplyCode = {
  EEXIST: ErrorCode.EEXIST, // the index is held by another key
  ENOENT: ErrorCode.ENOENT, // no such key (learn miss), entry or referenced next hop
  EINVAL: ErrorCode.EINVAL, // malformed request, index out of range, next hop still referenced
  ECLOSED: ErrorCode.ECLOSED, // the request's epoch is over: a newer client owns the Fib
  ENOBUFS: ErrorCode.ENOBUFS, // transient refusal (fault injection, resource shortage): retry
} as const
export type KSyncReplyCode = (typeof KSyncReplyCode)[keyof typeof KSyncReplyCode]

export interface KSyncReply {
  id: number
  ok: boolean
  /** The entry's index in the Fib (an add of a known key answers with the index it already has); -1 if none. */
  index: number
  /** null when ok. */
  code: KSyncReplyCode | null
  reason?: string
}

export const KSYNC_MAX_KEY_CHARS = 64

const ops: ReadonlySet<unknown> = new Set(Object.values(KSyncOp))
const kinds: ReadonlySet<unknown> = new Set(Object.values(KSyncKind))
const codes: ReadonlySet<unknown> = new Set(Object.values(KSyncReplyCode))
const prefixRe = /^[0-9A-Fa-f:.]{1,45}\/\d{1,3}$/

export function isU32(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= 0xffffffff
}

/** Why `key` is not a valid next-hop key, or null. */
export function nhKeyProblem(key: unknown): string | null {
  if (typeof key === 'number') return isU32(key) ? null : 'numeric next hop key must be a u32'
  if (typeof key === 'string') return key.length > 0 && key.length <= KSYNC_MAX_KEY_CHARS ? null : 'next hop key must be 1..64 chars'
  return 'next hop key must be a string or a u32'
}

/** Why `key` is not a valid route prefix, or null. */
export function routeKeyProblem(key: unknown): string | null {
  return typeof key === 'string' && prefixRe.test(key) ? null : 'route key must be a prefix like 10.0.0.0/8'
}

/** Why `x` is not a well-formed request, or null. The Fib answers a malformed one with EINVAL. */
export function validateRequest(x: unknown): string | null {
  if (typeof x !== 'object' || x === null) return 'request is not an object'
  const r = x as Record<string, unknown>
  if (!isU32(r.id)) return 'id must be a u32'
  if (!isU32(r.epoch)) return 'epoch must be a u32'
  if (!ops.has(r.op)) return 'unknown op'
  if (!kinds.has(r.kind)) return 'unknown kind'
  if (!Number.isInteger(r.index) || (r.index as number) < INDEX_LEARN) return 'index must be an integer >= -1'
  if (r.index === INDEX_LEARN && r.op !== KSyncOp.ADD) return 'only an add may learn its index'
  const keyProblem = r.kind === KSyncKind.NH ? nhKeyProblem(r.key) : routeKeyProblem(r.key)
  if (keyProblem) return keyProblem
  if (r.kind === KSyncKind.NH) {
    if (r.nh !== NO_NEXT_HOP) return 'a next hop request carries nh -1'
  } else if (r.op !== KSyncOp.DELETE && !isU32(r.nh)) return 'a route add/change carries its next hop index'
  return null
}

/** Why `x` is not a well-formed reply, or null. */
export function validateReply(x: unknown): string | null {
  if (typeof x !== 'object' || x === null) return 'reply is not an object'
  const r = x as Record<string, unknown>
  if (!isU32(r.id)) return 'id must be a u32'
  if (typeof r.ok !== 'boolean') return 'ok must be a boolean'
  if (!Number.isInteger(r.index) || (r.index as number) < -1) return 'index must be an integer >= -1'
  if (r.ok ? r.code !== null && r.code !== undefined : !codes.has(r.code)) return 'code does not match ok'
  if (r.ok && (r.index as number) < 0) return 'an ok reply names the index'
  return null
}

/** Structural equality of two KSyncData values (what the Fib uses to recognise a refresh). */
export function sameData(a: KSyncData, b: KSyncData): boolean {
  if (a === b) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    if (!(a instanceof Uint8Array && b instanceof Uint8Array) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
    return true
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!(Array.isArray(a) && Array.isArray(b)) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!sameData(a[i], b[i])) return false
    return true
  }
  const ka = Object.keys(a)
  if (ka.length !== Object.keys(b).length) return false
  for (const k of ka) if (!Object.hasOwn(b, k) || !sameData(a[k], b[k])) return false
  return true
}
