/**
 * The nearest-rank percentile of `values` (p in 0–100): p99 of 100 values is the 99th smallest,
 * never an interpolation; p100 is the largest. Undefined for no values.
 */
export function percentile(values: readonly number[], p: number): number | undefined {
  return percentileOfSorted([...values].sort((a, b) => a - b), p)
}

/** {@link percentile} of values already sorted ascending, for several percentiles of one sample. */
export function percentileOfSorted(sorted: readonly number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}
