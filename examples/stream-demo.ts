// The failover demo, on the embedded in-memory transport (needs nothing installed): a peer streams
// numbered lines into a replicated connection while the application streams numbered records back;
// the primary RE is killed several times and switched over gracefully, and the peer checks that its
// stream never skipped, repeated or reordered a record and that the application never lost a line.
// Run: npx tsx examples/stream-demo.ts [--kills N --switchovers N]
// (It was `npm run demo` before the BGP failover demo, examples/demo.ts, took that name.)
import { Chassis } from '../engine/index.ts'
import { filler, fillerLength } from '../test/fixtures/stream-app.ts'

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? Number(process.argv[i + 1]) : dflt
}
const KILLS = arg('kills', 5)
const SWITCHOVERS = arg('switchovers', 2)
const SIZE = 200

const chassis = await Chassis.start({
  app: new URL('../test/fixtures/stream-app.ts', import.meta.url),
  appOptions: { port: 179, total: 1e12, size: SIZE },
  re: { deadIntervalMs: 5000 },
  deadIntervalMs: 5000,
})
const peer = chassis.memory.dial(179)
peer.keepReceived = false
let next = 1
let lastLine = 0
let errors = 0
let partial = ''
peer.on('data', (d: Uint8Array) => {
  let s = partial + Buffer.from(d).toString('latin1')
  let i: number
  while ((i = s.indexOf('\n')) >= 0) {
    const [seq, last, gaps, fill] = s.slice(0, i).split(':')
    if (Number(seq) !== next || fill !== filler(next, fillerLength(next, SIZE)) || Number(last) < lastLine || gaps !== '0') errors++
    lastLine = Math.max(lastLine, Number(last))
    next = Number(seq) + 1
    s = s.slice(i + 1)
  }
  partial = s
})
let sent = 0
const writeLines = (): void => {
  for (;;) {
    if (!peer.write(Buffer.from(`${String(++sent).padStart(8, '0')}\n`))) return void peer.once('drain', writeLines)
    if (sent % 64 === 0) return void setImmediate(writeLines)
  }
}
writeLines()
const line = (s: string): void => console.log(s)
while (chassis.core.sync.total < 2) await new Promise((r) => setTimeout(r, 5))
await chassis.ready()
line(`session up: replicated connection on in-memory port 179, primary ${chassis.primary!.id}, secondary ${chassis.secondary!.id}`)
const t0 = performance.now()
const plan = [...Array(KILLS).fill('kill'), ...Array(SWITCHOVERS).fill('switchover')]
for (let k = 0; k < plan.length; k++) {
  await new Promise((r) => setTimeout(r, 300))
  await chassis.ready(20_000)
  const from = chassis.primary!.id
  const before = next - 1
  if (plan[k] === 'kill') await chassis.kill('primary')
  else await chassis.switchover()
  const ev = chassis.failovers.at(-1)!
  await chassis.ready(20_000)
  line(
    `${plan[k] === 'kill' ? 'killed primary' : 'switched over '} ${from} -> ${ev.to}: takeover ${ev.takeoverMs.toFixed(1)} ms, ` +
      `records ${before} -> ${next - 1}, lines in ${sent}, secondary back: ${chassis.secondary!.id}, errors ${errors}`,
  )
}
const settle = performance.now() + 2000
while ((lastLine < sent - 1000 || performance.now() < settle) && performance.now() - settle < 10_000) await new Promise((r) => setTimeout(r, 20))
const s = await chassis.stats()
const c = s.chassis.counters
const ok = errors === 0 && c.txDuplicates === 0 && c.txGaps === 0 && s.primary!.counters.resumeGaps === 0
line(
  `${ok ? 'PASS' : 'FAIL'}: ${plan.length} failovers in ${((performance.now() - t0) / 1000).toFixed(1)} s; the peer got ${next - 1} records in order ` +
    `with ${errors} errors (duplicates ${c.txDuplicates}, gaps ${c.txGaps}); the application saw every line up to ${lastLine} of ${sent} sent`,
)
await chassis.close()
process.exit(ok ? 0 : 1)

// A run on the 2-core machine prints (figures vary; takeover is still far above its target, see README):
// session up: replicated connection on in-memory port 179, primary re1, secondary re2
// killed primary re1 -> re2: takeover 149.2 ms, records 2425 -> 44000, lines in 139840, secondary back: re3, errors 0
// ...
// switched over  re7 -> re8: takeover 114.8 ms, records 227037 -> 263848, lines in 722368, secondary back: re9, errors 0
// PASS: 7 failovers in 39.4 s; the peer got 361614 records in order with 0 errors (duplicates 0, gaps 0); the application saw every line up to 961730 of 1014656 sent
