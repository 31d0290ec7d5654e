//! Doorbells (SPEC §1, §6): non-blocking eventfds. `sq` and `cq` doorbells are shared with the
//! agent (passed with SCM_RIGHTS); each dispatcher also has a private one that async tasks and
//! the control task ring to wake it. Ringing adds 1; draining reads and resets the counter.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

#[derive(Debug)]
pub struct Doorbell(EventFd);

impl Doorbell {
    pub fn new() -> io::Result<Self> {
        EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map(Self).map_err(io::Error::from)
    }

    /// Wakes whoever polls this doorbell. Never blocks: a counter at its maximum (EAGAIN)
    /// is already "rung".
    pub fn ring(&self) {
        match self.0.write(1) {
            Ok(_) | Err(Errno::EAGAIN) => {}
            Err(e) => tracing::warn!(error = %e, "doorbell write failed"),
        }
    }

    /// Resets the counter; returns whether it had been rung.
    pub fn drain(&self) -> bool {
        match self.0.read() {
            Ok(n) => n > 0,
            Err(Errno::EAGAIN) => false,
            Err(e) => {
                tracing::warn!(error = %e, "doorbell read failed");
                false
            }
        }
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
}
