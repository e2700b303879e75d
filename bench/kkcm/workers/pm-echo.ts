// RTT, postMessage side, echo: answers every message with a 16-byte Uint8Array until 'end'.

import { pairWorker, runPairWorker } from '../../lib/pair-worker.ts'

runPairWorker(async () => {
  const w = pairWorker<unknown>()
  const port = w.peer
  const ack = new Uint8Array(16)
  let n = 0
  await new Promise<void>((resolve) => {
    port.on('message', (m: unknown) => {
      if (m === 'end') return resolve()
      port.postMessage(ack)
      n++
    })
    void w.start()
  })
  port.close()
  w.report({ echoed: n })
})
