//! A named shared-memory mapping: create (exclusive, mode 0600), open (same owner only), unlink.
//!
//! Names look like `/cshm_<primary pid hex>_<64 random bits hex>`: at most 31 bytes (macOS's
//! limit), unguessable, and the PID lets [`remove_stale`] find segments of dead primaries
//! without opening every file.

use std::ffi::CString;
use std::io;

use super::platform::ProcessId;

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

fn c_name(name: &str) -> Option<CString> {
    let valid = name.len() >= 2
        && name.len() <= 31
        && name.starts_with('/')
        && !name[1..].contains('/')
        && name.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        CString::new(name).ok()
    } else {
        None
    }
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

#[cfg(unix)]
impl Segment {
    /// Creates `name` exclusively with mode 0600 and `len` zeroed bytes, all of them reserved now
    /// (Linux: `posix_fallocate`), so that a full /dev/shm is an error here and not a SIGBUS at
    /// first touch later.
    pub fn create(name: &str, len: usize) -> Result<Segment, CreateError> {
        let c = c_name(name).ok_or(CreateError::InvalidName)?;
        // SAFETY: `c` is a valid NUL-terminated string; flags and mode are plain integers.
        let fd = unsafe {
            libc::shm_open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                0o600 as libc::mode_t,
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
        match map(fd, len) {
            Ok(ptr) => Ok(Segment {
                ptr,
                len,
                name: name.to_owned(),
            }),
            Err(e) => fail(CreateError::Os(e)),
        }
    }

    /// Opens an existing segment read-write. Refused unless it belongs to the effective user and
    /// is not accessible to group or others.
    pub fn open(name: &str) -> Result<Segment, OpenError> {
        let c = c_name(name).ok_or(OpenError::InvalidName)?;
        // SAFETY: `c` is a valid NUL-terminated string.
        let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR, 0) };
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
        if len < super::layout::LINE {
            close();
            return Err(OpenError::TooSmall);
        }
        match map(fd, len) {
            Ok(ptr) => Ok(Segment {
                ptr,
                len,
                name: name.to_owned(),
            }),
            Err(e) => Err(OpenError::Os(e)),
        }
    }
}

/// Maps `len` bytes of `fd` shared read-write, then closes `fd` (the mapping keeps the object).
#[cfg(unix)]
fn map(fd: libc::c_int, len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh shared mapping of an fd we own; the kernel picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    let e = io::Error::last_os_error();
    // SAFETY: fd is open and ours; the mapping (if any) stays valid after close.
    unsafe { libc::close(fd) };
    if p == libc::MAP_FAILED {
        Err(e)
    } else {
        Ok(p as *mut u8)
    }
}

impl Segment {
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

#[cfg(unix)]
impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; no reference into the mapping outlives
        // the Segment (every user holds an Arc<Segment>).
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// Removes the name; processes that have it mapped keep their mapping. Idempotent.
#[cfg(unix)]
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
    use super::layout::SegmentHeader;
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return 0;
    };
    let mut removed = 0;
    for entry in dir.flatten() {
        let file = entry.file_name();
        let Some(rest) = file.to_str().and_then(|s| s.strip_prefix(NAME_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('_').next().and_then(|p| u32::from_str_radix(p, 16).ok()) else {
            continue;
        };
        let name = format!("/{}", file.to_string_lossy());
        let alive = match Segment::open(&name) {
            Ok(seg) if seg.len() >= std::mem::size_of::<SegmentHeader>() => {
                // SAFETY: the mapping is at least one header long and page aligned; the header
                // fields read are plain integers (any bit pattern is valid).
                let start = unsafe {
                    std::ptr::read_volatile(std::ptr::addr_of!(
                        (*(seg.as_ptr() as *const SegmentHeader)).primary_start
                    ))
                };
                ProcessId { pid, start_time: start }.is_alive()
            }
            Ok(_) => ProcessId { pid, start_time: 0 }.is_alive(),
            Err(OpenError::PermissionDenied) => continue, // another user's: not ours to judge
            Err(_) => ProcessId { pid, start_time: 0 }.is_alive(),
        };
        if !alive {
            unlink(&name);
            removed += 1;
        }
    }
    removed
}

#[cfg(not(target_os = "linux"))]
pub fn remove_stale() -> usize {
    0
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn create_open_unlink() {
        let name = new_name();
        assert!(name.len() <= 31, "{name}");
        let a = Segment::create(&name, 8192).unwrap();
        assert!(matches!(Segment::create(&name, 8192), Err(CreateError::AlreadyExists)));
        let b = Segment::open(&name).unwrap();
        assert_eq!(b.len(), 8192);
        // SAFETY: both mappings are 8192 bytes long; offset 100 is in bounds.
        unsafe {
            a.as_ptr().add(100).write_volatile(42);
            assert_eq!(b.as_ptr().add(100).read_volatile(), 42);
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(format!("/dev/shm{name}")).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        unlink(&name);
        assert!(matches!(Segment::open(&name), Err(OpenError::NotFound)));
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(matches!(Segment::open("nope"), Err(OpenError::InvalidName)));
        assert!(matches!(Segment::open("/a/b"), Err(OpenError::InvalidName)));
        assert!(matches!(
            Segment::create(&format!("/{}", "x".repeat(40)), 4096),
            Err(CreateError::InvalidName)
        ));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stale_segment_of_a_dead_pid_is_removed() {
        // A PID above pid_max never exists.
        let name = format!(
            "/{NAME_PREFIX}{:x}_{:016x}",
            0x7fff_fff0u32,
            crate::core::platform::random_u64()
        );
        let seg = Segment::create(&name, 8192).unwrap();
        drop(seg);
        remove_stale();
        assert!(matches!(Segment::open(&name), Err(OpenError::NotFound)));
    }
}
