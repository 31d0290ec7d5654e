//! memory:// and file:// (temp dir) tests of every op: round trips, STAT, ranged reads, LIST
//! paging, DELETE, NOT_FOUND, key checks, streaming writes (single PUT and multipart),
//! invisibility of uncommitted uploads, corruption detection, slot-lease release and the
//! absence of payload copies in this crate.

mod support;

use std::path::Path as FsPath;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use shmpipe_store::checksum::crc32c;
use shmpipe_store::trailer::TRAILER_LEN;
use shmpipe_store::{Store, StoreConfig, StoreError, StoreOptions};
use support::*;

const PART: usize = 64 * 1024;

fn options() -> StoreOptions {
    StoreOptions { part_size: PART, max_parts_in_flight: 3, read_chunk_size: 16 * 1024, ..Default::default() }
}

/// A store plus the same backend without the store layer (to inspect and tamper).
struct Fx {
    store: Store,
    raw: Arc<dyn ObjectStore>,
    dir: Option<tempfile::TempDir>,
}

fn memory() -> Fx {
    let cfg = StoreConfig::new("memory://", options()).unwrap();
    let raw: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    // What Store::open("memory://") builds, but with a handle on the InMemory kept.
    Fx { store: Store::from_object_store(raw.clone(), &cfg, true, true), raw, dir: None }
}

fn file() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(dir.path()).unwrap().to_string();
    let store = Store::open(&StoreConfig::new(&url, options()).unwrap()).unwrap();
    let raw: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    Fx { store, raw, dir: Some(dir) }
}

/// `data` as `n` roughly equal chunks.
fn chunks(data: &[u8], n: usize) -> Vec<Bytes> {
    let step = data.len().div_ceil(n.max(1)).max(1);
    data.chunks(step).map(Bytes::copy_from_slice).collect()
}

async fn read_chunks(store: &Store, key: &str, range: Option<std::ops::Range<u64>>) -> Result<Vec<u8>, StoreError> {
    let mut r = store.open_read(key, range).await?;
    let mut out = Vec::new();
    while let Some(c) = r.next_chunk().await? {
        out.extend_from_slice(&c);
    }
    assert_eq!(r.remaining(), 0);
    Ok(out)
}

async fn read_into_bufs(store: &Store, key: &str, buf_size: usize) -> Result<Vec<u8>, StoreError> {
    let mut r = store.open_read(key, None).await?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; buf_size];
    loop {
        let (b, filled) = r.read_into(buf).await?;
        out.extend_from_slice(&b[..filled.len]);
        buf = b;
        if filled.end {
            return Ok(out);
        }
        assert_eq!(filled.len, buf_size, "only the last fill may be short");
    }
}

async fn raw_size(fx: &Fx, key: &str) -> u64 {
    fx.raw.head(&Path::parse(key).unwrap()).await.unwrap().size
}

async fn tamper(fx: &Fx, key: &str, f: impl FnOnce(&mut Vec<u8>)) {
    let p = Path::parse(key).unwrap();
    let mut bytes = fx.raw.get(&p).await.unwrap().bytes().await.unwrap().to_vec();
    f(&mut bytes);
    fx.raw.put(&p, bytes.into()).await.unwrap();
}

fn files_under(dir: &FsPath) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

// ---------- the suite, run against both backends ----------

async fn round_trip(fx: Fx) {
    for (i, size) in [0usize, 1, 31, 32, 33, 100_000, 300_001].into_iter().enumerate() {
        let key = format!("rt/{size}");
        let data = pattern(i as u64, 0..size as u64);
        let info = fx.store.put(&key, chunks(&data, 3)).await.unwrap();
        assert_eq!(info.size, size as u64);
        assert_eq!(info.checksum, Some(crc32c(&data)));
        assert_eq!(raw_size(&fx, &key).await, size as u64 + TRAILER_LEN as u64, "data ‖ trailer");
        assert_eq!(read_chunks(&fx.store, &key, None).await.unwrap(), data, "{key} by chunks");
        assert_eq!(read_into_bufs(&fx.store, &key, 4096).await.unwrap(), data, "{key} into 4 KiB");
        assert_eq!(read_into_bufs(&fx.store, &key, 1 << 20).await.unwrap(), data, "{key} into 1 MiB");
    }
}

