//! Property tests: arbitrary bytes in an entry, a header or a ring's positions never panic
//! and always come back as a value or a validation error (SPEC.md §9: the peer is untrusted).
#![cfg(not(loom))]

use proptest::prelude::*;
use shm_protocol::entry::{Completion, RawSubmission};
use shm_protocol::layout::{Layout, HEADER_SIZE, NO_SLOT};
use shm_protocol::shm::ShmRing;
use shm_protocol::sync::Ordering;
use shm_protocol::{Consumer, Producer, RingError, RingStorage};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn any_submission_bytes_decode_and_validate_without_panic(bytes in prop::array::uniform32(any::<u8>()), tail in prop::array::uniform32(any::<u8>())) {
        let mut b = [0u8; 64];
        b[..32].copy_from_slice(&bytes);
        b[32..].copy_from_slice(&tail);
        let raw = RawSubmission::decode(&b);
        prop_assert_eq!(raw.encode(), b, "decode/encode is lossless");
        match raw.validate() {
            Ok(s) => {
                prop_assert_eq!(s.request_id, raw.request_id);
                prop_assert_eq!(raw.reserved0, 0);
                prop_assert_eq!(raw.reserved1, 0);
                if let Some(slot) = s.slot {
                    prop_assert_ne!(slot.id, NO_SLOT);
                    prop_assert!(slot.end() <= u64::from(u32::MAX) * 2);
                }
            }
            Err(e) => prop_assert_eq!(e.request_id, raw.request_id, "the error names the request"),
        }
    }

    #[test]
    fn any_completion_bytes_decode_without_panic(bytes in prop::collection::vec(any::<u8>(), 64)) {
        let b: [u8; 64] = bytes.try_into().unwrap();
        if let Ok(c) = Completion::decode(&b) {
            prop_assert_eq!(c.encode(), b);
        }
    }

    #[test]
    fn any_header_bytes_are_rejected_or_self_consistent(bytes in prop::collection::vec(any::<u8>(), 96)) {
        let mut page = vec![0u8; HEADER_SIZE];
        page[..96].copy_from_slice(&bytes);
        if let Ok((layout, generation)) = Layout::decode_header(&page) {
            let mut again = vec![0u8; HEADER_SIZE];
            layout.encode_header(generation, &mut again);
            prop_assert_eq!(again, page);
        }
    }

    #[test]
    fn mutated_valid_headers_are_rejected_or_self_consistent(
        edits in prop::collection::vec((0usize..96, any::<u8>()), 1..4),
        sq in 1u32..12, cq in 1u32..12, slots in 1u32..300, pages in 1u32..64,
    ) {
        let params = shm_protocol::Params::new(1 << sq, 1 << cq, slots, pages * 4096).unwrap();
        let layout = Layout::new(params).unwrap();
        let mut page = vec![0u8; HEADER_SIZE];
        layout.encode_header(99, &mut page);
        for (at, v) in &edits {
            page[*at] = *v;
        }
        if let Ok((l, generation)) = Layout::decode_header(&page) {
            let mut again = vec![0u8; HEADER_SIZE];
            l.encode_header(generation, &mut again);
            prop_assert_eq!(again, page, "an accepted header is exactly what its own params encode to");
        }
    }

    #[test]
    fn any_ring_positions_give_entries_in_window_or_corrupt(head in any::<u64>(), tail in any::<u64>(), cap_log in 1u32..8) {
        let cap = 1u32 << cap_log;
        let ring = ShmRing::<64>::on_heap(cap);
        ring.tail().store(tail, Ordering::Relaxed);
        ring.head().store(head, Ordering::Relaxed);
        let mut c = Consumer::new(ring.clone(), head);
        match c.available() {
            Ok(n) => {
                prop_assert!(n <= cap);
                prop_assert_eq!(u64::from(n), tail.wrapping_sub(head));
                for _ in 0..n {
                    prop_assert!(c.try_pop().unwrap().is_some());
                }
                prop_assert_eq!(c.try_pop().unwrap(), None);
            }
            Err(RingError::Corrupt { .. }) => prop_assert!(tail.wrapping_sub(head) > u64::from(cap)),
            Err(RingError::Full) => prop_assert!(false, "a consumer never reports Full"),
        }
        // A producer at `tail` facing a hostile `head` either has room in the window or says Corrupt.
        let mut p = Producer::new(ring.clone(), tail);
        for _ in 0..=cap {
            ring.head().store(head, Ordering::Relaxed);
            match p.try_push(&[0; 64]) {
                Ok(()) | Err(RingError::Full) | Err(RingError::Corrupt { .. }) => {}
            }
        }
    }
}
