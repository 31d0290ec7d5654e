//! Property tests of every parser of repository data, as a hostile repository would feed
//! them (REPOSITORY.md §Limits): the config's JSON, the sealed settings, sealed objects'
//! zstd frames, index objects, pack tails and headers, snapshot objects, tree blobs, chunk
//! lists and blob envelopes. Arbitrary bytes — and mutations of valid encodings, which reach
//! past the first check — never panic and never allocate what they claim: each gives a value
//! that honours the limits, or `SHMPIPE_E_INTEGRITY` (the config: NOT_A_REPOSITORY or
//! REPO_VERSION). Authentication is not the defence here: the inputs are what a key holder
//! could seal.
//!
//! Fixed seed (reproducible in CI); failures are saved next to this file
//! (`fuzz_tests.proptest-regressions`, under version control) and replayed first. The
//! sidecar's decoders of agent input have theirs in `sidecar/tests/fuzz_decoders.rs`;
//! `sidecar/fuzz/` holds cargo-fuzz targets (nightly) for both.

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};

use crate::blob::{self, BlobKind, Compression};
use crate::chunker::{Cdc, ChunkerParams};
use crate::crypto::{AeadKey, KdfParams};
use crate::error::EngineError;
use crate::id::Id;
use crate::index::{IndexFile, IndexedPack};
use crate::limits;
use crate::objects;
use crate::pack::{self, PackBuilder, PackHeader};
use crate::repo::{self, Settings};
use crate::snapshot::{self, ChunkRef, ContentRef, EntryKind, SnapshotCounts, SnapshotFile, TreeEntry, Xattr};

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5eed_f0e4_a7e5_0001),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    }
}

/// Bytes: arbitrary, or one of `examples` with a few bytes changed (lengths and counts in
/// CBOR headers among them), cut short, or with bytes inserted.
fn mutated(examples: &'static [Vec<u8>]) -> impl Strategy<Value = Vec<u8>> {
    let edit = (0..examples.len(), prop::collection::vec((any::<usize>(), any::<u8>()), 0..6), any::<usize>(), any::<u8>()).prop_map(
        move |(i, edits, cut, how)| {
            let mut v = examples[i].clone();
            for (at, b) in edits {
                if !v.is_empty() {
                    let i = at % v.len();
                    v[i] = b;
                }
            }
            match how % 8 {
                0 if !v.is_empty() => v.truncate(cut % v.len()),
                1 if !v.is_empty() => {
                    let at = cut % v.len();
                    v.splice(at..at, [0xff, 0xff, 0xff, 0xff].iter().copied().take(1 + usize::from(how / 8) % 4));
                }
                _ => {}
            }
            v
        },
    );
    prop_oneof![1 => prop::collection::vec(any::<u8>(), 0..400), 4 => edit]
}

fn cbor<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

fn is_integrity(e: &EngineError) -> bool {
    e.code() == "SHMPIPE_E_INTEGRITY"
}

const KEY: [u8; 32] = [0x11; 32];
const ID_KEY: [u8; 32] = [0x22; 32];

fn aead() -> AeadKey {
    AeadKey::new(&KEY)
}

fn settings(keyed: bool) -> Settings {
    Settings {
        id_key: Id([3; 32]),
        chunker: ChunkerParams::recommended(if keyed { 0 } else { 77 }),
        chunker_key: keyed.then_some(Id([4; 32])),
        compression: Compression::Zstd(1),
        pack_size: 16 << 20,
    }
}

fn config_json(version: u32) -> Vec<u8> {
    serde_json::to_vec_pretty(&repo::ConfigFile {
        magic: repo::CONFIG_MAGIC.into(),
        version,
        id: Id([5; 32]).to_hex(),
        kdf: Some(KdfParams { algorithm: "argon2id".into(), m_kib: 65536, t: 3, p: 1, salt: "ab".repeat(16) }),
        wrapped_key: Some("cd".repeat(60)),
        settings: "ef".repeat(100),
    })
    .unwrap()
}