async fn stat_reports_data_size_and_checksum(fx: Fx) {
    let data = pattern(7, 0..5000);
    let put = fx.store.put("s/obj", [Bytes::from(data.clone())]).await.unwrap();
    let st = fx.store.stat("s/obj").await.unwrap();
    assert_eq!(st.size, 5000);
    assert_eq!(st.checksum, Some(crc32c(&data)));
    assert_eq!(st.checksum, put.checksum);
    assert!(st.last_modified.is_some());
    assert_eq!(st.e_tag.is_some(), put.e_tag.is_some());
}

async fn ranged_reads(fx: Fx) {
    let data = pattern(3, 0..200_000);
    fx.store.put("r/obj", chunks(&data, 5)).await.unwrap();
    for r in [0..0u64, 0..1, 5..70_000, 199_999..200_000, 0..200_000, 100..100, 200_000..200_000] {
        let got = read_chunks(&fx.store, "r/obj", Some(r.clone())).await.unwrap();
        assert_eq!(got, &data[r.start as usize..r.end as usize], "range {r:?}");
        let reader = fx.store.open_read("r/obj", Some(r.clone())).await.unwrap();
        assert!(!reader.is_verified_read());
        assert_eq!(reader.object_size(), 200_000);
    }
    #[allow(clippy::reversed_empty_ranges)]
    for r in [0..200_001u64, 199_990..200_010, 200_000..200_032, 300_000..300_010, 10..5] {
        let e = fx.store.open_read("r/obj", Some(r.clone())).await.expect_err("out of range");
        assert!(matches!(e, StoreError::InvalidRange { .. }), "{r:?}: {e}");
        assert_eq!(e.code(), "SHMPIPE_E_MALFORMED");
    }
    let e = fx.store.open_read("r/missing", Some(0..10)).await.unwrap_err();
    assert_eq!(e.code(), "SHMPIPE_E_NOT_FOUND", "{e}");
}

