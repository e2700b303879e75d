// KKCM channel: a duplex link between two threads made of two rings (a->b and b->a) in ONE
// SharedArrayBuffer. One thread calls createChannelSab() and hands the buffer to the other (via
// workerData or postMessage); each opens its own side with openEndpoint(). Nothing else is shared.

import { NsrError } from '../errors.ts'
import { Ring, ringSabBytes, type RingOptions } from './ring.ts'

export type Side = 'a' | 'b'

export interface Endpoint {
  readonly side: Side
  /** Frames this side sends. */
  readonly tx: Ring
  /** Frames this side receives. */
  readonly rx: Ring
  /** Closes both directions; the peer sees both rings closed. */
  close(): void
  readonly closed: boolean
}

/** Bytes of a channel buffer whose two rings each hold `capacityBytes` of data. */
export function channelSabBytes(capacityBytes: number): number {
  return 2 * ringSabBytes(capacityBytes)
}

/** Allocates and lays out a channel: ring a->b at offset 0, ring b->a right after it. */
export function createChannelSab(capacityBytes: number): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(channelSabBytes(capacityBytes))
  Ring.format(sab, 0, capacityBytes)
  Ring.format(sab, ringSabBytes(capacityBytes), capacityBytes)
  return sab
}

/** Opens one side of a channel that createChannelSab() laid out; any thread may call it. */
export function openEndpoint(sab: SharedArrayBuffer, side: Side, opts: RingOptions = {}): Endpoint {
  if (side !== 'a' && side !== 'b') throw new NsrError('EINVAL', `channel side must be 'a' or 'b', got ${String(side)}`)
  const ab = Ring.attach(sab, 0, opts)
  const ba = Ring.attach(sab, ringSabBytes(ab.capacity), opts)
  const tx = side === 'a' ? ab : ba
  const rx = side === 'a' ? ba : ab
  return {
    side,
    tx,
    rx,
    close() {
      tx.close()
      rx.close()
    },
    get closed() {
      return tx.closed && rx.closed
    },
  }
}

/** Both endpoints in one thread (tests, single-thread simulations). */
export function createChannel(capacityBytes: number, opts: RingOptions = {}): { sab: SharedArrayBuffer; a: Endpoint; b: Endpoint } {
  const sab = createChannelSab(capacityBytes)
  return { sab, a: openEndpoint(sab, 'a', opts), b: openEndpoint(sab, 'b', opts) }
}
