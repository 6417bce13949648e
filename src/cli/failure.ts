/**
 * A command could not do its job for a reason outside the command line: Telegram unreachable or
 * refusing the call. The CLI prints the message as one line and exits 1 (2 is for configuration).
 */
export class CommandFailed extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'CommandFailed'
  }
}
