/**
 * A snapshot's subfolder as if it were the snapshot (restic's `SNAPSHOT:SUBFOLDER` syntax, for
 * restore, ls, dump and diff): filters a snapshot's listing (ENTRIES_NEXT, in listing order) to
 * the entries below one directory, with that directory's path taken off theirs. The directory
 * itself is not an entry of the result, as restic restores a subfolder's contents into the
 * target. A subfolder that is missing, or not a directory, fails with a typed error once the
 * listing has shown it cannot be there.
 */

import { ShmpipeError } from '../errors';
import type { TreeEntry } from './ops';

/**
 * Splits `SNAPSHOT[:SUBFOLDER]` (`latest:/home/me`, `4f3a9c01:docs`). The subfolder comes back
 * as a repository path without leading or trailing slashes (`home/me`); '' is the top.
 */
export function splitSnapshotArg(arg: string): { snapshot: string; subfolder: string } {
  const colon = arg.indexOf(':');
  if (colon < 0) return { snapshot: arg, subfolder: '' };
  const subfolder = arg
    .slice(colon + 1)
    .split('/')
    .filter((c) => c !== '' && c !== '.');
  if (subfolder.includes('..')) throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `a snapshot's subfolder cannot contain '..': ${arg}`);
  return { snapshot: arg.slice(0, colon), subfolder: subfolder.join('/') };
}

/** The entries of `listing` below `subfolder` (a repository path; '' passes everything). */
export async function* subtree(listing: AsyncIterable<TreeEntry>, subfolder: string): AsyncGenerator<TreeEntry> {
  if (subfolder === '') {
    yield* listing;
    return;
  }
  const prefix = `${subfolder}/`;
  let seen = false;
  for await (const e of listing) {
    if (e.path === subfolder) {
      if (e.kind !== 'dir') throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', `/${subfolder} in the snapshot is a ${e.kind}, not a directory`);
      seen = true;
    } else if (e.path.startsWith(prefix)) {
      yield { ...e, path: e.path.slice(prefix.length) };
    }
  }
  if (!seen) throw new ShmpipeError('SHMPIPE_E_NOT_FOUND', `there is no /${subfolder} in the snapshot`);
}
