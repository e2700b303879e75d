// Throughput, postMessage side, consumer: receives the cloned arrays, checks each sequence
// stamp, acknowledges every ACK_EVERY messages, and reports when the producer says 'end'.

import { pairWorker, runPairWorker } from '../../lib/pair-worker.ts'
import { absNow } from '../../lib/stats.ts'

const ACK_EVERY = 64

runPairWorker(async () => {
  const w = pairWorker<unknown>()
  const port = w.peer
  let n = 0
  let bad = 0
  await new Promise<void>((resolve) => {
    port.on('message', (m: Uint8Array | 'end') => {
      if (m === 'end') {
        resolve()
        return
      }
      if (new Uint32Array(m.buffer, m.byteOffset, 1)[0] !== n >>> 0) bad++
      n++
      if (n % ACK_EVERY === 0) port.postMessage(n)
    })
    void w.start()
  })
  const tEnd = absNow()
  port.close()
  w.report({ received: n, bad, tEnd })
})
