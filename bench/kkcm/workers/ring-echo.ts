// RTT, ring side, echo: answers every frame on side 'b' of a channel with a 16-byte ack, until
// the channel closes. Also the server of the ring 'call' in comlink.bench.ts.

import { openEndpoint } from '../../../engine/kkcm/channel.ts'
import { pairWorker, runPairWorker } from '../../lib/pair-worker.ts'

runPairWorker(async () => {
  const w = pairWorker<{ sab: SharedArrayBuffer; ring?: { spinUs?: number; spinFloorUs?: number } }>()
  const ep = openEndpoint(w.data.sab, 'b', w.data.ring)
  const ack = new Uint8Array(16)
  let n = 0
  const onFrame = (): void => {
    ep.tx.send(ack)
    n++
  }
  await w.start()
  for (;;) {
    if (ep.rx.drain(onFrame) > 0) continue
    if (ep.rx.closed && ep.rx.isEmpty()) break
    await ep.rx.readable()
  }
  w.report({ echoed: n })
})
