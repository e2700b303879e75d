// The echo application, run by both REs (examples/echo/main.ts starts the chassis).
//
// TCP (--listen): a replicated listener; every line received on a connection is answered with
// "<n> <line>", n counting that connection's lines from 1. The answers to the lines of one read go
// out together as one record (up to REPLY_RECORD_BYTES), as a plain server answers a read with one
// write: a record per line cost every thread per-record work for 100-byte lines. What the primary
// has read but cannot answer yet (a partial line, or lines whose record was refused with EAGAIN)
// it puts back with sock.unshift(), so the socket's first unread byte is always exactly where its
// answers stand. Its line count n is the socket's appState, which the replication handshake
// snapshots with the offsets. The secondary rebuilds both from its snoop pair alone: it starts at
// the snapshot (n, and the receive snoop's read offset: the primary's unread data follows it as
// pre-existing data), advances by each later reply (every reply ends with its one newline, and
// lines.ts says what a reply of that n and length consumed), and keeps the received bytes from
// there on. At a takeover it puts the unanswered bytes back into the merged socket and serves on.
//
// UDP (--udp): one replicated socket; each datagram gets "<n> <payload>" back, n per source
// address. A datagram's receive sequence number equals the sequence number of its answer, so the
// secondary drops each received datagram once it sees the reply that answers it, and takes every
// source's n from the replies. UDP has no stream offsets to rebuild older per-source counts from:
// when a fresh secondary attaches, the primary hands it the per-source table once (re.sendToPeer,
// sent before the handshake's first frame, while writes are refused), and the replies do the rest.

import { NsrError } from '../../engine/errors.ts'
import { seqLe, seqLt } from '../../engine/protocol/header.ts'
import type { RoutingEngine } from '../../engine/re/re.ts'
import type { SnoopPair } from '../../engine/sdrl/secondary.ts'
import type { Addr } from '../../engine/socket/records.ts'
import type { Socket } from '../../engine/socket/socket.ts'
import { concat, consumedBy, lineEnd, lineNext, reply, replyBytes, replyInto, replyNumber, searchable } from './lines.ts'

export interface EchoOptions {
  mode: 'tcp' | 'udp'
  host: string
  port: number
}

/** Bytes of replies one TCP record carries at most (a longer single reply goes alone). */
export const REPLY_RECORD_BYTES = 16 * 1024

/** Sources a UDP echo remembers; past it the least recently heard one is forgotten (counted). */
export const MAX_UDP_SOURCES = 65536

const full = (err: unknown): boolean => err instanceof NsrError && (err.code === 'EAGAIN' || err.code === 'ENOBUFS')

export default function echo(re: RoutingEngine): Promise<void> | void {
  const o = (re as unknown as { options: EchoOptions }).options
  return o.mode === 'udp' ? udpEcho(re, o) : tcpEcho(re, o)
}

// ---- TCP ---------------------------------------------------------------------------------------

/** The secondary's view of one connection: where the primary's answers stand in the received stream. */
interface Follow {
  pair: SnoopPair
  /** Received stream offset up to which lines are answered. */
  answered: number
  /** Lines answered so far (the n of the last reply counted). */
  n: number
  /** Replies up to this sequence number are already counted in `answered`. */
  countedThrough: number
  /** Received bytes from `bufStart` (unanswered, or not yet known to be answered). */
  buf: Uint8Array[]
  bufStart: number
  bufEnd: number
}

