// ConnHooks: the chassis side of engine/hooks. ChassisCore reports each socket it opens and closes
// (its ConnObserver); this turns those into the registry's bind / unbind / listen / unlisten /
// connect / disconnect calls, after the seed's cl_inet_* hooks, and carries a replication policy's
// decisions back to the primary RE.
//
// What fires, per socket kind (stack id: the RE that was primary when the socket opened, kept for
// all of that socket's events so the connection table's key stays the same across failovers):
//   listen socket:        bind, listen      ... unlisten, unbind
//   UDP socket:           bind              ... unbind
//   connected UDP socket: bind, connect(outgoing: true)  ... disconnect, unbind
//   outgoing connection:  bind, connect(outgoing: true)  ... disconnect, unbind
//   accepted connection:  connect(outgoing: false)        ... disconnect
// A connected UDP socket is one opened with a remote (re.udp({ remote })): its connect and
// disconnect carry protocol 'udp' and that remote as faddr / fport. An unconnected one fires no
// connect however many destinations it sends to (the seed registers each new sendto destination;
// nothing here needs that). The registry's connection table and walker stay TCP only, and the
// replication policy matches TCP only, so a UDP connect reaches hooks and nothing else.
// args carries `handle` (the replication handle, the same on both REs) and, on disconnect, `reason`.
// A hook that throws is the registry's to report (Chassis 'hook-error'); the socket goes on.

import type { HookRegistry } from '../hooks/registry.ts'
import type { AddressFamily, HookCallInput, HookProtocol, StackId } from '../hooks/types.ts'
import type { Addr } from '../socket/records.ts'
import type { ChassisCore, Conn, ConnObserver } from './core.ts'

type How = 'outgoing' | 'incoming' | 'listen' | 'udp'

interface Announced {
  how: How
  /** The socket has a peer: connect fired for it, disconnect will. */
  connected: boolean
  base: HookCallInput
  faddr: string
  fport: number
}

/** Live sockets this bridge announced (bounded like the registry's connection table). */
export const MAX_ANNOUNCED_SOCKETS = 1 << 16

function family(address: string): AddressFamily {
  return address.includes(':') ? 6 : 4
}

export class ConnHooks implements ConnObserver {
  readonly registry: HookRegistry
  private readonly core: ChassisCore
  private readonly live = new Map<number, Announced>()
  /** The connection whose connect hooks are running right now, and whether a policy picked it. */
  private opening = 0
  private picked = false
  readonly counters = { opened: 0, closed: 0, malformed: 0, untracked: 0, replicateRequests: 0, replicateEvents: 0 }

  constructor(registry: HookRegistry, core: ChassisCore) {
    this.registry = registry
    this.core = core
  }

  opened(c: Conn, reId: string, how: How): boolean {
    this.counters.opened++
    const local: Addr = c.local ?? { address: '0.0.0.0', port: 0 }
    const protocol: HookProtocol = c.kind === 'udp' ? 'udp' : 'tcp'
    const base: HookCallInput = { stackId: reId as StackId, protocol, family: family(local.address), laddr: local.address, lport: local.port, args: { handle: c.handle } }
    const faddr = c.remote?.address ?? (base.family === 6 ? '::' : '0.0.0.0')
    const fport = c.remote?.port ?? 0
    const connected = how === 'outgoing' || how === 'incoming' || (how === 'udp' && c.remote !== null)
    if (this.live.size < MAX_ANNOUNCED_SOCKETS) this.live.set(c.handle, { how, connected, base, faddr, fport })
    else this.counters.untracked++
    const r = this.registry
    this.opening = c.handle
    this.picked = false
    try {
      switch (how) {
        case 'listen':
          this.call(() => r.bind(base))
          this.call(() => r.listen(base))
          break
        case 'udp':
        case 'outgoing':
          this.call(() => r.bind(base))
          if (connected) this.call(() => r.connect({ ...base, faddr, fport, args: { handle: c.handle, outgoing: true } }))
          break
        case 'incoming':
          this.call(() => r.connect({ ...base, faddr, fport, args: { handle: c.handle, outgoing: false } }))
          break
      }
      return this.picked
    } finally {
      this.opening = 0
      this.picked = false
    }
  }

  closed(c: Conn, reason: string): void {
    const a = this.live.get(c.handle)
    if (!a) return
    this.live.delete(c.handle)
    this.counters.closed++
    const r = this.registry
    const args = { handle: c.handle, reason }
    const base = { ...a.base, args }
    switch (a.how) {
      case 'listen':
        this.call(() => r.unlisten(base))
        this.call(() => r.unbind(base))
        break
      case 'udp':
      case 'outgoing':
        if (a.connected) this.call(() => r.disconnect({ ...base, faddr: a.faddr, fport: a.fport }))
        this.call(() => r.unbind(base))
        break
      case 'incoming':
        this.call(() => r.disconnect({ ...base, faddr: a.faddr, fport: a.fport }))
        break
    }
  }

  /**
   * A replication policy's replicate(): while the connect hooks of a connection being opened run,
   * the decision rides on that connection's announcement to the primary (it is then held and
   * replicated from its first byte); for a connection already open (a policy installed later), the
   * primary is told with a 'replicate' event.
   */
  requestReplication(handle: number): void {
    this.counters.replicateRequests++
    if (handle === this.opening) {
      this.picked = true
      return
    }
    const p = this.core.primary
    if (!p || !this.core.conns.has(handle)) return
    this.counters.replicateEvents++
    this.core.sendEvent(p, 0, { ev: 'replicate', handle })
  }

  /** The registry refuses a malformed call (EINVAL): counted, never thrown at the socket layer. */
  private call(fire: () => void): void {
    try {
      fire()
    } catch {
      this.counters.malformed++
    }
  }
}
