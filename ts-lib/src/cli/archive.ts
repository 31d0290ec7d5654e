/**
 * `dump`'s archives: a snapshot's entries written as a tar stream (tar-stream: ustar with pax
 * headers for long names and large files) or a zip (yazl: deflate, zip64 when needed, Info-ZIP
 * modes so symlinks stay symlinks). Entries come in snapshot order (a directory before its
 * contents) and file bytes come from the repository slot by slot; the archive is written to a
 * Node stream with its backpressure honoured, so memory stays a few slots whatever the size.
 *
 * Devices, FIFOs and sockets have no bytes to carry and are left out (counted), as in restic.
 */

import { once, type EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import tar from 'tar-stream';
import yazl from 'yazl';
import type { ReadStream } from '../store';
import type { TreeEntry } from '../backup/ops';

export type ArchiveFormat = 'tar' | 'zip';

/** A writable stream of node's or streamx's (tar-stream's entries). */
interface Sink {
  write(chunk: Buffer): boolean;
}

/** Writes `b` (copied: `b` may be a slot) and waits while `w` is full. */
export async function writeAll(w: Sink, b: Uint8Array): Promise<void> {
  if (!w.write(Buffer.from(b))) await once(w as unknown as EventEmitter, 'drain');
}

export interface ArchiveWriter {
  /** Adds one entry under `name` (no leading `/`); files read their bytes from `content()`. */
  add(e: TreeEntry, name: string, content: () => ReadStream): Promise<void>;
  /** Ends the archive and waits until all of it was written to the output. */
  finish(): Promise<void>;
  /** Entries that could not be represented (devices, FIFOs, sockets). */
  readonly skipped: number;
}

const msOf = (e: TreeEntry): Date => new Date(Number(e.mtimeNs / 1_000_000n));

/** Copies a readable into `out` until it ends, honouring `out`'s backpressure. */
async function drain(from: AsyncIterable<Buffer | string>, out: Sink): Promise<void> {
  for await (const b of from) await writeAll(out, typeof b === 'string' ? Buffer.from(b) : b);
}

function tarWriter(out: Sink): ArchiveWriter {
  const pack = tar.pack();
  const copying = drain(pack as unknown as AsyncIterable<Buffer>, out);
  copying.catch(() => {});
  let skipped = 0;
  const entry = (h: Parameters<tar.Pack['entry']>[0], body?: (s: Sink) => Promise<void>): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const s = pack.entry(h, (err) => (err ? reject(err) : resolve()));
      if (body === undefined) return;
      body(s).then(
        () => s.end(undefined), // streamx's types want an argument; undefined writes nothing
        (e: unknown) => {
          s.destroy(e as Error);
          reject(e);
        },
      );
    });
  return {
    get skipped() {
      return skipped;
    },
    async add(e, name, content) {
      const common = { mode: e.mode & 0o7777, mtime: msOf(e), uid: e.uid, gid: e.gid };
      if (e.kind === 'dir') return entry({ ...common, name: `${name}/`, type: 'directory' });
      if (e.kind === 'symlink') return entry({ ...common, name, type: 'symlink', linkname: e.target ?? '' });
      if (e.kind !== 'file') {
        skipped++;
        return;
      }
      return entry({ ...common, name, type: 'file', size: Number(e.size) }, async (s) => {
        if (e.size === 0n) return;
        for await (const ch of content()) await writeAll(s, ch.slot.buffer.subarray(0, ch.length));
      });
    },
    async finish() {
      pack.finalize();
      await copying;
    },
  };
}

function zipWriter(out: Sink): ArchiveWriter {
  const zip = new yazl.ZipFile();
  const copying = drain(zip.outputStream as unknown as AsyncIterable<Buffer>, out);
  copying.catch(() => {});
  let skipped = 0;
  return {
    get skipped() {
      return skipped;
    },
    async add(e, name, content) {
      // The mode's type bits go into the external attributes (Info-ZIP): unzip restores them.
      const o = { mtime: msOf(e), mode: e.mode };
      if (e.kind === 'dir') return zip.addEmptyDirectory(name, o);
      if (e.kind === 'symlink') return zip.addBuffer(Buffer.from(e.target ?? ''), name, { ...o, compress: false });
      if (e.kind !== 'file') {
        skipped++;
        return;
      }
      const body = new PassThrough();
      zip.addReadStream(body, name, { ...o, size: Number(e.size) });
      try {
        if (e.size > 0n) for await (const ch of content()) await writeAll(body, ch.slot.buffer.subarray(0, ch.length));
        body.end();
      } catch (err) {
        body.destroy(err as Error);
        throw err;
      }
    },
    async finish() {
      zip.end();
      await copying;
    },
  };
}

export function archiveWriter(format: ArchiveFormat, out: Sink): ArchiveWriter {
  return format === 'zip' ? zipWriter(out) : tarWriter(out);
}
