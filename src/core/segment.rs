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

#[cfg(unix)]
use std::ffi::CString;
use std::io;

#[cfg(target_os = "linux")]
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

/// `/name`: at most 31 bytes (macOS's limit), printable ASCII, no further '/' (and, for
/// Windows object names, no '\\').
fn valid_name(name: &str) -> bool {
    name.len() >= 2
        && name.len() <= 31
        && name.starts_with('/')
        && !name[1..].contains(['/', '\\'])
        && name.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(unix)]
fn c_name(name: &str) -> Option<CString> {
    if valid_name(name) {
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

#[cfg(windows)]
mod win {
    //! The Windows segment: a paging-file-backed section (see the module docs).

    use std::sync::{Mutex, PoisonError};
    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};

    /// This process's open section handles: (view address, segment name, handle). The handle
    /// keeps the name alive for other processes; [`super::unlink`] closes it early.
    pub static HANDLES: Mutex<Vec<(usize, String, usize)>> = Mutex::new(Vec::new());

    pub fn object_name(name: &str) -> Option<Vec<u16>> {
        super::valid_name(name).then(|| format!("Local\\{}", &name[1..]).encode_utf16().chain(Some(0)).collect())
    }

    pub fn keep(view: *mut u8, name: &str, h: HANDLE) {
        lock().push((view as usize, name.to_owned(), h as usize));
    }

    pub fn lock() -> std::sync::MutexGuard<'static, Vec<(usize, String, usize)>> {
        HANDLES.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the handles selected by `pick`.
    pub fn close_where(pick: impl Fn(&(usize, String, usize)) -> bool) {
        let mut v = lock();
        v.retain(|e| {
            if pick(e) {
                // SAFETY: the handle was opened by this module and is closed only here.
                unsafe { CloseHandle(e.2 as HANDLE) };
                false
            } else {
                true
            }
        });
    }

    /// Runs `f` with this process's user SID (`TokenUser`), None if the token cannot be read.
    fn with_user_sid<R>(f: impl FnOnce(windows_sys::Win32::Security::PSID) -> R) -> Option<R> {
        use windows_sys::Win32::Security::{GetTokenInformation, TokenUser, TOKEN_QUERY, TOKEN_USER};
        use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
        // SAFETY: every out-parameter is valid; the token handle is closed before returning and
        // the SID (inside `buf`) is used only while `buf` lives.
        unsafe {
            let mut token: HANDLE = std::ptr::null_mut();
            if OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) == 0 {
                return None;
            }
            // TOKEN_USER is a SID pointer plus attributes, followed by the SID (at most 68 bytes).
            let mut buf = [0u64; 32];
            let mut got = 0u32;
            let ok = GetTokenInformation(
                token,
                TokenUser,
                buf.as_mut_ptr().cast(),
                std::mem::size_of_val(&buf) as u32,
                &mut got,
            );
            CloseHandle(token);
            (ok != 0).then(|| f((*(buf.as_ptr() as *const TOKEN_USER)).User.Sid))
        }
    }

    /// A security descriptor for a new section: owned by this user, and a protected DACL that
    /// grants this user full access and nobody else anything (SDDL `O:<sid>D:P(A;;GA;;;<sid>)`).
    /// The counterpart of mode 0600. Freed on drop.
    pub struct UserOnly(windows_sys::Win32::Security::PSECURITY_DESCRIPTOR);

    impl UserOnly {
        pub fn new() -> Option<UserOnly> {
            use windows_sys::Win32::Foundation::LocalFree;
            use windows_sys::Win32::Security::Authorization::{
                ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
            };
            let sid = with_user_sid(|sid| {
                let mut text: windows_sys::core::PWSTR = std::ptr::null_mut();
                // SAFETY: `sid` is valid for this closure; the string is freed with LocalFree.
                unsafe {
                    if ConvertSidToStringSidW(sid, &mut text) == 0 {
                        return None;
                    }
                    let len = (0..).take_while(|&i| *text.add(i) != 0).count();
                    let s = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
                    LocalFree(text.cast());
                    Some(s)
                }
            })??;
            let sddl: Vec<u16> = format!("O:{sid}D:P(A;;GA;;;{sid})")
                .encode_utf16()
                .chain(Some(0))
                .collect();
            let mut sd = std::ptr::null_mut();
            // SAFETY: `sddl` is NUL-terminated; the descriptor is freed in Drop.
            let ok = unsafe {
                ConvertStringSecurityDescriptorToSecurityDescriptorW(
                    sddl.as_ptr(),
                    SDDL_REVISION_1,
                    &mut sd,
                    std::ptr::null_mut(),
                )
            };
            (ok != 0 && !sd.is_null()).then_some(UserOnly(sd))
        }

        pub fn attributes(&self) -> windows_sys::Win32::Security::SECURITY_ATTRIBUTES {
            windows_sys::Win32::Security::SECURITY_ATTRIBUTES {
                nLength: std::mem::size_of::<windows_sys::Win32::Security::SECURITY_ATTRIBUTES>() as u32,
                lpSecurityDescriptor: self.0,
                bInheritHandle: 0,
            }
        }
    }

    impl Drop for UserOnly {
        fn drop(&mut self) {
            // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW.
            unsafe { windows_sys::Win32::Foundation::LocalFree(self.0) };
        }
    }

    /// True if the section is owned by this process's user, i.e. was created by a process of
    /// the same user (sections we create are owned by the user, see [`UserOnly`]). The DACL
    /// already keeps other users out; this also refuses a section planted under our name by
    /// another principal that granted us access.
    pub fn owned_by_me(h: HANDLE) -> bool {
        use windows_sys::Win32::Foundation::LocalFree;
        use windows_sys::Win32::Security::Authorization::{GetSecurityInfo, SE_KERNEL_OBJECT};
        use windows_sys::Win32::Security::{EqualSid, OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID};
        // SAFETY: every out-parameter is valid; `owner` points into `sd`, freed last.
        unsafe {
            let mut owner: PSID = std::ptr::null_mut();
            let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
            let r = GetSecurityInfo(
                h,
                SE_KERNEL_OBJECT,
                OWNER_SECURITY_INFORMATION,
                &mut owner,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut sd,
            );
            let same = r == 0 && !owner.is_null() && with_user_sid(|me| EqualSid(owner, me) != 0) == Some(true);
            if !sd.is_null() {
                LocalFree(sd);
            }
            same
        }
    }
}