function tcpEcho(re: RoutingEngine, o: EchoOptions): Promise<void> | void {
  const follows = new Map<number, Follow>()

  /**
   * Answers every whole line unread on `sock`, `answered` lines having been answered before; `skip`
   * bytes at the head were answered already.
   */
  const serve = (sock: Socket, skip = 0, answered = 0): void => {
    let n = answered
    sock.appState = () => ({ n })
    let waiting = false
    let out: Uint8Array = new Uint8Array(REPLY_RECORD_BYTES)
    let used = 0
    let lines = 0
    /** Writes the replies built so far as one record. False when refused: `rest` goes back unanswered. */
    const send = (seq: number, rest: Uint8Array): boolean => {
      if (used === 0) return true
      try {
        sock.write(out.subarray(0, used))
      } catch (err) {
        if (!full(err)) throw err
        used = 0
        lines = 0
        sock.unshift({ seq, data: rest, addr: null })
        waiting = true
        sock.once('writable', () => {
          waiting = false
          run()
        })
        return false
      }
      n += lines
      used = 0
      lines = 0
      return true
    }
    /** Adds the reply to data[from, to) to the record under way. */
    const add = (data: Uint8Array, from: number, to: number): void => {
      const k = n + lines + 1
      const len = replyBytes(k, to - from)
      if (used + len > out.length) out = growTo(out, used, used + len)
      used = replyInto(out, used, k, data, from, to)
      lines++
    }
    const run = (): void => {
      if (waiting || sock.state !== 'open') return
      let data: Uint8Array = new Uint8Array(0)
      let seq = 0
      for (let r = sock.read(); r; r = sock.read()) {
        seq = r.seq
        let chunk = r.data
        if (skip > 0) {
          const k = Math.min(skip, chunk.length)
          skip -= k
          chunk = chunk.subarray(k)
        }
        data = concat(data, chunk)
        // The record under way answers the lines from `first` on.
        let first = 0
        let start = 0
        for (let end = lineEnd(data, start); end >= 0; end = lineEnd(data, start)) {
          if (used > 0 && used + replyBytes(n + lines + 1, end - start) > REPLY_RECORD_BYTES) {
            if (!send(seq, data.subarray(first))) return
            first = start
          }
          add(data, start, end)
          start = lineNext(start, end)
        }
        if (!send(seq, data.subarray(first))) return
        data = data.subarray(start)
      }
      if (sock.peerEnded) {
        // End of stream: a last line without its newline is answered too, then we close.
        if (data.length) {
          add(data, 0, data.length)
          if (!send(seq, data)) return
        }
        sock.close()
        return
      }
      if (data.length) sock.unshift({ seq, data, addr: null })
    }
    sock.on('readable', run)
    sock.on('end', run)
    sock.on('error', () => sock.close())
    sock.on('replication', (e: { functional: boolean }) => {
      if (e.functional) run()
    })
    run()
  }

  const follow = (pair: SnoopPair): void => {
    const start = (): void => {
      const p = pair.params!
      if (p.kind !== 'tcp') return
      // The primary's line count at the snapshot; a connection replicated from its first byte has none yet.
      const n = (p.app as { n?: unknown } | undefined)?.n
      const f: Follow = { pair, answered: p.rcvReadOffset, n: Number.isSafeInteger(n) ? (n as number) : 0, countedThrough: p.sndSeq, buf: [], bufStart: p.rcvReadOffset, bufEnd: p.rcvReadOffset }
      follows.set(pair.handle, f)
      const trim = (): void => {
        while (f.buf.length && f.bufStart + f.buf[0].length <= f.answered) f.bufStart += f.buf.shift()!.length
      }
      pair.send.on('readable', () => {
        // Replies up to the parameters' sndSeq are counted in the receive offset already.
        for (let r = pair.send.read(); r; r = pair.send.read()) count(f, r.seq, r.data)
        trim()
      })
      pair.recv.on('readable', () => {
        for (let r = pair.recv.read(); r; r = pair.recv.read()) {
          f.buf.push(r.data)
          f.bufEnd += r.data.length
        }
        trim()
      })
      pair.on('unreplicated', () => {
        if (follows.get(pair.handle) === f) follows.delete(pair.handle)
      })
    }
    if (pair.params) start()
    else pair.once('params', start)
  }

  /** Promotion: every merged connection resumes at its first unanswered byte. */
  const takeOver = (): void => {
    for (const sock of re.sockets.values()) {
      if (sock.kind === 'listen') {
        sock.on('connection', (s: Socket) => serve(s))
        continue
      }
      const f = follows.get(sock.handle)
      follows.delete(sock.handle)
      if (!f) {
        // Every merged connection had its pair followed from its parameters on: this one never sent a line.
        serve(sock)
        continue
      }
      // Replies the snoop still held (they were merged, but count for our place).
      for (let r = f.pair.send.read(); r; r = f.pair.send.read()) count(f, r.seq, r.data)
      // Received data the chassis sent this RE but it had not read yet arrives as ordinary
      // receive data: what of it is answered already is skipped.
      const skip = Math.max(0, f.answered - f.bufEnd)
      let pending: Uint8Array = new Uint8Array(0)
      let at = f.bufStart
      for (const chunk of f.buf) {
        const from = Math.max(0, f.answered - at)
        if (from < chunk.length) pending = concat(pending, chunk.subarray(from))
        at += chunk.length
      }
      if (pending.length) sock.unshift({ seq: sock.rcvSeq, data: pending, addr: null })
      serve(sock, skip, f.n)
    }
  }

  re.on('split', follow)
  re.on('mastership', takeOver)
  if (re.role === 'primary') {
    return re.listen({ host: o.host, port: o.port, transport: 'tcp', replicate: true }).then((l) => {
      l.on('connection', (s: Socket) => serve(s))
    })
  }
}

