/**
 * The `shmpipe` program: its commands, in the order `shmpipe help` lists them (everyday verbs
 * first, the store and diagnostic ones last), and the global options every command takes.
 */

import type { Command, Options, Program } from './command';
import { backup } from './commands/backup';
import { cat } from './commands/cat';
import { check } from './commands/check';
import { completion } from './commands/completion';
import { copy } from './commands/copy';
import { diff } from './commands/diff';
import { dump } from './commands/dump';
import { find } from './commands/find';
import { generate } from './commands/generate';
import { get } from './commands/get';
import { help } from './commands/help';
import { init } from './commands/init';
import { key } from './commands/key';
import { list } from './commands/list';
import { ls } from './commands/ls';
import { put } from './commands/put';
import { repair } from './commands/repair';
import { restore } from './commands/restore';
import { rm } from './commands/rm';
import { sidecarStats } from './commands/sidecar-stats';
import { snapshots } from './commands/snapshots';
import { tag } from './commands/tag';
import { unlock } from './commands/unlock';
import { stat } from './commands/stat';
import { stats } from './commands/stats';
import { version } from './commands/version';

export const VERSION = '0.1.0';

export const GLOBAL_OPTIONS: Options = {
  sidecar: { type: 'string', value: 'SOCKET', complete: 'file', help: 'use the running sidecar at this socket instead of starting a private one (SHMPIPE_SIDECAR_SOCKET also names one)' },
  json: { type: 'boolean', default: false, help: 'machine-readable output: JSON on stdout (one object per line for streams)' },
  verbose: { type: 'boolean', short: 'v', default: false, help: "show the private sidecar's log on stderr" },
  'no-cache': { type: 'boolean', default: false, help: 'do not use the local metadata cache ($XDG_CACHE_HOME/shmpipe or ~/.cache/shmpipe): download index and snapshots afresh' },
  help: { type: 'boolean', short: 'h', default: false, help: 'show the help of the command and exit' },
  version: { type: 'boolean', default: false, help: 'print the version and exit' },
};

const COMMANDS: readonly Command[] = [init, backup, snapshots, restore, ls, find, diff, dump, tag, copy, check, stats, unlock, key, repair, cat, put, get, list, stat, rm, sidecarStats, version, help, completion, generate];

export const PROGRAM: Program = {
  name: 'shmpipe',
  version: VERSION,
  summary: 'backup agent for the shmpipe sidecar',
  commands: COMMANDS,
  globalOptions: GLOBAL_OPTIONS,
};
