/**
 * The client's slots (SPEC §5.3, §9): the Buffer view of each slot of the mapping, the slots
 * granted and not yet handed out, and the alloc() calls waiting for a grant (FIFO, bounded by
 * the caller). A Slot object is made per grant; its Buffer is made once per slot id and reused.
 */

import { ShmpipeError } from './errors';
import { Fifo } from './fifo';
import type { SegmentViews } from './ring';
import { Slot, type SlotOwner } from './slot';

interface AllocWaiter {
  resolve: (s: Slot) => void;
  reject: (e: ShmpipeError) => void;
}

export class SlotPool {
  private free: Slot[] = [];
  private readonly waiters = new Fifo<AllocWaiter>();
  private readonly buffers: (Buffer | undefined)[];

  constructor(
    private readonly owner: SlotOwner,
    private readonly views: SegmentViews,
    private readonly slotOffset: number,
    private readonly slotSize: number,
    readonly slotCount: number,
  ) {
    this.buffers = new Array<Buffer | undefined>(slotCount);
  }

  /** alloc() calls waiting for a grant. */
  get waiting(): number {
    return this.waiters.length;
  }

  /** A granted slot not handed out yet, if there is one. */
  take(): Slot | undefined {
    return this.free.pop();
  }

  /** Waits (FIFO) for the next grant. */
  wait(): Promise<Slot> {
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** A grant from the GQ: to the oldest waiter, else into the free list. `id` < slotCount. */
  grant(id: number, generation: number): void {
    const slot = this.slot(id, generation);
    const waiter = this.waiters.shift();
    if (waiter !== undefined) waiter.resolve(slot);
    else this.free.push(slot);
  }

  /** A Slot for a slot the sidecar handed over (a grant, a stream chunk). `id` < slotCount. */
  slot(id: number, generation: number): Slot {
    return new Slot(this.owner, id, generation, this.buffer(id));
  }

  /** Ends the pool: waiters reject with `err`, free slots are disowned, buffers dropped. */
  close(err: ShmpipeError): void {
    for (const w of this.waiters.drain()) w.reject(new ShmpipeError(err.code, err.message));
    for (const s of this.free) s.owner = null;
    this.free = [];
    this.buffers.fill(undefined);
  }

  /** The Buffer viewing slot `id`, made once per slot and reused for every grant of it. */
  private buffer(id: number): Buffer {
    let b = this.buffers[id];
    if (b === undefined) {
      b = Buffer.from(this.views.buffer, this.slotOffset + id * this.slotSize, this.slotSize);
      this.buffers[id] = b;
    }
    return b;
  }
}