/** Secondary: counts the replies of record `seq` (each ends with its one newline) unless counted. */
function count(f: Follow, seq: number, data: Uint8Array): void {
  if (!seqLt(f.countedThrough, seq)) return
  f.countedThrough = seq
  const view = searchable(data)
  for (let from = 0; from < data.length; ) {
    let nl = view.indexOf(0x0a, from)
    if (nl < 0) nl = data.length - 1 // not an echo reply: counted as one, as its length says
    f.n++
    f.answered += consumedBy(f.n, nl + 1 - from)
    from = nl + 1
  }
}

/** A copy of `buf`'s first `used` bytes in a buffer of at least `need` bytes. */
function growTo(buf: Uint8Array, used: number, need: number): Uint8Array {
  const bigger = new Uint8Array(Math.max(need, buf.length * 2))
  bigger.set(buf.subarray(0, used))
  return bigger
}

// ---- UDP ---------------------------------------------------------------------------------------

const sourceKey = (a: Addr): string => `${a.address}|${a.port}`

function udpEcho(re: RoutingEngine, o: EchoOptions): Promise<void> | void {
  /** Per source: the last n answered (insertion order = least recently heard first). */
  const table = new Map<string, number>()
  const counters = { forgotten: 0, snapshotsSent: 0, snapshotsLost: 0 }
  const note = (key: string, n: number): void => {
    const had = table.get(key)
    if (had !== undefined && had >= n) return
    table.delete(key)
    if (table.size >= MAX_UDP_SOURCES) {
      table.delete(table.keys().next().value!)
      counters.forgotten++
    }
    table.set(key, n)
  }
  /** Secondary: datagrams received and not yet answered, and the last reply's sequence number. */
  let pending: Array<{ seq: number; data: Uint8Array; addr: Addr | null }> = []
  let answeredSeq = 0

  const serve = (sock: Socket, skipThrough: number): void => {
    let waiting = false
    const run = (): void => {
      if (waiting || sock.state !== 'open') return
      for (let r = sock.read(); r; r = sock.read()) {
        if (!r.addr || seqLe(r.seq, skipThrough)) continue
        const key = sourceKey(r.addr)
        const n = (table.get(key) ?? 0) + 1
        try {
          sock.write(reply(n, r.data, 0, r.data.length, false), r.addr)
        } catch (err) {
          if (!full(err)) throw err
          sock.unshift(r)
          waiting = true
          sock.once('writable', () => {
            waiting = false
            run()
          })
          return
        }
        note(key, n)
      }
    }
    sock.on('readable', run)
    sock.on('replication', (e: { functional: boolean }) => {
      if (e.functional) run()
    })
    run()
  }

  const follow = (pair: SnoopPair): void => {
    pair.send.on('readable', () => {
      for (let r = pair.send.read(); r; r = pair.send.read()) {
        const n = replyNumber(r.data)
        if (r.addr && n > 0) note(sourceKey(r.addr), n)
        if (seqLt(answeredSeq, r.seq)) answeredSeq = r.seq
      }
      pending = pending.filter((d) => seqLt(answeredSeq, d.seq))
    })
    pair.recv.on('readable', () => {
      for (let r = pair.recv.read(); r; r = pair.recv.read()) if (seqLt(answeredSeq, r.seq)) pending.push(r)
    })
  }

  re.on('split', (pair: SnoopPair) => {
    const start = (): void => {
      if (pair.params?.kind !== 'udp') return
      answeredSeq = pair.params.sndSeq
      follow(pair)
    }
    if (pair.params) start()
    else pair.once('params', start)
  })
  re.on('peer-message', (m: { t?: string; table?: Array<[string, number]> }) => {
    if (m?.t === 'udp-table' && Array.isArray(m.table)) for (const [k, n] of m.table) note(k, n)
  })
  re.on('secondary-up', () => {
    if (re.role !== 'primary') return
    if (re.sendToPeer({ t: 'udp-table', table: [...table] })) counters.snapshotsSent++
    else counters.snapshotsLost++
  })
  re.on('mastership', () => {
    for (const sock of re.sockets.values()) {
      if (sock.kind !== 'udp') continue
      for (let i = pending.length - 1; i >= 0; i--) sock.unshift(pending[i])
      pending = []
      serve(sock, answeredSeq)
    }
  })
  if (re.role === 'primary') {
    return re.udp({ host: o.host, port: o.port, transport: 'udp' }).then((sock) => {
      serve(sock, 0)
      // Without a secondary yet, the one that attaches replicates it (the RE remembers the wish).
      sock.replicate().catch(() => {})
    })
  }
}