async fn list_paging(fx: Fx) {
    let mut want = Vec::new();
    for i in 0..23 {
        let key = format!("b/k{i:02}");
        fx.store.put(&key, [Bytes::from(vec![1u8; i])]).await.unwrap();
        want.push((key, i as u64));
    }
    for (k, n) in [("b/sub/x", 5usize), ("bc/y", 1), ("a", 2)] {
        fx.store.put(k, [Bytes::from(vec![0u8; n])]).await.unwrap();
    }
    want.push(("b/sub/x".into(), 5));
    want.sort();

    for prefix in ["b", "b/"] {
        let mut got = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = Vec::new();
        loop {
            let page = fx.store.list(prefix, token.as_deref(), 7).await.unwrap();
            pages.push(page.entries.len());
            got.extend(page.entries.into_iter().map(|e| (e.key, e.size)));
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(pages, [7, 7, 7, 3], "prefix {prefix:?}");
        assert_eq!(got, want, "prefix {prefix:?}: keys in order with data sizes");
    }
    let bc = fx.store.list("bc", None, 100).await.unwrap();
    assert_eq!(bc.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["bc/y"], "whole segments");
    let all = fx.store.list("", None, 1000).await.unwrap();
    assert_eq!(all.entries.len(), 26);
    assert!(all.entries.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(all.next_page_token, None);
    let exact = fx.store.list("", None, 26).await.unwrap();
    assert_eq!((exact.entries.len(), exact.next_page_token), (26, None), "no empty last page");
    let none = fx.store.list("nope", None, 10).await.unwrap();
    assert!(none.entries.is_empty() && none.next_page_token.is_none());
    assert_eq!(fx.store.list("b", None, 0).await.unwrap_err().code(), "SHMPIPE_E_MALFORMED");
    assert_eq!(fx.store.list("/b", None, 5).await.unwrap_err().code(), "SHMPIPE_E_MALFORMED");
    assert_eq!(fx.store.list("b", Some("x//y"), 5).await.unwrap_err().code(), "SHMPIPE_E_MALFORMED");
}

async fn delete_and_not_found(fx: Fx) {
    fx.store.put("d/e/f", [Bytes::from_static(b"x")]).await.unwrap();
    fx.store.delete("d/e/f").await.unwrap();
    for e in [
        fx.store.stat("d/e/f").await.unwrap_err(),
        fx.store.open_read("d/e/f", None).await.unwrap_err(),
        fx.store.open_read("d/e/f", Some(0..1)).await.unwrap_err(),
    ] {
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
        assert_eq!(e.code(), "SHMPIPE_E_NOT_FOUND");
    }
    fx.store.delete("d/e/f").await.expect("deleting a missing key succeeds");
    if let Some(dir) = &fx.dir {
        assert!(files_under(dir.path()).is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "empty directories removed");
    }
}

async fn invalid_keys_rejected(fx: Fx) {
    for key in ["", "a//b", "/a", "a/", "a/../b", "obj#3"] {
        let errs = [
            fx.store.put(key, [Bytes::from_static(b"x")]).await.unwrap_err(),
            fx.store.open_write(key).unwrap_err(),
            fx.store.open_read(key, None).await.unwrap_err(),
            fx.store.stat(key).await.unwrap_err(),
            fx.store.delete(key).await.unwrap_err(),
        ];
        for e in errs {
            assert!(matches!(e, StoreError::InvalidKey { .. }), "{key:?}: {e}");
            assert_eq!(e.code(), "SHMPIPE_E_MALFORMED");
        }
    }
}

async fn odd_keys_round_trip(fx: Fx) {
    for key in ["sp ace/ü/%41%", "a#b/c#", "x.y/..z", "emoji/🦀"] {
        fx.store.put(key, [Bytes::from(key.as_bytes().to_vec())]).await.unwrap();
        assert_eq!(read_chunks(&fx.store, key, None).await.unwrap(), key.as_bytes());
    }
    let keys: Vec<String> = fx.store.list("", None, 100).await.unwrap().entries.into_iter().map(|e| e.key).collect();
    let mut want = vec!["sp ace/ü/%41%", "a#b/c#", "x.y/..z", "emoji/🦀"];
    want.sort();
    assert_eq!(keys, want, "LIST returns keys verbatim");
}

async fn writer_small_is_one_put_invisible_until_commit(fx: Fx) {
    let data = pattern(11, 0..1000);
    let mut w = fx.store.open_write("w/small").unwrap();
    for c in chunks(&data, 3) {
        w.write(c).await.unwrap();
    }
    assert_eq!(w.len(), 1000);
    assert_eq!(fx.store.stat("w/small").await.unwrap_err().code(), "SHMPIPE_E_NOT_FOUND");
    assert!(fx.store.list("w", None, 10).await.unwrap().entries.is_empty());
    let info = w.commit().await.unwrap();
    assert_eq!((info.size, info.checksum), (1000, Some(crc32c(&data))));
    assert_eq!(read_chunks(&fx.store, "w/small", None).await.unwrap(), data);
}

async fn writer_multipart(fx: Fx) {
    // Odd chunk sizes so chunks straddle parts; sizes around part multiples.
    for (i, total) in [PART, PART + 1, 3 * PART, 3 * PART - 31, 1_000_003].into_iter().enumerate() {
        let key = format!("w/multi/{total}");
        let data = pattern(100 + i as u64, 0..total as u64);
        let mut w = fx.store.open_write(&key).unwrap();
        for c in data.chunks(10_007) {
            w.write(Bytes::copy_from_slice(c)).await.unwrap();
            assert!(w.buffered_bytes() <= PART, "keeps at most one part back");
        }
        assert_eq!(fx.store.stat(&key).await.unwrap_err().code(), "SHMPIPE_E_NOT_FOUND", "invisible before commit");
        let info = w.commit().await.unwrap();
        assert_eq!((info.size, info.checksum), (total as u64, Some(crc32c(&data))));
        assert_eq!(read_chunks(&fx.store, &key, None).await.unwrap(), data, "{key}");
        assert_eq!(read_into_bufs(&fx.store, &key, 50_000).await.unwrap(), data, "{key}");
        let st = fx.store.stat(&key).await.unwrap();
        assert_eq!((st.size, st.checksum), (total as u64, Some(crc32c(&data))));
    }
}

async fn writer_one_chunk_larger_than_the_budget(fx: Fx) {
    // One 10-part chunk while the budget is 3 parts: allowed, not a deadlock.
    let data = pattern(5, 0..(10 * PART + 5) as u64);
    let mut w = fx.store.open_write("w/big-chunk").unwrap();
    w.write(Bytes::from(data.clone())).await.unwrap();
    w.write(Bytes::from_static(b"tail")).await.unwrap();
    w.commit().await.unwrap();
    let mut want = data;
    want.extend_from_slice(b"tail");
    assert_eq!(read_chunks(&fx.store, "w/big-chunk", None).await.unwrap(), want);
}

async fn writer_dropped_leaves_nothing(fx: Fx) {
    for total in [1000usize, 5 * PART] {
        let mut w = fx.store.open_write("w/dropped").unwrap();
        for c in pattern(1, 0..total as u64).chunks(9_999) {
            w.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        drop(w); // agent disconnected
        fx.store.wait_background().await;
        assert_eq!(fx.store.stat("w/dropped").await.unwrap_err().code(), "SHMPIPE_E_NOT_FOUND");
        assert!(fx.store.list("", None, 10).await.unwrap().entries.is_empty());
        if let Some(dir) = &fx.dir {
            assert!(files_under(dir.path()).is_empty(), "no staging file left: {:?}", files_under(dir.path()));
        }
    }
}

async fn writer_abort_leaves_nothing(fx: Fx) {
    let mut w = fx.store.open_write("w/aborted").unwrap();
    for c in pattern(2, 0..(4 * PART) as u64).chunks(PART / 3) {
        w.write(Bytes::copy_from_slice(c)).await.unwrap();
    }
    w.abort().await.unwrap();
    assert_eq!(fx.store.stat("w/aborted").await.unwrap_err().code(), "SHMPIPE_E_NOT_FOUND");
    if let Some(dir) = &fx.dir {
        assert!(files_under(dir.path()).is_empty());
    }
}

async fn overwrite_is_atomic(fx: Fx) {
    fx.store.put("o", [Bytes::from_static(b"old")]).await.unwrap();
    let new = pattern(9, 0..(3 * PART) as u64);
    let mut w = fx.store.open_write("o").unwrap();
    for c in new.chunks(PART / 2) {
        w.write(Bytes::copy_from_slice(c)).await.unwrap();
    }
    assert_eq!(read_chunks(&fx.store, "o", None).await.unwrap(), b"old", "old object intact during upload");
    w.commit().await.unwrap();
    assert_eq!(read_chunks(&fx.store, "o", None).await.unwrap(), new);
}

async fn put_if_absent_creates_once(fx: Fx) {
    let store = &fx.store;
    store.put_if_absent("cfg", [Bytes::from_static(b"first")]).await.unwrap();
    let e = store.put_if_absent("cfg", [Bytes::from_static(b"second")]).await.unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { ref key } if key == "cfg"), "{e}");
    assert_eq!(read_chunks(store, "cfg", None).await.unwrap(), b"first", "the object there is untouched");
    // Racing creators: exactly one wins, and the object is whole and the winner's.
    let racers = (0..8u8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.put_if_absent("race", [Bytes::from(vec![i; 50_000])]).await.map(|_| i) })
    });
    let results: Vec<_> = futures::future::join_all(racers).await.into_iter().map(Result::unwrap).collect();
    let winners: Vec<u8> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(_) | Err(StoreError::AlreadyExists { .. }))), "{results:?}");
    assert_eq!(read_chunks(store, "race", None).await.unwrap(), vec![winners[0]; 50_000]);
    if let Some(dir) = &fx.dir {
        let mut names: Vec<String> = files_under(dir.path()).iter().map(|f| f.rsplit('/').next().unwrap().to_owned()).collect();
        names.sort();
        assert_eq!(names, ["cfg", "race"], "no staging file left behind");
    }
}

