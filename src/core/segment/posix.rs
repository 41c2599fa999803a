//! Unix: a POSIX shared-memory object (`shm_open`, mode 0600) mapped with `mmap`.

use std::ffi::CString;
use std::io;

use super::{valid_name, CreateError, OpenError, Segment};

fn c_name(name: &str) -> Option<CString> {
    if valid_name(name) {
        CString::new(name).ok()
    } else {
        None
    }
}

/// Creates `name` exclusively with mode 0600 and `len` zeroed bytes, all of them reserved now
/// (Linux: `posix_fallocate`), so that a full /dev/shm is an error here and not a SIGBUS at
/// first touch later. (macOS: one `ftruncate`, which is all its shm objects allow; there is
/// no `posix_fallocate`, and pages are allocated at first touch.)
pub fn create(name: &str, len: usize) -> Result<Segment, CreateError> {
    let c = c_name(name).ok_or(CreateError::InvalidName)?;
    // SAFETY: `c` is a valid NUL-terminated string; flags and mode are plain integers.
    let fd = unsafe {
        libc::shm_open(
            c.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
            // c_uint, not mode_t: on macOS shm_open is variadic and mode_t is u16, which
            // cannot be passed through C varargs.
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EEXIST) => CreateError::AlreadyExists,
            Some(libc::ENOSPC) | Some(libc::ENOMEM) => CreateError::NoSpace,
            _ => CreateError::Os(e),
        });
    }
    let fail = |e: CreateError| {
        // SAFETY: fd is ours and open; the name was created by us a moment ago.
        unsafe {
            libc::close(fd);
            libc::shm_unlink(c.as_ptr());
        }
        Err(e)
    };
    // SAFETY: fd is a valid descriptor we own.
    if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
        let e = io::Error::last_os_error();
        return fail(if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EFBIG)) {
            CreateError::NoSpace
        } else {
            CreateError::Os(e)
        });
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: fd is a valid descriptor we own; the range is within the new size.
        let r = unsafe { libc::posix_fallocate(fd, 0, len as libc::off_t) };
        if r == libc::ENOSPC || r == libc::ENOMEM {
            return fail(CreateError::NoSpace);
        }
    }
    map(fd, len, name, true).or_else(|e| fail(CreateError::Os(e)))
}

/// Opens an existing segment read-write. Refused unless it belongs to the effective user and
/// is not accessible to group or others.
pub fn open(name: &str) -> Result<Segment, OpenError> {
    open_as(name, true)
}

/// Opens an existing segment read-only (`PROT_READ`: a store into it would fault, so an
/// observer cannot change the cluster), with the same owner and mode checks as [`open`].
pub fn open_read_only(name: &str) -> Result<Segment, OpenError> {
    open_as(name, false)
}

fn open_as(name: &str, write: bool) -> Result<Segment, OpenError> {
    let c = c_name(name).ok_or(OpenError::InvalidName)?;
    let flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
    // SAFETY: `c` is a valid NUL-terminated string.
    let fd = unsafe { libc::shm_open(c.as_ptr(), flags, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOENT) => OpenError::NotFound,
            Some(libc::EACCES) | Some(libc::EPERM) => OpenError::PermissionDenied,
            _ => OpenError::Os(e),
        });
    }
    // SAFETY: zeroed `stat` is a valid out-parameter; fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open and `st` is writable.
    let r = unsafe { libc::fstat(fd, &mut st) };
    let close = || {
        // SAFETY: fd is open and ours.
        unsafe { libc::close(fd) };
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        close();
        return Err(OpenError::Os(e));
    }
    // SAFETY: geteuid has no preconditions.
    if st.st_uid != unsafe { libc::geteuid() } || st.st_mode & 0o077 != 0 {
        close();
        return Err(OpenError::PermissionDenied);
    }
    let len = st.st_size as usize;
    if len < crate::core::layout::LINE {
        close();
        return Err(OpenError::TooSmall);
    }
    map(fd, len, name, write).map_err(OpenError::Os)
}

