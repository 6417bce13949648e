// Minimal types for the parts of autocannon's programmatic API the benchmark uses.
declare module 'autocannon' {
  interface Request {
    method?: string
    path?: string
    headers?: Record<string, string>
    body?: string
    setupRequest?: (request: Request, context: Record<string, unknown>) => Request
  }
  interface Options {
    url: string
    connections?: number
    pipelining?: number
    duration?: number
    /** Stop after this many requests (overrides duration). */
    amount?: number
    /** Requests per second across all connections (no limit by default). */
    overallRate?: number
    method?: string
    headers?: Record<string, string>
    requests?: Request[]
  }
  interface Histogram {
    average: number
    mean: number
    p50: number
    p99: number
    max: number
  }
  interface Result {
    requests: Histogram & { total: number }
    latency: Histogram
    non2xx: number
    errors: number
    timeouts: number
    '2xx': number
  }
  export type { Result }
  function autocannon(options: Options): Promise<Result>
  export default autocannon
}
