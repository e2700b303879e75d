// KKCM demo: two worker threads, one channel. The producer pumps records through the a->b ring,
// the consumer reads them in place and checks their order; this thread reads the ring's shared
// counters (no messages needed) and prints progress and the rate as JSON lines.
//   npm run example:kkcm -- [--seconds N]      (default 3; SIGINT/SIGTERM stop early)

import process from 'node:process'
import type { Worker } from 'node:worker_threads'
import { createChannelSab, openEndpoint } from '../../engine/kkcm/channel.ts'
import { runtimeName, spawnWorker } from '../../engine/runtime/worker.ts'

const CHANNEL_CAPACITY_BYTES = 1 << 20
const PROGRESS_EVERY_MS = 500

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`)
  const v = i >= 0 ? Number(process.argv[i + 1]) : dflt
  return Number.isFinite(v) && v > 0 ? v : dflt
}

function emit(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n')
}

function nextMessage<T>(w: Worker): Promise<T> {
  return new Promise((resolve, reject) => {
    w.once('message', resolve)
    w.once('error', reject)
  })
}

const seconds = arg('seconds', 3)
const sab = createChannelSab(CHANNEL_CAPACITY_BYTES)
const ep = openEndpoint(sab, 'a') // only to read counters and to close
emit('started', { pid: process.pid, runtime: runtimeName(), seconds, ringBytes: CHANNEL_CAPACITY_BYTES })

const consumer = spawnWorker(new URL('./consumer.worker.ts', import.meta.url), { workerData: { sab }, name: 'kkcm-consumer' })
const producer = spawnWorker(new URL('./producer.worker.ts', import.meta.url), { workerData: { sab }, name: 'kkcm-producer' })
await Promise.all([nextMessage(producer), nextMessage(consumer)]) // both loaded
const producerReport = nextMessage<{ records: number; bytes: number }>(producer)
const consumerReport = nextMessage<{ records: number; bytes: number; bad: number; rejects: number }>(consumer)
consumer.postMessage('go')
producer.postMessage('go')

const t0 = performance.now()
let last = { t: t0, frames: 0 }
const progress = setInterval(() => {
  const now = performance.now()
  const frames = ep.tx.stats().framesOut
  emit('progress', {
    seconds: Number(((now - t0) / 1000).toFixed(1)),
    records: frames,
    ratePerS: Math.round(((frames - last.frames) / (now - last.t)) * 1000),
  })
  last = { t: now, frames }
}, PROGRESS_EVERY_MS)

let stopping = false
async function stop(reason: string): Promise<void> {
  if (stopping) return
  stopping = true
  clearInterval(progress)
  clearTimeout(deadline)
  ep.close()
  const [p, c] = await Promise.all([producerReport, consumerReport])
  const ms = performance.now() - t0
  const st = ep.tx.stats()
  emit('done', {
    reason,
    records: c.records,
    ratePerS: Math.round((c.records / ms) * 1000),
    mbPerS: Number(((c.bytes / ms) * 1000 / 1e6).toFixed(1)),
    ok: p.records === c.records && p.bytes === c.bytes && c.bad === 0 && c.rejects === 0,
    outOfOrder: c.bad,
    rejects: c.rejects,
    ringFull: st.full,
    parks: st.parks,
  })
  await Promise.all([producer.terminate(), consumer.terminate()])
}

const deadline = setTimeout(() => void stop('time'), seconds * 1000)
process.once('SIGINT', () => void stop('SIGINT'))
process.once('SIGTERM', () => void stop('SIGTERM'))

// Output (numbers vary with the machine):
// {"event":"started","pid":4242,"runtime":"node","seconds":3,"ringBytes":1048576}
// {"event":"progress","seconds":0.5,"records":1711618,"ratePerS":3423236}
// {"event":"progress","seconds":1,"records":3606417,"ratePerS":3789598}
// ...
// {"event":"done","reason":"time","records":10871766,"ratePerS":3623922,"mbPerS":953.1,"ok":true,"outOfOrder":0,"rejects":0,"ringFull":812,"parks":90}
