// The one error class of nsr-engine. Every failure a caller can act on carries a fixed string
// `code` in errno style, so callers branch on `err.code`, never on message text. The class is
// branded with a registry symbol so `instanceof NsrError` holds across copies of the package
// (two bundles, a worker that loaded its own copy).

export const ErrorCode = {
  EAGAIN: 'EAGAIN', // no room now: retry after 'writable'
  EMSGSIZE: 'EMSGSIZE', // the record can never fit
  ENOBUFS: 'ENOBUFS', // the secondary said the socket is congested
  ENOTCONN: 'ENOTCONN', // the socket has no connection (yet, or any more)
  EINVAL: 'EINVAL', // an argument or a call in the wrong state
  EPIPE: 'EPIPE', // writing after the write side closed
  ECONNRESET: 'ECONNRESET', // the peer reset the connection
  ECLOSED: 'ECLOSED', // the channel or object was closed
  EBADMSG: 'EBADMSG', // a malformed wire message
  ETIMEDOUT: 'ETIMEDOUT', // a timer ran out (ack, keepalive, request)
  ENOENT: 'ENOENT', // no such handle or object
  EEXIST: 'EEXIST', // already exists (handle, bind)
  EADDRINUSE: 'EADDRINUSE',
  ECONNREFUSED: 'ECONNREFUSED',
} as const
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode]

const brand = Symbol.for('nsr-engine.NsrError')

export class NsrError extends Error {
  readonly code: ErrorCode
  readonly [brand] = true

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options)
    this.name = 'NsrError'
    this.code = code
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[brand] === true
  }
}

/** Programmer errors: a broken pre- or post-condition. Never used for bad input from outside. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`)
}

/**
 * A flow-control refusal (EAGAIN, ENOBUFS): expected and frequent on a hot path, not a bug, so no
 * stack trace is captured (capturing one costs microseconds per refused write).
 */
export function refusal(code: 'EAGAIN' | 'ENOBUFS', message: string): NsrError {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return new NsrError(code, message)
  } finally {
    Error.stackTraceLimit = limit
  }
}
