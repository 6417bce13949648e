import { parseRole, ROLES, type Role } from '../cluster/role.js'

/** A mistake on the command line; the CLI prints the message as one line and exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

/** `serve [--role all|intake|worker]`. */
export function parseServeArgs(args: readonly string[]): Role {
  if (args.length === 0) return 'all'
  const [flag, value, ...rest] = args
  const role = flag === '--role' ? parseRole(value) : undefined
  if (role === undefined || rest.length > 0) throw new UsageError(`serve takes --role ${ROLES.join('|')}; got: ${args.join(' ')}`)
  return role
}
