/**
 * The backup-engine ops (SPEC §7.3) as typed functions over a Client: repositories, backups,
 * file content in and out, tree entries, snapshots and check. The pipelines (backup.ts,
 * restore.ts) and the CLI use these; they reach the sidecar only through the Client's request
 * machinery shared with the object-store ops (store.ts: slots, streams, error messages).
 *
 * Handles are the sidecar's u64 handles as numbers (they count up from 1 per session, far below
 * 2^53). Every argument is checked before any ring work; failures are ShmpipeErrors with
 * SHMPIPE_E_INVALID_ARGUMENT. Failures from the sidecar carry its wire code (SPEC §8) and the
 * message it wrote into the request's slot.
 *
 * Slots: ops that carry a request or return a document (repository, backup begin, snapshots,
 * entries, check, finish, commit) take a slot of their own and give it back. filePut and
 * addEntries use the caller's slot and hand it back; fileWrite consumes it (the engine keeps
 * the bytes until it chunked them). contentRead is a stream like the store's openRead.
 */

import { z } from 'zod';
import type { Client } from '../client';
import { ShmpipeError } from '../errors';
import { OPCODES, OP_ADD_ENTRIES, OP_BACKUP_ABORT, OP_BACKUP_BEGIN, OP_BACKUP_COMMIT, OP_CHECK, OP_CLOSE, OP_CONTENT_READ, OP_ENTRIES_NEXT, OP_ENTRIES_OPEN, OP_FILE_FINISH, OP_FILE_OPEN, OP_FILE_PUT, OP_FILE_WRITE, OP_JOB_NEXT, OP_JOB_START, OP_REPO_INIT, OP_REPO_OPEN, OP_SNAPSHOTS } from '../protocol';
import type { Slot } from '../slot';
import { checkRange, checkSlot, guard, invalid, payloadSlot, ReadStream, startStream } from '../store';
import { K_ENGINE, type StoreCompletion } from '../store-request';
import type { Change } from './incremental';
import { pathNames, targetBytes } from './names';
import type { Xattr } from './restore-fs';
import type { EntryKind, SourceEntry } from './walk';

/** A sidecar handle: a repository, backup, file writer or entry cursor. */
export type Handle = number;

/** REPO_INIT parameters (SPEC §7.3; wire names). */
export interface RepoParams {
  compression_level?: number;
  pack_size_mib?: number;
  kdf_m_kib?: number;
  kdf_t?: number;
}

const repoParams = z
  .object({
    compression_level: z.number().int().min(-7).max(19).optional(),
    pack_size_mib: z.number().int().min(1).max(128).optional(),
    kdf_m_kib: z.number().int().min(64).max(4_194_304).optional(),
    kdf_t: z.number().int().min(1).max(64).optional(),
  })
  .strict();

/** BACKUP_BEGIN request. */
export interface BackupRequest {
  /** The parent snapshot's id (64 hex digits): unchanged files may name its content. */
  parent?: string;
  host?: string;
  tags?: string[];
  paths?: string[];
  /** zstd level for this backup's new blobs (-7..19, 0 off); default the repository's. */
  compression_level?: number;
  /** Target pack size for this backup (1..128 MiB); default the repository's. */
  pack_size_mib?: number;
  /** The snapshot's time, ns since the epoch as a decimal string (default now; copy keeps the original's). */
  time_ns?: string;
}

const SNAPSHOT_ID = /^[0-9a-f]{64}$/;
const backupRequest = z
  .object({
    parent: z.string().regex(SNAPSHOT_ID, { message: 'parent must be a snapshot id (64 lowercase hex digits)' }).optional(),
    host: z.string().optional(),
    tags: z.array(z.string()).optional(),
    paths: z.array(z.string()).optional(),
    compression_level: z.number().int().min(-7).max(19).optional(),
    pack_size_mib: z.number().int().min(1).max(128).optional(),
    time_ns: z.string().regex(/^-?[0-9]{1,19}$/, { message: 'time_ns must be a decimal integer' }).optional(),
  })
  .strict();

