//! Store ops through the dispatcher (SPEC §7.2, §9), with the heap-segment rig of `tests`:
//! every refusal gives its code and changes nothing; the ops themselves against memory:// and
//! file:// stores; read streams (chunks, read-ahead backpressure, ABORT); consumed slots coming
//! back FREE when the store lets go; the grant reserve; a dropped session aborting its writers.

use std::time::{Duration, Instant};

use shm_protocol::entry::{cq_flags, sq_flags, Grant, RawSubmission, RANGE_TO_END};
use shm_protocol::layout::NO_SLOT;
use shm_protocol::{Completion, ErrorCode, Opcode};

use super::tests::{rig_with, slot_op, Rig};
use super::*;
use crate::peer::slots::SlotState;

pub(super) const SLOT: u32 = 8192;

pub(super) fn write_slot(r: &Rig, id: u32, at: usize, bytes: &[u8]) {
    assert!(at + bytes.len() <= SLOT as usize);
    // SAFETY: test-only; in bounds of slot `id`, which the fake agent holds.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), r.segment.slot_ptr(id).unwrap().as_ptr().add(at), bytes.len()) };
}

pub(super) fn read_slot(r: &Rig, id: u32, at: usize, len: usize) -> Vec<u8> {
    // SAFETY: test-only; in bounds of slot `id`, which the fake agent holds.
    unsafe { std::slice::from_raw_parts(r.segment.slot_ptr(id).unwrap().as_ptr().add(at), len).to_vec() }
}

/// Turns the dispatcher until `n` completions arrived (store tasks run on the rig's runtime).
pub(super) fn drive(r: &mut Rig, d: &mut Dispatcher, n: usize) -> Vec<Completion> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < n {
        d.turn(Mode::Running).unwrap();
        out.extend(r.completions());
        assert!(Instant::now() < deadline, "only {} of {n} completions: {out:?}", out.len());
        if out.len() < n {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    out
}

pub(super) fn one(r: &mut Rig, d: &mut Dispatcher) -> Completion {
    let mut c = drive(r, d, 1);
    assert_eq!(c.len(), 1, "{c:?}");
    c.pop().unwrap()
}

/// Turns until the store has let go of everything and the dispatcher saw it.
pub(super) fn settle(d: &mut Dispatcher) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        d.turn(Mode::Running).unwrap();
        if d.session.slots.figures(1, 0).slots_in_flight == 0 && d.in_flight_async == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "slots still in flight: {}", d.session.slots.figures(1, 0).slots_in_flight);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Everything a refused request must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    states: Vec<(SlotState, u32)>,
    figures: (u32, u32, u32, u64, u64),
    handles: usize,
    in_flight: u32,
}

fn observe(d: &Dispatcher) -> Observed {
    let t = &d.session.slots;
    let f = t.figures(1, 0);
    Observed {
        states: (0..t.slot_count()).map(|i| t.state(i).unwrap()).collect(),
        figures: (f.slots_free, f.slots_granted, f.slots_in_flight, f.grants_total, f.returns_total),
        handles: d.store.handles.len(),
        in_flight: d.in_flight_async,
    }
}

fn key_op(id: u64, op: Opcode, g: Grant, key: &[u8], r: &Rig) -> RawSubmission {
    write_slot(r, g.slot_id, 0, key);
    slot_op(id, op, g, 0, key.len() as u32)
}

fn put(id: u64, g: Grant, data_len: u32, key_off: u64, key_len: u64) -> RawSubmission {
    RawSubmission { args: [key_len, key_off, 0, 0], ..slot_op(id, Opcode::Put, g, 0, data_len) }
}

pub(super) fn handle_op(id: u64, op: Opcode, handle: u64) -> RawSubmission {
    RawSubmission { request_id: id, opcode: op as u8, slot_id: NO_SLOT, args: [handle, 0, 0, 0], ..Default::default() }
}

pub(super) fn store_rig(slots: u32, reserve: u32, url: &str) -> (Rig, Dispatcher, Vec<Grant>) {
    let (mut r, d) = rig_with(64, 64, slots, 64, reserve, url);
    let g = r.grants();
    (r, d, g)
}

