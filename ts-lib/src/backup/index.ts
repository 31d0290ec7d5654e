/**
 * The backup agent (walker, names, incremental test, restore target, the engine ops, the backup
 * and restore pipelines), bundled as ts-lib/dist/backup.js for tests; the CLI bundles the same
 * modules. Not part of the package's public API (that is ../index.ts).
 */

export { escapeName, unescapeName } from './names';
export { PatternList, PatternError, parsePattern, matchPattern, cleanPath, expandGlob, type Pattern } from './pattern';
export { walk, rootNames, type SourceEntry, type WalkError, type EntryKind } from './walk';
export { classify, type ParentFile, type Change } from './incremental';
export { RestoreTarget, OVERWRITE_MODES, type RestoreEntry, type FileSink, type SyncFileSink, type Overwrite, type Action, type Xattr } from './restore-fs';
export { RestorePlan } from './restore-plan';
export { selector } from './restore-select';
export { pathNames, targetBytes, PATH_MAX } from './names';
export * as fsops from './fsops';
export { Progress, progressLine, progressRecord, formatBytes, formatDuration, summaryLines, type ProgressCounts, type ProgressSink, type BackupSummary } from './progress';
export { resolveRepo, resolvePassword, defaultRepoDir, PasswordError, type PasswordSources } from './credentials';
export * as ops from './ops';
export { encodeEntry, decodeEntry, type TreeEntry, type SnapshotInfo, type CommitSummary, type CheckReport } from './ops';
export { ParentCursor, WalkOrder } from './parent-cursor';
export { runBackup, findParent, openParent, snapshotPaths, type BackupOptions, type BackupResult } from './backup';
export { runRestore, type RestoreOptions, type RestoreResult } from './restore';
export { splitSnapshotArg, subtree } from './subtree';
// The ops above need a Client of this bundle (Slot checks are `instanceof`): tests connect with this.
export { connect } from '../client';