/** What BACKUP_COMMIT and SNAPSHOTS say about a backup's work. */
export interface SnapshotCounts {
  files_new: number;
  files_changed: number;
  files_unchanged: number;
  dirs: number;
  others: number;
  bytes_read: number;
  /** Plaintext bytes of new blobs (after dedup). */
  bytes_added: number;
  /** Bytes written to the repository (after dedup, compression; packs, index, snapshot). */
  bytes_added_packed: number;
  blobs_added: number;
  packs_added: number;
}

export interface CommitSummary {
  id: string;
  entries: number;
  duration_ms: number;
  counts: SnapshotCounts;
  /** Repository objects the backup skipped because they could not be read (`key: why`). */
  warnings?: string[];
}

export interface SnapshotInfo {
  id: string;
  /** Nanoseconds since the epoch, as a decimal string. */
  time_ns: string;
  host: string;
  tags: string[];
  paths: string[];
  parent: string | null;
  entries: number;
  counts: SnapshotCounts;
  duration_ms: number;
}

export interface CheckReport {
  ok: boolean;
  errors: { object: string; message: string }[];
  infos: { object: string; message: string }[];
  affected_files: { snapshot: string; path: string; reason: string }[];
  packs: number;
  blobs: number;
  blobs_verified: number;
  bytes_read: number;
  snapshots: number;
  entries: number;
  truncated?: boolean;
  /** Whole counts (the lists are cut at 1000 items). */
  error_count?: number;
  affected_file_count?: number;
}

/** A tree entry (SPEC §7.3), as added and as listed: the walker's metadata, and for files the
 * content. The fields after `content` are optional on the wire (older snapshots lack them). */
export type TreeEntry = Omit<SourceEntry, 'abs' | 'target' | 'ctimeNs' | 'rdev' | 'links' | 'xattrs' | 'sparse'> & {
  /** Symlinks: the target. */
  target?: string | undefined;
  /** Files: the content reference (hex). */
  content?: string | undefined;
  ctimeNs?: bigint | undefined;
  /** Devices: st_rdev. */
  rdev?: bigint | undefined;
  /** Files with more than one link: st_nlink. */
  links?: number | undefined;
  xattrs?: Xattr[] | undefined;
  /** The file had holes at backup. */
  sparse?: boolean | undefined;
};

const KINDS: ReadonlySet<string> = new Set(['file', 'dir', 'symlink', 'other']);
const CONTENT = /^(?:[0-9a-f]{2})+$/;
const U32_MAX = 0xffff_ffff;
const U64_MAX = 0xffff_ffff_ffff_ffffn;

const badHandle = (h: unknown): boolean => !Number.isSafeInteger(h) || (h as number) < 1;

function checkHandle(h: unknown, what: string, op: string): Handle {
  if (badHandle(h)) throw invalid(`${op}: ${what} must be a handle (an integer ≥ 1) from the sidecar, got ${String(h)}`);
  return h as Handle;
}

function zodProblem(e: z.ZodError): string {
  return e.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ');
}

function checkContent(content: unknown, op: string): string {
  if (typeof content !== 'string' || !CONTENT.test(content)) throw invalid(`${op}: a content reference is lowercase hex text from filePut/fileFinish`);
  return content;
}

function u64(v: unknown, field: string): string {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) throw invalid(`entry field ${field} must be a bigint in 0..2^64, got ${String(v)}`);
  return v.toString();
}

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/** mtimes are signed (before 1970 they are negative). */
function i64(v: unknown, field: string): string {
  if (typeof v !== 'bigint' || v < I64_MIN || v > I64_MAX) throw invalid(`entry field ${field} must be a bigint in -2^63..2^63, got ${String(v)}`);
  return v.toString();
}

function u32(v: unknown, field: string): number {
  if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > U32_MAX) throw invalid(`entry field ${field} must be an integer in 0..2^32, got ${String(v)}`);
  return v as number;
}

/**
 * One ADD_ENTRIES line (no newline): 64-bit fields as decimal strings, `c` for files only
 * (required), `x` only when not "new" (the sidecar's default).
 */
