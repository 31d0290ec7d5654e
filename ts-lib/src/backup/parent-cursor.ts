/**
 * The parent snapshot, streamed in step with the walk: an incremental backup needs, for each
 * path it walks, the parent's entry at that path (incremental.ts). Loading the parent into a
 * `Map` cost ~5 KB per file of agent memory; this cursor holds one entry (plus the sidecar's
 * current page of entry lines), whatever the snapshot's size.
 *
 * It works because the walk (walk.ts) is deterministic and the parent was written by it: roots
 * in the order given; then directories in depth-first preorder, children in byte order of
 * their names, each directory's children in one run. That order is a total order on paths —
 * [`WalkOrder`]: (root's position, the directory's names compared name by name as bytes with a
 * prefix first, the name as bytes), the root entry itself before its directory's run — so the
 * lookup is a merge join: parent entries that sort before the walked path were deleted since
 * and are skipped; an equal one is the match; a greater one means the path is new.
 *
 * A parent written in another order (other roots, or roots given in another order) only loses
 * matches: those files are read again, never matched wrongly (a match needs the same path).
 * Names that do not decode (a hostile repository) never match.
 */

import { unescapeName } from './names';
import type { ParentEntry } from './ops';

export type { ParentEntry };

/** A path's place in the walk order. */
interface OrderKey {
  root: number;
  /** The directory's names below the root; null for the root entry itself. */
  dir: Buffer[] | null;
  name: Buffer;
}

function compareNames(a: Buffer[], b: Buffer[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const c = Buffer.compare(a[i]!, b[i]!);
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

/** The walk's order on repository paths (see the module comment). */
export class WalkOrder {
  private readonly roots: Map<string, number>;

  /** `rootNames`: the escaped names of the roots, in the order given (walk.ts rootNames). */
  constructor(rootNames: readonly string[]) {
    this.roots = new Map(rootNames.map((n, i) => [n, i]));
  }

  /** The key of a repository path; null if it is under none of the roots or does not decode. */
  key(path: string): OrderKey | null {
    const parts = path.split('/');
    const root = this.roots.get(parts[0]!);
    if (root === undefined) return null;
    try {
      const names = parts.map((p) => unescapeName(p));
      if (names.length === 1) return { root, dir: null, name: names[0]! };
      return { root, dir: names.slice(1, -1), name: names[names.length - 1]! };
    } catch {
      return null;
    }
  }

  /** Negative, zero or positive as `a` comes before, is, or comes after `b` in the walk. */
  static compare(a: OrderKey, b: OrderKey): number {
    if (a.root !== b.root) return a.root - b.root;
    if (a.dir === null || b.dir === null) return a.dir === b.dir ? Buffer.compare(a.name, b.name) : a.dir === null ? -1 : 1;
    return compareNames(a.dir, b.dir) || Buffer.compare(a.name, b.name);
  }
}

/** Looks up walked paths in a parent snapshot streamed in walk order (the module comment). */
export class ParentCursor {
  private readonly it: AsyncIterator<ParentEntry>;
  private head: { key: OrderKey; entry: ParentEntry } | null = null;
  private done = false;
  /** Parent entries read so far (for tests and stats). */
  read = 0;

  constructor(
    entries: AsyncIterable<ParentEntry>,
    private readonly order: WalkOrder,
  ) {
    this.it = entries[Symbol.asyncIterator]();
  }

  /** The parent's entry at `path`, if it has one. Paths must be asked for in walk order. */
  async lookup(path: string): Promise<ParentEntry | undefined> {
    const want = this.order.key(path);
    if (want === null) return undefined;
    for (;;) {
      if (this.head === null && !(await this.advance())) return undefined;
      const head = this.head!;
      const c = WalkOrder.compare(head.key, want);
      if (c > 0) return undefined;
      this.head = null;
      if (c === 0) return head.entry;
    }
  }

  /** Reads the next parent entry that has a key; false at the end. */
  private async advance(): Promise<boolean> {
    while (!this.done) {
      const r = await this.it.next();
      if (r.done === true) {
        this.done = true;
        break;
      }
      this.read++;
      const key = this.order.key(r.value.path);
      if (key !== null) {
        this.head = { key, entry: r.value };
        return true;
      }
    }
    return false;
  }

  /** Stops reading (closes the sidecar's cursor if the listing was not read to its end). */
  async close(): Promise<void> {
    if (!this.done) {
      this.done = true;
      await this.it.return?.();
    }
  }
}

/** A cursor over nothing (no parent). */
export function noParent(order: WalkOrder): ParentCursor {
  return new ParentCursor((async function* () {})(), order);
}
