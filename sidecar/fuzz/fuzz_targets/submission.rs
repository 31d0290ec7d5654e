//! A 64-byte SQ entry as the agent wrote it: decoded once, validated, never a panic; an
//! accepted one round-trips and names a slot range that cannot overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shm_protocol::entry::RawSubmission;

fuzz_target!(|data: [u8; 64]| {
    let raw = RawSubmission::decode(&data);
    assert_eq!(raw.encode(), data);
    if let Ok(sub) = raw.validate() {
        if let Some(slot) = sub.slot {
            assert!(slot.end() <= 2 * u64::from(u32::MAX));
        }
    }
});
