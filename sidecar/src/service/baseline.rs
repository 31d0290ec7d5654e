//! The UDS baseline transport (contract "UDS baseline transport"): the same work as the
//! shared-memory path — NOP, ECHO (CRC-32C), and the store uploads and downloads — over a plain
//! Unix stream socket, so perf/ can compare the two. No handshake.
//!
//! Request: u32 LE N, then N bytes = a 64-byte submission entry (slot fields NO_SLOT/0) and
//! N-64 payload bytes. Reply: u32 LE N, then a 64-byte completion and N-64 payload bytes (N = 64
//! except for read-stream chunks). Requests may be pipelined; replies go out in order, flushed
//! whenever no further request is buffered. Each connection runs its requests one after the
//! other (a client wanting concurrency opens several connections).
//!
//! Store ops (SPEC §7.2 semantics, payloads instead of slots; writer handles are per connection):
//! - PUT: payload = key ‖ data, `arg0` = key length → `result` = size, `aux0` = CRC-32C.
//! - OPEN_WRITE: payload = key → `result` = handle. WRITE: `arg0` = handle, payload = data →
//!   `result` = bytes. COMMIT / ABORT: `arg0` = handle → size and CRC-32C / 0.
//! - OPEN_READ: payload = key, `arg0`/`arg1` = range as in SPEC §7.2 → replies with `MORE`, each
//!   carrying up to `READ_CHUNK` bytes of the object as payload (`result` = bytes, `aux0` = their
//!   offset), then a final completion (`result` = total, `aux0` = 1 if verified).
//! - STAT, LIST, DELETE are not offered here: UNKNOWN_OPCODE.
//!
//! The payload of a PUT or WRITE goes to the store as one `Bytes` (moved, not copied): the one
//! copy is the kernel's, from the socket into it. Read chunks go from a reused buffer to the socket.
//!
//! Completions count in `requests_total{op,status}` like the shared-memory path's (not in the
//! latency histogram, nor in the STATS request counts).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shm_protocol::entry::{cq_flags, EntryBytes, MAX_KEY_LEN};
use shm_protocol::layout::{ENTRY_SIZE, NO_SLOT};
use shm_protocol::{Completion, ErrorCode, Opcode, RawSubmission};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::service::shutdown::Shutdown;
use crate::stats::GlobalStats;
use crate::ops::store::{self as store_ops, Failure};

/// Bytes per OPEN_READ reply.
pub const READ_CHUNK: usize = 1 << 20;

