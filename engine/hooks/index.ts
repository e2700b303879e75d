// Hooks: the socket layer's bind/unbind/listen/unlisten/connect/disconnect announcements
// (registry.ts), the live TCP connection table and its walker (connection-table.ts), and a
// replication policy built on them (replication-policy.ts).

export { HookRegistry, DEFAULT_MAX_HOOKS_PER_EVENT, MAX_HOOK_DEPTH } from './registry.ts'
export type { HookOptions, HookRegistryOptions, HookRegistryStats } from './registry.ts'
export { ConnectionTable, connectionKey, DEFAULT_MAX_CONNECTIONS } from './connection-table.ts'
export type { ConnectionTableStats, WalkFilter } from './connection-table.ts'
export { replicationPolicy, MAX_POLICY_PORTS } from './replication-policy.ts'
export type { PortMatch, ReplicationPolicy, ReplicationPolicyOptions, ReplicationPolicyStats } from './replication-policy.ts'
export * from './types.ts'
