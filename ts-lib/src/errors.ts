/**
 * The one error class of the client, ShmpipeError, and its string codes: the wire codes of
 * SPEC §8 (a completion's negative `status`) and the codes the agent raises locally. Also maps
 * errors thrown by the native addon (errno names) onto these codes.
 */

/** Wire error codes (SPEC §8), keyed by their negative `status`. */
export const WIRE_ERROR_CODES = Object.freeze({
  SHMPIPE_E_UNKNOWN_OPCODE: -1,
  SHMPIPE_E_MALFORMED: -2,
  SHMPIPE_E_INVALID_SLOT: -3,
  SHMPIPE_E_STALE_SLOT: -4,
  SHMPIPE_E_OUT_OF_RANGE: -5,
  SHMPIPE_E_SHUTTING_DOWN: -6,
  SHMPIPE_E_CANCELLED: -7,
  SHMPIPE_E_BUSY: -8,
  SHMPIPE_E_NOT_FOUND: -9,
  SHMPIPE_E_STORE: -10,
  SHMPIPE_E_INTEGRITY: -11,
  SHMPIPE_E_INTERNAL: -12,
  SHMPIPE_E_INVALID_HANDLE: -13,
  SHMPIPE_E_WRONG_PASSWORD: -14,
  SHMPIPE_E_NOT_A_REPOSITORY: -15,
  SHMPIPE_E_REPO_EXISTS: -16,
  SHMPIPE_E_LOCKED: -17,
  SHMPIPE_E_REPO_VERSION: -18,
  SHMPIPE_E_REPO_LIMIT: -25,
  SHMPIPE_E_LOCK_LOST: -26,
  SHMPIPE_E_REFUSED: -27,
} as const);

export type WireErrorCode = keyof typeof WIRE_ERROR_CODES;

/** Codes the agent raises itself; they never appear on the wire. */
export const LOCAL_ERROR_CODES = Object.freeze([
  'SHMPIPE_E_DISCONNECTED',
  'SHMPIPE_E_HANDSHAKE',
  'SHMPIPE_E_VERSION',
  'SHMPIPE_E_PERMISSION',
  'SHMPIPE_E_INVALID_ARGUMENT',
  'SHMPIPE_E_CLOSED',
  'SHMPIPE_E_QUEUE_FULL',
  'SHMPIPE_E_PROTOCOL',
  // A local file operation (putFile/getFile) failed; the errno name is in the message.
  'SHMPIPE_E_IO',
  // A ResilientClient call was bound to a session that ended (its slot or handle is gone); the
  // outcome is unknown: allocate again and redo it.
  'SHMPIPE_E_SESSION_LOST',
  // The sidecar's heartbeat did not move for `unresponsiveMs` while calls were pending (it is
  // stopped or wedged): the client gave up on the session and closed it.
  'SHMPIPE_E_UNRESPONSIVE',
  // A snapshot entry restore refuses to use: a name that is not one (`..`, `/` once decoded),
  // a duplicate, an entry below something that is not a directory it restored (backup/names.ts,
  // restore-plan.ts). Also a walk/backup entry whose name no repository may hold.
  'SHMPIPE_E_UNSAFE_ENTRY',
] as const);

export type LocalErrorCode = (typeof LOCAL_ERROR_CODES)[number];
export type ErrorCode = WireErrorCode | LocalErrorCode;

const BY_STATUS: ReadonlyMap<number, WireErrorCode> = new Map(
  Object.entries(WIRE_ERROR_CODES).map(([name, status]) => [status, name as WireErrorCode]),
);

export class ShmpipeError extends Error {
  readonly code: ErrorCode;
  /** The completion `status` when the error came from the sidecar. */
  readonly status?: number;

  constructor(code: ErrorCode, message: string, options?: { status?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ShmpipeError';
    this.code = code;
    if (options?.status !== undefined) this.status = options.status;
  }
}

/**
 * The error for a failed completion. An unknown negative status is still an error. `detail`:
 * the sidecar's message, when it wrote one into the request's slot (store ops, SPEC §7.2).
 */
export function errorFromStatus(status: number, op: string, detail?: string): ShmpipeError {
  const code = BY_STATUS.get(status);
  if (code === undefined) {
    return new ShmpipeError('SHMPIPE_E_PROTOCOL', `${op}: the sidecar returned unknown status ${status}`, { status });
  }
  const more = detail !== undefined && detail.length > 0 ? `: ${detail}` : '';
  return new ShmpipeError(code, `${op} failed: ${code} (status ${status})${more}`, { status });
}

/** Wire code name for a status, or undefined (used by diagnostics and the vector checks). */
export function codeForStatus(status: number): WireErrorCode | undefined {
  return BY_STATUS.get(status);
}

/** Maps an error thrown/rejected by the native addon (code = errno name) to a ShmpipeError. */
export function errorFromNative(err: unknown, what: string): ShmpipeError {
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' ? e.code : 'UNKNOWN';
  const detail = typeof e?.message === 'string' ? e.message : String(err);
  let mapped: ErrorCode;
  switch (code) {
    case 'ENOENT':
    case 'ECONNREFUSED':
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ENOTCONN':
    case 'EOF':
      mapped = 'SHMPIPE_E_DISCONNECTED';
      break;
    case 'EACCES':
    case 'EPERM':
      mapped = 'SHMPIPE_E_PERMISSION';
      break;
    case 'EINVAL':
      mapped = 'SHMPIPE_E_INVALID_ARGUMENT';
      break;
    case 'EPROTO':
      mapped = 'SHMPIPE_E_PROTOCOL';
      break;
    default:
      // EAGAIN/ETIMEDOUT (the handshake timed out) and anything else during setup.
      mapped = 'SHMPIPE_E_HANDSHAKE';
  }
  return new ShmpipeError(mapped, `${what}: ${detail} (${code})`, { cause: err });
}
