/**
 * The client's slots (SPEC §5.3, §9): the Buffer view of each slot of the mapping, the slots
 * granted and not yet handed out, the alloc() calls waiting for a grant (FIFO, bounded by the
 * caller), and which slots the agent holds right now in the sidecar's eyes.
 *
 * That last table is what makes the sidecar's grants checkable (SPEC §9: the agent validates
 * what it acts on): a slot is the agent's from its grant (GQ, or a stream chunk) until the agent
 * gives it up (SLOT_RELEASE or a consuming op written into the SQ). A grant or chunk naming a
 * slot the agent still holds would make two Slot objects view the same bytes — one caller's
 * `fs.read` landing in another caller's upload — so it ends the session instead
 * (SHMPIPE_E_PROTOCOL). A Slot object is made per grant; its Buffer once per slot id.
 */

import { ShmpipeError } from './errors';
import { Fifo } from './fifo';
import type { SegmentViews } from './ring';
import { Slot, type SlotOwner } from './slot';

interface AllocWaiter {
  resolve: (s: Slot) => void;
  reject: (e: ShmpipeError) => void;
}

const violation = (message: string): ShmpipeError => new ShmpipeError('SHMPIPE_E_PROTOCOL', message);

export class SlotPool {
  private free: Slot[] = [];
  private readonly waiters = new Fifo<AllocWaiter>();
  private readonly buffers: (Buffer | undefined)[];
  /** By slot id: the Slot the agent holds (granted, not given up), or null. */
  private readonly holders: (Slot | null)[];
  /** By slot id: the generation of its last grant from the GQ (0: none yet). */
  private readonly lastGrant: Uint32Array;

  constructor(
    private readonly owner: SlotOwner,
    private readonly views: SegmentViews,
    private readonly slotOffset: number,
    private readonly slotSize: number,
    readonly slotCount: number,
  ) {
    this.buffers = new Array<Buffer | undefined>(slotCount);
    this.holders = new Array<Slot | null>(slotCount).fill(null);
    this.lastGrant = new Uint32Array(slotCount);
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

  /**
   * A grant from the GQ (SPEC §5.3: FREE→GRANTED, a new generation): to the oldest waiter, else
   * into the free list. Throws SHMPIPE_E_PROTOCOL for a slot id out of range, generation 0, the
   * generation of its previous grant again, or a slot the agent holds.
   */
  grant(id: number, generation: number): void {
    if (id < this.slotCount && generation === this.lastGrant[id]) {
      throw violation(`grant of slot ${id} repeats generation ${generation}`);
    }
    const slot = this.handOver(id, generation, 'grant');
    this.lastGrant[id] = generation;
    const waiter = this.waiters.shift();
    if (waiter !== undefined) waiter.resolve(slot);
    else this.free.push(slot);
  }

  /**
   * A slot the sidecar hands the agent (a grant, a stream chunk): checked as in grant(), except
   * that a stream's first chunk may keep the generation of the request's own slot.
   */
  handOver(id: number, generation: number, what: string): Slot {
    if (id >= this.slotCount) throw violation(`${what} names slot ${id} beyond slot_count ${this.slotCount}`);
    if (generation === 0) throw violation(`${what} of slot ${id} with generation 0`);
    if (this.holders[id] !== null) throw violation(`${what} of slot ${id}, which the agent holds`);
    const slot = new Slot(this.owner, id, generation, this.buffer(id));
    this.holders[id] = slot;
    return slot;
  }

  /** Whether `slot` is the one the agent holds under its id (not given up, not superseded). */
  holds(slot: Slot): boolean {
    return this.holders[slot.id] === slot;
  }

  /** The agent gives `slot` up (it is written into the SQ in a SLOT_RELEASE or consuming op). */
  giveUp(slot: Slot): void {
    if (this.holders[slot.id] === slot) this.holders[slot.id] = null;
  }

  /**
   * `slot`, given up, is the agent's again: a completion handed it back (`SLOT`), or the op was
   * refused without taking it. The sidecar cannot have granted it meanwhile.
   */
  retake(slot: Slot): void {
    const h = this.holders[slot.id];
    if (h === slot) return;
    if (h !== null) throw violation(`slot ${slot.id} came back while a grant of it is held`);
    this.holders[slot.id] = slot;
  }

  /** `slot` is not the agent's any more (consumed, or the sidecar says it is not held): disown it. */
  drop(slot: Slot): void {
    this.giveUp(slot);
    slot.owner = null;
    slot.releaseDeferred = false;
  }

  /** The held Slot with this id and generation, if any (raw submissions naming it). */
  find(id: number, generation: number): Slot | null {
    const h = id < this.slotCount ? this.holders[id] : null;
    return h !== null && h !== undefined && h.generation === generation ? h : null;
  }

  /** Ends the pool: waiters reject with `err`, free slots are disowned, buffers dropped. */
  close(err: ShmpipeError): void {
    for (const w of this.waiters.drain()) w.reject(new ShmpipeError(err.code, err.message));
    for (const s of this.free) s.owner = null;
    this.free = [];
    this.buffers.fill(undefined);
    this.holders.fill(null);
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
