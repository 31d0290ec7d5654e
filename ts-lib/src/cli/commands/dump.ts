/**
 * `shmpipe dump SNAPSHOT PATH`: a file's bytes, or a directory (`/` for the whole snapshot) as
 * a tar or zip archive (archive.ts), to stdout or `--target FILE` — restic's `dump`. Paths as
 * `ls` shows them; archive members are named by their snapshot path without the leading `/`
 * (`docs/a.txt`), as restore would place them. The bytes are verified as they are read (the
 * repository's authenticated decryption): a damaged blob fails the dump, exit 1.
 */

import fs from 'node:fs';
import { contentRead, entries } from '../../backup/ops';
import { splitSnapshotArg, subtree } from '../../backup/subtree';
import { CommandError, UsageError, type Command } from '../command';
import { archiveWriter, writeAll, type ArchiveFormat } from '../archive';
import { FILTER_OPTIONS, filterFrom, resolveSnapshotInfo } from '../filter';
import { displayPath, snapshotPathArg } from '../nodes';
import { REPO_OPTIONS, withRepo } from '../repo';
import { underDirs } from './ls';

export const dump: Command = {
  name: 'dump',
  summary: "write a file's bytes, or a directory as a tar or zip archive, from a snapshot",
  args: '<snapshot|latest>[:<subfolder>] <path>',
  description: 'A file is written as it is; a directory (or / for the whole snapshot) as an archive of everything below it. The output is standard output unless --target names a file.',
  examples: ['shmpipe dump latest /docs/report.pdf > report.pdf', 'shmpipe dump latest /docs | tar -x -C /tmp', 'shmpipe dump --archive zip --target docs.zip latest /docs'],
  options: {
    archive: { type: 'string', short: 'a', value: 'FORMAT', default: 'tar', choices: ['tar', 'zip'], help: 'the archive format for a directory' },
    target: { type: 'string', short: 't', value: 'FILE', complete: 'file', help: 'write to FILE instead of standard output' },
    ...FILTER_OPTIONS,
    ...REPO_OPTIONS,
  },
  async run(ctx) {
    const [whole, pathArg, ...rest] = ctx.positionals;
    if (whole === undefined || pathArg === undefined || rest.length > 0) throw new UsageError('name a snapshot and one path in it');
    const { snapshot: snapshotArg, subfolder } = splitSnapshotArg(whole);
    const want = snapshotPathArg(pathArg);
    const format = ctx.values.archive as ArchiveFormat;
    const targetFile = ctx.values.target as string | undefined;
    let skipped = 0;
    await withRepo(ctx, async (r) => {
      const s = await resolveSnapshotInfo(r, snapshotArg, filterFrom(ctx));
      const out: NodeJS.WritableStream = targetFile !== undefined ? fs.createWriteStream(targetFile) : process.stdout;
      const c = r.session.client;
      let found = false;
      let archive: ReturnType<typeof archiveWriter> | null = null;
      for await (const e of subtree(await entries(c, r.repo, s.id), subfolder)) {
        if (!found && want !== '' && e.path !== want) continue;
        if (!found && e.kind !== 'dir' && want !== '') {
          // A single entry: a file's bytes (a symlink's target, as restic).
          found = true;
          if (e.kind === 'file' && e.size > 0n) for await (const ch of contentRead(c, r.repo, e.content!)) await writeAll(out, ch.slot.buffer.subarray(0, ch.length));
          else if (e.kind === 'symlink') await writeAll(out, Buffer.from(e.target ?? ''));
          else if (e.kind !== 'file') throw new CommandError(`${displayPath(e.path)} is not a file or directory`);
          break;
        }
        if (!found) {
          found = true;
          archive = archiveWriter(format, out);
        }
        if (want !== '' && !underDirs(e.path, [want], true)) continue;
        await archive!.add(e, displayPath(e.path).slice(1), () => contentRead(c, r.repo, e.content!));
      }
      if (!found) throw new CommandError(`there is no ${displayPath(want)} in snapshot ${s.id.slice(0, 8)}`);
      if (archive !== null) {
        await archive.finish();
        skipped = archive.skipped;
      }
      if (targetFile !== undefined) {
        const file = out as fs.WriteStream;
        await new Promise<void>((resolve, reject) => file.end((err?: Error | null) => (err ? reject(err) : resolve())));
      }
    });
    if (skipped > 0) ctx.err(`shmpipe dump: ${skipped} device(s), FIFO(s) or socket(s) left out of the archive`);
    return 0;
  },
};
