/**
 * Repository names for file names that need not be UTF-8. The engine stores paths and symlink
 * targets as UTF-8 text (REPOSITORY.md: "the agent escapes non-UTF-8 names"); Linux names are
 * arbitrary bytes. Encoding: valid UTF-8 stays as it is, except `\` which becomes `\\`; every
 * byte that is not part of a valid UTF-8 sequence becomes `\xNN` (lowercase hex). The mapping
 * is injective, so `unescapeName(escapeName(b))` gives back `b` byte for byte.
 *
 * A repository is not trusted (it may come from a buggy or hostile writer): `pathNames` and
 * `targetBytes` decode what restore is about to use and refuse, with SHMPIPE_E_UNSAFE_ENTRY,
 * anything `escapeName` of a real directory entry cannot produce — a name that decodes to
 * empty, `.`, `..`, or contains `/` or NUL (`\x2e\x2e`, `a\x2fb`), a non-canonical escape (two
 * spellings of one name would defeat the duplicate check), a path longer than PATH_MAX. The
 * sidecar refuses the same paths in ADD_ENTRIES (sidecar/engine/src/snapshot.rs path_problem).
 */

import { ShmpipeError } from '../errors';

const BACKSLASH = 0x5c;

/** Length of the UTF-8 sequence led by `lead`, or 0 for a byte that cannot lead one. */
function sequenceLength(lead: number): number {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

/** Bytes (a file name or symlink target) → repository text. */
export function escapeName(bytes: Uint8Array): string {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const plain = b.toString('utf8');
  // Fast path: valid UTF-8 (the decoder replaced nothing) without backslashes.
  if (!plain.includes('\\') && !plain.includes('\uFFFD')) return plain;
  let out = '';
  let i = 0;
  while (i < b.length) {
    const lead = b[i]!;
    if (lead === BACKSLASH) {
      out += '\\\\';
      i += 1;
      continue;
    }
    const n = sequenceLength(lead);
    if (n > 0 && i + n <= b.length) {
      const seq = b.subarray(i, i + n);
      const text = seq.toString('utf8');
      // A sequence is valid when it survives a round trip (rejects overlongs, surrogates,
      // bad continuation bytes; a real U+FFFD in the name round-trips and is kept).
      if (Buffer.from(text, 'utf8').equals(seq)) {
        out += text;
        i += n;
        continue;
      }
    }
    out += '\\x' + lead.toString(16).padStart(2, '0');
    i += 1;
  }
  return out;
}

/** Repository text → bytes. Throws on an escape `escapeName` never produces. */
export function unescapeName(text: string): Buffer {
  if (!text.includes('\\')) return Buffer.from(text, 'utf8');
  const parts: Buffer[] = [];
  let run = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c !== '\\') {
      run += c;
      continue;
    }
    parts.push(Buffer.from(run, 'utf8'));
    run = '';
    const next = text[i + 1];
    if (next === '\\') {
      parts.push(Buffer.from([BACKSLASH]));
      i += 1;
    } else if (next === 'x' && /^[0-9a-f]{2}$/.test(text.slice(i + 2, i + 4))) {
      parts.push(Buffer.from([parseInt(text.slice(i + 2, i + 4), 16)]));
      i += 3;
    } else {
      throw new Error(`bad escape in repository name ${JSON.stringify(text)} at ${i}`);
    }
  }
  parts.push(Buffer.from(run, 'utf8'));
  return Buffer.concat(parts);
}

/** The longest path (decoded bytes) restore accepts: Linux's PATH_MAX. A backup reads every
 * file by its path, so no honest snapshot holds a longer one. */
export const PATH_MAX = 4096;

const unsafe = (what: string, why: string): ShmpipeError => new ShmpipeError('SHMPIPE_E_UNSAFE_ENTRY', `refusing ${what}: ${why}`);

/** Decodes one name, or returns why it cannot be a directory entry's name. */
function decodeName(text: string): Buffer | string {
  let bytes: Buffer;
  try {
    bytes = unescapeName(text);
  } catch {
    return 'it has an escape no backup writes';
  }
  const how = text.includes('\\') ? ' once decoded' : '';
  if (bytes.length === 0) return 'it has an empty name';
  if (bytes.length <= 2 && (bytes.equals(DOT) || bytes.equals(DOTDOT))) return `it has the name ${JSON.stringify(bytes.toString('latin1'))}${how}`;
  if (bytes.includes(0x2f)) return `a name in it contains /${how}`;
  if (bytes.includes(0)) return `a name in it contains NUL${how}`;
  if (how !== '' && escapeName(bytes) !== text) return 'it is not canonically escaped';
  return bytes;
}

const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

/**
 * The names of a repository path, decoded and checked (see the module comment); throws
 * SHMPIPE_E_UNSAFE_ENTRY naming the path.
 */
export function pathNames(repoPath: string): Buffer[] {
  const what = `entry ${JSON.stringify(repoPath)}`;
  if (typeof repoPath !== 'string' || repoPath === '') throw unsafe(what, 'the path is empty');
  if (repoPath.length > 4 * PATH_MAX) throw unsafe(what, `the path is longer than ${PATH_MAX} bytes`);
  const out: Buffer[] = [];
  let total = -1;
  for (const text of repoPath.split('/')) {
    const name = decodeName(text);
    if (typeof name === 'string') throw unsafe(what, text === '' && out.length === 0 ? 'the path is absolute' : name);
    total += name.length + 1;
    out.push(name);
  }
  if (total > PATH_MAX) throw unsafe(what, `the path is longer than ${PATH_MAX} bytes`);
  return out;
}

/** A symlink target's bytes: canonically escaped, not empty, no NUL (absolute targets and `..`
 * are fine: restore creates links, it never follows them). */
export function targetBytes(repoPath: string, target: string | undefined): Buffer {
  const what = `symlink ${JSON.stringify(repoPath)}`;
  if (typeof target !== 'string' || target === '') throw unsafe(what, 'it has no target');
  let bytes: Buffer;
  try {
    bytes = unescapeName(target);
  } catch {
    throw unsafe(what, 'its target has an escape no backup writes');
  }
  if (bytes.includes(0)) throw unsafe(what, 'its target contains NUL');
  if (target.includes('\\') && escapeName(bytes) !== target) throw unsafe(what, 'its target is not canonically escaped');
  return bytes;
}
