// comlink.bench.ts server: exposes a trivial API over comlink on this worker's parent port.

import { parentPort } from 'node:worker_threads'
import { Comlink, nodeEndpoint } from '../../lib/comlink.ts'

const api = {
  ping(x: number): number {
    return x + 1
  },
}
export type ComlinkBenchApi = typeof api

Comlink.expose(api, nodeEndpoint(parentPort!))
