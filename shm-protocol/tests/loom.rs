//! Loom models of the SPSC ring and the NEED_WAKEUP handshake (SPEC.md §4, §6), run over the
//! crate's own `Producer`/`Consumer` with loom atomics and cells (`src/loom_ring.rs`).
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p shm-protocol --test loom --release`
//! (`npm run test:loom` does this with a preemption bound that keeps CI within minutes).
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;
use shm_protocol::loom_ring::LoomRing;
use shm_protocol::{Consumer, Producer, RingError};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// Values arrive in order and intact across wrap-around, with the producer meeting a full ring.
#[test]
fn fifo_across_wrap_around() {
    model(|| {
        let ring = LoomRing::<8>::new(2);
        let mut p = Producer::new(ring.clone(), 0);
        let mut c = Consumer::new(ring, 0);
        const N: u64 = 3;
        let producer = thread::spawn(move || {
            for v in 0..N {
                loop {
                    match p.try_push(&v.to_le_bytes()) {
                        Ok(()) => break,
                        Err(RingError::Full) => thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
                p.publish();
            }
        });
        let mut next = 0;
        while next < N {
            match c.try_pop().unwrap() {
                Some(e) => {
                    assert_eq!(u64::from_le_bytes(e), next);
                    next += 1;
                    c.release();
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(c.try_pop().unwrap(), None);
    });
}

/// Full is reported at exactly `capacity` unreleased entries, and empty after draining; the
/// producer sees space again only after `release`.
#[test]
fn full_and_empty_boundaries() {
    model(|| {
        let ring = LoomRing::<8>::new(2);
        let mut p = Producer::new(ring.clone(), 0);
        let mut c = Consumer::new(ring, 0);
        p.try_push(&[1; 8]).unwrap();
        p.try_push(&[2; 8]).unwrap();
        assert_eq!(p.try_push(&[3; 8]), Err(RingError::Full));
        p.publish();
        let consumer = thread::spawn(move || {
            assert_eq!(c.try_pop().unwrap(), Some([1; 8]));
            c.release();
            c
        });
        let mut c = consumer.join().unwrap();
        p.try_push(&[3; 8]).unwrap();
        p.publish();
        assert_eq!(c.try_pop().unwrap(), Some([2; 8]));
        assert_eq!(c.try_pop().unwrap(), Some([3; 8]));
        assert_eq!(c.try_pop().unwrap(), None);
    });
}

/// No lost wakeup: if the consumer decides to sleep without having seen the entry, the
/// producer must have seen NEED_WAKEUP and rung the doorbell.
#[test]
fn need_wakeup_handshake_loses_no_wakeup() {
    model(|| {
        let ring = LoomRing::<64>::new(2);
        let flag = Arc::new(AtomicU32::new(0));
        let rung = Arc::new(AtomicBool::new(false));
        let mut p = Producer::new(ring.clone(), 0);
        let mut c = Consumer::new(ring, 0);
        let (pf, pr) = (flag.clone(), rung.clone());
        let producer = thread::spawn(move || {
            p.try_push(&[9; 64]).unwrap();
            if p.publish_and_check_wakeup(&pf) {
                pr.store(true, Ordering::SeqCst);
            }
        });
        let mut got = c.try_pop().unwrap().is_some();
        let mut slept = false;
        if !got {
            if c.prepare_sleep(&flag).unwrap() {
                slept = true;
            } else {
                got = c.try_pop().unwrap().is_some();
                assert!(got, "prepare_sleep refused to sleep, so an entry must be there");
            }
        }
        producer.join().unwrap();
        if slept {
            assert!(rung.load(Ordering::SeqCst), "consumer slept on an entry it never saw and nobody rang");
            // Woken by the doorbell: the entry is now visible.
            c.woke(&flag);
            assert_eq!(c.try_pop().unwrap(), Some([9; 64]));
        } else {
            assert!(got);
        }
    });
}

/// A consumer that is awake (flag clear) is not rung; one that announced sleep is rung
/// exactly by the producer that publishes after it.
#[test]
fn awake_consumer_is_not_rung() {
    model(|| {
        let ring = LoomRing::<8>::new(4);
        let flag = Arc::new(AtomicU32::new(0));
        let mut p = Producer::new(ring, 0);
        let pf = flag.clone();
        let t = thread::spawn(move || {
            p.try_push(&[1; 8]).unwrap();
            p.publish_and_check_wakeup(&pf)
        });
        assert!(!t.join().unwrap());
    });
}
