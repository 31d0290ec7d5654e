//! Segments: creating, pre-faulting and mapping the shared memory of one session (SPEC §10
//! step 2), and sweeping names older versions left behind.
//!
//! A segment is a `memfd` sealed against resizing (`F_SEAL_SHRINK | F_SEAL_GROW |
//! F_SEAL_SEAL`) before anyone else sees it, so the agent — who gets a read/write fd of it to
//! map — cannot `ftruncate` it: a shrunk file would turn the sidecar's next access of a page
//! past the new end into SIGBUS, which kills the whole process and every other session with
//! it. A memfd has no name in any filesystem, so nothing can outlive both processes, and the
//! segment is not the `shared_memory` crate's POSIX shm any more (a name in /dev/shm cannot be
//! sealed; SPEC §10). Either side's mapping keeps the memory alive.
//!
//! The result is a [`SegmentMemory`] (the sidecar's mapping, which implements
//! `shm_protocol::shm::Mapping`) plus an fd of the same memory to pass to the agent. Names
//! (`shmpipe-<pid>-<16 hex>`, shown in `/proc/PID/fd` as `/memfd:NAME`) are for diagnostics.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{fallocate, fcntl, FallocateFlags, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use shm_protocol::layout::PAGE_SIZE;
use shm_protocol::shm::Mapping;

use crate::stats::GlobalStats;

/// Where POSIX shm names live on Linux: older versions created segments there (swept at
/// startup).
pub const SHM_DIR: &str = "/dev/shm";
const NAME_PREFIX: &str = "shmpipe-";

/// The seals every segment carries before its fd leaves the sidecar: no shrinking, no
/// growing, no further seals (so the agent cannot add `F_SEAL_WRITE` either).
pub const SEALS: SealFlag = SealFlag::F_SEAL_SHRINK.union(SealFlag::F_SEAL_GROW).union(SealFlag::F_SEAL_SEAL);

#[derive(Debug)]
pub enum SegmentError {
    /// Not enough memory for the segment: the client may retry later.
    NoSpace(io::Error),
    Other(io::Error),
}

impl std::fmt::Display for SegmentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSpace(e) => write!(f, "not enough shared memory for the segment: {e}"),
            Self::Other(e) => write!(f, "cannot create the segment: {e}"),
        }
    }
}

impl std::error::Error for SegmentError {}

impl From<io::Error> for SegmentError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(code) if code == Errno::ENOSPC as i32 || code == Errno::ENOMEM as i32 => Self::NoSpace(e),
            _ => Self::Other(e),
        }
    }
}

impl From<Errno> for SegmentError {
    fn from(e: Errno) -> Self {
        io::Error::from(e).into()
    }
}

/// The sidecar's mapping of one segment.
pub struct SegmentMemory {
    base: NonNull<u8>,
    len: usize,
    /// Dropping it unmaps; held only for its `Drop`.
    _map: memmap2::MmapMut,
    name: String,
    stats: Arc<GlobalStats>,
}

// SAFETY: `_map` owns the mapping (memmap2's `MmapMut` is Send + Sync); `base` is its address.
// All access to the memory goes through atomics, the ring/slot ownership protocol, or
// `peer::memory`'s copies.
unsafe impl Send for SegmentMemory {}
// SAFETY: as above; nothing here is mutated after creation.
unsafe impl Sync for SegmentMemory {}

// SAFETY: `base` comes from mmap (page-aligned) and `len` bytes stay mapped read/write at that
// address until `_map` is dropped together with `self`. The file cannot shrink under the
// mapping: it is sealed (`SEALS`) before its fd leaves this process.
unsafe impl Mapping for SegmentMemory {
    fn base(&self) -> NonNull<u8> {
        self.base
    }
    fn len(&self) -> usize {
        self.len
    }
}

/// A new segment: the sidecar's mapping and an fd of the same memory for the agent.
pub struct Created {
    pub memory: Arc<SegmentMemory>,
    pub fd: OwnedFd,
}

impl SegmentMemory {
    /// What the welcome's `segment` field says: `memfd:NAME` (diagnostics only; there is no
    /// path to open).
    pub fn describe(&self) -> String {
        format!("memfd:{}", self.name)
    }
}

impl Drop for SegmentMemory {
    fn drop(&mut self) {
        self.stats.segments_live.fetch_sub(1, Ordering::Relaxed);
    }
}

fn new_name() -> String {
    format!("{NAME_PREFIX}{}-{:016x}", std::process::id(), rand::random::<u64>())
}

