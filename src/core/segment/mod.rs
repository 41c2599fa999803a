//! A named shared-memory mapping: create (exclusive, mode 0600), open (same owner only), unlink.
//!
//! Names look like `/cshm_<primary pid hex>_<64 random bits hex>`: at most 31 bytes (macOS's
//! limit), unguessable, and the PID lets [`remove_stale`] find segments of dead primaries
//! without opening every file.
//!
//! Unix: POSIX `shm_open` + `mmap`. Windows: a section backed by the paging file
//! (`CreateFileMappingW(INVALID_HANDLE_VALUE, ..)`), named `Local\cshm_<pid>_<random>` in the
//! session's namespace. No file exists on disk, and the kernel deletes the section (name
//! included) when its last handle and view are gone, which includes the death of every process
//! that had it open, so nothing can go stale there: [`remove_stale`] has nothing to do. Each
//! [`Segment`] keeps its handle open while it lives, so that workers can open the name; on
//! Windows [`unlink`] closes this process's handles of that name (the name then lives only as
//! long as another process still holds a handle).
//!
//! This file is the interface; `posix.rs` (Linux, macOS) and `windows.rs` implement it, each
//! with `create`, `open`, `unlink`, `remove_stale` and the `Drop` of [`Segment`].

use std::io;

#[cfg(unix)]
mod posix;
#[cfg(unix)]
use self::posix as os;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use self::windows as os;

#[cfg(test)]
mod tests;

pub const NAME_PREFIX: &str = "cshm_";

/// Why [`Segment::create`] failed.
#[derive(Debug)]
pub enum CreateError {
    /// A segment of that name exists already.
    AlreadyExists,
    /// The name is not of the form `/name` with at most 31 bytes and no further '/'.
    InvalidName,
    /// Not enough shared memory (for example a small /dev/shm).
    NoSpace,
    /// Any other OS error.
    Os(io::Error),
}

/// Why [`Segment::open`] failed.
#[derive(Debug)]
pub enum OpenError {
    /// No segment of that name: the primary is gone or the name is wrong.
    NotFound,
    /// The name is not of the form `/name` with at most 31 bytes and no further '/'.
    InvalidName,
    /// Not permitted, or owned by another user, or readable by others (not mode 0600).
    PermissionDenied,
    /// The file is smaller than a header.
    TooSmall,
    /// Any other OS error.
    Os(io::Error),
}

impl std::fmt::Display for CreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AlreadyExists => f.write_str("a segment of that name exists already"),
            Self::InvalidName => f.write_str("invalid segment name (\"/name\", at most 31 bytes)"),
            Self::NoSpace => f.write_str("not enough shared memory for the segment (see /dev/shm)"),
            Self::Os(e) => write!(f, "cannot create segment: {e}"),
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => f.write_str("no segment of that name (is the primary running?)"),
            Self::InvalidName => f.write_str("invalid segment name (\"/name\", at most 31 bytes)"),
            Self::PermissionDenied => f.write_str("segment belongs to another user or is not mode 0600"),
            Self::TooSmall => f.write_str("segment is smaller than its header"),
            Self::Os(e) => write!(f, "cannot open segment: {e}"),
        }
    }
}

/// A fresh, unguessable name for a segment created by this process.
pub fn new_name() -> String {
    format!(
        "/{NAME_PREFIX}{:x}_{:016x}",
        std::process::id(),
        super::platform::random_u64()
    )
}

/// `/name`: at most 31 bytes (macOS's limit), printable ASCII, no further '/' (and, for
/// Windows object names, no '\\').
fn valid_name(name: &str) -> bool {
    name.len() >= 2
        && name.len() <= 31
        && name.starts_with('/')
        && !name[1..].contains(['/', '\\'])
        && name.bytes().all(|b| b.is_ascii_graphic())
}

/// A mapping of a named segment. Unmapped on drop; the name is removed only by [`unlink`].
pub struct Segment {
    ptr: *mut u8,
    len: usize,
    name: String,
}

// SAFETY: the mapping is plain memory shared with other processes; every access goes through
// atomics or raw-pointer copies whose ranges are validated, never through `&mut` aliases, so it
// may be used from any thread.
unsafe impl Send for Segment {}
// SAFETY: see `Send`.
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates `name` exclusively (readable and writable by this user only) with `len` zeroed
    /// bytes, reserved now where the OS allows (so that a lack of memory is an error here, not a
    /// fault at first touch).
    pub fn create(name: &str, len: usize) -> Result<Segment, CreateError> {
        os::create(name, len)
    }

    /// Opens an existing segment read-write. Refused unless it belongs to this user (and, on
    /// Unix, is not accessible to group or others).
    pub fn open(name: &str) -> Result<Segment, OpenError> {
        os::open(name)
    }

    /// Opens an existing segment read-only, with the checks of [`Segment::open`]. Writing
    /// through the mapping faults (Windows: opened read-write; see `windows.rs`).
    pub fn open_read_only(name: &str) -> Result<Segment, OpenError> {
        os::open_read_only(name)
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Removes the name; processes that have it mapped keep their mapping. Idempotent. (Windows:
/// closes this process's handles of the name, which disappears with the last handle.)
pub fn unlink(name: &str) {
    os::unlink(name)
}

/// This user's segments: `(name, size, modification time in seconds since the epoch)`, by
/// name. Linux only (macOS cannot list its shared-memory names; Windows sections have no list).
pub fn list() -> Vec<(String, u64, i64)> {
    os::list()
}

/// Whether the primary that created the segment `name` lives (`None`: not a primary's segment
/// name, another user's, or a system where segments cannot go stale). Judged as
/// [`remove_stale`] judges.
pub fn primary_alive(name: &str) -> Option<bool> {
    os::primary_alive(name)
}

/// Unlinks the segments left by primaries that died without cleaning up (SIGKILL, power loss of
/// a container, ...), returning how many were removed. Linux only: macOS cannot list its
/// shared-memory names, and on Windows none can go stale.
pub fn remove_stale() -> usize {
    os::remove_stale()
}