export function encodeEntry(e: TreeEntry, change: Change = 'new'): string {
  // The names as restore will decode them (names.ts): no entry a restore would refuse is stored.
  if (typeof e.path !== 'string') throw invalid(`entry path must be a string, got ${typeof e.path}`);
  try {
    pathNames(e.path);
    if (e.kind === 'symlink') targetBytes(e.path, e.target);
  } catch (err) {
    throw invalid(`entry path: ${(err as Error).message}`);
  }
  if (!KINDS.has(e.kind)) throw invalid(`entry ${JSON.stringify(e.path)}: kind must be file, dir, symlink or other, got ${String(e.kind)}`);
  if (change !== 'new' && change !== 'changed' && change !== 'unchanged') throw invalid(`entry ${JSON.stringify(e.path)}: change must be new, changed or unchanged`);
  // Built as text rather than an object for JSON.stringify: this runs once per entry of every
  // backup (~2x faster; the same JSON). Numbers: u32 as JSON numbers, 64-bit as decimal strings.
  let line = `{"p":${JSON.stringify(e.path)},"k":"${e.kind}","m":${u32(e.mode, 'mode')},"u":${u32(e.uid, 'uid')},"g":${u32(e.gid, 'gid')},"t":"${i64(e.mtimeNs, 'mtimeNs')}","s":"${u64(e.size, 'size')}","n":"${u64(e.inode, 'inode')}","d":"${u64(e.dev, 'dev')}"`;
  if (e.target !== undefined) {
    if (e.kind !== 'symlink') throw invalid(`entry ${JSON.stringify(e.path)}: only symlinks have a target`);
    line += `,"l":${JSON.stringify(e.target)}`;
  }
  if (e.kind === 'file') line += `,"c":"${checkContent(e.content, `entry ${JSON.stringify(e.path)}`)}"`;
  else if (e.content !== undefined) throw invalid(`entry ${JSON.stringify(e.path)}: only files have a content reference`);
  if (change !== 'new') line += `,"x":"${change}"`;
  if (e.ctimeNs !== undefined) line += `,"ct":"${i64(e.ctimeNs, 'ctimeNs')}"`;
  if (e.rdev !== undefined) {
    if (e.kind !== 'other') throw invalid(`entry ${JSON.stringify(e.path)}: only special files have an rdev`);
    line += `,"r":"${u64(e.rdev, 'rdev')}"`;
  }
  if (e.links !== undefined || e.sparse === true) {
    if (e.kind !== 'file') throw invalid(`entry ${JSON.stringify(e.path)}: only files have links or holes`);
    if (e.links !== undefined) line += `,"nl":"${u64(BigInt(u32(e.links, 'links')), 'links')}"`;
    if (e.sparse === true) line += ',"sp":true';
  }
  if (e.xattrs !== undefined && e.xattrs.length > 0) line += `,"a":${JSON.stringify(e.xattrs.map((x) => [x.name, x.value.toString('hex')]))}`;
  return `${line}}`;
}

const protocolError = (op: string, why: string): ShmpipeError => new ShmpipeError('SHMPIPE_E_PROTOCOL', `${op}: the sidecar returned ${why}`);

const DECIMAL = /^[0-9]{1,20}$/;
const SIGNED_DECIMAL = /^-?[0-9]{1,19}$/;

function big(v: unknown, field: string, signed = false): bigint {
  if (typeof v !== 'string' || !(signed ? SIGNED_DECIMAL : DECIMAL).test(v)) throw protocolError('entriesNext', `an entry whose ${field} is not a decimal string`);
  return BigInt(v);
}

