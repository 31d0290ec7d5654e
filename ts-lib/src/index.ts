/**
 * shmpipe TypeScript client: the public surface. Everything else in ts-lib/src is internal.
 *
 * `protocol` is a frozen namespace of the SPEC constants and reference codecs, exported for
 * diagnostics and for the test vectors (test/vectors.test.js loads only this bundle).
 */

import * as protocolModule from './protocol';

export { connect, Client } from './client';
export type { ClientLayout, EchoResult, RawAccess, RawCompletion, Stats, SessionStats, GlobalStats } from './client';
export type { ConnectOptions } from './options';
export { Slot } from './slot';
export { Writer, ReadStream } from './store';
export type { PutResult, ObjectInfo, ListEntry, ReadChunk, ReadResult, ReadOptions, ListOptions, FileOptions } from './store';
export { connectResilient, ResilientClient } from './reconnect';
export type { ReconnectOptions } from './reconnect';
export { startSidecar, findSidecarBinary } from './sidecar-process';
export type { SidecarProcess, SidecarProcessOptions } from './sidecar-process';
export { ShmpipeError, WIRE_ERROR_CODES, LOCAL_ERROR_CODES } from './errors';
export type { ErrorCode, WireErrorCode, LocalErrorCode } from './errors';

export const protocol = Object.freeze({ ...protocolModule });
