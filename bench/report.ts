// docs/BENCHMARKS.md: the machine, how to re-run, the targets, then each benchmark's method and numbers.
import os from 'node:os'

/** One benchmark's part of the report. */
export interface Section {
  readonly title: string
  /** What it measures and how, in two or three lines. */
  readonly method: string
  /** Tables and notes, already Markdown. */
  readonly body: string
  readonly targets: readonly TargetResult[]
}

/** A target from the issue, and whether this run met it. */
export interface TargetResult {
  readonly target: string
  readonly measured: string
  readonly met: boolean
  /**
   * When missed: what else this same run measured that bears on it (ratios, shares, counts), stated
   * as numbers from the run, never as a fixed explanation.
   */
  readonly whenMissed?: string
}

/** A Markdown table, padded so it also reads as plain text; the first column is left-aligned. */
export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const all = [head, ...rows]
  const widths = head.map((_, i) => Math.max(3, ...all.map((row) => [...(row[i] ?? '')].length)))
  const pad = (cell: string, i: number): string => {
    const space = ' '.repeat(Math.max(0, (widths[i] ?? 0) - [...cell].length))
    return i === 0 ? cell + space : space + cell
  }
  const line = (row: readonly string[]): string => `| ${row.map(pad).join(' | ')} |`
  const rule = `|${widths.map((w, i) => (i === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`
  return [line(head), rule, ...rows.map(line)].join('\n')
}

export const verdict = (met: boolean): string => (met ? 'met' : '**not met**')

export function machine(): string {
  const cpus = os.cpus()
  return `${cpus[0]?.model.trim() ?? 'unknown CPU'} × ${cpus.length}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${os.type()} ${os.release()}`
}

export interface ReportOptions {
  readonly sections: readonly Section[]
  readonly command: string
  readonly elapsedS: number
  /** The 1-minute load average before and after the run. */
  readonly loadAverage: readonly [number, number]
}

/** Every section's targets in one table. */
export function targetTable(sections: readonly Section[]): string {
  const targets = sections.flatMap((section) => section.targets)
  if (targets.length === 0) return 'No target was measured in this run.'
  return table(['target', 'measured', 'verdict'], targets.map((t) => [t.target, t.measured, verdict(t.met)]))
}

export function renderReport({ sections, command, elapsedS, loadAverage }: ReportOptions): string {
  const body = sections.map((section) => `## ${section.title}\n\n${section.method}\n\n${section.body}`).join('\n\n')
  return `# Benchmarks

What the coordinator costs and how it behaves under load, each number beside the bare minimum of
the same work measured in the same run on the same machine.

- **Machine:** ${machine()}
- **Node:** ${process.version}
- **Date:** ${new Date().toISOString().slice(0, 10)}
- **Run:** \`${command}\`, ${Math.round(elapsedS)} s; 1-minute load average ${loadAverage.map((l) => l.toFixed(2)).join(' before, ')} after
- Everything runs on loopback on this one machine: load generator, service, emulator and brains share its cores.
- **Re-run:** \`npm run bench\` (all of it, about ${Math.max(1, Math.round(elapsedS / 60))} min). For a quick look:
  \`npm run bench -- --only intake,ack --duration 3\`. \`--only\` takes intake, ack, hol,
  memory, backlog, dispatch, recovery, cluster; \`--hol-brain-s S\`, \`--memory-chats N\` and \`--backlog N\` shrink those three; \`--cpu-prof DIR\`
  writes the service processes' CPU profiles (\`node build/bench/cpu-profile.js FILE\` sums one up); \`--node-flags="…"\`
  starts every service with those Node flags, \`--service-env="NAME=value …"\` with those variables; a partial run writes a
  report only with \`--out FILE\`.

## Targets

${targetTable(sections)}
${missedTargets(sections)}
${body}
`
}

/** The missed targets with their own run's related numbers; nothing at all when every target was met. */
export function missedTargets(sections: readonly Section[]): string {
  const missed = sections.flatMap((section) => section.targets).filter((target) => !target.met)
  if (missed.length === 0) return ''
  const lines = missed.map((target) => `- **${target.target}**: ${target.measured}.${target.whenMissed ? ` ${target.whenMissed}` : ''}`)
  return `\n### Missed in this run\n\n${lines.join('\n')}\n`
}
