// The vocabulary of the socket-layer hooks, after the seed's cl_inet_* hooks: which events there
// are, and the one record every hook receives. Like the seed's signatures, every call names the
// stack (which RE: the seed's netstack id) and ends with an extensible `args` object, so new
// information never changes a hook's signature.

export const HookEvent = {
  BIND: 'bind',
  UNBIND: 'unbind',
  LISTEN: 'listen',
  UNLISTEN: 'unlisten',
  CONNECT: 'connect', // incoming or outgoing: args.outgoing
  DISCONNECT: 'disconnect',
} as const
export type HookEvent = (typeof HookEvent)[keyof typeof HookEvent]

export const HOOK_EVENTS: readonly HookEvent[] = Object.values(HookEvent)

/** Which RE's stack the socket lives in. */
export type StackId = string | number
export type HookProtocol = 'tcp' | 'udp'
export type AddressFamily = 4 | 6

/** Extensible per-call arguments; hooks must ignore what they do not know. */
export interface HookArgs {
  readonly [key: string]: unknown
}

export interface ConnectArgs extends HookArgs {
  /** true: this stack connected out; false: it accepted the connection. */
  readonly outgoing: boolean
}

/** What every hook receives (frozen). Unconnected events carry the unspecified address and port 0 as the foreign end. */
export interface HookCall<A extends HookArgs = HookArgs> {
  readonly stackId: StackId
  readonly protocol: HookProtocol
  readonly family: AddressFamily
  readonly laddr: string
  readonly lport: number
  readonly faddr: string
  readonly fport: number
  readonly args: A
}

export type ConnectCall = HookCall<ConnectArgs>

export interface HookArgsOf {
  bind: HookArgs
  unbind: HookArgs
  listen: HookArgs
  unlisten: HookArgs
  connect: ConnectArgs
  disconnect: HookArgs
}

/** A hook. Its return value is ignored; a thrown error or a rejected promise is reported, never propagated. */
export type Hook<E extends HookEvent> = (call: HookCall<HookArgsOf[E]>) => unknown

/** What the socket layer passes when it fires a hook: the foreign end and args may be left out where there is none. */
export interface HookCallInput<A extends HookArgs = HookArgs> {
  stackId: StackId
  protocol: HookProtocol
  family: AddressFamily
  laddr: string
  lport: number
  faddr?: string
  fport?: number
  args?: A
}

export type ConnectCallInput = HookCallInput<ConnectArgs> & { faddr: string; fport: number; args: ConnectArgs }

export interface HookErrorEvent {
  event: HookEvent
  /** The hook's name (given to on(), else its function name, else 'anonymous'). */
  hook: string
  call: HookCall
  error: unknown
}

export const MAX_ADDR_CHARS = 64

/** Why `c` is not a well-formed hook call, or null. */
export function hookCallProblem(c: HookCallInput): string | null {
  if (typeof c !== 'object' || c === null) return 'hook call must be an object'
  if (!(typeof c.stackId === 'string' || (typeof c.stackId === 'number' && Number.isInteger(c.stackId)))) return 'stackId must be a string or an integer'
  if (c.protocol !== 'tcp' && c.protocol !== 'udp') return "protocol must be 'tcp' or 'udp'"
  if (c.family !== 4 && c.family !== 6) return 'family must be 4 or 6'
  if (typeof c.laddr !== 'string' || c.laddr.length > MAX_ADDR_CHARS) return 'laddr must be an address string'
  if (!isPort(c.lport)) return 'lport must be 0..65535'
  if (c.faddr !== undefined && (typeof c.faddr !== 'string' || c.faddr.length > MAX_ADDR_CHARS)) return 'faddr must be an address string'
  if (c.fport !== undefined && !isPort(c.fport)) return 'fport must be 0..65535'
  if (c.args !== undefined && (typeof c.args !== 'object' || c.args === null)) return 'args must be an object'
  return null
}

export function isPort(p: unknown): p is number {
  return typeof p === 'number' && Number.isInteger(p) && p >= 0 && p <= 65535
}

export function unspecifiedAddress(family: AddressFamily): string {
  return family === 4 ? '0.0.0.0' : '::'
}
