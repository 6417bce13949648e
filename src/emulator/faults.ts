import { isRecord, type Params } from './params.js'

/**
 * A way a Bot API call can go wrong on purpose: answer late, answer 429/500/REACTION_INVALID, or
 * drop the connection without an answer. `entities_rejected` answers "can't parse entities" and
 * hits only calls that carry parse_mode or entities, so the same call sent as plain text succeeds.
 */
export type Fault =
  | { readonly kind: 'latency'; readonly ms: number }
  | { readonly kind: 'rate_limit'; readonly retryAfter: number }
  | { readonly kind: 'server_error' }
  | { readonly kind: 'reaction_invalid' }
  | { readonly kind: 'entities_rejected' }
  | { readonly kind: 'refuse' }

/** A fault that replaces the answer (everything but latency). */
export type FailureFault = Exclude<Fault, { kind: 'latency' }>

export interface FaultOptions {
  /** How many calls the fault hits (a call it leaves alone does not count); unset means until clearFaults(). */
  readonly times?: number
}

/** What the faults say about one call: how long to stall, and whether to fail it instead. */
export interface FaultVerdict {
  readonly delayMs: number
  readonly failure: FailureFault | undefined
}

/** `'*'` matches every method, including file downloads. */
export const ANY_METHOD = '*'

// Each kind as a caller writes it: what parseFault accepts and what its error lists, from one table.
const FAULT_SHAPES: Readonly<Record<Fault['kind'], string>> = {
  latency: "{kind: 'latency', ms}",
  rate_limit: "{kind: 'rate_limit', retryAfter}",
  server_error: "{kind: 'server_error'}",
  reaction_invalid: "{kind: 'reaction_invalid'}",
  entities_rejected: "{kind: 'entities_rejected'}",
  refuse: "{kind: 'refuse'}",
}
const FORMATTING_PARAMS = ['parse_mode', 'entities', 'caption_entities'] as const

interface ArmedFault {
  readonly method: string
  readonly fault: Fault
  remaining: number
}

/**
 * The faults armed for the emulator. Every matching fault fires on a call: latencies add up, and
 * the oldest failure decides the answer.
 */
export class FaultTable {
  #armed: ArmedFault[] = []

  add(method: string, fault: Fault, options: FaultOptions = {}): void {
    validateFault(fault)
    const times = options.times ?? Number.POSITIVE_INFINITY
    if (!(times === Number.POSITIVE_INFINITY || (Number.isSafeInteger(times) && times > 0))) {
      throw new TypeError(`Fault "times" must be a positive integer (or left out for "until cleared"); got ${String(options.times)}`)
    }
    this.#armed.push({ method: method === ANY_METHOD ? ANY_METHOD : method.toLowerCase(), fault, remaining: times })
  }

  clear(): void {
    this.#armed = []
  }

  /** Consumes the faults matching `method` (any case) and this call's params; says what they do to it. */
  take(method: string, params: Params): FaultVerdict | undefined {
    if (this.#armed.length === 0) return undefined
    const key = method.toLowerCase()
    let delayMs = 0
    let failure: FailureFault | undefined
    let fired = false
    for (const armed of this.#armed) {
      if (armed.method !== ANY_METHOD && armed.method !== key) continue
      if (armed.fault.kind === 'entities_rejected' && !carriesFormatting(params)) continue
      if (armed.fault.kind === 'latency') {
        delayMs += armed.fault.ms
      } else if (failure === undefined) {
        failure = armed.fault
      } else {
        continue
      }
      armed.remaining -= 1
      fired = true
    }
    if (!fired) return undefined
    this.#armed = this.#armed.filter((armed) => armed.remaining > 0)
    return { delayMs, failure }
  }
}

/** Checks a fault that came from outside (the control API); throws a TypeError quoting it. */
export function parseFault(value: unknown): Fault {
  if (!isRecord(value) || typeof value['kind'] !== 'string' || !Object.hasOwn(FAULT_SHAPES, value['kind'])) {
    throw new TypeError(`A fault must be ${Object.values(FAULT_SHAPES).join(' | ')}; got ${JSON.stringify(value)}`)
  }
  const fault = value as Fault
  validateFault(fault)
  return fault
}

function validateFault(fault: Fault): void {
  if (fault.kind === 'latency' && !(Number.isFinite(fault.ms) && fault.ms >= 0)) {
    throw new TypeError(`A latency fault needs ms ≥ 0; got ${JSON.stringify(fault)}`)
  }
  if (fault.kind === 'rate_limit' && !(Number.isSafeInteger(fault.retryAfter) && fault.retryAfter > 0)) {
    throw new TypeError(`A rate_limit fault needs retryAfter as whole seconds ≥ 1; got ${JSON.stringify(fault)}`)
  }
}

// parse_mode, or a non-empty entities list: what a plain-text fallback leaves out.
function carriesFormatting(params: Params): boolean {
  return FORMATTING_PARAMS.some((name) => {
    const value = params[name]
    if (value === undefined || value === null || value === '' || value === '[]') return false
    return !(Array.isArray(value) && value.length === 0)
  })
}
