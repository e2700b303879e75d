// Echo throughput over real TCP on loopback: the echo example (every reply record replicated to the
// secondary RE and acknowledged before it goes out; every received byte delivered to both REs)
// against the same echo protocol on a plain node:net server, in child processes, driven by the same
// client here: CONNECTIONS connections of LINE_BYTES lines, WINDOW lines in flight on each. Alternating
// rounds, best of ROUNDS each (interference only ever slows a run down).
// Figures: transport.tcp.replicated.bytes_per_s, transport.tcp.direct.bytes_per_s (reply bytes the
// client receives per second), transport.tcp.replicated_vs_direct (their ratio; the target is 0.5).

import type { Progress } from '../lib/progress.ts'
import { fmtRate, sig } from '../lib/stats.ts'
import { DIRECT_MAIN, ECHO_MAIN, Server, Stream, sleep } from './stream.ts'

const CONNECTIONS = 4
const LINE_BYTES = 100
const WINDOW = 2048
const WARMUP_MS = 1000
const MEASURE_MS = 3000
const ROUNDS = 3

async function measure(main: string, args: string[], spare: boolean): Promise<number> {
  const server = new Server(main, args)
  try {
    const { port } = await server.started()
    // The steady state: the echo's warm spare is up (its boot and warm-up take a core for the
    // better part of a second, which could fall inside the measurement before).
    if (spare) await server.waitFor((e) => e.event === 'spare-up')
    const stream = new Stream({ port, connections: CONNECTIONS, lineBytes: LINE_BYTES, window: WINDOW })
    await sleep(WARMUP_MS)
    const b0 = stream.replyBytes
    const t0 = performance.now()
    await sleep(MEASURE_MS)
    const rate = ((stream.replyBytes - b0) / (performance.now() - t0)) * 1000
    if (stream.broken) throw new Error(`a connection broke: ${stream.broken}`)
    await stream.close()
    return rate
  } finally {
    await server.stop()
  }
}

export default async function run({ progress }: { progress: Progress }): Promise<Record<string, number>> {
  let direct = 0
  let replicated = 0
  for (let r = 0; r < ROUNDS; r++) {
    const d = await measure(DIRECT_MAIN, ['--listen', '127.0.0.1:0'], false)
    const n = await measure(ECHO_MAIN, ['--listen', '127.0.0.1:0', '--dead-interval-ms', '20000'], true)
    progress(`round ${r + 1}/${ROUNDS}: direct ${fmtRate(d, 'B/s')}, replicated ${fmtRate(n, 'B/s')}`)
    direct = Math.max(direct, d)
    replicated = Math.max(replicated, n)
  }
  progress(`replicated echo is ${(replicated / direct).toFixed(2)}x the plain node:net echo (target 0.5x)`)
  return {
    'transport.tcp.replicated.bytes_per_s': sig(replicated),
    'transport.tcp.direct.bytes_per_s': sig(direct),
    'transport.tcp.replicated_vs_direct': sig(replicated / direct, 3),
  }
}
