// The seed's socket-replication state bits. `SR_*` flags may combine (as socket state bits do);
// `SRI_*` are the init-handshake sub-states. The names stay the seed's so that a reader of the
// SDRL design recognises them in stats and traces.

export const SR = {
  SR_INIT_PRIMARY: 0x0001, // initializing replication, primary side
  SR_INIT_SECONDARY: 0x0002, // initializing replication, secondary side
  SR_REP_PRIMARY: 0x0004, // replication established, primary socket
  SR_REP_SECONDARY: 0x0008, // replication established, secondary socket pair
  SR_REP_FUNCTIONAL: 0x0010, // replication active, no failure
  SR_SECONDARY_SND_SOCK: 0x0020, // snoop socket for what the primary sent
  SR_SECONDARY_RCV_SOCK: 0x0040, // snoop socket for what the primary received
  SR_ACK_PENDING: 0x0080, // an ack is awaited in the current ack-timer window
  SR_DEBUG: 0x8000,
} as const

export const SRI = {
  SRI_SETPARAMS: 0x0001, // secondary: parameters received
  SRI_SETRCVDATA: 0x0002, // secondary: pre-existing receive data received
  SRI_SETSNDDATA: 0x0004, // secondary: pre-existing send data received
  // The primary sends the whole handshake at once (primary.ts): its SEND bits follow the INIT_ACKs.
  SRI_SENDPARAMS: 0x0010, // primary: the whole handshake queued, awaiting the PARAMS ack
  SRI_SENDRCVDATA: 0x0020, // primary: parameters acked, awaiting the RCVDATA ack
  SRI_SENDSNDDATA: 0x0040, // primary: pre-existing receive data acked, awaiting the SNDDATA ack
  SRI_INITINPROGRESS: 0x0100,
  SRI_DONE: 0x0200,
} as const

/** Init steps acknowledged by INIT_ACK (carried in the header's `seq`). */
export const InitStep = { PARAMS: 1, RCVDATA: 2, SNDDATA: 3, DONE: 4 } as const
export type InitStep = (typeof InitStep)[keyof typeof InitStep]

function names(table: Record<string, number>, bits: number): string[] {
  const out: string[] = []
  for (const [name, bit] of Object.entries(table)) if (bits & bit) out.push(name)
  return out
}

export const srNames = (bits: number): string[] => names(SR, bits)
export const sriNames = (bits: number): string[] => names(SRI, bits)
