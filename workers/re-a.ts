// Worker entry for RE slot A (primary at start). Entries hold no logic: see engine/re/worker-main.ts.
import { runRe } from '../engine/re/worker-main.ts'

await runRe()
