//! Segments: creating, reserving, pre-faulting, mapping, unlinking and sweeping the shared
//! memory of one session (SPEC §10 steps 2 and 4). Two backends:
//! - POSIX shm through the `shared_memory` crate (default; a name in /dev/shm),
//! - a file in `SHMPIPE_SEGMENT_DIR` (Kubernetes: an `emptyDir { medium: Memory }` volume
//!   shared by the pod's containers), created O_EXCL with mode 0600 and mapped with memmap2.
//!
//! Either way the result is a [`SegmentMemory`] (the sidecar's mapping, which implements
//! `shm_protocol::shm::Mapping`) plus an fd of the same object to pass to the agent. Names are
//! `shmpipe-<pid>-<16 hex>`; the name is unlinked as soon as the agent has mapped it, and in
//! any case when the mapping is dropped.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use shm_protocol::layout::PAGE_SIZE;
use shm_protocol::shm::Mapping;

use crate::stats::GlobalStats;

/// Where POSIX shm names live on Linux.
pub const SHM_DIR: &str = "/dev/shm";
const NAME_PREFIX: &str = "shmpipe-";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// POSIX shm (`shm_open`), i.e. /dev/shm.
    Shm,
    /// Files in this directory.
    Dir(PathBuf),
}

impl Backend {
    pub fn dir(&self) -> &Path {
        match self {
            Self::Shm => Path::new(SHM_DIR),
            Self::Dir(d) => d,
        }
    }
}

#[derive(Debug)]
pub enum SegmentError {
    /// Not enough memory in the backing filesystem: the client may retry later.
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

/// What keeps the mapping alive; dropping it unmaps. Held only for its `Drop`.
#[allow(dead_code)]
enum Keep {
    Shm(shared_memory::Shmem),
    File(memmap2::MmapMut),
}

/// The sidecar's mapping of one segment.
pub struct SegmentMemory {
    base: NonNull<u8>,
    len: usize,
    _keep: Keep,
    path: PathBuf,
    unlinked: AtomicBool,
    stats: Arc<GlobalStats>,
}

// SAFETY: `Keep` holds only the mapping's address and fd (the `shared_memory` crate's raw
// pointer makes it !Send/!Sync); we never call its methods after creation, and all access to
// the memory goes through atomics or the ring/slot ownership protocol.
unsafe impl Send for SegmentMemory {}
// SAFETY: as above; `unlinked` is atomic.
unsafe impl Sync for SegmentMemory {}

// SAFETY: `base` comes from mmap (page-aligned) and `len` bytes stay mapped read/write at that
// address until `_keep` is dropped together with `self`.
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
    /// The name's path (`/dev/shm/NAME` or `DIR/NAME`), as sent in the welcome.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the name. Idempotent; the memory lives on while anyone maps it.
    pub fn unlink(&self) -> io::Result<()> {
        if self.unlinked.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for SegmentMemory {
    fn drop(&mut self) {
        if let Err(e) = self.unlink() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot unlink segment");
        }
        self.stats.segments_live.fetch_sub(1, Ordering::Relaxed);
    }
}

fn new_name() -> String {
    format!("{NAME_PREFIX}{}-{:016x}", std::process::id(), rand::random::<u64>())
}

/// Creates, reserves (fallocate, so a full tmpfs gives ENOSPC now rather than SIGBUS later in
/// either process) and optionally pre-faults a zeroed segment of `size` bytes.
pub fn create(backend: &Backend, size: usize, prefault: bool, stats: Arc<GlobalStats>) -> Result<Created, SegmentError> {
    let (keep, base, path, file) = loop {
        let name = new_name();
        let attempt = match backend {
            Backend::Shm => create_shm(&name, size),
            Backend::Dir(dir) => create_file(&dir.join(&name), size),
        };
        match attempt {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            other => break other?,
        }
    };
    stats.segments_live.fetch_add(1, Ordering::Relaxed);
    // From here on, dropping `memory` unmaps and unlinks.
    let memory = Arc::new(SegmentMemory { base, len: size, _keep: keep, path, unlinked: AtomicBool::new(false), stats });
    reserve(&file, size)?;
    if prefault {
        touch_pages(&memory);
    }
    Ok(Created { memory, fd: file.into() })
}

fn create_shm(name: &str, size: usize) -> io::Result<(Keep, NonNull<u8>, PathBuf, File)> {
    let mut shmem = shared_memory::ShmemConf::new().size(size).os_id(format!("/{name}")).create().map_err(|e| match e {
        shared_memory::ShmemError::MappingIdExists => io::Error::from(io::ErrorKind::AlreadyExists),
        shared_memory::ShmemError::MapCreateFailed(code) | shared_memory::ShmemError::UnknownOsError(code) => {
            io::Error::from_raw_os_error(code as i32)
        }
        other => io::Error::other(other.to_string()),
    })?;
    // We unlink ourselves (on `mapped`, or on drop), for both backends alike.
    shmem.set_owner(false);
    let path = Path::new(SHM_DIR).join(name);
    let guard = UnlinkOnError(&path);
    // The crate does not expose its fd; opening the name again gives one of the same object.
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let base = NonNull::new(shmem.as_ptr()).ok_or_else(|| io::Error::other("shm mapping returned null"))?;
    std::mem::forget(guard);
    Ok((Keep::Shm(shmem), base, path, file))
}

fn create_file(path: &Path, size: usize) -> io::Result<(Keep, NonNull<u8>, PathBuf, File)> {
    // std opens with O_CLOEXEC; create_new is O_CREAT|O_EXCL.
    let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path)?;
    let guard = UnlinkOnError(path);
    file.set_len(size as u64)?;
    // SAFETY: the file is ours (just created, mode 0600); its length is fixed from now on (we
    // never truncate it, and the agent only gets an fd after it is fully set up).
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file)? };
    let base = NonNull::new(map.as_mut_ptr()).ok_or_else(|| io::Error::other("mmap returned null"))?;
    std::mem::forget(guard);
    Ok((Keep::File(map), base, path.to_owned(), file))
}

