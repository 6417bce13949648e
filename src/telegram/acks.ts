/**
 * The receipt reactions still on their way, by update_id, so that a later reaction on the same
 * message (the brain's, the final one) is sent only after the 👀 settled and cannot land under it.
 * An entry lives as long as its call: at most the reaction's few-second timeout.
 */
export class PendingAcks {
  #pending = new Map<number, Promise<void>>()

  track(updateId: number, call: Promise<unknown>): void {
    const settled = call.then(
      () => undefined,
      () => undefined,
    )
    this.#pending.set(updateId, settled)
    void settled.then(() => {
      if (this.#pending.get(updateId) === settled) this.#pending.delete(updateId)
    })
  }

  /** Resolves once the receipt reaction of `updateId` has succeeded or failed (at once if none is pending). */
  settled(updateId: number): Promise<void> {
    return this.#pending.get(updateId) ?? Promise.resolve()
  }
}
