// Worker threads on every runtime nsr-engine supports. spawnWorker() starts a node:worker_threads
// Worker on a module URL: on Node 20 a .ts entry needs tsx registered in the worker (see tsxWorkerImport);
// Bun and Deno run TypeScript themselves. (Bun: give each concurrently running worker its own
// entry file.) runtimeName() says which runtime this thread is on.

import { createRequire } from 'node:module'
import process from 'node:process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Worker, type ResourceLimits, type TransferListItem, type WorkerOptions } from 'node:worker_threads'
import { NsrError } from '../errors.ts'

export type RuntimeName = 'node' | 'bun' | 'deno'

/** The runtime this thread runs on, from its globals. */
export function runtimeName(): RuntimeName {
  const g = globalThis as { Bun?: unknown; Deno?: unknown }
  if (g.Bun !== undefined) return 'bun'
  if (g.Deno !== undefined) return 'deno'
  return 'node'
}

export interface SpawnWorkerOptions {
  workerData?: unknown
  name?: string
  resourceLimits?: ResourceLimits
  transferList?: readonly TransferListItem[]
  /** Extra Node flags for the worker (Node only; the tsx loader is added for .ts entries). */
  execArgv?: string[]
}

let tsxBootstrap: string | null = null

/** Path of tsx's ESM API module (tsx/dist/esm/api/index.mjs), found from here or the working directory. */
function tsxApiPath(): string {
  const rel = join('dist', 'esm', 'api', 'index.mjs')
  for (const base of [import.meta.url, pathToFileURL(join(process.cwd(), 'package.json')).href]) {
    try {
      const candidate = join(dirname(createRequire(base).resolve('tsx/package.json')), rel)
      if (existsSync(candidate)) return candidate
    } catch {
      // try the next base
    }
  }
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const candidate = join(dir, 'node_modules', 'tsx', rel)
    if (existsSync(candidate)) return candidate
    const up = dirname(dir)
    if (up === dir) break
    dir = up
  }
  throw new NsrError('ENOENT', 'cannot find tsx, needed to run a .ts worker on Node')
}

/**
 * The `--import` argument that makes a Node worker load .ts modules. `--import tsx` is not enough
 * on Node 20: tsx's loader registers its hooks only on the main thread there (it checks
 * isMainThread, Node 20 lacks isInternalThread), so the worker imports a tiny data: module that
 * calls tsx's register() itself.
 */
export function tsxWorkerImport(): string {
  if (tsxBootstrap !== null) return tsxBootstrap
  const api = pathToFileURL(tsxApiPath()).href
  tsxBootstrap = 'data:text/javascript,' + encodeURIComponent(`import { register } from ${JSON.stringify(api)}; register();`)
  return tsxBootstrap
}

/** Starts a worker thread running the module at `entry` (a file: URL). */
export function spawnWorker(entry: URL, opts: SpawnWorkerOptions = {}): Worker {
  const options: WorkerOptions = {}
  if (opts.workerData !== undefined) options.workerData = opts.workerData
  if (opts.name !== undefined) options.name = opts.name
  if (opts.resourceLimits !== undefined) options.resourceLimits = opts.resourceLimits
  if (opts.transferList !== undefined) options.transferList = [...opts.transferList]
  if (runtimeName() === 'node') {
    const argv = opts.execArgv ? [...opts.execArgv] : []
    // NSR_WORKER_FLAGS: extra Node flags for every worker (say `--cpu-prof --cpu-prof-dir=prof`).
    const extra = process.env.NSR_WORKER_FLAGS
    if (extra) argv.push(...extra.split(/\s+/).filter(Boolean))
    if (/\.[cm]?tsx?$/.test(entry.pathname)) argv.push('--import', tsxWorkerImport())
    options.execArgv = argv
  }
  return new Worker(entry, options)
}
