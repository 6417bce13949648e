import { percentileOfSorted } from '../src/percentile.js'

/** A sample's distribution, in the sample's unit. */
export interface Summary {
  /** Every observation, the missing ones included. */
  readonly n: number
  /** Observations that never completed (a lost 👀, a failed probe): ranked as infinitely slow. */
  readonly missing: number
  readonly p50: number
  readonly p99: number
  readonly max: number
  readonly mean: number
}

/**
 * Nearest-rank percentiles: p99 of 100 values is the 99th smallest, never an interpolation.
 * `missing` observations rank above every value (as infinitely slow), so losing them can only make
 * a percentile worse, never better; the mean is of the completed values.
 */
export function summarize(values: readonly number[], missing = 0): Summary {
  if (values.length === 0 && missing === 0) return { n: 0, missing: 0, p50: Number.NaN, p99: Number.NaN, max: Number.NaN, mean: Number.NaN }
  const sorted = [...values].sort((a, b) => a - b)
  for (let i = 0; i < missing; i++) sorted.push(Number.POSITIVE_INFINITY)
  const rank = (p: number): number => percentileOfSorted(sorted, p) as number
  const mean = values.length === 0 ? Number.NaN : values.reduce((sum, value) => sum + value, 0) / values.length
  return { n: sorted.length, missing, p50: rank(50), p99: rank(99), max: sorted.at(-1) as number, mean }
}

export function median(values: readonly number[]): number {
  return summarize(values).p50
}

/** "1.23" for small numbers, "123" for large ones; "∞" for a rank that fell on a missing observation; "–" when there is nothing to show. */
export function fmt(value: number, digits = value < 10 ? 2 : value < 100 ? 1 : 0): string {
  if (value === Number.POSITIVE_INFINITY) return '∞'
  return Number.isFinite(value) ? value.toFixed(digits) : '–'
}

/** A percentile with the observations that went missing beside it: "12.3 ms" or "12.3 ms (4 of 1000 missing)". */
export function withMissing(summary: Summary, value: number, unit = 'ms'): string {
  const shown = `${fmt(value)}${value === Number.POSITIVE_INFINITY ? '' : ` ${unit}`}`
  return summary.missing === 0 ? shown : `${shown} (${summary.missing} of ${summary.n} missing)`
}
