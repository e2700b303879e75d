// comlink speaks the web Worker Endpoint shape (postMessage + addEventListener); node:worker_threads
// ports speak EventEmitter. This adapter bridges the two for the chassis <-> RE control plane on
// Node, Bun and Deno alike.

import type { Endpoint } from 'comlink'

interface NodePort {
  postMessage(message: unknown, transfer?: readonly unknown[]): void
  on(event: 'message', fn: (data: unknown) => void): unknown
  off(event: 'message', fn: (data: unknown) => void): unknown
  start?: () => void
}

type Listener = ((ev: { data: unknown }) => void) | { handleEvent(ev: { data: unknown }): void }

export function portEndpoint(port: NodePort): Endpoint {
  const wrapped = new WeakMap<object, (data: unknown) => void>()
  return {
    postMessage: (message: unknown, transfer?: unknown[]) => port.postMessage(message, transfer as readonly unknown[]),
    addEventListener(_type: string, listener: Listener) {
      const fn = (data: unknown) => {
        const ev = { data }
        if (typeof listener === 'function') listener(ev)
        else listener.handleEvent(ev)
      }
      wrapped.set(listener as object, fn)
      port.on('message', fn)
    },
    removeEventListener(_type: string, listener: Listener) {
      const fn = wrapped.get(listener as object)
      if (fn) port.off('message', fn)
    },
    start: port.start?.bind(port),
  } as unknown as Endpoint
}