/** Parses one ENTRIES_NEXT line. */
export function decodeEntry(line: string): TreeEntry {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw protocolError('entriesNext', `an entry line that is not JSON: ${line.slice(0, 120)}`);
  }
  if (typeof o.p !== 'string' || typeof o.k !== 'string' || !KINDS.has(o.k) || !Number.isInteger(o.m) || !Number.isInteger(o.u) || !Number.isInteger(o.g)) {
    throw protocolError('entriesNext', `a malformed entry: ${line.slice(0, 120)}`);
  }
  const e: TreeEntry = {
    path: o.p,
    kind: o.k as EntryKind,
    mode: o.m as number,
    uid: o.u as number,
    gid: o.g as number,
    mtimeNs: big(o.t, 't', true),
    size: big(o.s, 's'),
    inode: big(o.n, 'n'),
    dev: big(o.d, 'd'),
    target: typeof o.l === 'string' ? o.l : undefined,
    content: typeof o.c === 'string' ? o.c : undefined,
  };
  // The optional fields only when present (older snapshots lack them).
  if (o.ct !== undefined) e.ctimeNs = big(o.ct, 'ct', true);
  if (o.r !== undefined) e.rdev = big(o.r, 'r');
  if (o.nl !== undefined) e.links = Number(big(o.nl, 'nl'));
  if (o.a !== undefined) e.xattrs = xattrsOf(o.a);
  if (o.sp === true) e.sparse = true;
  return e;
}

const HEX = /^(?:[0-9a-f]{2})*$/;

function xattrsOf(a: unknown): Xattr[] {
  if (!Array.isArray(a) || !a.every((x) => Array.isArray(x) && x.length === 2 && typeof x[0] === 'string' && typeof x[1] === 'string' && HEX.test(x[1]))) {
    throw protocolError('entriesNext', 'an entry whose xattrs are not [name, hex] pairs');
  }
  return a.map(([name, value]: [string, string]) => ({ name, value: Buffer.from(value, 'hex') }));
}

// ---- submission ---------------------------------------------------------------------------

function submit(c: Client, opcode: number, slot: Slot | null, offset: number, length: number, args: [number, number, number], consumes = false): Promise<StoreCompletion> {
  return c.submitStore({ kind: K_ENGINE, opcode, slot, offset, length, args, weight: 1, consumes, stream: null });
}

/**
 * Runs an op whose slot carries `payload` (or nothing: the whole slot is the output buffer) and
 * returns the completion with the output text at offset 0. `wipe`: clear the request bytes
 * before the slot goes back (a password must not linger in shared memory).
 */
async function slotOp(
  c: Client,
  opcode: number,
  payload: Buffer | null,
  args: [number, number, number],
  wipe = false,
  outLength = (r: StoreCompletion): number => r.result,
): Promise<{ r: StoreCompletion; out: string }> {
  const slot = payload === null ? await c.alloc() : await payloadSlot(c, payload);
  try {
    const length = payload === null ? slot.capacity : payload.length;
    const r = await submit(c, opcode, slot, 0, length, args);
    const n = outLength(r);
    if (n > slot.capacity) throw protocolError(opName(opcode), `an output of ${n} bytes, beyond its slot`);
    return { r, out: slot.buffer.toString('utf8', 0, n) };
  } finally {
    if (wipe && !slot.released) slot.buffer.fill(0, 0, Math.max(payload?.length ?? 0, 1024));
    slot.release();
  }
}

function opName(opcode: number): string {
  return Object.entries(OPCODES).find(([, v]) => v === opcode)?.[0].toLowerCase() ?? `op ${opcode}`;
}

function parseDoc<T>(text: string, opcode: number): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw protocolError(opName(opcode), `a document that is not JSON: ${text.slice(0, 120)}`);
  }
}

// ---- repositories -------------------------------------------------------------------------

function repoRequest(password: unknown, params: unknown, op: string, noCache = false): Buffer {
  if (typeof password !== 'string' || password === '') throw invalid(`${op}: the password must be a non-empty string`);
  const doc: { password: string; params?: RepoParams; no_cache?: true } = { password };
  if (noCache) doc.no_cache = true;
  if (params !== undefined) {
    const p = repoParams.safeParse(params);
    if (!p.success) throw invalid(`${op}: params: ${zodProblem(p.error)}`);
    doc.params = p.data as RepoParams;
  }
  return Buffer.from(JSON.stringify(doc), 'utf8');
}