#[cfg(windows)]
impl Segment {
    /// Creates the section `Local\<name>` exclusively, `len` zeroed bytes backed by the paging
    /// file and committed now (`SEC_COMMIT`: a lack of commit charge is an error here, not a
    /// fault later). Owned by this user, who alone has access (see `win::UserOnly`).
    pub fn create(name: &str, len: usize) -> Result<Segment, CreateError> {
        use windows_sys::Win32::Foundation::{
            CloseHandle, GetLastError, SetLastError, ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, ERROR_COMMITMENT_LIMIT,
            ERROR_DISK_FULL, ERROR_INVALID_HANDLE, ERROR_NOT_ENOUGH_MEMORY, ERROR_OUTOFMEMORY, INVALID_HANDLE_VALUE,
        };
        use windows_sys::Win32::System::Memory::{
            CreateFileMappingW, MapViewOfFile, FILE_MAP_READ, FILE_MAP_WRITE, PAGE_READWRITE, SEC_COMMIT,
        };
        let wname = win::object_name(name).ok_or(CreateError::InvalidName)?;
        let size = len as u64;
        let security = win::UserOnly::new().ok_or_else(|| CreateError::Os(io::Error::last_os_error()))?;
        let attributes = security.attributes();
        // SAFETY: plain calls; `wname` is NUL-terminated UTF-16; every handle is closed on error.
        unsafe {
            SetLastError(0);
            let h = CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                &attributes,
                PAGE_READWRITE | SEC_COMMIT,
                (size >> 32) as u32,
                size as u32,
                wname.as_ptr(),
            );
            let err = GetLastError();
            if h.is_null() {
                return Err(match err {
                    ERROR_COMMITMENT_LIMIT | ERROR_NOT_ENOUGH_MEMORY | ERROR_OUTOFMEMORY | ERROR_DISK_FULL => {
                        CreateError::NoSpace
                    }
                    // The name is taken by another kind of object, or by another user.
                    ERROR_INVALID_HANDLE | ERROR_ACCESS_DENIED => CreateError::AlreadyExists,
                    e => CreateError::Os(io::Error::from_raw_os_error(e as i32)),
                });
            }
            if err == ERROR_ALREADY_EXISTS {
                CloseHandle(h);
                return Err(CreateError::AlreadyExists);
            }
            let view = MapViewOfFile(h, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, len).Value as *mut u8;
            if view.is_null() {
                let e = io::Error::last_os_error();
                CloseHandle(h);
                return Err(CreateError::Os(e));
            }
            win::keep(view, name, h);
            super::platform::register_segment(view, len, name);
            Ok(Segment {
                ptr: view,
                len,
                name: name.to_owned(),
            })
        }
    }

    /// Opens the section `Local\<name>` read-write. Refused unless it is owned by this process's
    /// user (see `win::owned_by_me`). The length is that of the view (the section's
    /// size rounded up to a page); the header check compares it with the geometry.
    pub fn open(name: &str) -> Result<Segment, OpenError> {
        use windows_sys::Win32::Foundation::{
            CloseHandle, GetLastError, ERROR_ACCESS_DENIED, ERROR_FILE_NOT_FOUND, ERROR_INVALID_HANDLE,
        };
        use windows_sys::Win32::System::Memory::{
            MapViewOfFile, OpenFileMappingW, UnmapViewOfFile, VirtualQuery, FILE_MAP_READ, FILE_MAP_WRITE,
            MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS,
        };
        let wname = win::object_name(name).ok_or(OpenError::InvalidName)?;
        // SAFETY: plain calls; `wname` is NUL-terminated UTF-16; every handle and view is
        // released on error.
        unsafe {
            // READ_CONTROL (winnt.h): needed to read the owner for the check below.
            const READ_CONTROL: u32 = 0x0002_0000;
            let h = OpenFileMappingW(FILE_MAP_READ | FILE_MAP_WRITE | READ_CONTROL, 0, wname.as_ptr());
            if h.is_null() {
                return Err(match GetLastError() {
                    // INVALID_HANDLE: the name belongs to an object of another kind.
                    ERROR_FILE_NOT_FOUND | ERROR_INVALID_HANDLE => OpenError::NotFound,
                    ERROR_ACCESS_DENIED => OpenError::PermissionDenied,
                    e => OpenError::Os(io::Error::from_raw_os_error(e as i32)),
                });
            }
            if !win::owned_by_me(h) {
                CloseHandle(h);
                return Err(OpenError::PermissionDenied);
            }
            let view = MapViewOfFile(h, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, 0).Value as *mut u8;
            if view.is_null() {
                let e = io::Error::last_os_error();
                CloseHandle(h);
                return Err(OpenError::Os(e));
            }
            let mut info: MEMORY_BASIC_INFORMATION = std::mem::zeroed();
            let got = VirtualQuery(
                view as *const _,
                &mut info,
                std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
            );
            let len = if got == 0 { 0 } else { info.RegionSize };
            if len < super::layout::LINE {
                UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: view.cast() });
                CloseHandle(h);
                return Err(OpenError::TooSmall);
            }
            win::keep(view, name, h);
            super::platform::register_segment(view, len, name);
            Ok(Segment {
                ptr: view,
                len,
                name: name.to_owned(),
            })
        }
    }
}

