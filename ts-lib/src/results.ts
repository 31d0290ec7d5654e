/**
 * What the Client's own calls resolve with (echo, stats) and its raw diagnostic access
 * (`client.raw`). Plain types only; the object-store results are in store.ts.
 */

export interface EchoResult {
  /** Bytes the sidecar checksummed. */
  length: number;
  /** CRC-32C (Castagnoli) of the bytes, as an unsigned 32-bit number. */
  checksum: number;
}

/** A completion exactly as the sidecar wrote it (raw diagnostics). */
export interface RawCompletion {
  requestId: bigint;
  status: number;
  /** The wire code name for a negative status, or null for 0 / unknown codes. */
  code: string | null;
  flags: number;
  slotId: number;
  slotGen: number;
  result: bigint;
  aux: [bigint, bigint, bigint];
}

export interface RawAccess {
  /** Submits entry bytes 8..64 verbatim; the client fills request_id. Resolves with the completion, whatever its status. */
  submit(bytes56: Uint8Array): Promise<RawCompletion>;
  /** The whole mapping (header, rings, slots). Throws SHMPIPE_E_CLOSED after close. */
  readonly segment: Buffer;
  /** Rings the sq doorbell without publishing anything. */
  ringDoorbell(): void;
}

type Counts = Record<string, number>;
export interface SessionStats {
  id: number;
  slot_count: number;
  slots_free: number;
  slots_granted: number;
  slots_in_flight: number;
  grants_total: number;
  returns_total: number;
  requests_total: number;
  requests_by_op: Counts;
  errors_by_code: Counts;
  in_flight_async: number;
}
export interface GlobalStats {
  clients: number;
  sessions_opened: number;
  sessions_closed: number;
  slots_reclaimed_total: number;
  segments_live: number;
  requests_total: number;
  requests_by_op: Counts;
  errors_by_code: Counts;
  protocol_violations: number;
}
export interface Stats {
  session: SessionStats;
  global: GlobalStats;
}