/** Creates the repository in the sidecar's store (SHMPIPE_E_REPO_EXISTS if there is one); resolves with its handle. */
export function repoInit(c: Client, password: string, params?: RepoParams): Promise<Handle> {
  return guard(async () => (await slotOp(c, OP_REPO_INIT, repoRequest(password, params ?? {}, 'repoInit'), [0, 0, 0], true)).r.result);
}

/**
 * Opens the repository in the sidecar's store (SHMPIPE_E_WRONG_PASSWORD, SHMPIPE_E_NOT_A_REPOSITORY,
 * …). `noCache`: without the sidecar's local metadata cache (REPOSITORY.md §Cache).
 */
export function repoOpen(c: Client, password: string, options: { noCache?: boolean } = {}): Promise<Handle> {
  return guard(async () => (await slotOp(c, OP_REPO_OPEN, repoRequest(password, undefined, 'repoOpen', options.noCache === true), [0, 0, 0], true)).r.result);
}

/** CLOSE: a repository, an unfinished file, an entry cursor, or a job (which cancels it). */
export function close(c: Client, handle: Handle): Promise<void> {
  return guard(async () => {
    await submit(c, OP_CLOSE, null, 0, 0, [checkHandle(handle, 'handle', 'close'), 0, 0]);
  });
}

export function snapshots(c: Client, repo: Handle): Promise<SnapshotInfo[]> {
  return guard(async () => {
    const { out } = await slotOp(c, OP_SNAPSHOTS, null, [checkHandle(repo, 'repo', 'snapshots'), 0, 0]);
    const doc = parseDoc<{ snapshots?: SnapshotInfo[] }>(out, OP_SNAPSHOTS);
    if (!Array.isArray(doc.snapshots)) throw protocolError('snapshots', 'a document without a snapshots list');
    return doc.snapshots;
  });
}

/**
 * Which packs a partial data check reads (restic's `--read-data-subset`): group `n` of `t` by
 * pack id, a share in parts per million at random, or random packs up to a number of bytes.
 */
export type CheckSubset = { group: [number, number] } | { ppm: number } | { bytes: number };

/** CHECK's arg1 for a subset (SPEC §7.3): the kind in the low byte, the parameter above it. */
function subsetArg(s: CheckSubset): number {
  const [kind, param] = subsetParam(s);
  return kind + param * 256;
}

function subsetParam(s: CheckSubset): [number, number] {
  if ('group' in s) {
    const [n, t] = s.group;
    if (!Number.isInteger(n) || !Number.isInteger(t) || t < 1 || t > 1_000_000 || n < 1 || n > t) throw invalid(`check: a group subset is n/t with 1 ≤ n ≤ t ≤ 1000000, got ${n}/${t}`);
    return [2, n * 2 ** 20 + t];
  }
  if ('ppm' in s) {
    if (!Number.isInteger(s.ppm) || s.ppm < 1 || s.ppm > 1_000_000) throw invalid(`check: a share is 1..1000000 parts per million, got ${s.ppm}`);
    return [3, s.ppm];
  }
  if (!Number.isSafeInteger(s.bytes) || s.bytes < 1 || s.bytes > 2 ** 44) throw invalid(`check: a size subset is a positive number of bytes up to 16 TiB, got ${s.bytes}`);
  return [4, s.bytes];
}

/** CHECK: the repository's structure, and with `readData` every data blob decrypted and verified (`subset`: some packs' blobs). */
export function check(c: Client, repo: Handle, options: { readData?: boolean; subset?: CheckSubset } = {}): Promise<CheckReport> {
  return guard(async () => {
    const readData = options.readData ?? false;
    if (typeof readData !== 'boolean') throw invalid('check: readData must be a boolean');
    const mode = options.subset !== undefined ? subsetArg(options.subset) : readData ? 1 : 0;
    const { out } = await slotOp(c, OP_CHECK, null, [checkHandle(repo, 'repo', 'check'), mode, 0]);
    return parseDoc<CheckReport>(out, OP_CHECK);
  });
}

// ---- backups ------------------------------------------------------------------------------

