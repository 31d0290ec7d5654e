//! Backup-op text arguments: ADD_ENTRIES lines and content references.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmpipe_sidecar::ops::backup::{decode_content, parse_entries};

fuzz_target!(|data: &[u8]| {
    let _ = parse_entries(data);
    let _ = decode_content(data);
});