/// Maps `len` bytes of `fd` shared (read-write, or read-only) as the segment `name`, then closes
/// `fd` (the mapping keeps the object).
fn map(fd: libc::c_int, len: usize, name: &str, write: bool) -> io::Result<Segment> {
    let prot = if write {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a fresh shared mapping of an fd we own; the kernel picks the address.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
    let e = io::Error::last_os_error();
    // SAFETY: fd is open and ours; the mapping (if any) stays valid after close.
    unsafe { libc::close(fd) };
    if p == libc::MAP_FAILED {
        Err(e)
    } else {
        Ok(Segment {
            ptr: p as *mut u8,
            len,
            name: name.to_owned(),
        })
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; no reference into the mapping outlives
        // the Segment (every user holds an Arc<Segment>).
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// Removes the name; processes that have it mapped keep their mapping. Idempotent.
pub fn unlink(name: &str) {
    if let Some(c) = c_name(name) {
        // SAFETY: valid NUL-terminated string.
        unsafe { libc::shm_unlink(c.as_ptr()) };
    }
}

/// Unlinks the segments left by primaries that died without cleaning up (SIGKILL, power loss of
/// a container, ...): those of this user whose creator PID is gone or was reused (checked against
/// the start time in the header). Returns how many were removed. Linux only (other systems
/// cannot list their shared-memory names).
#[cfg(target_os = "linux")]
pub fn remove_stale() -> usize {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return 0;
    };
    let mut removed = 0;
    for entry in dir.flatten() {
        let name = format!("/{}", entry.file_name().to_string_lossy());
        if primary_alive(&name) == Some(false) {
            unlink(&name);
            removed += 1;
        }
    }
    removed
}

/// Whether the primary that created `name` (`/cshm_<pid hex>_…`) lives: by the PID in the name
/// and, when the header is published and ours (any layout version), the start time in it.
/// `None` for names of another form and for other users' segments (not ours to judge).
pub fn primary_alive(name: &str) -> Option<bool> {
    use crate::core::layout::{SegmentHeader, MAGIC_PREFIX};
    use crate::core::platform::ProcessId;
    let rest = name.strip_prefix('/')?.strip_prefix(super::NAME_PREFIX)?;
    let pid = u32::from_str_radix(rest.split('_').next()?, 16).ok()?;
    let alive = match Segment::open_read_only(name) {
        Ok(seg) if seg.len() >= std::mem::size_of::<SegmentHeader>() => {
            // SAFETY: the mapping is at least one header long and page aligned; the fields
            // read are plain integers at offsets fixed in every layout version.
            let (magic, start) = unsafe {
                let h = seg.as_ptr() as *const SegmentHeader;
                (
                    (*h).magic.load(std::sync::atomic::Ordering::Acquire),
                    std::ptr::read_volatile(std::ptr::addr_of!((*h).primary_start)),
                )
            };
            // The start time is trusted only from a header that is published and ours (any
            // layout version); a segment still being created is judged by its PID alone.
            let ours = magic.to_le_bytes()[..6] == MAGIC_PREFIX;
            ProcessId {
                pid,
                start_time: if ours { start } else { 0 },
            }
            .is_alive()
        }
        Ok(_) => ProcessId { pid, start_time: 0 }.is_alive(),
        Err(OpenError::PermissionDenied) => return None,
        Err(_) => ProcessId { pid, start_time: 0 }.is_alive(),
    };
    Some(alive)
}

/// Names (`/cshm_…`) of this user's segments, with their size in bytes and modification time
/// (seconds since the epoch). Linux only (other systems cannot list their shared-memory names).
#[cfg(target_os = "linux")]
pub fn list() -> Vec<(String, u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return vec![];
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mut out: Vec<_> = dir
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().to_str()?.to_owned();
            let meta = entry.metadata().ok()?;
            (file.starts_with(super::NAME_PREFIX) && meta.is_file() && meta.uid() == me)
                .then(|| (format!("/{file}"), meta.len(), meta.mtime()))
        })
        .collect();
    out.sort();
    out
}

#[cfg(not(target_os = "linux"))]
pub fn list() -> Vec<(String, u64, i64)> {
    vec![]
}

/// Nothing to do: macOS's POSIX shm names cannot be listed, so those of a SIGKILLed primary
/// stay until reboot (each is one cluster's segment).
#[cfg(not(target_os = "linux"))]
pub fn remove_stale() -> usize {
    0
}
