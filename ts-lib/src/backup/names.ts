/**
 * Repository names for file names that need not be UTF-8. The engine stores paths and symlink
 * targets as UTF-8 text (REPOSITORY.md: "the agent escapes non-UTF-8 names"); Linux names are
 * arbitrary bytes. Encoding: valid UTF-8 stays as it is, except `\` which becomes `\\`; every
 * byte that is not part of a valid UTF-8 sequence becomes `\xNN` (lowercase hex). The mapping
 * is injective, so `unescapeName(escapeName(b))` gives back `b` byte for byte.
 */

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
