//! Property tests of every decoder the sidecar runs on agent input, one by one (SPEC §12):
//! keys, LIST requests, read ranges, control-socket frames and `hello`, tree-entry lines,
//! content references, and the backup ops' JSON requests (repository, backup, snapshot id,
//! job). Arbitrary bytes — and mutations of valid inputs, which reach deeper — never panic:
//! each gives a value or a typed refusal, and what is accepted honours the rules.
//!
//! Fixed seed (reproducible in CI); failures are saved next to this file
//! (`fuzz_decoders.proptest-regressions`, under version control) and replayed first. The
//! in-process dispatcher target (whole SQ sequences) is `src/dispatch/fuzz_tests.rs`, the
//! ring and entry codecs' are in `shm-protocol/tests/fuzz_props.rs`, and `sidecar/fuzz/` has
//! cargo-fuzz targets for nightly.

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use shm_protocol::ErrorCode;
use shmpipe_sidecar::ops::backup::{decode_content, parse_entries, BackupOps};
use shmpipe_sidecar::ops::store::{parse_key, parse_list, parse_range, MAX_LIST_LIMIT};
use shmpipe_sidecar::service::wire::{is_mapped, parse_hello, read_frame, FrameError, MAX_FRAME};

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5eed_5ec0_5eed_0002),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    }
}

/// Bytes: arbitrary, or a valid example with a few bytes changed, cut or spliced.
fn mutated(examples: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    let edit = (prop::sample::select(examples), prop::collection::vec((any::<usize>(), any::<u8>()), 0..4), any::<usize>()).prop_map(|(ex, edits, cut)| {
        let mut v = ex.to_vec();
        for (at, b) in edits {
            if !v.is_empty() {
                let i = at % v.len();
                v[i] = b;
            }
        }
        if cut % 4 == 0 && !v.is_empty() {
            v.truncate(cut % v.len());
        }
        v
    });
    prop_oneof![2 => prop::collection::vec(any::<u8>(), 0..300), 3 => edit]
}

const KEYS: &[&[u8]] = &[b"a", b"a/b/c", b"snapshots/0123", b"x#12", b"a//b", b"/a", b"a/", b".", b"a/../b", "ü/€".as_bytes()];
const LISTS: &[&[u8]] = &[br#"{}"#, br#"{"prefix":"a/b","token":"a/b/c","limit":10}"#, br#"{"prefix":"a/","limit":10000}"#, br#"{"limit":0}"#];
const HELLOS: &[&[u8]] = &[
    br#"{"type":"hello","version":1,"slot_count":8,"slot_size":1048576,"sq_capacity":64,"cq_capacity":64,"client":"x"}"#,
    br#"{"type":"hello","version":1}"#,
    br#"{"type":"hello","version":2}"#,
    br#"{"type":"mapped"}"#,
];
const ENTRIES: &[&[u8]] = &[
    br#"{"p":"f","k":"file","m":420,"u":0,"g":0,"t":"0","s":"3","n":"1","d":"1","c":"00"}"#,
    br#"{"p":"d","k":"dir","m":493,"u":1000,"g":1000,"t":"-1700000000000000000","s":"0","n":"2","d":"3","x":"unchanged"}"#,
    br#"{"p":"l","k":"symlink","m":511,"u":0,"g":0,"t":"1","s":"0","n":"4","d":"1","l":"../x"}"#,
    b"{\"p\":\"a\",\"k\":\"other\",\"m\":0,\"u\":0,\"g\":0,\"t\":\"0\",\"s\":\"18446744073709551615\",\"n\":\"0\",\"d\":\"0\"}\n\n",
];

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn keys_are_accepted_only_when_valid(bytes in mutated(KEYS)) {
        match parse_key(bytes.clone()) {
            Ok(key) => {
                prop_assert_eq!(key.as_bytes(), &bytes[..]);
                prop_assert!(!key.is_empty() && key.len() <= 1024);
                prop_assert!(!key.starts_with('/') && !key.ends_with('/'));
                prop_assert!(key.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
                prop_assert!(!key.chars().any(|c| c.is_ascii_control()));
            }
            Err(code) => prop_assert_eq!(code, ErrorCode::Malformed),
        }
    }

    #[test]
    fn list_requests_are_accepted_only_within_limits(bytes in mutated(LISTS)) {
        match parse_list(&bytes) {
            Ok(req) => prop_assert!(req.limit >= 1 && req.limit <= MAX_LIST_LIMIT),
            Err(code) => prop_assert_eq!(code, ErrorCode::Malformed),
        }
    }

    #[test]
    fn read_ranges_never_run_backwards(start in any::<u64>(), end in prop_oneof![any::<u64>(), Just(u64::MAX)]) {
        if let Ok(shmpipe_sidecar::ops::store::ReadRange::Bounded(r)) = parse_range(start, end) {
            prop_assert!(r.start <= r.end);
        }
        prop_assert_eq!(parse_range(start, end).is_err(), end != u64::MAX && start > end);
    }

    #[test]
    fn hello_and_mapped_frames_parse_or_are_refused(bytes in mutated(HELLOS)) {
        if let Ok(h) = parse_hello(&bytes) {
            // Numbers are clamped by `negotiate`, not trusted: any u64 may come back here.
            let _ = (h.slot_count, h.slot_size, h.sq_capacity, h.cq_capacity);
        }
        let _ = is_mapped(&bytes);
    }

    #[test]
    fn entry_lines_parse_whole_or_are_refused(bytes in mutated(ENTRIES)) {
        match parse_entries(&bytes) {
            Ok(entries) => prop_assert!(entries.len() <= bytes.iter().filter(|&&b| b == b'\n').count() + 1),
            Err(e) => prop_assert_eq!(e.code, "SHMPIPE_E_MALFORMED"),
        }
        let _ = decode_content(&bytes);
    }
}

/// Control frames from a socket: a length prefix the agent chose, then bytes. Oversized and
/// truncated frames are errors; nothing larger than `MAX_FRAME` is ever allocated.
#[test]
fn control_frames_of_any_length_prefix() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(config(1024));
    runner
        .run(&(any::<u32>(), prop::collection::vec(any::<u8>(), 0..512)), |(len, body)| {
            let mut wire = len.to_le_bytes().to_vec();
            wire.extend_from_slice(&body);
            let got = rt.block_on(async { read_frame(&mut &wire[..]).await });
            match got {
                Ok(frame) => prop_assert!(frame.len() == len as usize && frame.len() <= body.len()),
                Err(FrameError::TooLarge(n)) => prop_assert!(n > MAX_FRAME),
                Err(FrameError::Eof) => prop_assert!(len as usize > body.len()),
                Err(FrameError::Io(e)) => prop_assert!(false, "io error from a slice: {e}"),
            }
            Ok(())
        })
        .unwrap();
}

