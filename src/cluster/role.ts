/** What a host of the Postgres mode runs: intake (the webhook), worker (brains), or both. */
export type Role = 'all' | 'intake' | 'worker'
export const ROLES: readonly Role[] = ['all', 'intake', 'worker']

/** The ROLE of `serve --role`, checked. */
export function parseRole(value: string | undefined): Role | undefined {
  return ROLES.find((role) => role === value)
}
