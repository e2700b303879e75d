// The longest pause a streaming client sees across a failover, on real TCP: the echo example in a
// child process, CONNECTIONS connections streaming lines (WINDOW in flight each); the primary RE is
// crashed (SIGUSR1) or switched over (SIGUSR2), alternately, FAILOVERS times. For each, the gap is the
// longest time between two reply chunks on any connection, from the signal until SETTLE_MS after the
// failover event. The baseline beside it: the same measurement over a window of the same length
// with no fault (the noise floor of a loaded machine).
// Figures: transport.tcp.failover_gap_ms.p99 (target under 50), .p50, transport.tcp.kill_gap_ms.max,
// transport.tcp.switchover_gap_ms.max, transport.tcp.steady_gap_ms.p99.

import type { Progress } from '../lib/progress.ts'
import { sig, summarize } from '../lib/stats.ts'
import { ECHO_MAIN, Server, Stream, sleep } from './stream.ts'

const CONNECTIONS = 4
const LINE_BYTES = 100
const WINDOW = 256
const FAILOVERS = 10
const SETTLE_MS = 300
const BETWEEN_MS = 300

export default async function run({ progress }: { progress: Progress }): Promise<Record<string, number>> {
  const server = new Server(ECHO_MAIN, ['--listen', '127.0.0.1:0', '--dead-interval-ms', '20000'])
  const gaps: number[] = []
  const kills: number[] = []
  const switchovers: number[] = []
  const steady: number[] = []
  try {
    const { pid, port } = await server.started()
    const stream = new Stream({ port, connections: CONNECTIONS, lineBytes: LINE_BYTES, window: WINDOW })
    await sleep(1000)
    for (let k = 0; k < FAILOVERS; k++) {
      // Redundant again (the previous failover's fresh secondary is up and in sync, and the warm
      // spare that will take the next one has booted), then a fault-free window for the baseline.
      await server.waitFor(() => server.count('secondary-up') >= k && server.count('spare-up') >= k + 1)
      await sleep(BETWEEN_MS)
      stream.record(true)
      const t0 = performance.now()
      await sleep(BETWEEN_MS)
      stream.record(false)
      steady.push(stream.longestGapMs())
      const kill = k % 2 === 0
      const before = server.count('failover')
      stream.record(true)
      process.kill(pid, kill ? 'SIGUSR1' : 'SIGUSR2')
      await server.waitFor(() => server.count('failover') > before)
      await sleep(SETTLE_MS)
      stream.record(false)
      const gap = stream.longestGapMs()
      if (stream.broken) throw new Error(`a connection broke: ${stream.broken}`)
      gaps.push(gap)
      ;(kill ? kills : switchovers).push(gap)
      const ev = server.events.filter((e) => e.event === 'failover').at(-1)!
      progress(`${kill ? 'kill      ' : 'switchover'} ${k + 1}/${FAILOVERS}: client gap ${gap.toFixed(1)} ms (takeover ${ev.takeoverMs} ms; steady window ${steady.at(-1)!.toFixed(1)} ms, ${(performance.now() - t0).toFixed(0)} ms)`)
    }
    await stream.close()
  } finally {
    await server.stop()
  }
  const g = summarize(gaps)
  return {
    'transport.tcp.failover_gap_ms.p99': sig(g.p99, 3),
    'transport.tcp.failover_gap_ms.p50': sig(g.p50, 3),
    'transport.tcp.kill_gap_ms.max': sig(summarize(kills).max, 3),
    'transport.tcp.switchover_gap_ms.max': sig(summarize(switchovers).max, 3),
    'transport.tcp.steady_gap_ms.p99': sig(summarize(steady).p99, 3),
  }
}
