// Worker-pair harness, worker side: a benchmark worker calls pairWorker(), gets its role, the
// shared data and a MessagePort to its peer, waits for the common start, measures, and reports.

import { parentPort, workerData, type MessagePort } from 'node:worker_threads'
import type { PairInit } from './pair.ts'

export interface PairWorker<T> {
  role: 'a' | 'b'
  data: T
  /** Direct port to the other worker of the pair. */
  peer: MessagePort
  /** Resolves when both workers are loaded and the host says go. */
  start(): Promise<void>
  /** Sends this worker's result to the host (once); the worker then stays up until terminated. */
  report(result: unknown): void
}

export function pairWorker<T>(): PairWorker<T> {
  const init = workerData as PairInit
  const port = parentPort!
  return {
    role: init.role,
    data: init.data as T,
    peer: init.peer,
    start: () =>
      new Promise<void>((resolve) => {
        port.once('message', () => resolve())
        port.postMessage({ kind: 'ready' })
      }),
    report(result: unknown) {
      port.postMessage({ kind: 'result', result })
      port.on('message', () => {}) // stay alive: exiting could overtake the message; the host terminates us
    },
  }
}

/** Wraps a worker body so that a throw reaches the host as a failure instead of a silent exit. */
export function runPairWorker(body: () => Promise<void>): void {
  body().catch((e: unknown) => {
    parentPort!.postMessage({ kind: 'failed', error: e instanceof Error ? (e.stack ?? e.message) : String(e) })
  })
}
