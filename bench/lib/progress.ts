// Progress lines for long benchmark runs, on stderr so that stdout stays for results: each line
// carries the seconds since the run started and the area.

const started = performance.now()

export type Progress = (message: string) => void

export function progress(area: string): Progress {
  return (message: string) => {
    const t = ((performance.now() - started) / 1000).toFixed(1).padStart(5)
    process.stderr.write(`[${t}s] ${area}: ${message}\n`)
  }
}