/// A pack of three real blobs (one of each kind), and its header's plaintext.
fn real_pack() -> &'static (Id, Vec<u8>, Vec<u8>, u64) {
    static P: OnceLock<(Id, Vec<u8>, Vec<u8>, u64)> = OnceLock::new();
    P.get_or_init(|| {
        let key = aead();
        let mut b = PackBuilder::default();
        for (kind, data) in [(BlobKind::Data, b"file bytes ".repeat(40)), (BlobKind::Tree, tree_bytes()), (BlobKind::ChunkList, chunk_list())] {
            let id = Id(crate::crypto::keyed_id(&ID_KEY, &data));
            b.add(&blob::seal(&key, kind, id, &data, Compression::Zstd(1)).unwrap());
        }
        let start = b.size();
        let p = b.finish(&key).unwrap();
        let header = cbor(&PackHeader { v: 1, blobs: p.entries.clone() });
        (p.id, p.data, header, start)
    })
}

fn tree_bytes() -> Vec<u8> {
    let c = ContentRef::Chunks { size: 3, chunks: vec![ChunkRef { id: Id([6; 32]), len: 3 }] };
    let entries = [
        TreeEntry { path: "d".into(), kind: EntryKind::Dir, mode: 0o40755, ..TreeEntry::default() },
        TreeEntry { path: "d/f".into(), kind: EntryKind::File, size: 3, content: Some(c), ctime_ns: Some(1), links: Some(2), ..TreeEntry::default() },
        TreeEntry {
            path: "d/l\\xff".into(),
            kind: EntryKind::Symlink,
            target: Some("../x".into()),
            xattrs: vec![Xattr { name: "user.a".into(), value: vec![1, 2, 3] }],
            ..TreeEntry::default()
        },
        TreeEntry { path: "d/big".into(), kind: EntryKind::File, size: 1 << 40, content: Some(ContentRef::List { size: 1 << 40, count: 1 << 20, list: Id([7; 32]) }), ..TreeEntry::default() },
    ];
    let mut out = Vec::new();
    for e in &entries {
        snapshot::encode_entry(e, &mut out);
    }
    out
}

fn chunk_list() -> Vec<u8> {
    snapshot::encode_chunk_list(&(0..5u8).map(|i| ChunkRef { id: Id([i; 32]), len: 1000 + u32::from(i) }).collect::<Vec<_>>())
}

fn index_file() -> IndexFile {
    let (id, data, _, _) = real_pack();
    let entries = pack::parse_pack(&aead(), id, data, "p").unwrap();
    IndexFile { v: 1, packs: vec![IndexedPack { id: *id, size: data.len() as u64, blobs: entries }] }
}

fn snapshot_file() -> SnapshotFile {
    SnapshotFile {
        v: 1,
        time_ns: 1_764_000_000_000_000_000,
        host: "h".into(),
        tags: vec!["t".into()],
        paths: vec!["/home".into()],
        parent: Some(Id([8; 32])),
        tree: vec![Id([9; 32]), Id([10; 32])],
        entries: 4,
        counts: SnapshotCounts { files_new: 2, bytes_read: 1 << 30, ..SnapshotCounts::default() },
        duration_ms: 5,
    }
}

fn configs() -> &'static [Vec<u8>] {
    static V: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    V.get_or_init(|| vec![config_json(1), config_json(2), br#"{"magic":"shmpipe-repository","version":3}"#.to_vec()])
}

fn settings_cbor() -> &'static [Vec<u8>] {
    static V: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    V.get_or_init(|| vec![cbor(&settings(true)), cbor(&settings(false))])
}

fn objects_cbor() -> &'static [Vec<u8>] {
    static V: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    V.get_or_init(|| vec![cbor(&index_file()), cbor(&snapshot_file())])
}

