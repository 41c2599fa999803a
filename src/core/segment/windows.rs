//! Windows: a paging-file-backed section named `Local\cshm_<pid>_<random>` (see the docs of
//! [`super`]).

use std::io;
use std::sync::{Mutex, PoisonError};
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};

use super::{valid_name, CreateError, OpenError, Segment};

/// This process's open section handles: (view address, segment name, handle). The handle
/// keeps the name alive for other processes; [`super::unlink`] closes it early.
static HANDLES: Mutex<Vec<(usize, String, usize)>> = Mutex::new(Vec::new());

fn object_name(name: &str) -> Option<Vec<u16>> {
    valid_name(name).then(|| format!("Local\\{}", &name[1..]).encode_utf16().chain(Some(0)).collect())
}

/// The segment `name` of `len` bytes viewed at `view`: keeps its handle `h` (see [`HANDLES`])
/// and registers its words for cross-process wake-ups.
fn adopt(view: *mut u8, len: usize, name: &str, h: HANDLE) -> Segment {
    lock().push((view as usize, name.to_owned(), h as usize));
    crate::core::platform::register_segment(view, len, name);
    Segment {
        ptr: view,
        len,
        name: name.to_owned(),
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(usize, String, usize)>> {
    HANDLES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Closes the handles selected by `pick`.
fn close_where(pick: impl Fn(&(usize, String, usize)) -> bool) {
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
struct UserOnly(windows_sys::Win32::Security::PSECURITY_DESCRIPTOR);

impl UserOnly {
    fn new() -> Option<UserOnly> {
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

    fn attributes(&self) -> windows_sys::Win32::Security::SECURITY_ATTRIBUTES {
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
fn owned_by_me(h: HANDLE) -> bool {
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

/// Creates the section `Local\<name>` exclusively, `len` zeroed bytes backed by the paging
/// file and committed now (`SEC_COMMIT`: a lack of commit charge is an error here, not a
/// fault later). Owned by this user, who alone has access (see [`UserOnly`]).
pub fn create(name: &str, len: usize) -> Result<Segment, CreateError> {
    use windows_sys::Win32::Foundation::{
        CloseHandle, GetLastError, SetLastError, ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, ERROR_COMMITMENT_LIMIT,
        ERROR_DISK_FULL, ERROR_INVALID_HANDLE, ERROR_NOT_ENOUGH_MEMORY, ERROR_OUTOFMEMORY, INVALID_HANDLE_VALUE,
    };
    use windows_sys::Win32::System::Memory::{
        CreateFileMappingW, MapViewOfFile, FILE_MAP_READ, FILE_MAP_WRITE, PAGE_READWRITE, SEC_COMMIT,
    };
    let wname = object_name(name).ok_or(CreateError::InvalidName)?;
    let size = len as u64;
    let security = UserOnly::new().ok_or_else(|| CreateError::Os(io::Error::last_os_error()))?;
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
        Ok(adopt(view, len, name, h))
    }
}

/// Opens the section `Local\<name>` read-write. Refused unless it is owned by this process's
/// user (see [`owned_by_me`]). The length is that of the view (the section's
/// size rounded up to a page); the header check compares it with the geometry.
pub fn open(name: &str) -> Result<Segment, OpenError> {
    use windows_sys::Win32::Foundation::{
        CloseHandle, GetLastError, ERROR_ACCESS_DENIED, ERROR_FILE_NOT_FOUND, ERROR_INVALID_HANDLE,
    };
    use windows_sys::Win32::System::Memory::{
        MapViewOfFile, OpenFileMappingW, UnmapViewOfFile, VirtualQuery, FILE_MAP_READ, FILE_MAP_WRITE,
        MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS,
    };
    let wname = object_name(name).ok_or(OpenError::InvalidName)?;
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
        if !owned_by_me(h) {
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
        if len < crate::core::layout::LINE {
            UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: view.cast() });
            CloseHandle(h);
            return Err(OpenError::TooSmall);
        }
        Ok(adopt(view, len, name, h))
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        use windows_sys::Win32::System::Memory::{UnmapViewOfFile, MEMORY_MAPPED_VIEW_ADDRESS};
        crate::core::platform::unregister_segment(self.ptr);
        let view = self.ptr as usize;
        close_where(|e| e.0 == view);
        // SAFETY: `ptr` is the view MapViewOfFile returned; no reference into it outlives the
        // Segment (every user holds an Arc<Segment>).
        unsafe { UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: self.ptr.cast() }) };
    }
}

/// Closes this process's handles of the section `name`. Its views stay valid; the name
/// disappears once no process holds a handle (each [`Segment`] holds one while it lives, and a
/// dead process holds none). Idempotent.
pub fn unlink(name: &str) {
    close_where(|e| e.1 == name);
}

/// Nothing to do: a section dies with its last handle, also when its processes are killed, so
/// none can go stale.
pub fn remove_stale() -> usize {
    0
}

/// Windows: the section is mapped read-write (the observer only ever loads from it).
pub fn open_read_only(name: &str) -> Result<Segment, OpenError> {
    open(name)
}

/// Sections cannot be listed: nothing.
pub fn list() -> Vec<(String, u64, i64)> {
    vec![]
}

/// Sections never go stale (the kernel removes them with their last handle).
pub fn primary_alive(_name: &str) -> Option<bool> {
    None
}
