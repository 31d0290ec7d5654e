//! A hostile agent against the real sidecar binary (SPEC "Threat model"): whatever one session
//! does to its own segment, rings, slots and doorbells, the sidecar keeps serving an honest
//! session of the same process, byte for byte, and never dies.

mod support;

use shm_protocol::entry::cq_flags;
use support::*;

const ECHO: u8 = 1;

/// An honest session's round trip: ECHO of known bytes, checked against the CRC-32C check
/// value, then a NOP.
fn honest_round_trip(a: &mut Agent) {
    let g = a.alloc();
    a.slot_write(g.slot_id, 7, b"123456789");
    let c = a.slot_op(ECHO, g, 7, 9, 0);
    assert_eq!((c.status, c.result, c.aux[0], c.flags), (0, 9, 0xE306_9283, cq_flags::SLOT));
    a.grants.push(g);
    assert_eq!(a.nop().status, 0);
}

fn assert_alive(sidecar: &mut Sidecar) {
    let status = sidecar.child.as_mut().unwrap().try_wait().unwrap();
    assert!(status.is_none(), "the sidecar died: {status:?}\n{}", sidecar.log_text());
}

/// The agent holds a read/write fd of its segment. Shrinking it would turn the sidecar's next
/// access of a page past the new end into SIGBUS (the whole process); growing it is refused
/// too. The segment is a sealed memfd: both fail, and the session goes on working.
#[test]
fn an_agent_cannot_resize_its_segment() {
    let mut sidecar = Sidecar::start(&[]);
    let mut honest = sidecar.connect();
    let mut hostile = sidecar.connect();
    let slot_area = hostile.layout.slot_offset;
    let size = hostile.layout.segment_size;
    // Cut off the slot area (the header and rings stay, so this agent itself can go on).
    let shrink = hostile.segment_file.set_len(slot_area);
    // Make the sidecar touch every slot: ECHO reads it, in place.
    let mut pending = Vec::new();
    for _ in 0..hostile.layout.params.slot_count {
        let g = hostile.alloc();
        let request_id = hostile.next_id();
        pending.push(hostile.submit(shm_protocol::RawSubmission {
            request_id,
            opcode: ECHO,
            slot_id: g.slot_id,
            slot_gen: g.slot_gen,
            length: 4096,
            ..Default::default()
        }));
    }
    for id in pending {
        let c = hostile.wait_completion();
        assert_eq!((c.request_id, c.status), (id, 0));
    }
    honest_round_trip(&mut honest);
    assert_alive(&mut sidecar);
    assert!(shrink.is_err(), "ftruncate to {slot_area} succeeded");
    assert!(hostile.segment_file.set_len(size * 2).is_err(), "ftruncate to {} succeeded", size * 2);
    assert_eq!(hostile.segment_file.metadata().unwrap().len(), size);
}
