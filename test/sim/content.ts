// Self-checking content for the simulation. Nothing the applications write or the peers send needs
// storing: every byte derives from a few integers carried in the bytes themselves.
//
//   record (app -> transport):  u32 handle, u32 seq, u16 epoch, u16 length, then derived bytes.
//     `epoch` is the RE that accepted it; the world's ledger says which (seq, epoch, length) the
//     surviving history holds, so a record resent after a takeover is told from a new one.
//   chunk (peer -> app):        u16 peer id, u32 stream offset, u16 length, then derived bytes, so
//     a reader knows where in the peer's byte stream each chunk sits and can prove it gap-free.

export const RECORD_HEADER_BYTES = 12
export const CHUNK_HEADER_BYTES = 8

const recordByte = (handle: number, seq: number, epoch: number, k: number): number => (handle * 7 + seq * 13 + epoch * 29 + k * 31 + (k >>> 7)) & 0xff
const chunkByte = (peer: number, pos: number): number => (peer * 17 + pos * 131 + (pos >>> 8) * 7) & 0xff

export function makeRecord(handle: number, seq: number, epoch: number, length: number): Uint8Array {
  const out = new Uint8Array(length)
  const dv = new DataView(out.buffer)
  if (length >= RECORD_HEADER_BYTES) {
    dv.setUint32(0, handle, true)
    dv.setUint32(4, seq, true)
    dv.setUint16(8, epoch, true)
    dv.setUint16(10, length & 0xffff, true)
  }
  for (let k = RECORD_HEADER_BYTES; k < length; k++) out[k] = recordByte(handle, seq, epoch, k)
  return out
}

export interface RecordId {
  handle: number
  seq: number
  epoch: number
  length: number
}

/** Parses and checks a record; returns its identity, or a reason string when it is damaged. */
export function readRecord(data: Uint8Array): RecordId | string {
  if (data.length < RECORD_HEADER_BYTES) return `record of ${data.length} bytes is shorter than its header`
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength)
  const id = { handle: dv.getUint32(0, true), seq: dv.getUint32(4, true), epoch: dv.getUint16(8, true), length: dv.getUint16(10, true) }
  if (id.length !== (data.length & 0xffff)) return `record (${id.handle},${id.seq}) says ${id.length} bytes, has ${data.length}`
  for (let k = RECORD_HEADER_BYTES; k < data.length; k++) {
    if (data[k] !== recordByte(id.handle, id.seq, id.epoch, k)) return `record (${id.handle},${id.seq},e${id.epoch}) corrupt at byte ${k}`
  }
  return id
}

/**
 * Splits one read into the self-sized pieces it holds back to back (a u16 length at `lengthAt` in
 * each header) and parses each; a reason string for the first that does not fit or parse.
 */
function readPieces<T>(data: Uint8Array, headerBytes: number, lengthAt: number, what: string, parse: (piece: Uint8Array) => T | string): T[] | string {
  const out: T[] = []
  for (let at = 0; at < data.length; ) {
    if (data.length - at < headerBytes) return `${data.length - at} bytes at ${at} of a read are shorter than a ${what} header`
    const len = new DataView(data.buffer, data.byteOffset + at, headerBytes).getUint16(lengthAt, true)
    if (len < headerBytes || at + len > data.length) return `${what} at ${at} of a ${data.length}-byte read says ${len} bytes`
    const piece = parse(data.subarray(at, at + len))
    if (typeof piece === 'string') return piece
    out.push(piece)
    at += len
  }
  if (out.length === 0) return 'an empty read'
  return out
}

/**
 * Parses the records of one read from a stream connection: the chassis joins adjacent records into
 * one transport write (OutQueue), never splitting one, so a read holds whole records back to back.
 */
export function readRecords(data: Uint8Array): RecordId[] | string {
  return readPieces(data, RECORD_HEADER_BYTES, 10, 'record', readRecord)
}

export function makeChunk(peer: number, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length)
  const dv = new DataView(out.buffer)
  dv.setUint16(0, peer, true)
  dv.setUint32(2, offset, true)
  dv.setUint16(6, length, true)
  for (let k = CHUNK_HEADER_BYTES; k < length; k++) out[k] = chunkByte(peer, offset + k)
  return out
}

export interface ChunkId {
  peer: number
  offset: number
  length: number
}

/**
 * The peer's writes a stream read holds, in order. A read is whole writes joined: the memory
 * transport hands over what is waiting like a TCP receive, and the chassis joins queued chunks no
 * RE has yet; neither ever splits a write (their tests check that).
 */
export function readChunks(data: Uint8Array): ChunkId[] | string {
  return readPieces(data, CHUNK_HEADER_BYTES, 6, 'chunk', readChunk)
}

export function readChunk(data: Uint8Array): ChunkId | string {
  if (data.length < CHUNK_HEADER_BYTES) return `chunk of ${data.length} bytes is shorter than its header`
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength)
  const id = { peer: dv.getUint16(0, true), offset: dv.getUint32(2, true), length: dv.getUint16(6, true) }
  if (id.length !== data.length) return `chunk (${id.peer}@${id.offset}) says ${id.length} bytes, has ${data.length}`
  for (let k = CHUNK_HEADER_BYTES; k < data.length; k++) {
    if (data[k] !== chunkByte(id.peer, id.offset + k)) return `chunk (${id.peer}@${id.offset}) corrupt at byte ${k}`
  }
  return id
}
