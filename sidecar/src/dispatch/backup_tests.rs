//! Backup ops through the dispatcher (SPEC §7.3) with the heap-segment rig: a whole backup and
//! restore over the wire encodings (FILE_PUT's slot coming back with the reference, FILE_WRITE's
//! consumed, CONTENT_READ streaming into slots), and the refusals: a handle of the wrong kind
//! gives its slot back unchanged, a wrong password comes with its message in the slot.

use std::time::{Duration, Instant};

use shm_protocol::entry::{cq_flags, Grant, RawSubmission};
use shm_protocol::{Completion, ErrorCode, Opcode};

use super::store_tests::{drive, handle_op, one, read_slot, settle, store_rig, write_slot, SLOT};
use super::tests::{slot_op, Rig};
use super::*;

const INIT: &[u8] = br#"{"password":"pw","params":{"kdf_m_kib":64,"kdf_t":1}}"#;

/// Writes `payload` at the start of `g`'s slot and submits `op` on it.
fn with_payload(r: &mut Rig, id: u64, op: Opcode, g: Grant, payload: &[u8], args: [u64; 4]) {
    write_slot(r, g.slot_id, 0, payload);
    r.push(RawSubmission { args, ..slot_op(id, op, g, 0, payload.len() as u32) });
}

/// The completion's output at offset 0 of its returned slot, and that slot.
fn output(r: &Rig, c: &Completion) -> (String, Grant) {
    assert_eq!(c.status, 0, "{c:?}: {}", String::from_utf8_lossy(&read_slot(r, c.slot_id, 0, c.result as usize)));
    assert_ne!(c.flags & cq_flags::SLOT, 0, "the slot comes back: {c:?}");
    let text = String::from_utf8(read_slot(r, c.slot_id, 0, c.result as usize)).unwrap();
    (text, Grant { slot_id: c.slot_id, slot_gen: c.slot_gen })
}

