// KSync: an RE programs next hops and routes into the chassis Fib (client.ts, state.ts), the
// chassis answers and audits (fib.ts); wire.ts is the vocabulary between them.

export { KSyncClient, KSyncPending } from './client.ts'
export type { KSyncClientOptions, KSyncClientStats, KSyncEntryView, KSyncEvent } from './client.ts'
export { Fib } from './fib.ts'
export type { AuditResult, FibChurn, FibEntryView, FibOptions, FibSnapshot, FibStats, SweptEntry } from './fib.ts'
export { KSyncState, KSYNC_TRANSITIONS, isLegalTransition, allTransitions } from './state.ts'
export { IndexTable } from './index-table.ts'
export * from './wire.ts'