async fn corrupted_data_detected(fx: Fx) {
    let data = pattern(4, 0..100_000);
    let put = fx.store.put("c/obj", chunks(&data, 4)).await.unwrap();
    tamper(&fx, "c/obj", |b| b[50_000] ^= 0x20).await;

    let e = read_chunks(&fx.store, "c/obj", None).await.unwrap_err();
    match &e {
        StoreError::Integrity { expected, actual, .. } => {
            assert_eq!(Some(*expected), put.checksum);
            assert_ne!(expected, actual);
        }
        other => panic!("want Integrity, got {other}"),
    }
    assert_eq!(e.code(), "SHMPIPE_E_INTEGRITY");
    let e = read_into_bufs(&fx.store, "c/obj", 8192).await.unwrap_err();
    assert_eq!(e.code(), "SHMPIPE_E_INTEGRITY", "{e}");
    // The error comes instead of the last chunk, never after a clean end.
    let mut r = fx.store.open_read("c/obj", None).await.unwrap();
    let mut delivered = 0u64;
    let err = loop {
        match r.next_chunk().await {
            Ok(Some(c)) => delivered += c.len() as u64,
            Ok(None) => panic!("corrupt object read to a clean end"),
            Err(e) => break e,
        }
    };
    assert!(delivered < 100_000, "the last chunk is withheld");
    assert_eq!(err.code(), "SHMPIPE_E_INTEGRITY");
    // Documented limits: a ranged read is not verified; STAT reads only the trailer.
    assert_eq!(read_chunks(&fx.store, "c/obj", Some(49_990..50_010)).await.unwrap().len(), 20);
    assert_eq!(fx.store.stat("c/obj").await.unwrap().checksum, put.checksum);
}

