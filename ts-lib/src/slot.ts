/**
 * Slot: a page-aligned region of the shared segment granted to the agent (SPEC §5.3, §9).
 * `buffer` views the shared memory directly: bytes written there are what the sidecar reads,
 * with no copy. A slot is held until release(); while an operation names it, it is in flight.
 */

/** What a Slot needs from the client that granted it. */
export interface SlotOwner {
  /** Submits SLOT_RELEASE for the slot (the owner defers it while the slot is in flight). */
  releaseSlot(slot: Slot): void;
}

export class Slot {
  /** @internal Requests in flight that name this slot. */
  busy = 0;
  /** @internal release() was called while busy; the owner releases when busy drops to 0. */
  releaseDeferred = false;
  /** @internal null once released (or the client closed). */
  owner: SlotOwner | null;

  /**
   * @param buffer views the slot's bytes in the shared segment; length = capacity. After the
   * client closes, or after release(), the buffer must no longer be used: the memory stays mapped
   * while the buffer is reachable (so it can never fault), but it no longer reaches the sidecar.
   */
  constructor(
    owner: SlotOwner,
    readonly id: number,
    readonly generation: number,
    readonly buffer: Buffer,
  ) {
    this.owner = owner;
  }

  get capacity(): number {
    return this.buffer.length;
  }

  get released(): boolean {
    return this.owner === null;
  }

  /** Gives the slot back to the sidecar. Idempotent; deferred while an operation uses it. */
  release(): void {
    const owner = this.owner;
    if (owner === null) return;
    this.owner = null;
    owner.releaseSlot(this);
  }
}
