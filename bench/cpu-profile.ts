// Where a service's CPU went: reads a .cpuprofile written by `npm run bench -- --cpu-prof DIR` and
// prints the busy time by file of the service and by package (inclusive), by part of the webhook's
// path (exclusive: each sample counted once), and the functions with the most time of their own.
//   node build/bench/cpu-profile.js FILE.cpuprofile [--per N]   (--per: divide by N updates, in µs)
import fs from 'node:fs'
import { parseArgs } from 'node:util'
import { summarizeProfile, type Profile } from './profile-parts.js'

const TOP = 25

const { values, positionals } = parseArgs({ allowPositionals: true, options: { per: { type: 'string' } } })
const file = positionals[0]
if (file === undefined) {
  process.stderr.write('usage: node build/bench/cpu-profile.js FILE.cpuprofile [--per N]\n')
  process.exit(2)
}
const per = values.per === undefined ? undefined : Number(values.per)
const { busyUs, byRoom, byPart, bySelf } = summarizeProfile(JSON.parse(fs.readFileSync(file, 'utf8')) as Profile)
const show = (us: number): string =>
  `${(per ? `${(us / per).toFixed(1)} µs/update` : `${(us / 1000).toFixed(0)} ms`).padStart(16)} ${((100 * us) / busyUs).toFixed(1).padStart(5)} %`
const top = (map: Map<string, number>): string[] => [...map].sort((a, b) => b[1] - a[1]).slice(0, TOP).map(([name, us]) => `${show(us)}  ${name}`)
process.stdout.write([`busy: ${show(busyUs)}`, '', 'by room (inclusive):', ...top(byRoom), '', 'by part of the webhook path (exclusive):', ...top(byPart), '', 'by function (self):', ...top(bySelf), ''].join('\n'))
