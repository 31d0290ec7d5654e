//! Control-socket frames from the agent: `hello` and `mapped` parse or are refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmpipe_sidecar::service::wire::{is_mapped, parse_hello};

fuzz_target!(|data: &[u8]| {
    let _ = parse_hello(data);
    let _ = is_mapped(data);
});
