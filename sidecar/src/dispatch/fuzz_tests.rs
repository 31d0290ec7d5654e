//! Property tests of the whole data-plane decoder chain against a hostile agent (SPEC §12):
//! arbitrary sequences of SQ entries (every opcode, flags, slot references good and bad,
//! arguments), slot contents (keys, LIST and backup requests, entry lines, content references,
//! or garbage), slots rewritten while in flight, and ring positions set to anything. Whatever
//! the sequence, the dispatcher never panics; it either keeps the slot table consistent and
//! every completion well-formed, or ends the session with `RingError::Corrupt`.
//!
//! Fixed seed (reproducible in CI); failures are saved next to this file
//! (`fuzz_tests.proptest-regressions`, under version control) and replayed first.

use std::sync::atomic::Ordering;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use shm_protocol::entry::{Grant, RawSubmission};
use shm_protocol::layout::NO_SLOT;
use shm_protocol::ring::RingStorage;
use shm_protocol::Completion;

use super::tests::{rig_with, Rig};
use super::*;

const SLOTS: u32 = 6;
const SLOT_SIZE: u32 = 8192;

/// Payloads an agent might put in a slot: what the ops parse, valid and broken.
const PAYLOADS: &[&[u8]] = &[
    b"a/b",
    b"k",
    b"../x",
    b"bad\x00key",
    br#"{"prefix":"a","limit":2}"#,
    br#"{"prefix":"a","limit":0}"#,
    br#"{"limit":99999999999999999999}"#,
    br#"{"unknown":1}"#,
    br#"{"password":"pw","params":{"kdf_m_kib":64,"kdf_t":1}}"#,
    br#"{"password":"pw"}"#,
    br#"{"password":"pw","params":{"compression_level":99}}"#,
    br#"{"parent":"zz","tags":["a"],"paths":["/"]}"#,
    br#"{"host":"h"}"#,
    br#"{"job":"snapshots"}"#,
    br#"{"job":"nope"}"#,
    br#"{"p":"f","k":"file","m":420,"u":0,"g":0,"t":"0","s":"3","n":"1","d":"1","c":"00"}"#,
    br#"{"p":"d","k":"dir","m":493,"u":0,"g":0,"t":"-1","s":"0","n":"2","d":"1"}"#,
    b"{\"p\":\"x\"}\n{\"p\":",
    b"latest",
    b"0000000000000000000000000000000000000000000000000000000000000000",
    b"ffff",
    b"",
    b"\xff\xfe\xfd",
];

#[derive(Clone, Debug)]
enum SlotPick {
    /// The n-th slot the agent was granted (a valid reference, if it still holds it).
    Granted(usize),
    /// Any id, and any generation.
    Raw(u32, u32),
    None,
}

#[derive(Clone, Debug)]
enum Action {
    Submit { opcode: u8, flags: u8, slot: SlotPick, offset: u32, length: u32, args: [u64; 4], reserved: bool },
    /// Writes a payload (or garbage) into a slot, held or not: in flight included.
    Write { slot: usize, at: u32, payload: usize, garbage: Vec<u8> },
    /// The agent's own ring positions set to anything: SQ tail, CQ head, GQ head.
    Tamper { ring: u8, value: u64 },
    Turn,
}

fn opcode() -> impl Strategy<Value = u8> {
    prop_oneof![
        6 => prop::sample::select(shm_protocol::Opcode::ALL.iter().map(|o| *o as u8).collect::<Vec<_>>()),
        1 => any::<u8>(),
    ]
}

fn small_or_any_u32(max: u32) -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0..=max, 1 => any::<u32>()]
}

fn action() -> impl Strategy<Value = Action> {
    let slot = prop_oneof![6 => (0usize..SLOTS as usize).prop_map(SlotPick::Granted), 1 => (any::<u32>(), any::<u32>()).prop_map(|(i, g)| SlotPick::Raw(i, g)), 2 => Just(SlotPick::None)];
    let arg = prop_oneof![4 => 0u64..8, 1 => any::<u64>(), 1 => Just(u64::MAX)];
    let submit = (opcode(), prop_oneof![4 => Just(0u8), 2 => Just(1u8), 1 => any::<u8>()], slot, small_or_any_u32(SLOT_SIZE), small_or_any_u32(SLOT_SIZE), [arg.clone(), arg.clone(), arg.clone(), arg], prop::bool::weighted(0.05))
        .prop_map(|(opcode, flags, slot, offset, length, args, reserved)| Action::Submit { opcode, flags, slot, offset, length, args, reserved });
    let write = (0usize..SLOTS as usize, 0u32..SLOT_SIZE, 0usize..PAYLOADS.len() + 1, prop::collection::vec(any::<u8>(), 0..64))
        .prop_map(|(slot, at, payload, garbage)| Action::Write { slot, at, payload, garbage });
    let tamper = (0u8..3, prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>(), 0u64..64]).prop_map(|(ring, value)| Action::Tamper { ring, value });
    prop_oneof![10 => submit, 4 => write, 1 => tamper, 4 => Just(Action::Turn)]
}