/// Removes a half-created name if creation fails before `SegmentMemory` owns it.
struct UnlinkOnError<'a>(&'a Path);

impl Drop for UnlinkOnError<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

fn reserve(file: &File, size: usize) -> Result<(), SegmentError> {
    let len = i64::try_from(size).map_err(|_| SegmentError::Other(io::Error::other("segment too large")))?;
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        // A filesystem without fallocate: the sparse file has to do.
        Err(Errno::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(io::Error::from(e).into()),
    }
}

/// Writes one byte per page so the page tables are populated before the agent sees READY.
fn touch_pages(memory: &SegmentMemory) {
    let base = memory.base.as_ptr();
    for offset in (0..memory.len).step_by(PAGE_SIZE) {
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

/// Removes `shmpipe-<pid>-*` names in `dir` whose pid is not a live process (SPEC §10 step 4,
/// second line of defence). Returns how many were removed.
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
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn names_parse() {
        assert_eq!(owner_pid("shmpipe-123-0123456789abcdef"), Some(123));
        assert_eq!(owner_pid(&new_name()), Some(std::process::id() as i32));
        for bad in ["shmpipe-123-xyz", "shmpipe--0123456789abcdef", "other-1-0123456789abcdef", "shmpipe-1a-0123456789abcdef"] {
            assert_eq!(owner_pid(bad), None, "{bad}");
        }
    }

    fn check_backend(backend: Backend) {
        let stats = Arc::new(GlobalStats::default());
        let created = create(&backend, 3 * PAGE_SIZE, true, stats.clone()).unwrap();
        let path = created.memory.path().to_owned();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 3 * PAGE_SIZE as u64);
        assert_eq!(stats.segments_live.load(Ordering::Relaxed), 1);
        // The fd and the mapping are the same memory.
        // SAFETY: in bounds of the 3-page mapping; nobody else touches it.
        unsafe { created.memory.base().as_ptr().add(PAGE_SIZE).write(0x5a) };
        let mut byte = [0u8; 1];
        nix::sys::uio::pread(&created.fd, &mut byte, PAGE_SIZE as i64).unwrap();
        assert_eq!(byte[0], 0x5a);
        created.memory.unlink().unwrap();
        assert!(!path.exists());
        created.memory.unlink().unwrap();
        drop(created);
        assert_eq!(stats.segments_live.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn shm_backend_creates_maps_and_unlinks() {
        check_backend(Backend::Shm);
    }

    #[test]
    fn dir_backend_creates_maps_and_unlinks() {
        let dir = tempfile::tempdir().unwrap();
        check_backend(Backend::Dir(dir.path().to_owned()));
    }

    #[test]
    fn drop_unlinks_and_sweep_removes_only_dead_owners() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(GlobalStats::default());
        let created = create(&Backend::Dir(dir.path().to_owned()), PAGE_SIZE, false, stats).unwrap();
        let path = created.memory.path().to_owned();
        assert!(path.exists());
        drop(created);
        assert!(!path.exists());

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
