// nsr-engine's public surface: what applications, tests and examples import.
export { Chassis, type ChassisOptions, type FailoverEvent } from './chassis/chassis.ts'
export { NsrError, ErrorCode } from './errors.ts'
export { RoutingEngine, type Role, type ReOptions } from './re/re.ts'
export { Socket } from './socket/socket.ts'
export { SnoopPair, SnoopSocket } from './sdrl/secondary.ts'
export { MemoryNetwork, MemoryPeer } from './chassis/memory.ts'
export { SR, SRI, srNames, sriNames } from './sdrl/flags.ts'
export { systemClock, ManualClock, Timer, type Clock } from './clock.ts'