async fn damaged_framing_detected(fx: Fx) {
    let data = pattern(6, 0..4096);
    type Damage = Box<dyn FnOnce(&mut Vec<u8>)>;
    let cases: [(&str, Damage); 5] = [
        ("trailer-bit", Box::new(|b: &mut Vec<u8>| *b.last_mut().unwrap() ^= 1)),
        ("trailer-checksum-field", Box::new(|b: &mut Vec<u8>| { let n = b.len(); b[n - TRAILER_LEN + 8] ^= 1 })),
        ("truncated", Box::new(|b: &mut Vec<u8>| { b.pop(); })),
        ("extended", Box::new(|b: &mut Vec<u8>| b.push(0))),
        ("foreign", Box::new(|b: &mut Vec<u8>| *b = b"hello, not ours".to_vec())),
    ];
    for (name, f) in cases {
        let key = format!("f/{name}");
        fx.store.put(&key, [Bytes::from(data.clone())]).await.unwrap();
        tamper(&fx, &key, f).await;
        let e = read_chunks(&fx.store, &key, None).await.unwrap_err();
        assert_eq!(e.code(), "SHMPIPE_E_INTEGRITY", "{name}: {e}");
        if name != "trailer-checksum-field" {
            let e = fx.store.stat(&key).await.unwrap_err();
            assert!(matches!(e, StoreError::Corrupt { .. }), "{name}: {e}");
        }
    }
}

