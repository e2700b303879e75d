// KKCM: the kernel-to-kernel communication module of nsr-engine, here thread-to-thread. Rings of
// whole frames on a SharedArrayBuffer, duplex channels of two rings, and the message framing every
// part of the engine uses on them.

export * from './ring.ts'
export * from './channel.ts'
export * from './message.ts'
