/**
 * A first-in first-out queue over an array with a moving head: O(1) push/shift without
 * Array#shift's copying. Holds calls waiting for ring space, in-flight budget or slots.
 */
export class Fifo<T> {
  private items: (T | undefined)[] = [];
  private first = 0;

  get length(): number {
    return this.items.length - this.first;
  }

  push(item: T): void {
    this.items.push(item);
  }

  peek(): T | undefined {
    return this.items[this.first];
  }

  shift(): T | undefined {
    if (this.first >= this.items.length) return undefined;
    const item = this.items[this.first];
    this.items[this.first++] = undefined;
    // Compact once the dead prefix dominates, so memory follows the live length.
    if (this.first >= 1024 && this.first * 2 >= this.items.length) {
      this.items = this.items.slice(this.first);
      this.first = 0;
    }
    return item;
  }

  /** Removes and returns everything, oldest first. */
  drain(): T[] {
    const out = this.items.slice(this.first) as T[];
    this.items = [];
    this.first = 0;
    return out;
  }
}
