// Benchmark runner: `npm run bench` runs every suite, `npm run bench -- kkcm [sdrl ...]` only the
// areas named. A suite is a file bench/<area>/<subject>.bench.ts whose default export (or `run`)
// is an async function returning figures { "area.subject.metric": number }. Figures are merged into
// bench/results.json (one flat object; figures of areas not run are kept), written after each
// suite so an interrupted run keeps what it measured. Each suite runs in its own child process
// (`--suite FILE`): a suite that leaves threads behind (its chassis still winding down) cannot slow
// the suites after it, and the runner always exits.

import { spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import process from 'node:process'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { progress, type Progress } from './lib/progress.ts'

export type Figures = Record<string, number>
export type Suite = (ctx: { progress: Progress }) => Promise<Figures>

const benchDir = fileURLToPath(new URL('.', import.meta.url))
const resultsPath = join(benchDir, 'results.json')
const NOT_AREAS = new Set(['lib', 'node_modules'])

function discover(): Array<{ area: string; file: string }> {
  const suites: Array<{ area: string; file: string }> = []
  for (const area of readdirSync(benchDir).sort()) {
    const dir = join(benchDir, area)
    if (NOT_AREAS.has(area) || !statSync(dir).isDirectory()) continue
    for (const f of readdirSync(dir).sort()) if (f.endsWith('.bench.ts')) suites.push({ area, file: join(dir, f) })
  }
  return suites
}

function loadResults(): Figures {
  if (!existsSync(resultsPath)) return {}
  try {
    const parsed = JSON.parse(readFileSync(resultsPath, 'utf8')) as unknown
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Figures) : {}
  } catch {
    return {}
  }
}

function saveResults(results: Figures): void {
  const sorted: Figures = {}
  for (const k of Object.keys(results).sort()) sorted[k] = results[k]
  writeFileSync(resultsPath, JSON.stringify(sorted, null, 2) + '\n')
}

const SUITE_RESULT = 'bench-suite-result '

/** Child mode: runs one suite, prints its figures as one marked JSON line, and exits. */
async function runOne(file: string, area: string): Promise<void> {
  const mod = (await import(pathToFileURL(file).href)) as { default?: Suite; run?: Suite }
  const fn = mod.default ?? mod.run
  if (typeof fn !== 'function') throw new Error('exports no suite function (default or run)')
  const figures = await fn({ progress: progress(area) })
  process.stdout.write(SUITE_RESULT + JSON.stringify(figures) + '\n')
  process.exit(0)
}

/** Runs one suite in a child process; progress lines pass through, the figures come back. */
function spawnSuite(file: string, area: string): Promise<Figures> {
  return new Promise((resolve, reject) => {
    // `--import tsx` from the project root, not this process's flags: tsx's CLI preflight
    // (--require) made the chassis thread measurably slower (bench/sdrl 64 B: 0.84M vs 1.15M rec/s).
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--suite', file, area], { cwd: join(benchDir, '..'), stdio: ['ignore', 'pipe', 'inherit'] })
    let figures: Figures | null = null
    let partial = ''
    child.stdout!.setEncoding('utf8')
    child.stdout!.on('data', (d: string) => {
      const lines = (partial + d).split('\n')
      partial = lines.pop()!
      for (const l of lines) {
        if (l.startsWith(SUITE_RESULT)) figures = JSON.parse(l.slice(SUITE_RESULT.length)) as Figures
        else process.stdout.write(l + '\n')
      }
    })
    child.on('error', reject)
    child.on('exit', (code, signal) => {
      if (figures && code === 0) resolve(figures)
      else reject(new Error(`suite process exited with ${signal ?? code} and no figures`))
    })
  })
}

async function main(): Promise<void> {
  const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'))
  const all = discover()
  const known = new Set(all.map((s) => s.area))
  for (const w of wanted) if (!known.has(w)) throw new Error(`no bench area '${w}' (have: ${[...known].join(', ') || 'none'})`)
  const suites = wanted.length ? all.filter((s) => wanted.includes(s.area)) : all
  const log = progress('bench')
  log(`${suites.length} suite(s): ${suites.map((s) => `${s.area}/${s.file.split('/').pop()}`).join(', ')}`)
  const results = loadResults()
  const t0 = performance.now()
  let failed = 0
  for (const s of suites) {
    const name = `${s.area}/${s.file.split('/').pop()}`
    const started = performance.now()
    try {
      const figures = await spawnSuite(s.file, s.area)
      for (const [k, v] of Object.entries(figures)) {
        if (!k.startsWith(`${s.area}.`)) throw new Error(`figure '${k}' is not named under '${s.area}.'`)
        if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`figure '${k}' is not a finite number: ${v}`)
        results[k] = v
        process.stdout.write(`${k} ${v}\n`)
      }
      saveResults(results)
      log(`${name} done in ${((performance.now() - started) / 1000).toFixed(1)}s, ${Object.keys(figures).length} figure(s)`)
    } catch (e) {
      failed++
      log(`${name} FAILED: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`)
    }
  }
  log(`all done in ${((performance.now() - t0) / 1000).toFixed(1)}s; results in bench/results.json`)
  if (failed) process.exitCode = 1
}

const at = process.argv.indexOf('--suite')
if (at >= 0) await runOne(process.argv[at + 1], process.argv[at + 2])
else await main()
