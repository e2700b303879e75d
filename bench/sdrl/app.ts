// Bench application: on each accepted in-memory connection, writes `count` records of `size` bytes
// as fast as write() admits them (resuming on 'writable'), and times its own write() calls into
// re.appStats (writeNs, writes), leaving out the bursts that begin before record `warmup` (V8's
// warm-up, which the bench leaves out of its rates too). With `replicate`, the listener is
// replicated and writing starts once the connection's replication is functional. The secondary
// drains its snoop pairs.
import type { RoutingEngine } from '../../engine/re/re.ts'
import type { Socket } from '../../engine/socket/socket.ts'
import { NsrError } from '../../engine/errors.ts'

interface Opts {
  port: number
  replicate: boolean
  size: number
  count: number
  warmup?: number
}

export default function app(re: RoutingEngine): Promise<void> | void {
  const o = (re as unknown as { options: Opts }).options
  const record = new Uint8Array(o.size).fill(0x2a)
  re.appStats.writeNs = 0
  re.appStats.writes = 0
  const pump = (sock: Socket): void => {
    let n = 0
    const timed = sock.sndSeq >= (o.warmup ?? 0)
    const t0 = performance.now()
    try {
      while (sock.sndSeq < o.count) {
        sock.write(record)
        n++
      }
    } catch (err) {
      if (!(err instanceof NsrError && (err.code === 'EAGAIN' || err.code === 'ENOBUFS'))) throw err
      sock.once('writable', () => pump(sock))
    } finally {
      // Time per admitted write, including the refused call that ends a burst.
      if (timed) {
        re.appStats.writeNs += (performance.now() - t0) * 1e6
        re.appStats.writes += n
      }
    }
  }
  re.on('split', (pair) => {
    pair.send.on('readable', () => {
      while (pair.send.read()) {
        /* follow */
      }
    })
    pair.recv.on('readable', () => {
      while (pair.recv.read()) {
        /* follow */
      }
    })
  })
  if (re.role !== 'primary') return
  return re.listen({ port: o.port, replicate: o.replicate }).then((l) => {
    l.on('connection', (sock: Socket) => {
      if (!o.replicate) return pump(sock)
      sock.on('replication', (e: { functional: boolean }) => {
        if (e.functional) pump(sock)
      })
    })
  })
}