const REPO_REQUESTS: &[&[u8]] = &[
    br#"{"password":"pw"}"#,
    br#"{"password":"pw","params":{"kdf_m_kib":64,"kdf_t":1}}"#,
    br#"{"password":"","params":{"compression_level":-7,"pack_size_mib":1}}"#,
];
const BACKUP_REQUESTS: &[&[u8]] = &[br#"{}"#, br#"{"parent":"0000000000000000000000000000000000000000000000000000000000000000","host":"h","tags":["t"],"paths":["/a"]}"#];
const JOB_REQUESTS: &[&[u8]] = &[br#"{"job":"snapshots"}"#, br#"{"job":"snapshots","extra":1}"#, br#"{"job":7}"#, b"[]"];
const SNAPSHOT_IDS: &[&[u8]] = &[b"latest", b"0000000000000000000000000000000000000000000000000000000000000000"];

/// One repository (Argon2 is slow by design) and the runtime its ops run on, for every case.
fn repo() -> &'static (tokio::runtime::Runtime, Arc<BackupOps>, u64) {
    static REPO: OnceLock<(tokio::runtime::Runtime, Arc<BackupOps>, u64)> = OnceLock::new();
    REPO.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let cfg = shmpipe_store::StoreConfig::new("memory://", shmpipe_store::StoreOptions::default()).unwrap();
        let ops = Arc::new(BackupOps::new(shmpipe_store::Store::open(&cfg).unwrap(), 1, 1, 64).allowing_weak_kdf_for_tests());
        let repo = rt.block_on(ops.repo_init(REPO_REQUESTS[1])).unwrap();
        (rt, ops, repo)
    })
}

/// The backup ops' JSON and text arguments, with the repository open: every request is a value
/// or a typed wire error (a code SPEC §8 knows), never a panic; handles stay bounded.
#[test]
fn backup_requests_of_any_shape() {
    let (rt, ops, repo) = repo();
    let mut runner = proptest::test_runner::TestRunner::new(config(256));
    let any_request = (0u8..5, prop_oneof![mutated(REPO_REQUESTS), mutated(BACKUP_REQUESTS), mutated(JOB_REQUESTS), mutated(SNAPSHOT_IDS)]);
    runner
        .run(&any_request, |(op, bytes)| {
            let code = rt.block_on(async {
                match op {
                    0 => ops.repo_open(&bytes).await.map(|h| ops.close(h)).err(),
                    1 => match ops.backup_begin(*repo, &bytes).await {
                        Ok(h) => ops.backup_abort(h).await.err(),
                        Err(e) => Some(e),
                    },
                    2 => ops.entries_open(*repo, &bytes).await.map(|(h, _)| ops.close(h)).err(),
                    3 => ops.content_reader(*repo, &bytes).err(),
                    _ => ops.job_start(*repo, &bytes).map(|h| ops.close(h)).err(),
                }
            });
            if let Some(e) = code {
                prop_assert!(ErrorCode::from_name(e.code).is_some(), "unknown code {}: {}", e.code, e.message);
            }
            prop_assert!(ops.open_handles() <= 2, "handles leak: {}", ops.open_handles());
            Ok(())
        })
        .unwrap();
}