export function backupBegin(c: Client, repo: Handle, request: BackupRequest = {}): Promise<Handle> {
  return guard(async () => {
    const h = checkHandle(repo, 'repo', 'backupBegin');
    const r = backupRequest.safeParse(request);
    if (!r.success) throw invalid(`backupBegin: ${zodProblem(r.error)}`);
    return (await slotOp(c, OP_BACKUP_BEGIN, Buffer.from(JSON.stringify(r.data), 'utf8'), [h, 0, 0])).r.result;
  });
}

/** What a file's content became: its reference, and the bytes the sidecar took. */
export interface FileContent {
  content: string;
  size: number;
}

/**
 * FILE_PUT: a whole file in `slot[offset, offset+length)`. The slot comes back (with the
 * reference written at its start), still the caller's to reuse or release.
 */
export function filePut(c: Client, backup: Handle, slot: Slot, length: number, offset = 0): Promise<FileContent> {
  return guard(async () => {
    const h = checkHandle(backup, 'backup', 'filePut');
    const s = checkSlot(c, slot, 'filePut');
    checkRange(s, length, offset, 'filePut');
    const r = await submit(c, OP_FILE_PUT, s, offset, length, [h, 0, 0]);
    return { content: s.buffer.toString('latin1', 0, r.result), size: r.aux0 };
  });
}

/** FILE_OPEN: a file streamed in with fileWrite, then fileFinish. */
export function fileOpen(c: Client, backup: Handle): Promise<Handle> {
  return guard(async () => (await submit(c, OP_FILE_OPEN, null, 0, 0, [checkHandle(backup, 'backup', 'fileOpen'), 0, 0])).result);
}

/**
 * FILE_WRITE: appends `slot[offset, offset+length)` to the file. The slot is consumed: do not
 * touch it afterwards. One write per file at a time (the sidecar refuses a second with
 * SHMPIPE_E_BUSY). Resolves with the file's size so far.
 */
export function fileWrite(c: Client, file: Handle, slot: Slot, length: number, offset = 0): Promise<number> {
  return guard(async () => {
    const h = checkHandle(file, 'file', 'fileWrite');
    const s = checkSlot(c, slot, 'fileWrite');
    checkRange(s, length, offset, 'fileWrite');
    return (await submit(c, OP_FILE_WRITE, s, offset, length, [h, 0, 0], true)).result;
  });
}

/** FILE_FINISH: the file's content reference; the handle is finished whatever the outcome. */
export function fileFinish(c: Client, file: Handle): Promise<FileContent> {
  return guard(async () => {
    const { r, out } = await slotOp(c, OP_FILE_FINISH, null, [checkHandle(file, 'file', 'fileFinish'), 0, 0]);
    return { content: out, size: r.aux0 };
  });
}

/**
 * ADD_ENTRIES: the entry lines (encodeEntry, `\n`-separated) in `slot[offset, offset+length)`,
 * added in order; the slot comes back. Resolves with the number added.
 */
export function addEntries(c: Client, backup: Handle, slot: Slot, length: number, offset = 0): Promise<number> {
  return guard(async () => {
    const h = checkHandle(backup, 'backup', 'addEntries');
    const s = checkSlot(c, slot, 'addEntries');
    checkRange(s, length, offset, 'addEntries');
    return (await submit(c, OP_ADD_ENTRIES, s, offset, length, [h, 0, 0])).result;
  });
}

/** BACKUP_COMMIT: writes the snapshot; the handle is finished whatever the outcome. */
export function backupCommit(c: Client, backup: Handle): Promise<CommitSummary> {
  return guard(async () => {
    const { out } = await slotOp(c, OP_BACKUP_COMMIT, null, [checkHandle(backup, 'backup', 'backupCommit'), 0, 0]);
    return parseDoc<CommitSummary>(out, OP_BACKUP_COMMIT);
  });
}

/** BACKUP_ABORT: no snapshot; what was uploaded stays as unreferenced data. */
export function backupAbort(c: Client, backup: Handle): Promise<void> {
  return guard(async () => {
    await submit(c, OP_BACKUP_ABORT, null, 0, 0, [checkHandle(backup, 'backup', 'backupAbort'), 0, 0]);
  });
}

