// A V8 CPU profile summed up: the busy time by file of the service and by package (inclusive: a
// file's time includes what it called), by part of the webhook's path (exclusive: each sample
// counted once), and by function (self). cpu-profile.ts prints it; the intake benchmark reports
// the parts.

interface ProfileNode {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly children?: readonly number[]
}

export interface Profile {
  readonly nodes: readonly ProfileNode[]
  readonly samples: readonly number[]
  readonly timeDeltas: readonly number[]
}

/** The room a frame belongs to: a file of the service, a package, or a Node.js module. */
function roomOf(url: string): string | undefined {
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/u.exec(url)
  if (pkg) return `package ${pkg[1]}`
  if (url.includes('/dist/')) return `dist/${url.split('/dist/')[1]}`
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`
  return undefined
}

// The parts of the webhook's path, first match wins for a frame; a sample belongs to the part of the
// frame nearest its leaf that matches one (the 👀's socket write to the 👀, the answer's to Fastify).
const PARTS: readonly (readonly [string, (url: string, name: string) => boolean])[] = [
  ['inbox write (store/: SQLite, group commit)', (url) => /\/dist\/store\/|better-sqlite3/u.test(url)],
  ['👀 call (telegram/client, grammY, node-fetch, outgoing HTTP)', (url) => /\/dist\/telegram\/(client|acks)\.js|node_modules\/(grammy|node-fetch|abort-controller|event-target-shim)\/|^node:_http_(client|agent)/u.test(url)],
  ['classification (classify, access, nulls)', (url, name) => /\/dist\/intake\/(classify|access)\.js|\/dist\/telegram\/message-kinds\.js/u.test(url) || (name === 'triage' && url.endsWith('/dist/intake/intake.js'))],
  ['metrics (prom-client)', (url) => /prom-client|\/dist\/metrics\.js/u.test(url)],
  ['logging (pino)', (url) => /node_modules\/(pino|sonic-boom)\/|\/dist\/log\.js/u.test(url)],
  ['rate limit and secret check', (url) => /@fastify\/rate-limit|\/dist\/intake\/verify\.js/u.test(url)],
  ['dispatcher (enqueue)', (url) => url.includes('/dist/dispatch/')],
  ['the route and intake (app, coordinator, intake)', (url) => /\/dist\/(app|coordinator|intake\/intake|intake\/service-commands)\.js|\/bench\/essential\.js/u.test(url)],
  ['timers (loop-stall watch, health, server)', (url) => /\/dist\/(loop-stalls|health|server)\.js/u.test(url)],
  ['Fastify and incoming HTTP (routing, hooks, body, reply)', (url) => /node_modules\/(fastify|find-my-way|secure-json-parse|avvio|@fastify\/[^/]+|fast-json-stringify|toad-cache)\/|^node:_http_(server|incoming)/u.test(url)],
  ['garbage collection', (_url, name) => name === '(garbage collector)'],
]
const OTHER_PART = 'other (socket I/O, event loop, microtasks, startup)'

function partOf(byId: ReadonlyMap<number, ProfileNode>, parent: ReadonlyMap<number, number>, leaf: number): string {
  for (let at: number | undefined = leaf; at !== undefined; at = parent.get(at)) {
    const frame = byId.get(at)?.callFrame
    const part = frame && PARTS.find(([, matches]) => matches(frame.url, frame.functionName))
    if (part) return part[0]
  }
  return OTHER_PART
}

export interface ProfileSummary {
  /** Microseconds sampled busy (not idle). */
  readonly busyUs: number
  readonly byRoom: Map<string, number>
  readonly byPart: Map<string, number>
  readonly bySelf: Map<string, number>
}

export function summarizeProfile(profile: Profile): ProfileSummary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  const timeOf = new Map<number, number>()
  profile.samples.forEach((id, i) => timeOf.set(id, (timeOf.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)))
  const byRoom = new Map<string, number>()
  const bySelf = new Map<string, number>()
  const byPart = new Map<string, number>()
  let busyUs = 0
  for (const [id, us] of timeOf) {
    const frame = byId.get(id)?.callFrame
    if (!frame || frame.functionName === '(idle)') continue
    busyUs += us
    const self = `${frame.functionName || '(anonymous)'} ${roomOf(frame.url) ?? frame.url}:${frame.lineNumber + 1}`
    bySelf.set(self, (bySelf.get(self) ?? 0) + us)
    const part = partOf(byId, parent, id)
    byPart.set(part, (byPart.get(part) ?? 0) + us)
    const seen = new Set<string>()
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const room = roomOf(byId.get(at)?.callFrame.url ?? '')
      if (room === undefined || seen.has(room)) continue
      seen.add(room)
      byRoom.set(room, (byRoom.get(room) ?? 0) + us)
    }
  }
  return { busyUs, byRoom, byPart, bySelf }
}