fn entry(path: &str, kind: &str, size: usize, content: Option<&str>) -> String {
    let c = content.map(|c| format!(r#","c":"{c}""#)).unwrap_or_default();
    format!(r#"{{"p":"{path}","k":"{kind}","m":{},"u":0,"g":0,"t":"1700000000000000001","s":"{size}","n":"7","d":"1"{c}}}"#, if kind == "dir" { 0o40755 } else { 0o100644 })
}

/// Reads a content reference back through CONTENT_READ, giving each chunk slot back.
fn content_read(r: &mut Rig, d: &mut Dispatcher, id: u64, repo: u64, g: Grant, reference: &str) -> (Vec<u8>, Completion) {
    with_payload(r, id, Opcode::ContentRead, g, reference.as_bytes(), [repo, 0, 2, 0]);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut release, mut acknowledged) = (1000 * id, 1000 * id);
    let mut end = None;
    loop {
        d.turn(Mode::Running).unwrap();
        for c in r.completions() {
            if c.request_id != id {
                assert_eq!((c.status, c.flags), (0, 0), "a release: {c:?}");
                acknowledged += 1;
                continue;
            }
            if c.flags & cq_flags::MORE == 0 {
                end = Some(c);
                continue;
            }
            assert_eq!(c.aux[0], got.len() as u64, "chunks in order");
            got.extend(read_slot(r, c.slot_id, 0, c.result as usize));
            release += 1;
            r.push(slot_op(release, Opcode::SlotRelease, Grant { slot_id: c.slot_id, slot_gen: c.slot_gen }, 0, 0));
        }
        if let (Some(c), true) = (end, acknowledged == release) {
            return (got, c);
        }
        assert!(Instant::now() < deadline, "content stream stalled");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn backup_and_restore_over_the_wire() {
    let (mut r, mut d, g) = store_rig(12, 4, "memory://");
    with_payload(&mut r, 1, Opcode::RepoInit, g[0], INIT, [0; 4]);
    let c = one(&mut r, &mut d);
    assert_eq!((c.status, c.flags & cq_flags::SLOT), (0, cq_flags::SLOT), "{c:?}");
    let repo = c.result;
    with_payload(&mut r, 2, Opcode::BackupBegin, g[0], br#"{"host":"h","paths":["src"]}"#, [repo, 0, 0, 0]);
    let backup = one(&mut r, &mut d).result;

    // A small file in one FILE_PUT: its slot comes back holding the reference.
    let small: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    with_payload(&mut r, 3, Opcode::FilePut, g[1], &small, [backup, 0, 0, 0]);
    let c = one(&mut r, &mut d);
    assert_eq!(c.aux[0], small.len() as u64, "aux0 = the file's size");
    let (small_ref, _) = output(&r, &c);

    // A larger file in three consumed FILE_WRITEs.
    r.push(handle_op(4, Opcode::FileOpen, backup));
    let file = one(&mut r, &mut d).result;
    let mut big = Vec::new();
    for (i, gr) in g[2..5].iter().enumerate() {
        let part: Vec<u8> = (0..SLOT).map(|j| (j as u8).wrapping_mul(i as u8 + 5) ^ (j >> 8) as u8).collect();
        with_payload(&mut r, 10 + i as u64, Opcode::FileWrite, *gr, &part, [file, 0, 0, 0]);
        big.extend_from_slice(&part);
    }
    let cs = drive(&mut r, &mut d, 3);
    assert!(cs.iter().all(|c| c.status == 0 && c.flags == 0), "consumed, no SLOT: {cs:?}");
    assert_eq!(cs.iter().map(|c| c.result).max(), Some(big.len() as u64), "result = size so far");
    r.push(slot_op(20, Opcode::FileFinish, g[5], 0, 0));
    // FILE_FINISH names its handle in arg0.
    let mut fin = slot_op(21, Opcode::FileFinish, g[5], 0, 0);
    fin.args[0] = file;
    let refused = one(&mut r, &mut d);
    assert_eq!((refused.request_id, refused.status), (20, ErrorCode::InvalidHandle.status()), "handle 0 is no file");
    r.push(fin);
    let c = one(&mut r, &mut d);
    assert_eq!(c.aux[0], big.len() as u64);
    let (big_ref, _) = output(&r, &c);

    let lines = [entry("src", "dir", 0, None), entry("src/small", "file", small.len(), Some(&small_ref)), entry("src/big", "file", big.len(), Some(&big_ref))].join("\n");
    with_payload(&mut r, 22, Opcode::AddEntries, g[6], lines.as_bytes(), [backup, 0, 0, 0]);
    assert_eq!(one(&mut r, &mut d).result, 3);
    r.push(RawSubmission { args: [backup, 0, 0, 0], ..slot_op(23, Opcode::BackupCommit, g[6], 0, 0) });
    let c = one(&mut r, &mut d);
    let (summary, _) = output(&r, &c);
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["entries"], 3);
    let snap = summary["id"].as_str().unwrap().to_owned();

    r.push(RawSubmission { args: [repo, 0, 0, 0], ..slot_op(24, Opcode::Snapshots, g[6], 0, 0) });
    let c = one(&mut r, &mut d);
    let (list, _) = output(&r, &c);
    assert!(list.contains(&snap), "{list}");

    with_payload(&mut r, 25, Opcode::EntriesOpen, g[6], b"latest", [repo, 0, 0, 0]);
    let c = one(&mut r, &mut d);
    assert_eq!(c.status, 0, "{c:?}");
    let cursor = c.result;
    assert_eq!(read_slot(&r, c.slot_id, 0, c.aux[0] as usize), snap.as_bytes(), "the resolved id, aux0 = its length");
    r.push(RawSubmission { args: [cursor, 0, 0, 0], ..slot_op(26, Opcode::EntriesNext, g[6], 0, 0) });
    let c = one(&mut r, &mut d);
    assert_eq!(c.aux[0], 1, "all entries fit one slot: done");
    let (page, _) = output(&r, &c);
    let paths: Vec<String> = page.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["p"].as_str().unwrap().to_owned()).collect();
    assert_eq!(paths, ["src", "src/small", "src/big"]);

    let (got, end) = content_read(&mut r, &mut d, 27, repo, g[7], &big_ref);
    assert_eq!((end.status, end.flags, end.result, end.aux[0]), (0, 0, big.len() as u64, 1), "{end:?}");
    assert!(got == big, "restored bytes differ");
    let (got, end) = content_read(&mut r, &mut d, 28, repo, g[1], &small_ref);
    assert_eq!((end.status, end.result), (0, small.len() as u64));
    assert!(got == small);

    r.push(RawSubmission { args: [repo, 1, 0, 0], ..slot_op(29, Opcode::Check, g[6], 0, 0) });
    let c = one(&mut r, &mut d);
    let (report, _) = output(&r, &c);
    assert!(report.contains(r#""ok":true"#), "{report}");
    r.push(handle_op(30, Opcode::Close, repo));
    assert_eq!(one(&mut r, &mut d).status, 0);
    settle(&mut d);
    let f = d.session.slots.figures(1, 0);
    assert_eq!(f.grants_total - f.returns_total, u64::from(f.slots_granted + f.slots_in_flight), "STATS invariant");
}

#[test]
fn refusals_give_the_slot_back_and_say_why() {
    let (mut r, mut d, g) = store_rig(8, 2, "memory://");
    with_payload(&mut r, 1, Opcode::RepoInit, g[0], INIT, [0; 4]);
    let repo = one(&mut r, &mut d).result;

    // A repository handle where a backup is wanted: refused before anything runs, slot back.
    with_payload(&mut r, 2, Opcode::FilePut, g[1], b"data", [repo, 0, 0, 0]);
    let c = one(&mut r, &mut d);
    assert_eq!((c.status, c.flags, c.slot_id), (ErrorCode::InvalidHandle.status(), cq_flags::SLOT, g[1].slot_id));
    r.push(handle_op(3, Opcode::FileOpen, repo));
    assert_eq!(one(&mut r, &mut d).status, ErrorCode::InvalidHandle.status());
    r.push(handle_op(4, Opcode::BackupAbort, 999));
    assert_eq!(one(&mut r, &mut d).status, ErrorCode::InvalidHandle.status());
    r.push(RawSubmission { args: [repo, 9, 0, 0], ..slot_op(5, Opcode::Check, g[1], 0, 0) });
    assert_eq!(one(&mut r, &mut d).status, ErrorCode::Malformed.status(), "CHECK arg1 is 0..=4");

    // A second init, a wrong password, a bad payload: typed codes, the message in the slot.
    for (id, op, payload, code) in [
        (6, Opcode::RepoInit, INIT, ErrorCode::RepoExists),
        (7, Opcode::RepoOpen, &br#"{"password":"nope"}"#[..], ErrorCode::WrongPassword),
        (8, Opcode::RepoOpen, &br#"{"password":"pw","extra":1}"#[..], ErrorCode::Malformed),
    ] {
        with_payload(&mut r, id, op, g[2], payload, [0; 4]);
        let c = one(&mut r, &mut d);
        assert_eq!(c.status, code.status(), "{op:?}: {c:?}");
        assert_ne!(c.flags & cq_flags::SLOT, 0);
        let message = String::from_utf8(read_slot(&r, c.slot_id, 0, c.result as usize)).unwrap();
        assert!(!message.is_empty(), "{op:?} says why");
    }
    with_payload(&mut r, 9, Opcode::RepoOpen, g[2], br#"{"password":"pw"}"#, [0; 4]);
    assert_eq!(one(&mut r, &mut d).status, 0, "the right password opens it");
    // A content reference that is not one: refused, slot back.
    with_payload(&mut r, 10, Opcode::ContentRead, g[3], b"zz", [repo, 0, 0, 0]);
    let c = one(&mut r, &mut d);
    assert_eq!((c.status, c.flags), (ErrorCode::Malformed.status(), cq_flags::SLOT));
    settle(&mut d);
}
