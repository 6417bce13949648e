import { percentileOfSorted } from '../percentile.js'

/** A sample's distribution, in the sample's unit. */
export interface Summary {
  readonly n: number
  readonly p50: number
  readonly p99: number
  readonly max: number
  readonly mean: number
}

/** Nearest-rank percentiles: p99 of 100 values is the 99th smallest, never an interpolation. */
export function summarize(values: readonly number[]): Summary {
  if (values.length === 0) return { n: 0, p50: Number.NaN, p99: Number.NaN, max: Number.NaN, mean: Number.NaN }
  const sorted = [...values].sort((a, b) => a - b)
  const rank = (p: number): number => percentileOfSorted(sorted, p) as number
  const mean = sorted.reduce((sum, value) => sum + value, 0) / sorted.length
  return { n: sorted.length, p50: rank(50), p99: rank(99), max: sorted.at(-1) as number, mean }
}

export function median(values: readonly number[]): number {
  return summarize(values).p50
}

/** "1.23" for small numbers, "123" for large ones; "–" when there is nothing to show. */
export function fmt(value: number, digits = value < 10 ? 2 : value < 100 ? 1 : 0): string {
  return Number.isFinite(value) ? value.toFixed(digits) : '–'
}
