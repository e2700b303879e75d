// The L4 transport interface the chassis drives. Three implementations sit behind it: memory
// (embedded default, engine/chassis/memory.ts), TCP over node:net and UDP over node:dgram
// (engine/chassis/net.ts). A transport connection outlives any RE: the chassis (host thread) owns it.

import type { Addr } from '../socket/records.ts'

export interface ConnEvents {
  /** Bytes (stream) or one datagram (with its source address) arrived. */
  data(data: Uint8Array, addr: Addr | null): void
  /** The peer closed its side (FIN). */
  end(): void
  /** The connection failed (reset, OS error); `code` is errno-style. */
  error(code: string, message: string): void
}

export interface TransportConn {
  readonly local: Addr
  readonly remote: Addr | null
  /**
   * Sends bytes: one or more whole records of a stream, or one datagram. `done` is called once the
   * transport has taken them. The chassis leaves the bytes alone until then, so a transport may
   * write them as they are instead of copying; after `done` it reuses their memory only if the
   * transport says keepsNothing (an in-memory peer, say, may keep what it got).
   */
  write(data: Uint8Array, addr: Addr | null, done: () => void): void
  /** True when the transport holds no reference to written bytes once `done` has run: the chassis then reuses their memory. */
  readonly keepsNothing?: boolean
  /**
   * True when the bytes given to events.data() are the transport's again once the call returns (a
   * TCP socket that reads into one reused buffer): the chassis copies what it keeps past the call.
   */
  readonly lendsReads?: boolean
  /** Stops / restarts reading (the peer's TCP window closes while paused). */
  pause(): void
  resume(): void
  /** Half-closes after everything written (FIN). */
  end(): void
  destroy(): void
  /** Set by the chassis right after the connection is created. */
  events: ConnEvents | null
}

export interface TransportListener {
  readonly local: Addr
  close(): void
}

export interface Transport {
  readonly name: string
  connect(host: string, port: number, local?: string): Promise<TransportConn>
  listen(host: string, port: number, onAccept: (conn: TransportConn) => void): Promise<TransportListener>
  /**
   * A UDP socket bound to host:port. With `remote` it is connected: `remote` (also conn.remote) is
   * its only destination and its only source; a datagram addressed elsewhere is dropped, counted.
   */
  udp(host: string, port: number, remote?: Addr | null): Promise<TransportConn>
}
