// Worker entry for RE slot B (secondary at start). Entries hold no logic: see engine/re/worker-main.ts.
import { runRe } from '../engine/re/worker-main.ts'

await runRe()