fn zstd_frames() -> &'static [Vec<u8>] {
    static V: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    V.get_or_init(|| {
        vec![
            zstd::encode_all(&cbor(&index_file())[..], 3).unwrap(),
            zstd::encode_all(&cbor(&snapshot_file())[..], 3).unwrap(),
            // Expands 4 MiB of zeros from a few bytes: over the bound the test decodes with.
            zstd::encode_all(&vec![0u8; 4 << 20][..], 19).unwrap(),
        ]
    })
}

fn headers() -> &'static [Vec<u8>] {
    static V: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    V.get_or_init(|| vec![real_pack().2.clone()])
}

fn packs() -> &'static [Vec<u8>] {
    static V: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    V.get_or_init(|| vec![real_pack().1.clone(), real_pack().1[real_pack().1.len() - 40..].to_vec()])
}

fn trees() -> &'static [Vec<u8>] {
    static V: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    V.get_or_init(|| vec![tree_bytes(), chunk_list()])
}

/// What a valid index promises its readers (checked here independently of limits.rs).
fn index_is_usable(f: &IndexFile) -> bool {
    f.packs.iter().all(|p| {
        p.size <= limits::MAX_PACK_SIZE
            && p.blobs.iter().all(|b| {
                b.raw_len <= limits::max_blob_len(b.kind)
                    && b.length as usize <= b.raw_len as usize + crate::crypto::OVERHEAD + 1
                    && u64::from(b.offset) + u64::from(b.length) <= p.size
            })
    })
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn config_json_is_a_repository_or_refused_by_name(bytes in mutated(configs())) {
        match repo::parse_config(&bytes) {
            Ok(c) => {
                prop_assert_eq!(c.magic.as_str(), repo::CONFIG_MAGIC);
                prop_assert!((repo::OLDEST_FORMAT_VERSION..=repo::FORMAT_VERSION).contains(&c.version));
            }
            Err(e) => prop_assert!(matches!(e.code(), "SHMPIPE_E_NOT_A_REPOSITORY" | "SHMPIPE_E_REPO_VERSION"), "{e}"),
        }
    }

    #[test]
    fn settings_decode_to_usable_settings_or_integrity(bytes in mutated(settings_cbor()), version in 1u32..=2) {
        match repo::decode_settings(version, &bytes) {
            Ok(s) => {
                prop_assert_eq!(s.chunker_key.is_some(), version == 2);
                let cdc = match &s.chunker_key { Some(k) => Cdc::keyed(s.chunker.clone(), &k.0), None => Cdc::new(s.chunker.clone()) };
                prop_assert!(cdc.is_ok());
                prop_assert!(s.chunker.max_size <= limits::MAX_DATA_BLOB);
                prop_assert!((1 << 20..=1 << 30).contains(&s.pack_size));
            }
            Err(e) => prop_assert!(is_integrity(&e), "{e}"),
        }
    }

    #[test]
    fn sealed_object_frames_decompress_within_the_bound(bytes in mutated(zstd_frames())) {
        match objects::decode_object_max::<ciborium::Value>("index/x", &bytes, 1 << 20) {
            Ok(_) => {}
            Err(e) => prop_assert!(is_integrity(&e) && e.to_string().contains("index/x"), "{e}"),
        }
    }

    #[test]
    fn index_objects_are_usable_or_refused(bytes in mutated(objects_cbor())) {
        let frame = zstd::encode_all(&bytes[..], 1).unwrap();
        match objects::decode_object::<IndexFile>("index/x", &frame) {
            Ok(f) => {
                if limits::index_problem(&f).is_none() {
                    prop_assert!(index_is_usable(&f));
                }
            }
            Err(e) => prop_assert!(is_integrity(&e), "{e}"),
        }
    }

    #[test]
    fn snapshot_objects_decode_or_are_refused(bytes in mutated(objects_cbor())) {
        let frame = zstd::encode_all(&bytes[..], 1).unwrap();
        if let Err(e) = objects::decode_object::<SnapshotFile>("snapshots/x", &frame) {
            prop_assert!(is_integrity(&e), "{e}");
        }
    }

    #[test]
    fn pack_headers_tile_their_pack_or_are_refused(bytes in mutated(headers()), start in prop_oneof![Just(real_pack().3), any::<u64>()]) {
        match pack::decode_header(&bytes, start, "packs/x") {
            Ok(table) => {
                prop_assert!(table.len() <= limits::MAX_PACK_BLOBS);
                let end = table.iter().fold(0u64, |at, b| if u64::from(b.offset) == at { at + u64::from(b.length) } else { u64::MAX });
                prop_assert_eq!(end, start);
                prop_assert!(table.iter().all(|b| limits::blob_entry_problem(b).is_none()));
            }
            Err(e) => prop_assert!(is_integrity(&e), "{e}"),
        }
    }

    #[test]
    fn whole_packs_and_tails_of_any_size(bytes in mutated(packs()), size in any::<u64>()) {
        let (id, ..) = real_pack();
        if let Err(e) = pack::parse_pack(&aead(), id, &bytes, "packs/x") {
            prop_assert!(is_integrity(&e), "{e}");
        }
        if bytes.len() >= pack::TAIL_LEN {
            let tail = &bytes[bytes.len() - pack::TAIL_LEN..];
            if let Ok(r) = pack::header_range(tail, size, "packs/x") {
                prop_assert!(r.start <= r.end && r.end + pack::TAIL_LEN as u64 == size);
                prop_assert!(r.end - r.start <= limits::MAX_PACK_HEADER);
            }
        }
    }

    #[test]
    fn tree_blobs_and_chunk_lists_decode_or_are_refused(bytes in mutated(trees())) {
        if let Err(e) = snapshot::decode_tree(&bytes, "tree blob x") {
            prop_assert!(is_integrity(&e) && e.to_string().contains("tree blob x"), "{e}");
        }
        if let Err(e) = snapshot::decode_chunk_list(&bytes, "chunk list x") {
            prop_assert!(is_integrity(&e), "{e}");
        }
    }

    #[test]
    fn blob_envelopes_never_open_under_a_wrong_id(bytes in mutated(packs()), raw_len in prop_oneof![Just(440u32), 0u32..100_000], kind in 0u8..3) {
        // No plaintext hashes to this id: nothing may open, whatever the bytes.
        let kind = BlobKind::try_from(kind).unwrap();
        let e = blob::open(&aead(), Some(&ID_KEY), kind, &Id([1; 32]), raw_len, bytes::Bytes::from(bytes)).unwrap_err();
        prop_assert!(is_integrity(&e), "{e}");
    }
}

