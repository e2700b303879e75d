// Bench application for resync: a replicated in-memory listener whose connections are never read,
// so whatever a peer sends stays in the receive buffer and is pre-existing data for the next
// secondary's handshake. The secondary does not read its snoop pairs either.
import type { RoutingEngine } from '../../engine/re/re.ts'

export default function app(re: RoutingEngine): Promise<void> | void {
  const port = (re as unknown as { options: { port: number } }).options.port
  if (re.role === 'primary') return re.listen({ port, replicate: true }).then(() => {})
}
