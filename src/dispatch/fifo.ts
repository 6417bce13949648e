// Compact the array once this many taken items sit in front of the rest and they are the greater part.
const COMPACT_AFTER = 1024

/**
 * A first-in, first-out list whose `shift` costs the same however long it is (an array's `shift`
 * moves every item behind). For the dispatcher's waiting lines, which can hold a million jobs.
 */
export class Fifo<T> {
  #items: (T | undefined)[] = []
  // Index of the first item not yet taken.
  #head = 0

  push(item: T): void {
    this.#items.push(item)
  }

  shift(): T | undefined {
    if (this.#head === this.#items.length) return undefined
    const item = this.#items[this.#head]
    this.#items[this.#head++] = undefined
    if (this.#head === this.#items.length) {
      this.#items = []
      this.#head = 0
    } else if (this.#head >= COMPACT_AFTER && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head)
      this.#head = 0
    }
    return item
  }

  peek(): T | undefined {
    return this.#items[this.#head]
  }

  get size(): number {
    return this.#items.length - this.#head
  }
}