/// A zstd bomb in a sealed object: refused at the bound, after at most that much output.
#[test]
fn a_zstd_bomb_stops_at_the_bound() {
    let bomb = &zstd_frames()[2];
    assert!(bomb.len() < 1024, "{} bytes expand to 4 MiB", bomb.len());
    let e = objects::decode_object_max::<ciborium::Value>("snapshots/x", bomb, 1 << 20).unwrap_err();
    assert!(is_integrity(&e) && e.to_string().contains("more than 1048576 bytes"), "{e}");
}

/// Index rows a key holder could seal that would make readers allocate or read what they
/// claim: each is refused by name before use.
#[test]
fn impossible_index_rows_are_refused() {
    let good = index_file();
    assert_eq!(limits::index_problem(&good), None);
    let mut cases: Vec<(IndexFile, &str)> = Vec::new();
    let mut f = good.clone();
    f.packs[0].blobs[0].raw_len = u32::MAX;
    cases.push((f, "claims"));
    let mut f = good.clone();
    f.packs[0].blobs[1].length = u32::MAX;
    cases.push((f, "stored in"));
    let mut f = good.clone();
    f.packs[0].size = 10;
    cases.push((f, "size"));
    let mut f = good.clone();
    f.packs[0].blobs.swap(0, 1);
    cases.push((f, "gaps or overlaps"));
    let mut f = good.clone();
    f.v = 9;
    cases.push((f, "version"));
    for (f, why) in cases {
        let p = limits::index_problem(&f).expect(why);
        assert!(p.contains(why), "{p} (wanted {why})");
    }
}
