// Bad input for invariant 7: corrupt frames, unknown handles and messages no state accepts on any
// of the six links, and API calls in the wrong state. Each injected frame must be rejected and
// counted by whoever reads it (the link's validate(), an RE, the chassis), and nothing may throw.

import { NsrError } from '../../engine/errors.ts'
import { MsgType } from '../../engine/protocol/header.ts'
import { SERVE_PORT } from './app.ts'
import { encodeFrame, type SimLink } from './link.ts'
import type { World } from './world.ts'

/** Handles no socket ever has. */
export const BOGUS_HANDLE = 0x7f000000

/** Invariant 7: corrupt frames, unknown handles and messages in the wrong state, on any link. */
export function injectBadInput(w: World): void {
  const rng = w.rng
  const P = w.primary
  const S = w.secondary
  w.stats.injections++
  const links: SimLink[] = [P.toChassis, P.fromChassis]
  if (S) links.push(S.toChassis, S.fromChassis)
  if (P.toPeer) links.push(P.toPeer)
  if (S?.toPeer) links.push(S.toPeer)
  if (rng.chance(0.2)) return misuseApi(w)
  const link = rng.pick(links)
  const kind = rng.int(0, 2)
  if (kind === 0) {
    // A frame whose header is damaged in one byte: validate() must catch it.
    const f = encodeFrame(MsgType.ACK, 0, 1, 2, 3, 4, new Uint8Array(rng.int(0, 8)))
    const at = rng.int(0, 31)
    f[at] ^= 1 << rng.int(0, 7)
    link.inject(f)
    return
  }
  let frame: Uint8Array
  const toChassis = link === P.toChassis || link === S?.toChassis
  const toRe = link === P.fromChassis || link === S?.fromChassis
  if (toChassis) {
    if (link === P.toChassis && kind === 1) frame = encodeFrame(MsgType.TX, 0, BOGUS_HANDLE + rng.int(0, 9), 1, 0, 0, new Uint8Array(16))
    else frame = encodeFrame(MsgType.CMD, 0, 0, 99, 0, 0, new Uint8Array([0xc1, 0xc1, 0xc1])) // undecodable msgpack
    link.inject(frame)
    return
  }
  if (toRe) {
    link.inject(encodeFrame(MsgType.RX, 0, BOGUS_HANDLE + rng.int(0, 9), 0, 0, 0, new Uint8Array(9)))
    return
  }
  // KKCM: an unknown handle, or a message no state accepts.
  const toPrimary = link === S?.toPeer
  const handles = [...(toPrimary ? P.re.sockets.keys() : (S?.re.pairs.keys() ?? []))]
  const h = kind === 1 || !handles.length ? BOGUS_HANDLE + rng.int(0, 9) : rng.pick(handles)
  if (toPrimary) {
    const choice = rng.int(0, 2)
    if (choice === 0) frame = encodeFrame(MsgType.ACK, 0, h, 0, 0x40000000, 100, null) // ack beyond anything sent
    else if (choice === 1) frame = encodeFrame(MsgType.INIT_ACK, 0, h, 77, 0, 0, null) // no such init step
    else frame = encodeFrame(MsgType.REPLICATE, 0, h, 1, 0, 0, new Uint8Array(4)) // wrong direction
  } else {
    const choice = rng.int(0, 1)
    if (choice === 0) frame = encodeFrame(MsgType.REPLICATE, 0, h, 0x40000000, 0, 0, new Uint8Array(12)) // out of order
    else frame = encodeFrame(MsgType.ACK, 0, h, 1, 1, 1, null) // wrong direction
  }
  link.inject(frame)
}

/** Invariant 7, API side: a call in the wrong state throws an NsrError with a code, and changes nothing. */
function misuseApi(w: World): void {
  const P = w.primary
  const S = w.secondary
  const calls: Array<[string, string, () => unknown]> = [
    ['split() on the primary', 'EINVAL', () => P.re.split(1)],
    ['merge() of an unknown handle', 'ENOENT', () => P.re.merge(BOGUS_HANDLE)],
    ['promote() of the primary', 'EINVAL', () => P.re.promote({ sockets: {} })],
  ]
  if (P.app.listener) calls.push(['write() on a listener', 'EINVAL', () => P.app.listener!.write(new Uint8Array(1))])
  if (S) {
    calls.push(['connect() on the secondary', 'EINVAL', () => S.re.connect({ port: SERVE_PORT })])
    const ap = [...S.app.pairs.values()][0]
    if (ap) calls.push(['write() on a snoop socket', 'EINVAL', () => ap.pair.send.write()])
  }
  const [what, code, call] = w.rng.pick(calls)
  try {
    call()
  } catch (err) {
    if (!(err instanceof NsrError) || err.code !== code) w.violation(`${what} threw ${String(err)}, not NsrError ${code}`)
    return
  }
  w.violation(`${what} did not throw`)
}

/** Invariant 7: an injected frame is rejected and counted somewhere, and nothing throws. */
export function watchInjected(w: World, link: SimLink, counted: () => number): void {
  link.onInjected = (handle) => {
    const before = counted() + link.rejects.total
    handle()
    w.injected.delivered++
    if (counted() + link.rejects.total <= before) w.violation(`a bad frame injected on ${link.name} was accepted without being counted`)
  }
}
