//! Repository data as a hostile repository (or a key holder) would seal it: the first byte
//! picks the parser — a sealed object's zstd frame (index or snapshot, then the index's
//! limits), a pack header's CBOR and tail, a tree blob, a chunk list. The stable-Rust,
//! fixed-seed version (with the config and settings too) is `sidecar/engine/src/fuzz_tests.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmpipe_engine::index::IndexFile;
use shmpipe_engine::{limits, objects, pack, snapshot, SnapshotFile};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 5 {
        0 => {
            if let Ok(f) = objects::decode_object::<IndexFile>("index/x", rest) {
                let _ = limits::index_problem(&f);
            }
        }
        1 => {
            let _ = objects::decode_object::<SnapshotFile>("snapshots/x", rest);
        }
        2 => {
            let _ = pack::decode_header(rest, rest.len() as u64, "packs/x");
            if rest.len() >= pack::TAIL_LEN {
                let _ = pack::header_range(&rest[..pack::TAIL_LEN], rest.len() as u64, "packs/x");
            }
        }
        3 => {
            let _ = snapshot::decode_tree(rest, "tree");
        }
        _ => {
            let _ = snapshot::decode_chunk_list(rest, "chunk list");
        }
    }
});
