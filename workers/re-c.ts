// Worker entry for RE slot C (the warm spare at start). Entries hold no logic: see engine/re/worker-main.ts.
import { runRe } from '../engine/re/worker-main.ts'

await runRe()