/// Creates a zeroed segment of `size` bytes as a sealed memfd and maps it. Its first
/// `prefault` bytes (rounded to pages, at most `size`: the header and rings, or everything)
/// are reserved (fallocate, so a memory shortage is an error now rather than a fault later)
/// and touched; the rest is allocated when first used (and given back when idle:
/// [`crate::peer::memory::release_slot`]).
pub fn create(size: usize, prefault: usize, stats: Arc<GlobalStats>) -> Result<Created, SegmentError> {
    let name = new_name();
    let fd = memfd_create(name.as_str(), MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    let file = File::from(fd);
    file.set_len(size as u64)?;
    fcntl(&file, FcntlArg::F_ADD_SEALS(SEALS))?;
    let prefault = prefault.min(size);
    if prefault > 0 {
        reserve(&file, prefault)?;
    }
    // SAFETY: the memfd is ours alone until its fd is sent, and it is sealed: its length can
    // no longer change, by us or by the agent, so the mapping never has pages past the end.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file)? };
    let base = NonNull::new(map.as_mut_ptr()).ok_or_else(|| io::Error::other("mmap returned null"))?;
    stats.segments_live.fetch_add(1, Ordering::Relaxed);
    let memory = Arc::new(SegmentMemory { base, len: size, _map: map, name, stats });
    touch_pages(&memory, prefault);
    Ok(Created { memory, fd: file.into() })
}

fn reserve(file: &File, size: usize) -> Result<(), SegmentError> {
    let len = i64::try_from(size).map_err(|_| SegmentError::Other(io::Error::other("segment too large")))?;
    fallocate(file, FallocateFlags::empty(), 0, len)?;
    Ok(())
}

/// Writes one byte per page of the first `len` bytes so the page tables are populated before
/// the agent sees READY.
fn touch_pages(memory: &SegmentMemory, len: usize) {
    let base = memory.base.as_ptr();
    for offset in (0..len.min(memory.len)).step_by(PAGE_SIZE) {
        // SAFETY: `offset < len`, inside the mapping; the segment is brand new and nobody else
        // has it mapped yet, so writing the zero it already holds races with nothing.
        unsafe { base.add(offset).write_volatile(0) };
    }
}

/// The pid in `shmpipe-<pid>-<16 hex>`, or `None` if `name` is not one of ours.
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, random) = rest.split_once('-')?;
    if random.len() != 16 || !random.bytes().all(|b| b.is_ascii_hexdigit()) || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn is_dead(pid: i32) -> bool {
    // Our own pid counts as dead: we have just started and own no segment yet, and a stale
    // segment can carry our pid (a restarted container whose sidecar is pid 1 again).
    pid as u32 == std::process::id()
        || matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// Removes `shmpipe-<pid>-*` names in `dir` whose pid is not a live process: segments that
/// versions before sealed memfds created in /dev/shm or `SHMPIPE_SEGMENT_DIR` and a crash left
/// behind. Returns how many were removed.
pub fn sweep(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else { continue };
        if pid > 0 && is_dead(pid) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(path = %entry.path().display(), pid, "removed stale segment");
                }
                Err(e) => tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove stale segment"),
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn names_parse() {
        assert_eq!(owner_pid("shmpipe-123-0123456789abcdef"), Some(123));
        assert_eq!(owner_pid(&new_name()), Some(std::process::id() as i32));
        for bad in ["shmpipe-123-xyz", "shmpipe--0123456789abcdef", "other-1-0123456789abcdef", "shmpipe-1a-0123456789abcdef"] {
            assert_eq!(owner_pid(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_segment_is_a_sealed_memfd_the_fd_cannot_resize() {
        let stats = Arc::new(GlobalStats::default());
        let created = create(3 * PAGE_SIZE, usize::MAX, stats.clone()).unwrap();
        assert_eq!(stats.segments_live.load(Ordering::Relaxed), 1);
        assert!(created.memory.describe().starts_with(&format!("memfd:shmpipe-{}-", std::process::id())));
        let seals = fcntl(created.fd.as_fd(), FcntlArg::F_GET_SEALS).unwrap();
        assert_eq!(SealFlag::from_bits_truncate(seals), SEALS);
        // What a hostile agent would try with the fd it is given.
        let file = File::from(created.fd.try_clone().unwrap());
        assert!(file.set_len(0).is_err(), "shrinking a sealed segment must fail");
        assert!(file.set_len(4 * PAGE_SIZE as u64).is_err(), "growing a sealed segment must fail");
        assert_eq!(fcntl(&file, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_WRITE)), Err(Errno::EPERM));
        assert_eq!(file.metadata().unwrap().len(), 3 * PAGE_SIZE as u64);
        // The fd and the mapping are the same memory, and every page is still there.
        // SAFETY: in bounds of the 3-page mapping; nobody else touches it.
        unsafe { created.memory.base().as_ptr().add(2 * PAGE_SIZE).write(0x5a) };
        let mut byte = [0u8; 1];
        nix::sys::uio::pread(&created.fd, &mut byte, 2 * PAGE_SIZE as i64).unwrap();
        assert_eq!(byte[0], 0x5a);
        drop(created);
        assert_eq!(stats.segments_live.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn only_the_prefaulted_part_is_allocated_up_front() {
        use std::os::unix::fs::MetadataExt;
        let stats = Arc::new(GlobalStats::default());
        let created = create(8 * PAGE_SIZE, 2 * PAGE_SIZE, stats).unwrap();
        let allocated = || File::from(created.fd.try_clone().unwrap()).metadata().unwrap().blocks() * 512;
        assert_eq!(allocated(), 2 * PAGE_SIZE as u64);
        // SAFETY: in bounds of the 8-page mapping; nobody else touches it.
        unsafe { created.memory.base().as_ptr().add(5 * PAGE_SIZE).write_volatile(1) };
        assert_eq!(allocated(), 3 * PAGE_SIZE as u64, "a page is allocated when first touched");
    }

    #[test]
    fn sweep_removes_only_names_of_dead_owners() {
        let dir = tempfile::tempdir().unwrap();
        // pid 1 is alive; a pid past pid_max is not.
        let live = dir.path().join("shmpipe-1-0123456789abcdef");
        let dead = dir.path().join("shmpipe-999999999-0123456789abcdef");
        let mine = dir.path().join(format!("shmpipe-{}-0123456789abcdef", std::process::id()));
        let foreign = dir.path().join("unrelated");
        for p in [&live, &dead, &mine, &foreign] {
            std::fs::write(p, b"x").unwrap();
        }
        assert_eq!(sweep(dir.path()), 2);
        assert!(live.exists() && foreign.exists() && !dead.exists() && !mine.exists());
    }
}