/// Accepts until draining; connections are dropped when shutdown reaches `closing`.
pub async fn accept_loop(
    listener: UnixListener,
    max_payload: usize,
    shutdown: Shutdown,
    global: Arc<GlobalStats>,
    store: shmpipe_store::Store,
    tracker: TaskTracker,
) {
    loop {
        tokio::select! {
            _ = shutdown.draining.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let closing = shutdown.closing.clone();
                    let global = global.clone();
                    let store = store.clone();
                    tracker.spawn(async move {
                        tokio::select! {
                            _ = closing.cancelled() => {}
                            r = connection(stream, max_payload, &global, Some(&store)) => if let Err(e) = r {
                                debug!(error = %e, "baseline connection ended");
                            },
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "baseline accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn connection(stream: UnixStream, max_payload: usize, global: &GlobalStats, store: Option<&shmpipe_store::Store>) -> std::io::Result<()> {
    let (rd, wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(256 << 10, rd);
    let mut wr = BufWriter::with_capacity(64 << 10, wr);
    let mut payload = Vec::new();
    let mut conn = StoreConn { writers: HashMap::new(), next_handle: 1, read_buf: Some(vec![0u8; READ_CHUNK]) };
    loop {
        let n = match rd.read_u32_le().await {
            Ok(n) => n as usize,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        };
        if n < ENTRY_SIZE || n - ENTRY_SIZE > max_payload {
            warn!(len = n, "baseline request length out of range; closing");
            break;
        }
        let mut entry: EntryBytes = [0; ENTRY_SIZE];
        rd.read_exact(&mut entry).await?;
        payload.resize(n - ENTRY_SIZE, 0);
        rd.read_exact(&mut payload).await?;
        let raw = RawSubmission::decode(&entry);
        let c = match (store, Opcode::from_u8(raw.opcode)) {
            (Some(store), Some(op)) if op.is_store() => match conn.execute(store, op, &raw, &mut payload, &mut wr, global).await? {
                Ok(c) => c,
                Err(f) => Completion::error(raw.request_id, f.code),
            },
            _ => execute(&entry, &payload),
        };
        global.completion(Opcode::from_u8(raw.opcode), c.status);
        wr.write_all(&(ENTRY_SIZE as u32).to_le_bytes()).await?;
        wr.write_all(&c.encode()).await?;
        if rd.buffer().is_empty() {
            wr.flush().await?;
        }
    }
    wr.flush().await
}

/// One connection's store state: its writers, and the buffer read chunks go out of.
struct StoreConn {
    writers: HashMap<u64, shmpipe_store::Writer>,
    next_handle: u64,
    read_buf: Option<Vec<u8>>,
}

fn key_of(bytes: &[u8]) -> Result<String, Failure> {
    store_ops::parse_key(bytes.to_vec()).map_err(Failure::code)
}

impl StoreConn {
    /// Runs a store op; OPEN_READ writes its chunk replies to `wr` before returning the final
    /// completion. The outer `Err` is the socket's.
    async fn execute<W: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        store: &shmpipe_store::Store,
        op: Opcode,
        raw: &RawSubmission,
        payload: &mut Vec<u8>,
        wr: &mut W,
        global: &GlobalStats,
    ) -> std::io::Result<Result<Completion, Failure>> {
        let id = raw.request_id;
        let clean = raw.flags == 0 && raw.reserved0 == 0 && raw.reserved1 == 0 && raw.slot_id == NO_SLOT && raw.slot_gen == 0 && raw.offset == 0 && raw.length == 0;
        if !clean {
            return Ok(Err(Failure::code(ErrorCode::Malformed)));
        }
        let info = |i: shmpipe_store::ObjectInfo| {
            let mut c = Completion::ok(id, i.size);
            c.aux[0] = i.checksum.map_or(0, |c| u64::from(c.0));
            c
        };
        Ok(match op {
            Opcode::Put => {
                let klen = raw.args[0];
                if klen == 0 || klen > u64::from(MAX_KEY_LEN) || klen as usize > payload.len() {
                    return Ok(Err(Failure::code(ErrorCode::Malformed)));
                }
                let key = match key_of(&payload[..klen as usize]) {
                    Ok(k) => k,
                    Err(f) => return Ok(Err(f)),
                };
                // The payload buffer itself becomes the object's data: moved, not copied.
                let data = Bytes::from(std::mem::take(payload)).slice(klen as usize..);
                store.put(&key, [data]).await.map(info).map_err(|e| store_ops::failure(op, &key, &e))
            }
            Opcode::OpenWrite => match key_of(payload).and_then(|k| store.open_write(&k).map_err(|e| store_ops::failure(op, &k, &e))) {
                Ok(w) => {
                    let h = self.next_handle;
                    self.next_handle += 1;
                    self.writers.insert(h, w);
                    Ok(Completion::ok(id, h))
                }
                Err(f) => Err(f),
            },
            Opcode::Write => match self.writers.get_mut(&raw.args[0]) {
                None => Err(Failure::code(ErrorCode::InvalidHandle)),
                Some(w) => {
                    let n = payload.len() as u64;
                    let key = w.key().to_owned();
                    w.write(Bytes::from(std::mem::take(payload))).await.map(|()| Completion::ok(id, n)).map_err(|e| store_ops::failure(op, &key, &e))
                }
            },
            Opcode::Commit => match self.writers.remove(&raw.args[0]) {
                None => Err(Failure::code(ErrorCode::InvalidHandle)),
                Some(w) => {
                    let key = w.key().to_owned();
                    w.commit().await.map(info).map_err(|e| store_ops::failure(op, &key, &e))
                }
            },
            Opcode::Abort => match self.writers.remove(&raw.args[0]) {
                None => Err(Failure::code(ErrorCode::InvalidHandle)),
                Some(w) => w.abort().await.map(|()| Completion::ok(id, 0)).map_err(|e| store_ops::failure(op, "", &e)),
            },
            Opcode::OpenRead => {
                let key = match key_of(payload) {
                    Ok(k) => k,
                    Err(f) => return Ok(Err(f)),
                };
                let range = match store_ops::parse_range(raw.args[0], raw.args[1]) {
                    Ok(store_ops::ReadRange::Whole) => None,
                    Ok(store_ops::ReadRange::Bounded(r)) => Some(r),
                    Ok(store_ops::ReadRange::From(s)) => match store.stat(&key).await {
                        Ok(i) => Some(s..i.size),
                        Err(e) => return Ok(Err(store_ops::failure(op, &key, &e))),
                    },
                    Err(code) => return Ok(Err(Failure::code(code))),
                };
                let mut reader = match store.open_read(&key, range).await {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(store_ops::failure(op, &key, &e))),
                };
                let verified = reader.is_verified_read();
                let mut offset = reader.range().start;
                let mut total = 0u64;
                let mut buf = self.read_buf.take().unwrap_or_else(|| vec![0u8; READ_CHUNK]);
                let result = loop {
                    match reader.read_into(buf).await {
                        Ok((b, filled)) => {
                            buf = b;
                            if filled.len > 0 {
                                let mut c = Completion::ok(id, filled.len as u64);
                                c.flags = cq_flags::MORE;
                                c.aux[0] = offset;
                                global.completion(Some(op), 0);
                                wr.write_all(&((ENTRY_SIZE + filled.len) as u32).to_le_bytes()).await?;
                                wr.write_all(&c.encode()).await?;
                                wr.write_all(&buf[..filled.len]).await?;
                                offset += filled.len as u64;
                                total += filled.len as u64;
                            }
                            if filled.end {
                                let mut c = Completion::ok(id, total);
                                c.aux[0] = u64::from(verified);
                                break Ok(c);
                            }
                        }
                        Err(e) => {
                            buf = vec![0u8; READ_CHUNK]; // the failed read kept the old one
                            break Err(store_ops::failure(op, &key, &e));
                        }
                    }
                };
                self.read_buf = Some(buf);
                result
            }
            _ => Err(Failure::code(ErrorCode::UnknownOpcode)),
        })
    }
}

/// Runs one baseline request.
pub fn execute(entry: &EntryBytes, payload: &[u8]) -> Completion {
    let raw = RawSubmission::decode(entry);
    let id = raw.request_id;
    let op = match Opcode::from_u8(raw.opcode) {
        Some(op @ (Opcode::Nop | Opcode::Echo)) => op,
        // Besides the store ops (`StoreConn`), only NOP and ECHO exist on this transport.
        _ => return Completion::error(id, ErrorCode::UnknownOpcode),
    };
    let clean = raw.flags == 0
        && raw.reserved0 == 0
        && raw.reserved1 == 0
        && raw.slot_id == NO_SLOT
        && raw.slot_gen == 0
        && raw.offset == 0
        && raw.length == 0;
    if !clean {
        return Completion::error(id, ErrorCode::Malformed);
    }
    match op {
        Opcode::Nop if payload.is_empty() => Completion::ok(id, 0),
        Opcode::Nop => Completion::error(id, ErrorCode::Malformed),
        _ => {
            let mut c = Completion::ok(id, payload.len() as u64);
            c.aux[0] = u64::from(crc32c::crc32c(payload));
            c
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(opcode: u8) -> EntryBytes {
        RawSubmission { request_id: 42, opcode, slot_id: NO_SLOT, ..Default::default() }.encode()
    }

    #[test]
    fn nop_echo_and_refusals() {
        assert_eq!(execute(&entry(0), b""), Completion::ok(42, 0));
        let c = execute(&entry(1), b"123456789");
        assert_eq!((c.status, c.result, c.aux[0]), (0, 9, 0xE306_9283));
        assert_eq!(execute(&entry(0), b"x").status, ErrorCode::Malformed.status());
        assert_eq!(execute(&entry(3), b"").status, ErrorCode::UnknownOpcode.status());
        assert_eq!(execute(&entry(99), b"").status, ErrorCode::UnknownOpcode.status());
        let slot = RawSubmission { request_id: 1, opcode: 1, slot_id: 0, ..Default::default() }.encode();
        assert_eq!(execute(&slot, b"").status, ErrorCode::Malformed.status());
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order() {
        let (client, server) = UnixStream::pair().unwrap();
        let global = GlobalStats::default();
        let server = async { connection(server, 1 << 20, &global, None).await.unwrap() };
        let client = async move {
            let (mut rd, mut wr) = client.into_split();
            let mut req = Vec::new();
            for i in 0..100u64 {
                let payload = vec![i as u8; i as usize];
                let e = RawSubmission { request_id: i, opcode: 1, slot_id: NO_SLOT, ..Default::default() }.encode();
                req.extend_from_slice(&((64 + payload.len()) as u32).to_le_bytes());
                req.extend_from_slice(&e);
                req.extend_from_slice(&payload);
            }
            wr.write_all(&req).await.unwrap();
            drop(wr);
            for i in 0..100u64 {
                assert_eq!(rd.read_u32_le().await.unwrap(), 64);
                let mut b = [0u8; 64];
                rd.read_exact(&mut b).await.unwrap();
                let c = Completion::decode(&b).unwrap();
                assert_eq!((c.request_id, c.result), (i, i));
                assert_eq!(c.aux[0], u64::from(crc32c::crc32c(&vec![i as u8; i as usize])));
            }
        };
        tokio::join!(server, client);
    }

    fn frame(id: u64, op: Opcode, args: [u64; 4], payload: &[u8]) -> Vec<u8> {
        let e = RawSubmission { request_id: id, opcode: op as u8, slot_id: NO_SLOT, args, ..Default::default() }.encode();
        let mut v = ((64 + payload.len()) as u32).to_le_bytes().to_vec();
        v.extend_from_slice(&e);
        v.extend_from_slice(payload);
        v
    }

    async fn reply(rd: &mut (impl AsyncReadExt + Unpin)) -> (Completion, Vec<u8>) {
        let n = rd.read_u32_le().await.unwrap() as usize;
        let mut b = [0u8; 64];
        rd.read_exact(&mut b).await.unwrap();
        let mut data = vec![0u8; n - 64];
        rd.read_exact(&mut data).await.unwrap();
        (Completion::decode(&b).unwrap(), data)
    }

    #[tokio::test]
    async fn store_ops_put_stream_and_read_back() {
        let store = shmpipe_store::Store::open(&shmpipe_store::StoreConfig::new("memory://", Default::default()).unwrap()).unwrap();
        let (client, server) = UnixStream::pair().unwrap();
        let global = GlobalStats::default();
        let server = async { connection(server, 4 << 20, &global, Some(&store)).await.unwrap() };
        let client = async move {
            let (mut rd, mut wr) = client.into_split();
            let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
            let mut put = b"k/one".to_vec();
            put.extend_from_slice(&data[..1000]);
            let mut req = frame(1, Opcode::Put, [5, 0, 0, 0], &put);
            req.extend(frame(2, Opcode::OpenWrite, [0; 4], b"k/two"));
            req.extend(frame(3, Opcode::Write, [1, 0, 0, 0], &data[..2_000_000]));
            req.extend(frame(4, Opcode::Write, [1, 0, 0, 0], &data[2_000_000..]));
            req.extend(frame(5, Opcode::Commit, [1, 0, 0, 0], b""));
            req.extend(frame(6, Opcode::OpenRead, [0, u64::MAX, 0, 0], b"k/two"));
            req.extend(frame(7, Opcode::Write, [1, 0, 0, 0], b"x"));
            req.extend(frame(8, Opcode::OpenRead, [0, u64::MAX, 0, 0], b"k/none"));
            req.extend(frame(9, Opcode::Stat, [0; 4], b"k/one"));
            wr.write_all(&req).await.unwrap();
            drop(wr);
            let (c, _) = reply(&mut rd).await;
            assert_eq!((c.request_id, c.status, c.result, c.aux[0]), (1, 0, 1000, u64::from(crc32c::crc32c(&data[..1000]))));
            assert_eq!(reply(&mut rd).await.0.result, 1, "handle 1");
            assert_eq!(reply(&mut rd).await.0.result, 2_000_000);
            assert_eq!(reply(&mut rd).await.0.result, 1_000_000);
            let (c, _) = reply(&mut rd).await;
            assert_eq!((c.request_id, c.result, c.aux[0]), (5, 3_000_000, u64::from(crc32c::crc32c(&data))));
            let mut got = Vec::new();
            loop {
                let (c, chunk) = reply(&mut rd).await;
                assert_eq!(c.request_id, 6);
                if c.flags & cq_flags::MORE == 0 {
                    assert_eq!((c.status, c.result, c.aux[0]), (0, 3_000_000, 1));
                    break;
                }
                assert_eq!(c.aux[0], got.len() as u64);
                got.extend(chunk);
            }
            assert_eq!(got, data);
            assert_eq!(reply(&mut rd).await.0.status, ErrorCode::InvalidHandle.status(), "committed");
            assert_eq!(reply(&mut rd).await.0.status, ErrorCode::NotFound.status());
            assert_eq!(reply(&mut rd).await.0.status, ErrorCode::UnknownOpcode.status());
        };
        tokio::join!(server, client);
    }
}