#[test]
fn every_refusal_has_its_code_and_changes_nothing() {
    let (mut r, mut d, g) = store_rig(6, 1, "memory://");
    assert_eq!(g.len(), 5, "slot 5 stays FREE (reserve 1)");
    let store = d.store.links.store.clone();
    r.runtime.block_on(store.put("k", [bytes::Bytes::from_static(b"hello")])).unwrap();
    r.runtime.block_on(store.put("big", [bytes::Bytes::from(vec![1u8; 20_000])])).unwrap();
    // A writer, a finished reader and a live one, to name with the wrong ops.
    r.push(key_op(1, Opcode::OpenWrite, g[0], b"w", &r));
    let c = one(&mut r, &mut d);
    assert_eq!((c.status, c.flags), (0, cq_flags::SLOT), "{c:?}");
    let writer = c.result;
    r.push(RawSubmission { args: [0, RANGE_TO_END, 1, 0], ..key_op(3, Opcode::OpenRead, g[1], b"k", &r) });
    let cs = drive(&mut r, &mut d, 2);
    assert_eq!(cs[0].flags, cq_flags::MORE | cq_flags::SLOT, "{cs:?}");
    let reader = cs[0].aux[1];
    assert_eq!((cs[1].status, cs[1].flags, cs[1].result, cs[1].aux[0]), (0, 0, 5, 1));
    r.push(RawSubmission { args: [0, RANGE_TO_END, 1, 0], ..key_op(4, Opcode::OpenRead, g[2], b"big", &r) });
    let live_reader = one(&mut r, &mut d).aux[1]; // read-ahead 1: it waits for its chunk to come back
    std::thread::sleep(Duration::from_millis(10));
    d.turn(Mode::Running).unwrap();
    assert!(r.completions().is_empty());
    let g = [g[0], g[3], g[4]];

    let long_key = vec![b'k'; 1025];
    let cases: Vec<(&str, RawSubmission, &[u8], ErrorCode, bool)> = vec![
        // (name, submission, bytes at slot offset 0, code, slot comes back)
        ("put key length 0", put(10, g[1], 10, 100, 0), b"", ErrorCode::Malformed, true),
        ("put key length 1025", put(11, g[1], 10, 100, 1025), b"", ErrorCode::Malformed, true),
        ("put key past the slot", put(12, g[1], 10, u64::from(SLOT) - 2, 3), b"", ErrorCode::OutOfRange, true),
        ("put key offset overflows", put(13, g[1], 10, u64::MAX, 2), b"", ErrorCode::OutOfRange, true),
        ("put key overlaps data", put(14, g[1], 10, 9, 3), b"abcdefghijklm", ErrorCode::Malformed, true),
        ("put key not UTF-8", put(15, g[1], 0, 0, 2), b"\xff\xfe", ErrorCode::Malformed, true),
        ("put key a//b", put(16, g[1], 0, 0, 4), b"a//b", ErrorCode::Malformed, true),
        ("put key /a", put(17, g[1], 0, 0, 2), b"/a", ErrorCode::Malformed, true),
        ("put key f#12", put(18, g[1], 0, 0, 4), b"f#12", ErrorCode::Malformed, true),
        ("put key control char", put(19, g[1], 0, 0, 2), b"a\x01", ErrorCode::Malformed, true),
        ("put data past the slot", put(20, g[1], SLOT + 1, 0, 1), b"k", ErrorCode::OutOfRange, false),
        ("put stale slot", put(21, Grant { slot_gen: 99, ..g[1] }, 0, 0, 1), b"k", ErrorCode::StaleSlot, false),
        ("put slot not held", put(22, Grant { slot_id: 5, slot_gen: 0 }, 0, 0, 1), b"k", ErrorCode::InvalidSlot, false),
        ("put slot beyond slot_count", put(122, Grant { slot_id: 6, slot_gen: 1 }, 0, 0, 1), b"k", ErrorCode::InvalidSlot, false),
        ("put without slot", RawSubmission { slot_id: NO_SLOT, ..put(23, g[1], 0, 0, 1) }, b"k", ErrorCode::InvalidSlot, false),
        ("write unknown handle", RawSubmission { args: [999, 0, 0, 0], ..slot_op(24, Opcode::Write, g[1], 0, 5) }, b"", ErrorCode::InvalidHandle, true),
        ("write handle 0", RawSubmission { args: [0, 0, 0, 0], ..slot_op(25, Opcode::Write, g[1], 0, 5) }, b"", ErrorCode::InvalidHandle, true),
        ("write to a reader", RawSubmission { args: [live_reader, 0, 0, 0], ..slot_op(26, Opcode::Write, g[1], 0, 5) }, b"", ErrorCode::InvalidHandle, true),
        ("write to a finished reader", RawSubmission { args: [reader, 0, 0, 0], ..slot_op(27, Opcode::Write, g[1], 0, 5) }, b"", ErrorCode::InvalidHandle, true),
        ("open_write empty key", slot_op(28, Opcode::OpenWrite, g[1], 0, 0), b"", ErrorCode::Malformed, true),
        ("open_write long key", slot_op(29, Opcode::OpenWrite, g[1], 0, 1025), &long_key, ErrorCode::Malformed, true),
        ("open_write bad key", slot_op(30, Opcode::OpenWrite, g[1], 0, 2), b"a/", ErrorCode::Malformed, true),
        ("open_read start > end", RawSubmission { args: [5, 4, 0, 0], ..slot_op(31, Opcode::OpenRead, g[1], 0, 1) }, b"k", ErrorCode::Malformed, true),
        ("open_read bad key", slot_op(32, Opcode::OpenRead, g[1], 0, 2), b"..", ErrorCode::Malformed, true),
        ("stat empty key", slot_op(33, Opcode::Stat, g[1], 0, 0), b"", ErrorCode::Malformed, true),
        ("delete bad key", slot_op(34, Opcode::Delete, g[1], 0, 3), b"a\x00b", ErrorCode::Malformed, true),
        ("list not JSON", slot_op(35, Opcode::List, g[1], 0, 3), b"{x}", ErrorCode::Malformed, true),
        ("list limit 0", slot_op(36, Opcode::List, g[1], 0, 11), br#"{"limit":0}"#, ErrorCode::Malformed, true),
        ("list unknown field", slot_op(37, Opcode::List, g[1], 0, 9), br#"{"x":"y"}"#, ErrorCode::Malformed, true),
        ("list bad prefix", slot_op(38, Opcode::List, g[1], 0, 15), br#"{"prefix":"/a"}"#, ErrorCode::Malformed, true),
        ("commit unknown", handle_op(39, Opcode::Commit, 999), b"", ErrorCode::InvalidHandle, false),
        ("commit a reader", handle_op(40, Opcode::Commit, live_reader), b"", ErrorCode::InvalidHandle, false),
        ("abort unknown", handle_op(41, Opcode::Abort, 12345), b"", ErrorCode::InvalidHandle, false),
        ("abort a finished reader", handle_op(42, Opcode::Abort, reader), b"", ErrorCode::InvalidHandle, false),
        ("commit with a slot", RawSubmission { slot_id: 0, ..handle_op(43, Opcode::Commit, writer) }, b"", ErrorCode::Malformed, false),
        ("abort with a flag", RawSubmission { flags: sq_flags::RELEASE_SLOT, ..handle_op(44, Opcode::Abort, writer) }, b"", ErrorCode::Malformed, false),
        ("released slot comes back anyway", RawSubmission { flags: sq_flags::RELEASE_SLOT, ..put(45, g[1], 0, 0, 0) }, b"", ErrorCode::Malformed, true),
    ];
    for (name, sub, bytes, code, slot_back) in cases {
        write_slot(&r, g[1].slot_id, 0, bytes);
        let before = observe(&d);
        r.push(sub);
        let c = one(&mut r, &mut d);
        assert_eq!(c.status, code.status(), "{name}: {c:?}");
        assert_eq!(c.result, 0, "{name}: refusals write no message");
        if slot_back {
            assert_eq!((c.flags, c.slot_id, c.slot_gen), (cq_flags::SLOT, sub.slot_id, sub.slot_gen), "{name}: slot back");
        } else {
            assert_eq!((c.flags, c.slot_id), (0, NO_SLOT), "{name}: no slot");
        }
        assert_eq!(observe(&d), before, "{name}: changed state");
    }
    // The writer still works after all that (the refusals did not touch it).
    r.push(handle_op(50, Opcode::Commit, writer));
    let c = one(&mut r, &mut d);
    assert_eq!((c.status, c.result, c.aux[0]), (0, 0, 0));
    r.push(handle_op(51, Opcode::Commit, writer));
    assert_eq!(one(&mut r, &mut d).status, ErrorCode::InvalidHandle.status(), "a committed handle is finished");
    let _ = (g[0], g[2]);
}

#[test]
fn open_handles_are_bounded_by_max_in_flight() {
    let (mut r, mut d) = rig_with(64, 64, 4, 2, 0, "memory://");
    let g = r.grants();
    for i in 0..2 {
        r.push(key_op(i, Opcode::OpenWrite, g[0], b"w", &r));
        assert_eq!(one(&mut r, &mut d).status, 0);
    }
    let before = observe(&d);
    r.push(key_op(9, Opcode::OpenWrite, g[0], b"w", &r));
    let c = one(&mut r, &mut d);
    assert_eq!((c.status, c.flags), (ErrorCode::Busy.status(), cq_flags::SLOT));
    assert_eq!(observe(&d), before);
}

#[test]
fn put_stat_list_delete_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let (mut r, mut d, g) = store_rig(4, 0, &url);
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    write_slot(&r, g[0].slot_id, 0, &data);
    write_slot(&r, g[0].slot_id, 6000, b"dir/obj");
    r.push(put(1, g[0], 5000, 6000, 7));
    let c = one(&mut r, &mut d);
    assert_eq!((c.status, c.flags, c.result, c.aux[0]), (0, 0, 5000, u64::from(crc32c::crc32c(&data))), "{c:?}");
    settle(&mut d);
    assert_eq!(d.session.slots.state(g[0].slot_id).unwrap().0, SlotState::Granted, "consumed, FREE, granted again");
    assert_eq!(r.grants(), vec![Grant { slot_id: g[0].slot_id, slot_gen: g[0].slot_gen + 1 }]);
    let on_disk = std::fs::read(dir.path().join("dir/obj")).unwrap();
    assert_eq!(&on_disk[..5000], &data[..], "data, then the 32-byte trailer");
    assert_eq!(on_disk.len(), 5032);

    r.push(key_op(2, Opcode::Stat, g[1], b"dir/obj", &r));
    let c = one(&mut r, &mut d);
    assert_eq!((c.status, c.flags, c.result, c.aux[0]), (0, cq_flags::SLOT, 5000, u64::from(crc32c::crc32c(&data))));
    assert!(c.aux[1] > 1_600_000_000_000, "mtime in Unix ms: {}", c.aux[1]);

    r.push(key_op(3, Opcode::Stat, g[1], b"dir/none", &r));
    let c = one(&mut r, &mut d);
    assert_eq!((c.status, c.flags), (ErrorCode::NotFound.status(), cq_flags::SLOT));
    let msg = String::from_utf8(read_slot(&r, g[1].slot_id, 0, c.result as usize)).unwrap();
    assert!(c.result > 0 && msg.contains("dir/none"), "the store's message is in the slot: {msg:?}");

    let req = br#"{"prefix":"dir","limit":10}"#;
    r.push(key_op(4, Opcode::List, g[1], req, &r));
    let c = one(&mut r, &mut d);
    assert_eq!((c.status, c.flags), (0, cq_flags::SLOT));
    let doc: serde_json::Value = serde_json::from_slice(&read_slot(&r, g[1].slot_id, 0, c.result as usize)).unwrap();
    assert_eq!(doc["entries"][0]["key"], "dir/obj");
    assert_eq!(doc["entries"][0]["size"], 5000);
    assert_eq!(doc["next"], serde_json::Value::Null);

    r.push(key_op(5, Opcode::Delete, g[1], b"dir/obj", &r));
    assert_eq!(one(&mut r, &mut d).status, 0);
    r.push(key_op(6, Opcode::Delete, g[1], b"dir/obj", &r));
    assert_eq!(one(&mut r, &mut d).status, 0, "idempotent");
    r.push(key_op(7, Opcode::Stat, g[1], b"dir/obj", &r));
    assert_eq!(one(&mut r, &mut d).status, ErrorCode::NotFound.status());
}

#[test]
fn list_output_that_does_not_fit_is_out_of_range() {
    let (mut r, mut d, g) = store_rig(4, 0, "memory://");
    let key = "k".repeat(1000);
    let store = d.store.links.store.clone();
    for i in 0..10 {
        r.runtime.block_on(store.put(&format!("{key}{i}"), [])).unwrap();
    }
    r.push(key_op(20, Opcode::List, g[1], b"{}", &r));
    let c = one(&mut r, &mut d);
    assert_eq!((c.status, c.flags), (ErrorCode::OutOfRange.status(), cq_flags::SLOT), "10 KB of keys in an 8 KiB slot");
    r.push(key_op(21, Opcode::List, g[1], br#"{"limit":3}"#, &r));
    let c = one(&mut r, &mut d);
    assert_eq!(c.status, 0);
    let doc: serde_json::Value = serde_json::from_slice(&read_slot(&r, g[1].slot_id, 0, c.result as usize)).unwrap();
    assert_eq!(doc["entries"].as_array().unwrap().len(), 3);
    assert_eq!(doc["next"], format!("{key}2"));
}

/// A writer with many WRITEs in flight (applied in order), multipart underneath, then COMMIT;
/// every consumed slot comes back FREE.
#[test]
fn streaming_write_then_read_back_with_read_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let (mut r, mut d, g) = store_rig(12, 4, &url);
    assert_eq!(g.len(), 8, "12 slots, 4 kept back for read streams");
    r.push(key_op(1, Opcode::OpenWrite, g[0], b"big", &r));
    let writer = one(&mut r, &mut d).result;
    // 7 WRITEs of 8 KiB (parts are 16 KiB in the rig): submitted at once, in order.
    let mut expect = Vec::new();
    for (i, gr) in g[1..8].iter().enumerate() {
        let chunk: Vec<u8> = (0..SLOT).map(|j| (j as u8).wrapping_mul(i as u8 + 3)).collect();
        write_slot(&r, gr.slot_id, 0, &chunk);
        expect.extend_from_slice(&chunk);
        r.push(RawSubmission { args: [writer, 0, 0, 0], ..slot_op(10 + i as u64, Opcode::Write, *gr, 0, SLOT) });
    }
    let cs = drive(&mut r, &mut d, 7);
    assert!(cs.iter().all(|c| c.status == 0 && c.flags == 0 && c.result == u64::from(SLOT)), "{cs:?}");
    r.push(handle_op(20, Opcode::Commit, writer));
    let c = one(&mut r, &mut d);
    assert_eq!((c.status, c.result, c.aux[0]), (0, expect.len() as u64, u64::from(crc32c::crc32c(&expect))));
    settle(&mut d);
    assert_eq!(d.session.slots.figures(1, 0).slots_in_flight, 0);

    // Read it back with read-ahead 2: at most 2 chunks out before the agent gives one back.
    let g = r.grants();
    r.push(RawSubmission { args: [0, RANGE_TO_END, 2, 0], ..key_op(30, Opcode::OpenRead, g[0], b"big", &r) });
    let mut got = Vec::new();
    let mut held = Vec::new();
    let mut ended = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while ended.is_none() {
        d.turn(Mode::Running).unwrap();
        for c in r.completions() {
            if c.flags & cq_flags::MORE != 0 {
                assert_eq!(c.flags, cq_flags::MORE | cq_flags::SLOT);
                assert_eq!(c.aux[0], got.len() as u64, "chunks in order, contiguous");
                got.extend(read_slot(&r, c.slot_id, 0, c.result as usize));
                held.push(Grant { slot_id: c.slot_id, slot_gen: c.slot_gen });
            } else {
                ended = Some(c);
            }
        }
        assert!(held.len() <= 2, "read-ahead 2 exceeded: {held:?}");
        if held.len() == 2 {
            // Give the oldest chunk back.
            let h = held.remove(0);
            r.push(slot_op(100 + got.len() as u64, Opcode::SlotRelease, h, 0, 0));
            let rel = one(&mut r, &mut d);
            assert_eq!(rel.status, 0);
        }
        assert!(Instant::now() < deadline, "stream stalled");
        std::thread::sleep(Duration::from_millis(1));
    }
    let end = ended.unwrap();
    assert_eq!((end.status, end.flags, end.result, end.aux[0]), (0, 0, expect.len() as u64, 1), "verified");
    assert_eq!(got, expect);
    for h in held {
        r.push(slot_op(999, Opcode::SlotRelease, h, 0, 0));
        assert_eq!(one(&mut r, &mut d).status, 0);
    }
    settle(&mut d);
    let f = d.session.slots.figures(1, 0);
    assert_eq!(f.grants_total - f.returns_total, u64::from(f.slots_granted + f.slots_in_flight), "STATS invariant");
    assert_eq!(f.slots_free, 4, "the reserve is FREE again");
}

#[test]
fn ranged_read_is_unverified_and_abort_cancels_a_stream() {
    let (mut r, mut d, g) = store_rig(8, 2, "memory://");
    let data: Vec<u8> = (0..3 * SLOT).map(|i| (i % 251) as u8).collect();
    r.push(key_op(1, Opcode::OpenWrite, g[0], b"obj", &r));
    let w = one(&mut r, &mut d).result;
    for (i, part) in data.chunks(SLOT as usize).enumerate() {
        write_slot(&r, g[1 + i].slot_id, 0, part);
        r.push(RawSubmission { args: [w, 0, 0, 0], ..slot_op(2 + i as u64, Opcode::Write, g[1 + i], 0, SLOT) });
    }
    drive(&mut r, &mut d, 3);
    r.push(handle_op(9, Opcode::Commit, w));
    assert_eq!(one(&mut r, &mut d).status, 0);
    settle(&mut d);
    let g = r.grants();

    // Bytes 100..9000: two chunks, offsets 100 and 100 + 8192, not verified.
    r.push(RawSubmission { args: [100, 9000, 4, 0], ..key_op(10, Opcode::OpenRead, g[0], b"obj", &r) });
    let cs = drive(&mut r, &mut d, 3);
    assert_eq!((cs[0].aux[0], cs[0].result), (100, u64::from(SLOT)));
    assert_eq!(read_slot(&r, cs[0].slot_id, 0, 8), &data[100..108]);
    assert_eq!((cs[1].aux[0], cs[1].result), (100 + u64::from(SLOT), 9000 - 100 - u64::from(SLOT)));
    assert_eq!((cs[2].status, cs[2].flags, cs[2].result, cs[2].aux[0]), (0, 0, 8900, 0));
    // From 20000 to the end.
    r.push(RawSubmission { args: [20000, RANGE_TO_END, 0, 0], ..key_op(11, Opcode::OpenRead, g[1], b"obj", &r) });
    let cs = drive(&mut r, &mut d, 2);
    assert_eq!((cs[0].aux[0], cs[0].result), (20000, u64::from(3 * SLOT - 20000)));
    assert_eq!(cs[1].result, u64::from(3 * SLOT - 20000));
    // A range past the end: refused after the open, key slot back with the message.
    r.push(RawSubmission { args: [0, 1 << 40, 0, 0], ..key_op(12, Opcode::OpenRead, g[2], b"obj", &r) });
    let c = one(&mut r, &mut d);
    assert_eq!((c.status, c.flags, c.slot_id), (ErrorCode::Malformed.status(), cq_flags::SLOT, g[2].slot_id));
    assert!(c.result > 0, "message");
    // Not found: likewise.
    r.push(key_op(13, Opcode::OpenRead, g[2], b"nope", &r));
    let c = one(&mut r, &mut d);
    assert_eq!((c.status, c.flags), (ErrorCode::NotFound.status(), cq_flags::SLOT));

    // ABORT of a live stream (read-ahead 1: it waits for its chunk to come back).
    r.push(RawSubmission { args: [0, RANGE_TO_END, 1, 0], ..key_op(14, Opcode::OpenRead, g[2], b"obj", &r) });
    let chunk = one(&mut r, &mut d);
    r.push(handle_op(15, Opcode::Abort, chunk.aux[1]));
    let cs = drive(&mut r, &mut d, 2);
    assert_eq!((cs[0].request_id, cs[0].status, cs[0].flags), (14, ErrorCode::Cancelled.status(), 0), "the stream ends first");
    assert_eq!((cs[1].request_id, cs[1].status), (15, 0));
    r.push(handle_op(16, Opcode::Abort, chunk.aux[1]));
    assert_eq!(one(&mut r, &mut d).status, ErrorCode::InvalidHandle.status());
    // The delivered chunk is still the agent's.
    assert_eq!(d.session.slots.state(chunk.slot_id).unwrap(), (SlotState::Granted, chunk.slot_gen));
    settle(&mut d);
}

#[test]
fn grants_stop_at_the_reserve_and_free_slots_feed_streams_first() {
    let (mut r, mut d, g) = store_rig(6, 2, "memory://");
    assert_eq!(g.len(), 4);
    assert_eq!(d.session.slots.free_count(), 2);
    // An object of 6 slots' worth, read with read-ahead 6: it may use the 2 reserved slots, its
    // key slot, and whatever the agent gives back — not more.
    let data = vec![7u8; 6 * SLOT as usize];
    r.push(key_op(1, Opcode::OpenWrite, g[0], b"o", &r));
    let w = one(&mut r, &mut d).result;
    for i in 0..6u64 {
        let gr = if i < 3 { g[1 + i as usize] } else { r.grants()[0] };
        write_slot(&r, gr.slot_id, 0, &data[..SLOT as usize]);
        r.push(RawSubmission { args: [w, 0, 0, 0], ..slot_op(2 + i, Opcode::Write, gr, 0, SLOT) });
        assert_eq!(one(&mut r, &mut d).status, 0);
        settle(&mut d);
    }
    r.push(handle_op(9, Opcode::Commit, w));
    assert_eq!(one(&mut r, &mut d).status, 0);
    settle(&mut d);
    let mut free_grants = r.grants();
    assert_eq!(d.session.slots.free_count(), 2, "reserve kept");
    let key_slot = free_grants.pop().unwrap();
    r.push(RawSubmission { args: [0, RANGE_TO_END, 6, 0], ..key_op(10, Opcode::OpenRead, key_slot, b"o", &r) });
    let cs = drive(&mut r, &mut d, 3);
    assert!(cs.iter().all(|c| c.flags == cq_flags::MORE | cq_flags::SLOT), "key slot + 2 reserved: {cs:?}");
    std::thread::sleep(Duration::from_millis(20));
    d.turn(Mode::Running).unwrap();
    assert!(r.completions().is_empty(), "no free slot left: the stream waits");
    assert_eq!(d.session.slots.free_count(), 0);
    // A slot the agent releases goes to the waiting stream, not to the GQ.
    assert!(free_grants.is_empty());
    let spare = g[0];
    r.push(slot_op(20, Opcode::SlotRelease, spare, 0, 0));
    let cs = drive(&mut r, &mut d, 2);
    assert_eq!(cs[0].request_id, 20);
    assert_eq!(cs[1].flags, cq_flags::MORE | cq_flags::SLOT);
    assert!(r.grants().is_empty());
}

/// The session goes away mid-upload: its writer's multipart upload is aborted (file://: the
/// staging file is removed), and every leased slot is released.
#[test]
fn a_dropped_session_aborts_its_writers() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let (mut r, mut d, g) = store_rig(8, 0, &url);
    r.push(key_op(1, Opcode::OpenWrite, g[0], b"partial", &r));
    let w = one(&mut r, &mut d).result;
    for (i, gr) in g[1..6].iter().enumerate() {
        r.push(RawSubmission { args: [w, 0, 0, 0], ..slot_op(2 + i as u64, Opcode::Write, *gr, 0, SLOT) });
    }
    drive(&mut r, &mut d, 5);
    let staging = || -> Vec<String> {
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    // 40 KiB written with 16 KiB parts: a multipart upload (a staging file) exists.
    let deadline = Instant::now() + Duration::from_secs(10);
    while staging().is_empty() {
        assert!(Instant::now() < deadline, "no staging file appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    let store = d.store.links.store.clone();
    // Session teardown: abort, then the dispatcher goes.
    r.abort.cancel();
    drop(d);
    r.runtime.block_on(store.wait_background());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !staging().is_empty() {
        assert!(Instant::now() < deadline, "left behind: {:?}", staging());
        std::thread::sleep(Duration::from_millis(5));
        r.runtime.block_on(store.wait_background());
    }
}
