//! Object-store op arguments copied out of a slot: keys and LIST requests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmpipe_sidecar::ops::store::{parse_key, parse_list, MAX_LIST_LIMIT};

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = parse_key(data.to_vec()) {
        assert_eq!(key.as_bytes(), data);
        assert!(key.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
    }
    if let Ok(req) = parse_list(data) {
        assert!((1..=MAX_LIST_LIMIT).contains(&req.limit));
    }
});