async fn leases_released_after_put_and_commit(fx: Fx) {
    let leases = Leases::new();
    let data = pattern(8, 0..30_000);
    let parts: Vec<Bytes> = data.chunks(10_000).map(|c| leases.lease(c.to_vec())).collect();
    fx.store.put("l/put", parts).await.unwrap();
    assert_eq!((leases.made(), leases.dropped()), (3, 3), "every lease returned when put returns");

    let big = pattern(9, 0..(5 * PART + 123) as u64);
    let mut w = fx.store.open_write("l/stream").unwrap();
    for c in big.chunks(PART / 4) {
        w.write(leases.lease(c.to_vec())).await.unwrap();
        let pinned = leases.outstanding() * (PART / 4);
        assert!(pinned <= fx.store.max_writer_pinned_bytes() + PART / 4, "pinned {pinned}");
    }
    w.commit().await.unwrap();
    assert_eq!(leases.outstanding(), 0, "every lease returned when commit returns");
    assert_eq!(read_chunks(&fx.store, "l/stream", None).await.unwrap(), big);

    let mut w = fx.store.open_write("l/dropped").unwrap();
    for c in big.chunks(PART / 4) {
        w.write(leases.lease(c.to_vec())).await.unwrap();
    }
    drop(w);
    fx.store.wait_background().await;
    // Parts already handed to file://'s blocking pool finish writing (into the unlinked
    // staging file) before they let go of their payload.
    eventually("a dropped writer returns every lease", || leases.outstanding() == 0).await;
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::memory()).await
                }
            )*
        }
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::file()).await
                }
            )*
        }
    };
}

suite!(
    round_trip,
    stat_reports_data_size_and_checksum,
    ranged_reads,
    list_paging,
    delete_and_not_found,
    invalid_keys_rejected,
    odd_keys_round_trip,
    writer_small_is_one_put_invisible_until_commit,
    writer_multipart,
    writer_one_chunk_larger_than_the_budget,
    writer_dropped_leaves_nothing,
    writer_abort_leaves_nothing,
    overwrite_is_atomic,
    put_if_absent_creates_once,
    corrupted_data_detected,
    damaged_framing_detected,
    leases_released_after_put_and_commit,
);

