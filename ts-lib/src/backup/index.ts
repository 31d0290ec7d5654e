/**
 * The backup agent's building blocks (walker, names, incremental test, restore target), bundled
 * as ts-lib/dist/backup.js for the CLI's backup commands and for tests. Not part of the
 * package's public API (that is ../index.ts).
 */

export { escapeName, unescapeName } from './names';
export { walk, rootNames, type SourceEntry, type WalkError, type EntryKind } from './walk';
export { classify, type ParentFile, type Change } from './incremental';
export { RestoreTarget, includeFilter, type RestoreEntry, type FileSink } from './restore-fs';
export { Progress, progressLine, progressRecord, formatBytes, formatDuration, summaryLines, type ProgressCounts, type ProgressSink, type BackupSummary } from './progress';
export { resolveRepo, resolvePassword, defaultRepoDir, PasswordError, type PasswordSources } from './credentials';
