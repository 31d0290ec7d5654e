/**
 * The session's control socket after the handshake (SPEC §10): Node's net.Socket adopts the fd
 * the addon connected, sends the `mapped` frame, reads `draining` and `error` frames, and reports
 * EOF, with no native code. Also the frame encoder the handshake's `hello` uses.
 *
 * Frames are a u32 little-endian length (≤ MAX_FRAME) and a UTF-8 JSON object. A frame that is
 * too long or not JSON ends the session (SHMPIPE_E_PROTOCOL); unknown frame types are ignored
 * (later versions may add notices).
 */

import * as net from 'node:net';
import { ShmpipeError } from './errors';
import { MAX_FRAME } from './protocol';

/** A length-prefixed JSON frame. */
export function encodeFrame(msg: object): Buffer {
  const body = Buffer.from(JSON.stringify(msg), 'utf8');
  if (body.length > MAX_FRAME) throw new ShmpipeError('SHMPIPE_E_INVALID_ARGUMENT', 'control frame too large');
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32LE(body.length, 0);
  body.copy(out, 4);
  return out;
}

export interface ControlEvents {
  /** The sidecar announced a graceful shutdown. */
  onDraining(): void;
  /** The session ended from the sidecar's side (EOF, an `error` frame, a bad frame). */
  onEnd(err: ShmpipeError): void;
}

export class ControlChannel {
  /** Resolves once the socket is closed. */
  readonly closed: Promise<void>;
  private readonly socket: net.Socket;
  private pending: Buffer = Buffer.alloc(0);

  /** Adopts `fd` (throws if Node cannot; the caller still owns the fd then). */
  constructor(fd: number, private readonly events: ControlEvents) {
    this.socket = new net.Socket({ fd, readable: true, writable: true });
    this.closed = new Promise((resolve) => this.socket.once('close', () => resolve()));
    this.socket.on('data', (chunk: Buffer) => this.onBytes(chunk));
    const gone = (why: string) => () => events.onEnd(new ShmpipeError('SHMPIPE_E_DISCONNECTED', `the sidecar is gone (${why} on the control socket)`));
    this.socket.on('end', gone('EOF'));
    this.socket.on('close', gone('close'));
    this.socket.on('error', (e: Error) => events.onEnd(new ShmpipeError('SHMPIPE_E_DISCONNECTED', `control socket error: ${e.message}`, { cause: e })));
  }

  send(msg: object): void {
    this.socket.write(encodeFrame(msg));
  }

  /** Whether the socket keeps the event loop alive (net.Socket#ref/unref). */
  setRef(ref: boolean): void {
    if (ref) this.socket.ref();
    else this.socket.unref();
  }

  /** Closes the socket (the sidecar then reclaims the session). */
  destroy(): void {
    this.socket.destroy();
  }

  private onBytes(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    while (this.pending.length >= 4) {
      const len = this.pending.readUInt32LE(0);
      if (len > MAX_FRAME) {
        this.events.onEnd(new ShmpipeError('SHMPIPE_E_PROTOCOL', `control frame of ${len} bytes exceeds ${MAX_FRAME}`));
        return;
      }
      if (this.pending.length < 4 + len) return;
      const body = this.pending.subarray(4, 4 + len).toString('utf8');
      this.pending = this.pending.subarray(4 + len);
      let msg: { type?: unknown; code?: unknown; message?: unknown };
      try {
        msg = JSON.parse(body) as typeof msg;
      } catch {
        this.events.onEnd(new ShmpipeError('SHMPIPE_E_PROTOCOL', 'control frame is not JSON'));
        return;
      }
      if (msg.type === 'draining') this.events.onDraining();
      else if (msg.type === 'error') {
        this.events.onEnd(new ShmpipeError('SHMPIPE_E_DISCONNECTED', `the sidecar ended the session: ${String(msg.code)} ${String(msg.message ?? '')}`));
        return;
      }
    }
  }
}
