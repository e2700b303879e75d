// comlink for benchmarks on Node worker threads: the library plus its node adapter, whose UMD
// build is a CommonJS module (the default import is the function at run time, a namespace to tsc).

import * as Comlink from 'comlink'
import adapterModule from 'comlink/dist/umd/node-adapter.js'

type NodeEndpointFn = typeof adapterModule.default
const loaded = adapterModule as unknown as NodeEndpointFn & { default?: NodeEndpointFn }
export const nodeEndpoint: NodeEndpointFn = typeof loaded.default === 'function' ? loaded.default : loaded
export { Comlink }
