//! The UDS baseline transport (contract "UDS baseline transport"): the same NOP and ECHO
//! (CRC-32C) work as the shared-memory path, over a plain Unix stream socket, so perf/ can
//! compare the two. No handshake.
//!
//! Request: u32 LE N, then N bytes = a 64-byte submission entry (slot fields NO_SLOT/0) and
//! N-64 payload bytes. Reply: u32 LE 64, then a 64-byte completion. Requests may be
//! pipelined; replies go out in order, flushed whenever no further request is buffered.
//! Completions count in `requests_total{op,status}` like the shared-memory path's (not in the
//! latency histogram, nor in the STATS request counts).

use std::sync::Arc;
use std::time::Duration;

use shm_protocol::entry::EntryBytes;
use shm_protocol::layout::{ENTRY_SIZE, NO_SLOT};
use shm_protocol::{Completion, ErrorCode, Opcode, RawSubmission};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::shutdown::Shutdown;
use crate::stats::GlobalStats;

/// Accepts until draining; connections are dropped when shutdown reaches `closing`.
pub async fn accept_loop(listener: UnixListener, max_payload: usize, shutdown: Shutdown, global: Arc<GlobalStats>, tracker: TaskTracker) {
    loop {
        tokio::select! {
            _ = shutdown.draining.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let closing = shutdown.closing.clone();
                    let global = global.clone();
                    tracker.spawn(async move {
                        tokio::select! {
                            _ = closing.cancelled() => {}
                            r = connection(stream, max_payload, &global) => if let Err(e) = r {
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

async fn connection(stream: UnixStream, max_payload: usize, global: &GlobalStats) -> std::io::Result<()> {
    let (rd, wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(256 << 10, rd);
    let mut wr = BufWriter::with_capacity(64 << 10, wr);
    let mut payload = Vec::new();
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
        let c = execute(&entry, &payload);
        global.completion(Opcode::from_u8(RawSubmission::decode(&entry).opcode), c.status);
        wr.write_all(&(ENTRY_SIZE as u32).to_le_bytes()).await?;
        wr.write_all(&c.encode()).await?;
        if rd.buffer().is_empty() {
            wr.flush().await?;
        }
    }
    wr.flush().await
}

/// Runs one baseline request.
pub fn execute(entry: &EntryBytes, payload: &[u8]) -> Completion {
    let raw = RawSubmission::decode(entry);
    let id = raw.request_id;
    let op = match Opcode::from_u8(raw.opcode) {
        Some(op @ (Opcode::Nop | Opcode::Echo)) => op,
        // Only NOP and ECHO exist on this transport.
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
        let server = async { connection(server, 1 << 20, &global).await.unwrap() };
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
}
