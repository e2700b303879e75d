import { defineConfig } from 'vitest/config'

// Real workers and real sockets share two cores: keep files in a few forks, and give the
// long soak tests room. Individual suites set tighter timeouts where they can.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
})