#[cfg(windows)]
impl Drop for Segment {
    fn drop(&mut self) {
        use windows_sys::Win32::System::Memory::{UnmapViewOfFile, MEMORY_MAPPED_VIEW_ADDRESS};
        super::platform::unregister_segment(self.ptr);
        let view = self.ptr as usize;
        win::close_where(|e| e.0 == view);
        // SAFETY: `ptr` is the view MapViewOfFile returned; no reference into it outlives the
        // Segment (every user holds an Arc<Segment>).
        unsafe { UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: self.ptr.cast() }) };
    }
}

/// Windows: closes this process's handles of the section `name`. Its views stay valid; the
/// name disappears once no process holds a handle (each [`Segment`] holds one while it lives,
/// and a dead process holds none). Idempotent.
#[cfg(windows)]
pub fn unlink(name: &str) {
    win::close_where(|e| e.1 == name);
}

/// Unlinks the segments left by primaries that died without cleaning up (SIGKILL, power loss of
/// a container, ...): those of this user whose creator PID is gone or was reused (checked against
/// the start time in the header). Returns how many were removed. Linux only (other systems
/// cannot list their shared-memory names).
#[cfg(target_os = "linux")]
pub fn remove_stale() -> usize {
    use super::layout::{SegmentHeader, MAGIC_PREFIX};
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

/// Nothing to do elsewhere. Windows: a section dies with its last handle, also when its
/// processes are killed, so none can go stale. macOS: POSIX shm names cannot be listed, so
/// those of a SIGKILLed primary stay until reboot (each is one cluster's segment).
#[cfg(not(target_os = "linux"))]
pub fn remove_stale() -> usize {
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::platform::{self, WaitOutcome};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

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

    /// The doorbell works between two mappings of one segment at different addresses, as it
    /// must between processes (on Windows this exercises the named events and their registry).
    #[test]
    fn wake_through_one_mapping_releases_a_waiter_on_another() {
        let name = new_name();
        let a = Segment::create(&name, 8192).unwrap();
        let b = Segment::open(&name).unwrap();
        assert_ne!(a.as_ptr(), b.as_ptr());
        // SAFETY: offset 256 is in bounds and 4-byte aligned in both 8192-byte mappings; the
        // words are only accessed atomically.
        let (wa, wb) = unsafe {
            (
                &*(a.as_ptr().add(256) as *const AtomicU32),
                &*(b.as_ptr().add(256) as *const AtomicU32),
            )
        };
        let t = Instant::now();
        assert_eq!(platform::wait(wb, 0, Duration::from_millis(30)), WaitOutcome::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(25));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let t = Instant::now();
                while wb.load(Ordering::Acquire) == 0 {
                    platform::wait(wb, 0, Duration::from_secs(10));
                }
                t.elapsed()
            });
            std::thread::sleep(Duration::from_millis(50));
            wa.store(1, Ordering::Release);
            platform::wake(wa);
            let waited = waiter.join().unwrap();
            // Woken by the wake, not by the 10 s timeout (nor a poll that never ends).
            assert!(waited < Duration::from_secs(5), "{waited:?}");
        });
        drop(b);
        unlink(&name);
        drop(a);
        assert!(matches!(Segment::open(&name), Err(OpenError::NotFound)));
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(matches!(Segment::open("nope"), Err(OpenError::InvalidName)));
        assert!(matches!(Segment::open("/a/b"), Err(OpenError::InvalidName)));
        assert!(matches!(Segment::open("/a\\b"), Err(OpenError::InvalidName)));
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
