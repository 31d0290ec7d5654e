//! Doorbells (SPEC §1, §6): non-blocking eventfds. `sq` and `cq` doorbells are shared with the
//! agent (passed with SCM_RIGHTS); each dispatcher also has a private one that async tasks and
//! the control task ring to wake it. Ringing adds 1; draining reads and resets the counter.
//!
//! A shared doorbell is one open file description in two processes, and `O_NONBLOCK` is a
//! flag of the description: a hostile agent can clear it (`fcntl(F_SETFL)`), after which a
//! plain `read` of an empty counter, or a `write` that would overflow a full one, blocks. So
//! draining never relies on the flag: it reads with `preadv2(RWF_NOWAIT)`, which fails with
//! `EAGAIN` instead of waiting whatever the description says. Ringing has no such per-call
//! flag for eventfds; it blocks only if the agent both cleared the flag and filled the
//! counter, which stalls that agent's own dispatcher — and the session's teardown drains the
//! counter ([`Doorbell::unblock`]) until the dispatcher has gone.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

#[derive(Debug)]
pub struct Doorbell(EventFd);

impl Doorbell {
    pub fn new() -> io::Result<Self> {
        EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map(Self).map_err(io::Error::from)
    }

    /// Wakes whoever polls this doorbell. Never blocks while the description is non-blocking:
    /// a counter at its maximum (EAGAIN) is already "rung".
    pub fn ring(&self) {
        match self.0.write(1) {
            Ok(_) | Err(Errno::EAGAIN) => {}
            Err(e) => tracing::warn!(error = %e, "doorbell write failed"),
        }
    }

    /// Resets the counter; returns whether it had been rung. Never blocks (see module docs).
    pub fn drain(&self) -> bool {
        match read_nowait(self.0.as_fd()) {
            Ok(n) => n > 0,
            Err(Errno::EAGAIN) => false,
            Err(e) => {
                tracing::warn!(error = %e, "doorbell read failed");
                false
            }
        }
    }

    /// Another handle of the same doorbell (the same description), for the session's
    /// teardown: see [`Doorbell::unblock`].
    pub fn handle(&self) -> io::Result<OwnedFd> {
        self.0.as_fd().try_clone_to_owned()
    }

    /// Drains the counter behind `fd` without blocking: a dispatcher stuck in `ring` on a
    /// counter a hostile agent filled (after clearing `O_NONBLOCK`) can go on.
    pub fn unblock(fd: BorrowedFd<'_>) {
        let _ = read_nowait(fd);
    }
}

/// One eventfd read that fails with `EAGAIN` rather than waiting, whatever `O_NONBLOCK` says.
fn read_nowait(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    let mut value = 0u64;
    let iov = libc::iovec { iov_base: (&mut value as *mut u64).cast(), iov_len: 8 };
    // SAFETY: `iov` describes `value`, 8 writable bytes that outlive the call; `fd` is a valid
    // descriptor for the call's duration. Offset -1: the current position (eventfds have none).
    let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
    match n {
        8 => Ok(value),
        n if n < 0 => Err(Errno::last()),
        _ => Err(Errno::EIO),
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_then_drain_resets() {
        let d = Doorbell::new().unwrap();
        assert!(!d.drain());
        d.ring();
        d.ring();
        assert!(d.drain());
        assert!(!d.drain());
    }

    /// What a hostile agent can do to the description it shares: clear `O_NONBLOCK`. An
    /// empty counter must still not block the sidecar's drain, and a counter it filled must
    /// not keep a ring blocked once the teardown unblocks it.
    #[test]
    fn a_peer_clearing_o_nonblock_cannot_block_a_drain() {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let d = Doorbell::new().unwrap();
        let agent = d.handle().unwrap();
        fcntl(&agent, FcntlArg::F_SETFL(OFlag::empty())).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| tx.send(d.drain()).unwrap());
            let drained = rx.recv_timeout(std::time::Duration::from_secs(5)).expect("drain blocked on an empty counter");
            assert!(!drained);
        });
        // The agent fills the counter to its maximum: our ring blocks until the teardown
        // drains it.
        nix::unistd::write(&agent, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                d.ring();
                tx.send(()).unwrap();
            });
            assert!(rx.recv_timeout(std::time::Duration::from_millis(50)).is_err(), "the ring should be blocked now");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while rx.try_recv().is_err() {
                assert!(std::time::Instant::now() < deadline, "unblock did not free the ring");
                Doorbell::unblock(agent.as_fd());
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
    }
}