fn config() -> Config {
    Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x5eed_5ec0_5eed_0001),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    }
}

/// The slot table's accounting (SPEC §9), as STATS reports it.
fn consistent(d: &Dispatcher) -> Result<(), TestCaseError> {
    let f = d.session.slots.figures(1, 0);
    prop_assert_eq!(f.slots_free + f.slots_granted + f.slots_in_flight, f.slot_count);
    prop_assert_eq!(f.grants_total - f.returns_total, u64::from(f.slots_granted + f.slots_in_flight));
    prop_assert_eq!(d.session.slots.refused_finishes(), 0);
    Ok(())
}

struct Agent {
    rig: Rig,
    /// Every grant seen, in order (a stale one stays: the agent may reuse it).
    grants: Vec<Grant>,
    next_id: u64,
}

impl Agent {
    fn collect(&mut self) -> Result<(), TestCaseError> {
        // The agent side reads positions the dispatcher wrote; if the test tampered with
        // them its own consumer may call them corrupt: that is the agent's problem.
        while let Ok(Some(b)) = self.rig.gq.try_pop() {
            self.grants.push(Grant::decode(&b));
        }
        self.rig.gq.release();
        while let Ok(Some(b)) = self.rig.cq.try_pop() {
            let c = Completion::decode(&b);
            prop_assert!(c.is_ok(), "a completion the sidecar wrote does not decode: {:?}", c);
            let c = c.unwrap();
            prop_assert!(c.slot_id == NO_SLOT || c.slot_id < SLOTS, "completion names slot {}", c.slot_id);
            if c.flags & shm_protocol::entry::cq_flags::SLOT != 0 {
                self.grants.push(Grant { slot_id: c.slot_id, slot_gen: c.slot_gen });
            }
        }
        self.rig.cq.release();
        Ok(())
    }

    fn grant(&self, i: usize) -> Option<Grant> {
        self.grants.iter().rev().nth(i % self.grants.len().max(1)).copied()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hostile_agent_sequences_never_panic_and_keep_the_slot_table_consistent(actions in prop::collection::vec(action(), 1..48)) {
        let (rig, mut d) = rig_with(16, 16, SLOTS, 8, 1, "memory://");
        let mut a = Agent { rig, grants: Vec::new(), next_id: 1 };
        a.collect()?;
        let mut corrupt = false;
        for action in actions {
            match action {
                Action::Submit { opcode, flags, slot, offset, length, args, reserved } => {
                    let (slot_id, slot_gen) = match slot {
                        SlotPick::Granted(i) => a.grant(i).map_or((NO_SLOT, 0), |g| (g.slot_id, g.slot_gen)),
                        SlotPick::Raw(id, generation) => (id, generation),
                        SlotPick::None => (NO_SLOT, 0),
                    };
                    a.next_id += 1;
                    let raw = RawSubmission { request_id: a.next_id, opcode, flags, slot_id, slot_gen, offset, length, args, reserved0: u16::from(reserved), ..Default::default() };
                    if a.rig.sq.try_push(&raw.encode()).is_ok() {
                        a.rig.sq.publish();
                    }
                }
                Action::Write { slot, at, payload, garbage } => {
                    let bytes: &[u8] = PAYLOADS.get(payload).copied().unwrap_or(&garbage);
                    let len = (bytes.len() as u32).min(SLOT_SIZE - at);
                    crate::peer::memory::write(&a.rig.segment, SlotRange { id: slot as u32, offset: at, length: len }, &bytes[..len as usize]).unwrap();
                }
                Action::Tamper { ring, value } => {
                    let s = &a.rig.segment;
                    match ring {
                        0 => s.sq().tail().store(value, Ordering::Release),
                        1 => s.cq().head().store(value, Ordering::Release),
                        _ => s.gq().head().store(value, Ordering::Release),
                    }
                }
                Action::Turn => {}
            }
            match d.turn(Mode::Running) {
                Ok(_) => consistent(&d)?,
                Err(RingError::Corrupt { .. }) => {
                    corrupt = true;
                    break;
                }
                Err(e) => prop_assert!(false, "turn failed with {e}"),
            }
            a.collect()?;
        }
        if !corrupt {
            // Let async work (store and backup ops) come back, then check once more.
            for _ in 0..50 {
                if d.in_flight_async == 0 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
                match d.turn(Mode::Running) {
                    Ok(_) => consistent(&d)?,
                    Err(RingError::Corrupt { .. }) => break,
                    Err(e) => prop_assert!(false, "turn failed with {e}"),
                }
                a.collect()?;
            }
        }
        a.rig.abort.cancel();
        a.rig.control.set_mode(Mode::Stopping);
        let end = d.run();
        prop_assert!(end.outstanding_slots <= SLOTS);
    }
}
