/**
 * The last step of a request: turning its final completion (SPEC §5.2) into the value its
 * Promise resolves with, or the ShmpipeError it rejects with. The client has already matched the
 * completion to the request and settled the slot's ownership; this only reads the entry.
 */

import { errorFromStatus, ShmpipeError } from './errors';
import { CQ_SLOT, decodeCompletion } from './protocol';
import { K_DELAY, K_ECHO, K_RAW, K_STATS, opName, TWO_32, type Request } from './requests';
import type { EchoResult, RawCompletion, Stats } from './results';
import type { SegmentViews } from './ring';
import { K_FIRST_STORE, type StoreCompletion } from './store-request';

/** Resolves or rejects `r` from the completion at byte offset `at`. */
export function settle(r: Request, views: SegmentViews, at: number): void {
  const u32 = views.u32;
  const w = at >>> 2;
  const status = views.i32[w + 2]!;
  if (r.kind === K_RAW) {
    const c = decodeCompletion(views.u8, at);
    const code = c.status < 0 ? errorFromStatus(c.status, 'raw').code : null;
    (r.resolve as (v: RawCompletion) => void)({
      requestId: c.request_id,
      status: c.status,
      code: code === 'SHMPIPE_E_PROTOCOL' ? null : code,
      flags: c.flags,
      slotId: c.slot_id,
      slotGen: c.slot_gen,
      result: c.result,
      aux: c.aux,
    });
    return;
  }
  const slot = r.slot;
  if (status !== 0) {
    // Store failures whose slot came back carry the store's message in it (SPEC §7.2).
    let detail: string | undefined;
    const n = u32[w + 6]!;
    if (r.kind >= K_FIRST_STORE && slot !== null && (u32[w + 3]! & CQ_SLOT) !== 0 && n > 0 && n <= slot.capacity && u32[w + 7] === 0) {
      detail = slot.buffer.toString('utf8', 0, n);
    }
    r.reject(errorFromStatus(status, opName(r), detail));
    return;
  }
  const result = u32[w + 6]! + u32[w + 7]! * TWO_32;
  switch (r.kind) {
    case K_ECHO:
      (r.resolve as (v: EchoResult) => void)({ length: result, checksum: u32[w + 8]! });
      return;
    case K_DELAY:
      (r.resolve as (v: number) => void)(result);
      return;
    case K_STATS:
      settleStats(r, result);
      return;
    default:
      if (r.kind >= K_FIRST_STORE) {
        (r.resolve as (v: StoreCompletion) => void)({ result, aux0: u32[w + 8]! + u32[w + 9]! * TWO_32, aux1: u32[w + 10]! + u32[w + 11]! * TWO_32 });
      } else {
        (r.resolve as (v: undefined) => void)(undefined);
      }
  }
}

function settleStats(r: Request, length: number): void {
  const slot = r.slot;
  if (slot === null || length > slot.capacity) {
    r.reject(new ShmpipeError('SHMPIPE_E_PROTOCOL', `STATS result ${length} exceeds the slot`));
    return;
  }
  try {
    (r.resolve as (v: Stats) => void)(JSON.parse(slot.buffer.toString('utf8', 0, length)) as Stats);
  } catch (e) {
    r.reject(new ShmpipeError('SHMPIPE_E_PROTOCOL', 'STATS returned invalid JSON', { cause: e }));
  }
}