// ---------- backend-specific ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_byte_flipped_on_disk_is_detected() {
    let fx = file();
    let data = pattern(12, 0..(2 * PART) as u64);
    fx.store.put("disk/obj", chunks(&data, 2)).await.unwrap();
    let path = fx.dir.as_ref().unwrap().path().join("disk/obj");
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), data.len() + TRAILER_LEN);
    bytes[12_345] ^= 0x80;
    std::fs::write(&path, bytes).unwrap();
    let e = read_into_bufs(&fx.store, "disk/obj", PART).await.unwrap_err();
    assert!(matches!(e, StoreError::Integrity { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_url_copies_so_leases_are_not_pinned() {
    // The real memory:// backend keeps every Bytes it is given: the store must copy.
    let store = Store::open(&StoreConfig::new("memory://", options()).unwrap()).unwrap();
    let leases = Leases::keeping();
    let data = pattern(13, 0..(3 * PART) as u64);
    store.put("m/put", [leases.lease(data.clone())]).await.unwrap();
    assert_eq!(leases.outstanding(), 0, "memory:// must not keep the lease");
    let mut w = store.open_write("m/stream").unwrap();
    for c in data.chunks(PART / 2) {
        w.write(leases.lease(c.to_vec())).await.unwrap();
        assert_eq!(leases.outstanding(), 0, "memory:// writer copies at write");
    }
    w.commit().await.unwrap();
    assert_eq!(read_chunks(&store, "m/put", None).await.unwrap(), data);
    assert_eq!(read_chunks(&store, "m/stream", None).await.unwrap(), data);

    // And the spy confirms the bytes handed to the backend are copies.
    let spy = Arc::new(SpyStore::new(Arc::new(InMemory::new()), SpyState::default()));
    let cfg = StoreConfig::new("memory://", options()).unwrap();
    let store = Store::from_object_store(spy.clone(), &cfg, true, true);
    store.put("m/spy", [leases.lease(data.clone())]).await.unwrap();
    assert!(spy.seen().iter().all(|s| !leases.contains(s)), "memory:// got copies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_payload_copy_on_the_way_to_the_backend() {
    // Backend that borrows (file://, S3): every data chunk object_store receives must be the
    // caller's own memory (inside a lease); the one chunk that is not is the 32-byte trailer.
    let dir = tempfile::tempdir().unwrap();
    let spy = Arc::new(SpyStore::new(
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap()),
        SpyState::default(),
    ));
    let url = url::Url::from_directory_path(dir.path()).unwrap().to_string();
    let cfg = StoreConfig::new(&url, options()).unwrap();
    let store = Store::from_object_store(spy.clone(), &cfg, false, false);
    let leases = Leases::keeping();

    let data = pattern(14, 0..100_000);
    store.put("z/put", data.chunks(30_000).map(|c| leases.lease(c.to_vec()))).await.unwrap();
    let seen = spy.seen();
    let foreign: Vec<_> = seen.iter().filter(|s| !leases.contains(s)).collect();
    assert_eq!(foreign.len(), 1, "only the trailer is not a lease: {foreign:?}");
    assert_eq!(foreign[0].len(), TRAILER_LEN);
    assert_eq!(seen.iter().map(|s| s.len()).sum::<usize>(), 100_000 + TRAILER_LEN);

    spy.state.seen.lock().unwrap().clear();
    let big = pattern(15, 0..(4 * PART + 777) as u64);
    let mut w = store.open_write("z/stream").unwrap();
    for c in big.chunks(12_345) {
        w.write(leases.lease(c.to_vec())).await.unwrap();
    }
    w.commit().await.unwrap();
    let seen = spy.seen();
    let foreign: Vec<_> = seen.iter().filter(|s| !leases.contains(s)).collect();
    assert_eq!(foreign.len(), 1, "only the trailer is not a lease: {foreign:?}");
    assert_eq!(seen.iter().map(|s| s.len()).sum::<usize>(), big.len() + TRAILER_LEN);
    assert_eq!(spy.state.parts_started.load(Ordering::SeqCst), 5, "4 full parts + last");
    assert_eq!(leases.outstanding(), 0);
    assert_eq!(read_chunks(&store, "z/stream", None).await.unwrap(), big);
}

fn gated(max_in_flight: usize, fail_from_part: Option<usize>) -> (Store, Arc<SpyStore>, Arc<tokio::sync::Semaphore>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let state = SpyState { gate: Some(gate.clone()), fail_from_part, ..Default::default() };
    let spy = Arc::new(SpyStore::new(Arc::new(InMemory::new()), state));
    let cfg = StoreConfig::new("memory://", StoreOptions { max_parts_in_flight: max_in_flight, ..options() }).unwrap();
    // retains_payload = false: behave like S3 (slots stay pinned while parts upload).
    (Store::from_object_store(spy.clone(), &cfg, false, true), spy, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_waits_for_the_in_flight_budget_and_is_cancel_safe() {
    let (store, spy, gate) = gated(2, None);
    let leases = Leases::new();
    let data = pattern(16, 0..(6 * PART) as u64);
    let mut pieces = data.chunks(PART);
    let mut w = store.open_write("bp/obj").unwrap();
    // Chunks 1-3 start parts 1-2 (one part is always kept back); both block at the gate.
    for _ in 0..3 {
        w.write(leases.lease(pieces.next().unwrap().to_vec())).await.unwrap();
    }
    assert_eq!(w.parts_in_flight(), 2);
    // Chunk 4 would start part 3: the budget is full, so the write cannot finish.
    let fourth = pieces.next().unwrap().to_vec();
    assert!(w.write(leases.lease(fourth.clone())).now_or_never().is_none(), "write must wait");
    // The abandoned write took nothing: the writer still holds 3 chunks, the lease is back.
    assert_eq!(w.len(), 3 * PART as u64);
    assert_eq!(leases.outstanding(), 3);
    // Let parts through; the same write now succeeds, and so does the rest.
    gate.add_permits(1000);
    w.write(leases.lease(fourth)).await.unwrap();
    for p in pieces {
        w.write(leases.lease(p.to_vec())).await.unwrap();
    }
    w.commit().await.unwrap();
    assert!(spy.state.max_parts_running.load(Ordering::SeqCst) <= 2, "never more than the budget");
    assert_eq!(leases.outstanding(), 0);
    assert_eq!(read_chunks(&store, "bp/obj", None).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_part_aborts_and_poisons_the_writer() {
    let (store, spy, gate) = gated(2, Some(1));
    gate.add_permits(1000);
    let leases = Leases::new();
    let mut w = store.open_write("fail/obj").unwrap();
    let mut err = None;
    for c in pattern(17, 0..(8 * PART) as u64).chunks(PART) {
        if let Err(e) = w.write(leases.lease(c.to_vec())).await {
            err = Some(e);
            break;
        }
    }
    let e = err.expect("a part failure surfaces in a later write");
    assert_eq!(e.code(), "SHMPIPE_E_STORE", "{e}");
    assert!(e.to_string().contains("injected part failure"), "the store's message is kept: {e}");
    assert_eq!(spy.state.aborts.load(Ordering::SeqCst), 1, "the multipart upload was aborted");
    eventually("failure releases every lease", || leases.outstanding() == 0).await;
    let again = w.write(Bytes::from_static(b"more")).await.unwrap_err();
    assert!(matches!(again, StoreError::Aborted { .. }), "{again}");
    assert!(matches!(w.commit().await.unwrap_err(), StoreError::Aborted { .. }));
    store.wait_background().await;
    assert_eq!(spy.state.completes.load(Ordering::SeqCst), 0);
    assert_eq!(store.stat("fail/obj").await.unwrap_err().code(), "SHMPIPE_E_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_writer_cancels_parts_then_aborts() {
    let (store, spy, _gate) = gated(3, None); // the gate never opens: parts hang
    let mut w = store.open_write("drop/obj").unwrap();
    for c in pattern(18, 0..(4 * PART) as u64).chunks(PART) {
        w.write(Bytes::copy_from_slice(c)).await.unwrap();
    }
    assert_eq!(w.parts_in_flight(), 3);
    drop(w);
    store.wait_background().await;
    assert_eq!(spy.state.aborts.load(Ordering::SeqCst), 1);
    assert_eq!(spy.state.parts_running.load(Ordering::SeqCst), 0, "hung parts were cancelled");
    assert_eq!(spy.state.completes.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailer_split_across_body_chunks() {
    // Bodies arriving in pieces of every size from 1 to 40 bytes: the data end and the
    // 32-byte trailer land at every offset within a chunk; reads and verification still hold.
    for piece in 1..=40 {
        let state = SpyState { rechunk_get: Some(piece), ..Default::default() };
        let inner = Arc::new(InMemory::new());
        let spy = Arc::new(SpyStore::new(inner.clone(), state));
        let cfg = StoreConfig::new("memory://", options()).unwrap();
        let store = Store::from_object_store(spy, &cfg, true, true);
        for size in [0u64, 1, 7, 100] {
            let data = pattern(piece as u64, 0..size);
            store.put("obj", [Bytes::from(data.clone())]).await.unwrap();
            assert_eq!(read_chunks(&store, "obj", None).await.unwrap(), data, "piece {piece} size {size}");
            assert_eq!(read_into_bufs(&store, "obj", 3).await.unwrap(), data, "piece {piece} size {size}");
            if size >= 7 {
                assert_eq!(read_chunks(&store, "obj", Some(2..7)).await.unwrap(), &data[2..7]);
            }
            let mut r = store.open_read("obj", None).await.unwrap();
            let mut n = 0;
            while r.next_chunk().await.unwrap().is_some() {
                n += 1;
            }
            assert_eq!(n, (size as usize).div_ceil(piece), "the body really came in pieces");
            let st = store.stat("obj").await.unwrap();
            assert_eq!((st.size, st.checksum), (size, Some(crc32c(&data))));
            // Damage the last data byte: still caught whatever the chunking.
            if size > 0 {
                let p = Path::parse("obj").unwrap();
                let mut raw = inner.get(&p).await.unwrap().bytes().await.unwrap().to_vec();
                raw[size as usize - 1] ^= 1;
                inner.put(&p, raw.into()).await.unwrap();
                let e = read_chunks(&store, "obj", None).await.unwrap_err();
                assert!(matches!(e, StoreError::Integrity { .. }), "piece {piece} size {size}: {e}");
            }
        }
    }
}
