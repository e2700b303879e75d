// Worker-pair harness, host side: starts two worker threads (entries a and b, one file each, as
// Bun requires), links them with a MessageChannel, waits until both have loaded, releases them
// together so start-up does not count, and collects the one result each posts.
// The worker side is ./pair-worker.ts.

import { MessageChannel, type MessagePort, type Worker } from 'node:worker_threads'
import { spawnWorker } from '../../engine/runtime/worker.ts'

export interface PairOptions {
  a: URL
  b: URL
  /** Given to both workers (SharedArrayBuffers are shared, anything else is copied). */
  data?: unknown
  timeoutMs?: number
}

export interface PairInit {
  role: 'a' | 'b'
  data: unknown
  peer: MessagePort
}

type Msg = { kind: 'ready' } | { kind: 'result'; result: unknown } | { kind: 'failed'; error: string }

/** Grace for messages still in flight when a worker's 'exit' arrives (exit may overtake them). */
const EXIT_GRACE_MS = 200

function watch(w: Worker, name: string, onMsg: (m: Msg) => void, onFail: (e: Error) => void): void {
  w.on('message', onMsg)
  w.on('error', (e) => onFail(e instanceof Error ? e : new Error(String(e))))
  w.on('exit', (code) => {
    setTimeout(() => onFail(new Error(`${name} exited with ${code} before reporting`)), EXIT_GRACE_MS).unref()
  })
}

/** Runs one measurement on a pair of workers; returns [result of a, result of b]. */
export async function runWorkerPair<A = unknown, B = unknown>(opts: PairOptions): Promise<[A, B]> {
  const { port1, port2 } = new MessageChannel()
  const workers: Worker[] = []
  const timeoutMs = opts.timeoutMs ?? 60_000
  try {
    return await new Promise<[A, B]>((resolve, reject) => {
      const results: unknown[] = []
      let ready = 0
      let reported = 0
      let settled = false
      const fail = (e: Error): void => {
        if (!settled) {
          settled = true
          clearTimeout(timer)
          reject(e)
        }
      }
      const timer = setTimeout(() => fail(new Error(`worker pair timed out after ${timeoutMs} ms`)), timeoutMs)
      const entries: Array<[URL, 'a' | 'b', MessagePort]> = [
        [opts.a, 'a', port1],
        [opts.b, 'b', port2],
      ]
      entries.forEach(([entry, role, port], i) => {
        const init: PairInit = { role, data: opts.data, peer: port }
        const w = spawnWorker(entry, { workerData: init, transferList: [port], name: `bench-${role}` })
        workers.push(w)
        watch(
          w,
          `worker ${role} (${entry.pathname.split('/').pop()})`,
          (m) => {
            if (m.kind === 'ready' && ++ready === 2) for (const x of workers) x.postMessage('go')
            else if (m.kind === 'failed') fail(new Error(`worker ${role}: ${m.error}`))
            else if (m.kind === 'result') {
              results[i] = m.result
              if (++reported === 2 && !settled) {
                settled = true
                clearTimeout(timer)
                resolve([results[0] as A, results[1] as B])
              }
            }
          },
          fail,
        )
      })
    })
  } finally {
    await Promise.all(workers.map((w) => w.terminate()))
  }
}

/**
 * Starts one pair-protocol worker talking to the calling thread (no peer worker): resolves once it
 * has loaded and been told to go. The caller terminates it.
 */
export async function startPairWorker(entry: URL, data: unknown): Promise<Worker> {
  const init: Omit<PairInit, 'peer'> & { peer: null } = { role: 'b', data, peer: null }
  const w = spawnWorker(entry, { workerData: init, name: 'bench-single' })
  await new Promise<void>((resolve, reject) => {
    w.on('message', (m: Msg) => {
      if (m.kind === 'ready') {
        w.postMessage('go')
        resolve()
      } else if (m.kind === 'failed') reject(new Error(m.error))
    })
    w.once('error', reject)
  })
  return w
}