// ---- reading snapshots --------------------------------------------------------------------

/** A snapshot's entries, in the order they were added (parents before children). */
export interface EntryListing extends AsyncIterable<TreeEntry> {
  /** The snapshot's id (resolves `latest`). */
  readonly id: string;
}

/** ENTRIES_OPEN: a cursor over `snapshot` (an id, or `latest`); resolves with it and the id. */
export function entriesOpen(c: Client, repo: Handle, snapshot: string): Promise<{ cursor: Handle; id: string }> {
  return guard(async () => {
    const h = checkHandle(repo, 'repo', 'entriesOpen');
    if (typeof snapshot !== 'string' || (snapshot !== 'latest' && !SNAPSHOT_ID.test(snapshot))) {
      throw invalid(`entriesOpen: snapshot must be an id (64 lowercase hex digits) or 'latest', got ${JSON.stringify(snapshot)}`);
    }
    // `result` is the cursor; the id's length is in aux0.
    const { r, out } = await slotOp(c, OP_ENTRIES_OPEN, Buffer.from(snapshot, 'utf8'), [h, 0, 0], false, (q) => q.aux0);
    if (!SNAPSHOT_ID.test(out)) throw protocolError('entriesOpen', `a snapshot id that is not 64 hex digits: ${out.slice(0, 80)}`);
    return { cursor: r.result, id: out };
  });
}

/** ENTRIES_NEXT: the next page of entry lines, and whether the listing is complete. */
export function entriesNext(c: Client, cursor: Handle): Promise<{ lines: string; done: boolean }> {
  return guard(async () => {
    const { r, out } = await slotOp(c, OP_ENTRIES_NEXT, null, [checkHandle(cursor, 'cursor', 'entriesNext'), 0, 0]);
    return { lines: out, done: r.aux0 === 1 };
  });
}

/** What an incremental backup keeps of a parent snapshot's entry (see `decodeParentEntry`). */
export interface ParentEntry {
  path: string;
  kind: EntryKind;
  size: bigint;
  mtimeNs: bigint;
  inode: bigint;
  ctimeNs: bigint | undefined;
  content: string | undefined;
  xattrs: Xattr[] | undefined;
}

/**
 * Parses one ENTRIES_NEXT line into what the incremental test and an unchanged file's entry
 * need, and no more: the lean twin of `decodeEntry` for loading a whole parent snapshot
 * (100,000 entries cost ~0.6 s of agent CPU through decodeEntry and a copy). Malformed lines
 * fail the same way (SHMPIPE_E_PROTOCOL).
 */
export function decodeParentEntry(line: string): ParentEntry {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw protocolError('entriesNext', `an entry line that is not JSON: ${line.slice(0, 120)}`);
  }
  if (typeof o.p !== 'string' || typeof o.k !== 'string' || !KINDS.has(o.k)) throw protocolError('entriesNext', `a malformed entry: ${line.slice(0, 120)}`);
  return {
    path: o.p,
    kind: o.k as EntryKind,
    size: big(o.s, 's'),
    mtimeNs: big(o.t, 't', true),
    inode: big(o.n, 'n'),
    ctimeNs: o.ct === undefined ? undefined : big(o.ct, 'ct', true),
    content: typeof o.c === 'string' ? o.c : undefined,
    xattrs: o.a === undefined ? undefined : xattrsOf(o.a),
  };
}

/** A snapshot's entries page by page, each line through `decode`; the cursor is closed when the iteration stops early. */
export async function entryLines<T>(c: Client, repo: Handle, snapshot: string, decode: (line: string) => T): Promise<AsyncIterable<T> & { id: string }> {
  const { cursor, id } = await entriesOpen(c, repo, snapshot);
  let started = false;
  return {
    id,
    async *[Symbol.asyncIterator]() {
      if (started) throw invalid('entries: a listing can be iterated once');
      started = true;
      let done = false;
      try {
        while (!done) {
          const page = await entriesNext(c, cursor);
          done = page.done;
          for (const line of page.lines.split('\n')) if (line !== '') yield decode(line);
        }
      } finally {
        if (!done) await close(c, cursor).catch(() => {});
      }
    },
  };
}

