// The two-worker ring stream: a producer worker and a consumer worker move 1,000,000 frames of
// seeded random sizes (0..2 KiB) and seeded contents through one Ring; the consumer checks every
// byte and the order. Runs in-process on Node, then the very same program under Bun and Deno
// (spawned from node_modules/.bin), which must report their own runtime and the full count.

import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it, onTestFailed } from 'vitest'
import { runStream, type StreamResult } from './fixtures/stream.ts'

const seed = Number(process.env.NSR_SEED ?? Math.floor(Math.random() * 2 ** 31))
const FRAMES = 1_000_000
const root = fileURLToPath(new URL('../../', import.meta.url))
const mainScript = fileURLToPath(new URL('./fixtures/stream-main.ts', import.meta.url))

function runOn(cmd: string, args: string[]): Promise<{ res: StreamResult | null; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: root, timeout: 60_000, maxBuffer: 1 << 20 }, (_err, stdout, stderr) => {
      const out = `${stdout}\n${stderr}`
      const line = stdout
        .split('\n')
        .reverse()
        .find((l) => l.startsWith('{'))
      let res: StreamResult | null = null
      try {
        res = line ? (JSON.parse(line) as StreamResult) : null
      } catch {
        res = null
      }
      resolve({ res, out })
    })
  })
}

const printSeed = (): void => onTestFailed(() => console.error(`ring stream seed=${seed} (rerun with NSR_SEED=${seed})`))

describe('ring stream between two workers', () => {
  it(`moves ${FRAMES} seeded frames intact on Node`, { timeout: 30_000 }, async () => {
    printSeed()
    const res = await runStream({ frames: FRAMES, seed })
    expect(res.problems).toEqual([])
    expect(res).toMatchObject({ ok: true, runtime: 'node', producerRuntime: 'node', consumerRuntime: 'node', verified: FRAMES })
  })

  for (const [runtime, args] of [
    ['bun', [mainScript]],
    ['deno', ['run', '-A', '--no-lock', mainScript]],
  ] as const) {
    it(`runs the same program under ${runtime}`, { timeout: 70_000 }, async () => {
      printSeed()
      const bin = fileURLToPath(new URL(`node_modules/.bin/${runtime}`, `file://${root}/`))
      expect(existsSync(bin), `${bin} is missing: npm install`).toBe(true)
      const { res, out } = await runOn(bin, [...args, '--frames', String(FRAMES), '--seed', String(seed)])
      expect(res, out).not.toBeNull()
      expect(res!.problems, out).toEqual([])
      expect(res).toMatchObject({ ok: true, runtime, producerRuntime: runtime, consumerRuntime: runtime, verified: FRAMES, seed })
    })
  }
})