/** A snapshot's entries page by page; the cursor is closed when the iteration stops early. */
export function entries(c: Client, repo: Handle, snapshot: string): Promise<EntryListing> {
  return entryLines(c, repo, snapshot, decodeEntry);
}

// ---- jobs ---------------------------------------------------------------------------------

/** A JOB_START request: the job's name and its arguments (SPEC §7.3; each job documents its own). */
export type JobRequest = { job: string } & Record<string, unknown>;

/** One line of a job's output (a JSON value; each job documents its shape). */
export type JobLine = Record<string, unknown>;

/** JOB_START: starts a job on an open repository; resolves with its handle. */
export function jobStart(c: Client, repo: Handle, request: JobRequest): Promise<Handle> {
  return guard(async () => {
    const h = checkHandle(repo, 'repo', 'jobStart');
    if (request === null || typeof request !== 'object' || typeof request.job !== 'string' || request.job === '') {
      throw invalid('jobStart: the request must be an object with a job name in `job`');
    }
    return (await slotOp(c, OP_JOB_START, Buffer.from(JSON.stringify(request), 'utf8'), [h, 0, 0], true)).r.result;
  });
}

/** JOB_NEXT: the job's next output lines (waits for some, or for its end), and whether it finished. */
export function jobNext(c: Client, job: Handle): Promise<{ lines: string; done: boolean }> {
  return guard(async () => {
    const { r, out } = await slotOp(c, OP_JOB_NEXT, null, [checkHandle(job, 'job', 'jobNext'), 0, 0]);
    return { lines: out, done: r.aux0 === 1 };
  });
}

/**
 * A job's output lines, parsed, as they come. A failed job throws its error (a ShmpipeError with
 * the sidecar's code and message) after the lines before the failure; stopping the iteration
 * early cancels the job (CLOSE).
 */
export async function* jobLines(c: Client, repo: Handle, request: JobRequest): AsyncGenerator<JobLine> {
  const job = await jobStart(c, repo, request);
  let done = false;
  let failed = false;
  try {
    while (!done) {
      let page;
      try {
        page = await jobNext(c, job);
      } catch (e) {
        failed = true; // the sidecar finished the handle with the failure
        throw e;
      }
      done = page.done;
      for (const line of page.lines.split('\n')) {
        if (line === '') continue;
        try {
          yield JSON.parse(line) as JobLine;
        } catch (e) {
          if (e instanceof SyntaxError) throw protocolError('jobNext', `a line that is not JSON: ${line.slice(0, 120)}`);
          throw e;
        }
      }
    }
  } finally {
    if (!done && !failed) await close(c, job).catch(() => {});
  }
}

/** Runs a job to its end; resolves with every line it output. */
export async function runJob(c: Client, repo: Handle, request: JobRequest): Promise<JobLine[]> {
  const all: JobLine[] = [];
  for await (const line of jobLines(c, repo, request)) all.push(line);
  return all;
}

/**
 * CONTENT_READ: a file's bytes as chunks in slots, like openRead (each slot released when the
 * iteration moves on; `break` cancels). The stream ends verified: every chunk was authenticated
 * before its bytes were delivered.
 */
export function contentRead(c: Client, repo: Handle, content: string, options: { readAhead?: number } = {}): ReadStream {
  const h = checkHandle(repo, 'repo', 'contentRead');
  const ref = checkContent(content, 'contentRead');
  const readAhead = options.readAhead ?? 4;
  if (!Number.isInteger(readAhead) || readAhead < 1 || readAhead > 64) throw invalid(`contentRead: readAhead must be an integer in 1..=64, got ${String(readAhead)}`);
  const payload = Buffer.from(ref, 'latin1');
  return new ReadStream((onChunk) => startStream(c, { kind: K_ENGINE, opcode: OP_CONTENT_READ, payload, args: [h, 0, readAhead], readAhead }, onChunk));
}
