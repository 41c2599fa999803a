//! What differs per operating system, behind one small interface:
//!
//! - [`wait`] / [`wake`]: block on a 32-bit word in shared memory until it changes, across
//!   processes. The signatures are the same everywhere; each OS has its own mechanism:
//!   - Linux: a shared futex (without `FUTEX_PRIVATE_FLAG`, which would not cross processes).
//!   - macOS: `os_sync_wait_on_address_with_timeout` / `os_sync_wake_by_address_all` with the
//!     `SHARED` flags (macOS 14.4+), else `__ulock_wait` / `__ulock_wake` with
//!     `UL_COMPARE_AND_WAIT_SHARED`, else a bounded sleep-poll. All three are resolved once at
//!     run time with `dlsym`, so one binary runs on every macOS version Node supports.
//!   - Windows: `WaitOnAddress` does not cross processes, so a word inside a registered
//!     segment (see [`register_segment`]) gets a named manual-reset Event, named from the
//!     segment's name and the word's offset in it; words outside any segment (process-local,
//!     e.g. in tests) use `WaitOnAddress` / `WakeByAddressAll`.
//!   - Elsewhere: a bounded sleep-poll.
//! - [`ProcessId`]: a PID plus the process start time, so that a reused PID is never mistaken
//!   for the process that held an index or a permit (Linux: `/proc/PID/stat`; macOS: `sysctl`
//!   `KERN_PROC_PID`; Windows: `GetProcessTimes`).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Why [`wait`] returned. Every caller re-checks its condition, so the variants are advisory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken, or the word no longer held `expected`.
    Changed,
    /// The timeout elapsed.
    TimedOut,
}

/// Sleeps while `*word == expected`, at most `timeout`. Spurious returns are allowed.
#[cfg(target_os = "linux")]
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitOutcome {
    let ts = libc::timespec {
        // `as _`: libc's musl `time_t` alias is deprecated (it will become 64-bit).
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as _,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, 4-byte aligned AtomicU32 (in our own memory or in a mapped
    // segment that outlives this call); FUTEX_WAIT only reads it. The timespec is valid and
    // normalised (tv_nsec < 1e9), the two unused arguments are null/0 as the ABI requires.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
        WaitOutcome::TimedOut
    } else {
        WaitOutcome::Changed
    }
}

/// Wakes every thread of every process waiting on `word`.
#[cfg(target_os = "linux")]
pub fn wake(word: &AtomicU32) {
    // SAFETY: as in `wait`; FUTEX_WAKE does not access the memory, it only uses its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// Sleeps while `*word == expected`, at most `timeout`. Spurious returns are allowed.
#[cfg(target_os = "macos")]
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitOutcome {
    darwin::wait(word, expected, timeout)
}

/// Wakes every thread of every process waiting on `word`.
#[cfg(target_os = "macos")]
pub fn wake(word: &AtomicU32) {
    darwin::wake(word)
}

/// Sleeps while `*word == expected`, at most `timeout`. Spurious returns are allowed.
#[cfg(windows)]
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitOutcome {
    win::wait(word, expected, timeout)
}

/// Wakes every thread of every process waiting on `word` (see `win` for the one race).
#[cfg(windows)]
pub fn wake(word: &AtomicU32) {
    win::wake(word)
}

/// Portable fallback: poll the word with short, growing sleeps (bounded by `timeout`).
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitOutcome {
    poll_wait(word, expected, timeout)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub fn wake(_word: &AtomicU32) {}

/// Polls the word with short, growing sleeps (20 µs doubling up to 1 ms), bounded by `timeout`.
/// The last resort of every non-Linux system; a waker needs to do nothing.
#[cfg(not(target_os = "linux"))]
fn poll_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitOutcome {
    use std::sync::atomic::Ordering;
    let deadline = std::time::Instant::now() + timeout;
    let mut nap = Duration::from_micros(20);
    loop {
        if word.load(Ordering::Acquire) != expected {
            return WaitOutcome::Changed;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return WaitOutcome::TimedOut;
        }
        std::thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(1));
    }
}

/// Which wait/wake mechanism this process uses (for diagnostics and tests).
pub fn wait_mechanism() -> &'static str {
    #[cfg(target_os = "linux")]
    {
        "futex"
    }
    #[cfg(target_os = "macos")]
    {
        darwin::mechanism()
    }
    #[cfg(windows)]
    {
        "named-event"
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
    {
        "poll"
    }
}

#[cfg(target_os = "macos")]
mod darwin {
    //! macOS wait/wake. Every symbol is looked up with `dlsym` once per process:
    //! `os_sync_wait_on_address_with_timeout` and `os_sync_wake_by_address_all` exist from macOS
    //! 14.4 (public API); `__ulock_wait` / `__ulock_wake` from 10.12 (private but stable, used by
    //! libc++, Rust's std and Go's runtime). Both are keyed, with the SHARED flags, by the
    //! physical page (VM object + offset), so they work across processes that map the same
    //! POSIX shm object at different addresses. Every process of a cluster runs on the same OS,
    //! so they all pick the same mechanism. `CLUSTER_SHM_DARWIN_WAIT=os_sync|ulock|poll` forces
    //! one (for tests of the fallbacks; an unavailable choice falls back to `poll`).

    use super::WaitOutcome;
    use std::ffi::{c_int, c_void, CStr};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    // <os/os_sync_wait_on_address.h> (macOS 14.4 SDK) and <os/clock.h>.
    const OS_SYNC_WAIT_ON_ADDRESS_SHARED: u32 = 0x1;
    const OS_SYNC_WAKE_BY_ADDRESS_SHARED: u32 = 0x1;
    const OS_CLOCK_MACH_ABSOLUTE_TIME: u32 = 32;
    // xnu bsd/sys/ulock.h.
    const UL_COMPARE_AND_WAIT_SHARED: u32 = 3;
    const ULF_WAKE_ALL: u32 = 0x0000_0100;
    const ULF_NO_ERRNO: u32 = 0x0100_0000;

    /// `int os_sync_wait_on_address_with_timeout(void *addr, uint64_t value, size_t size,
    /// os_sync_wait_on_address_flags_t flags, os_clockid_t clockid, uint64_t timeout_ns)`;
    /// the timeout is relative.
    type OsSyncWait = unsafe extern "C" fn(*mut c_void, u64, usize, u32, u32, u64) -> c_int;
    /// `int os_sync_wake_by_address_all(void *addr, size_t size, os_sync_wake_by_address_flags_t)`.
    type OsSyncWake = unsafe extern "C" fn(*mut c_void, usize, u32) -> c_int;
    /// `int __ulock_wait(uint32_t operation, void *addr, uint64_t value, uint32_t timeout_us)`;
    /// a timeout of 0 means forever.
    type UlockWait = unsafe extern "C" fn(u32, *mut c_void, u64, u32) -> c_int;
    /// `int __ulock_wake(uint32_t operation, void *addr, uint64_t wake_value)`.
    type UlockWake = unsafe extern "C" fn(u32, *mut c_void, u64) -> c_int;

    #[derive(Clone, Copy)]
    enum Backend {
        OsSync(OsSyncWait, OsSyncWake),
        Ulock(UlockWait, UlockWake),
        Poll,
    }

    fn backend() -> Backend {
        static BACKEND: OnceLock<Backend> = OnceLock::new();
        *BACKEND.get_or_init(resolve)
    }

    fn sym(name: &CStr) -> *mut c_void {
        // SAFETY: RTLD_DEFAULT searches every loaded image; `name` is NUL-terminated.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
    }

    fn resolve() -> Backend {
        let forced = std::env::var("CLUSTER_SHM_DARWIN_WAIT").ok();
        let allowed = |b: &str| forced.as_deref().is_none_or(|f| f == b);
        if allowed("os_sync") {
            let (w, k) = (
                sym(c"os_sync_wait_on_address_with_timeout"),
                sym(c"os_sync_wake_by_address_all"),
            );
            if !w.is_null() && !k.is_null() {
                // SAFETY: the symbols are the libSystem functions whose C prototypes the
                // aliases spell out.
                return unsafe {
                    Backend::OsSync(
                        std::mem::transmute::<*mut c_void, OsSyncWait>(w),
                        std::mem::transmute::<*mut c_void, OsSyncWake>(k),
                    )
                };
            }
        }
        if allowed("ulock") {
            let (w, k) = (sym(c"__ulock_wait"), sym(c"__ulock_wake"));
            if !w.is_null() && !k.is_null() {
                // SAFETY: as above (xnu's prototypes).
                return unsafe {
                    Backend::Ulock(
                        std::mem::transmute::<*mut c_void, UlockWait>(w),
                        std::mem::transmute::<*mut c_void, UlockWake>(k),
                    )
                };
            }
        }
        Backend::Poll
    }

    pub fn mechanism() -> &'static str {
        match backend() {
            Backend::OsSync(..) => "os_sync_wait_on_address",
            Backend::Ulock(..) => "ulock",
            Backend::Poll => "poll",
        }
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitOutcome {
        let addr = word.as_ptr() as *mut c_void;
        if timeout.is_zero() {
            // Both system calls read 0 as "no timeout"; a zero wait is just a check.
            return if word.load(Ordering::Acquire) != expected {
                WaitOutcome::Changed
            } else {
                WaitOutcome::TimedOut
            };
        }
        match backend() {
            Backend::OsSync(wait, _) => {
                let ns = timeout.as_nanos().min(u64::MAX as u128) as u64;
                // SAFETY: `addr` is a live, 4-byte aligned word (size 4); the kernel only reads it.
                let r = unsafe {
                    wait(
                        addr,
                        expected as u64,
                        4,
                        OS_SYNC_WAIT_ON_ADDRESS_SHARED,
                        OS_CLOCK_MACH_ABSOLUTE_TIME,
                        ns,
                    )
                };
                if r < 0 && errno() == libc::ETIMEDOUT {
                    WaitOutcome::TimedOut
                } else {
                    WaitOutcome::Changed
                }
            }
            Backend::Ulock(wait, _) => {
                // Microseconds, rounded up, at least 1 (0 would mean forever).
                let us = timeout.as_nanos().div_ceil(1000).clamp(1, u32::MAX as u128) as u32;
                // SAFETY: as above; ULF_NO_ERRNO returns -errno instead of setting errno.
                let r = unsafe { wait(UL_COMPARE_AND_WAIT_SHARED | ULF_NO_ERRNO, addr, expected as u64, us) };
                if r == -libc::ETIMEDOUT {
                    WaitOutcome::TimedOut
                } else {
                    WaitOutcome::Changed
                }
            }
            Backend::Poll => super::poll_wait(word, expected, timeout),
        }
    }

    pub fn wake(word: &AtomicU32) {
        let addr = word.as_ptr() as *mut c_void;
        match backend() {
            Backend::OsSync(_, wake) => loop {
                // SAFETY: the wake only uses the address as a key. ENOENT (no waiter) is normal.
                let r = unsafe { wake(addr, 4, OS_SYNC_WAKE_BY_ADDRESS_SHARED) };
                if !(r < 0 && errno() == libc::EINTR) {
                    break;
                }
            },
            Backend::Ulock(_, wake) => loop {
                // SAFETY: as above; -ENOENT means no waiter.
                let r = unsafe { wake(UL_COMPARE_AND_WAIT_SHARED | ULF_WAKE_ALL | ULF_NO_ERRNO, addr, 0) };
                if r != -libc::EINTR {
                    break;
                }
            },
            Backend::Poll => {}
        }
    }
}

/// Windows only: makes the words of a mapped segment wake across processes. Called by
/// `segment::Segment` for each mapping it makes; undone by [`unregister_segment`].
#[cfg(windows)]
pub fn register_segment(base: *mut u8, len: usize, name: &str) {
    win::register(base, len, name)
}

/// Windows only: forgets a mapping (at unmap) and closes its events.
#[cfg(windows)]
pub fn unregister_segment(base: *mut u8) {
    win::unregister(base)
}

#[cfg(windows)]
mod win {
    //! Windows wait/wake.
    //!
    //! `WaitOnAddress` only wakes threads of the calling process, so a word that lives in a
    //! shared segment gets a named **manual-reset Event**, `Local\cshm_<pid>_<random>.w<offset>`:
    //! the same name in every process that maps the segment, whatever address the mapping got.
    //! A small registry maps an address to its segment (base, length, name), so the callers keep
    //! the `wait(&AtomicU32, u32, Duration)` / `wake(&AtomicU32)` signatures of the other OSes.
    //!
    //! - `wait`: `ResetEvent`, then re-check the word, then `WaitForSingleObject` with the
    //!   timeout. A wake that lands after the reset stays latched in the event, so a single
    //!   waiter never misses one.
    //! - `wake`: `SetEvent`, which releases **every** thread blocked on the event at that moment
    //!   (wake-all, like `FUTEX_WAKE` with `INT_MAX`); it stays set until the next waiter resets it.
    //!
    //! The one imperfection: with two waiters on one word, a waiter B that checked the word but
    //! is not yet blocked can lose a wake if another waiter A resets the event between the
    //! `SetEvent` and B's block. B then sleeps until its timeout; every wait in cluster-shm is
    //! bounded (≤ 1 s, and callers re-check), so this costs latency, never correctness. Words
    //! with one waiter (the doorbells: one delivery thread, one sender thread per endpoint) are
    //! exact.
    //!
    //! Event handles are created on first use (open-or-create), cached per (mapping, offset) and
    //! closed when the mapping is unregistered; the kernel deletes an event with its last handle.

    use super::WaitOutcome;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex, PoisonError, RwLock};
    use std::time::Duration;
    use windows_sys::Win32::Foundation::{
        CloseHandle, GetLastError, ERROR_ACCESS_DENIED, ERROR_TIMEOUT, FILETIME, HANDLE, WAIT_TIMEOUT,
    };
    use windows_sys::Win32::System::Threading::{
        CreateEventW, GetExitCodeProcess, GetProcessTimes, OpenProcess, ResetEvent, SetEvent, WaitForSingleObject,
        WaitOnAddress, WakeByAddressAll, INFINITE, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE,
    };

    /// An owned event handle (closed on drop). Cloned out of the registry as an `Arc` so that a
    /// waiter's handle stays valid even if the mapping is unregistered meanwhile.
    struct Event(HANDLE);
    // SAFETY: a kernel handle may be used and closed from any thread.
    unsafe impl Send for Event {}
    // SAFETY: see Send; SetEvent/ResetEvent/WaitForSingleObject are thread-safe.
    unsafe impl Sync for Event {}
    impl Drop for Event {
        fn drop(&mut self) {
            // SAFETY: the handle is ours and open; nothing else closes it.
            unsafe { CloseHandle(self.0) };
        }
    }

    struct Region {
        base: usize,
        len: usize,
        /// `Local\cshm_<pid>_<random>`: the segment's name in the session namespace.
        prefix: String,
        events: Mutex<HashMap<usize, Arc<Event>>>,
    }

    static REGIONS: RwLock<Vec<Arc<Region>>> = RwLock::new(Vec::new());

    pub fn register(base: *mut u8, len: usize, name: &str) {
        let region = Arc::new(Region {
            base: base as usize,
            len,
            prefix: format!("Local\\{}", name.trim_start_matches('/')),
            events: Mutex::new(HashMap::new()),
        });
        REGIONS.write().unwrap_or_else(PoisonError::into_inner).push(region);
    }

    pub fn unregister(base: *mut u8) {
        // Dropping the region drops its cached events (the last Arc closes each handle).
        REGIONS
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|r| r.base != base as usize);
    }

    enum Target {
        /// Not in a registered segment: process-local, WaitOnAddress works.
        Local,
        Shared(Arc<Event>),
        /// In a segment, but the event could not be created (out of handles?): poll.
        Unavailable,
    }

    fn target(word: &AtomicU32) -> Target {
        let addr = word.as_ptr() as usize;
        let region = {
            let regions = REGIONS.read().unwrap_or_else(PoisonError::into_inner);
            match regions.iter().find(|r| addr >= r.base && addr - r.base < r.len) {
                Some(r) => r.clone(),
                None => return Target::Local,
            }
        };
        let offset = addr - region.base;
        let mut events = region.events.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = events.get(&offset) {
            return Target::Shared(e.clone());
        }
        let name: Vec<u16> = format!("{}.w{offset:x}", region.prefix)
            .encode_utf16()
            .chain(Some(0))
            .collect();
        // SAFETY: `name` is NUL-terminated UTF-16; default security (the creator's default DACL:
        // this user, SYSTEM, administrators); manual reset, initially not signalled. Opens the
        // event if another process created it.
        let h = unsafe { CreateEventW(std::ptr::null(), 1, 0, name.as_ptr()) };
        if h.is_null() {
            return Target::Unavailable;
        }
        let e = Arc::new(Event(h));
        events.insert(offset, e.clone());
        Target::Shared(e)
    }

    /// Milliseconds, rounded up, below INFINITE.
    fn millis(timeout: Duration) -> u32 {
        timeout.as_nanos().div_ceil(1_000_000).min((INFINITE - 1) as u128) as u32
    }

    pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitOutcome {
        match target(word) {
            Target::Local => {
                // SAFETY: both pointers are valid 4-byte values for the duration of the call.
                let ok = unsafe {
                    WaitOnAddress(
                        word.as_ptr() as *const _,
                        &expected as *const u32 as *const _,
                        4,
                        millis(timeout),
                    )
                };
                // SAFETY: no precondition.
                if ok == 0 && unsafe { GetLastError() } == ERROR_TIMEOUT {
                    WaitOutcome::TimedOut
                } else {
                    WaitOutcome::Changed
                }
            }
            Target::Shared(ev) => {
                // SAFETY: the handle is open (held by `ev`).
                unsafe { ResetEvent(ev.0) };
                if word.load(Ordering::SeqCst) != expected {
                    return WaitOutcome::Changed;
                }
                // SAFETY: as above.
                match unsafe { WaitForSingleObject(ev.0, millis(timeout)) } {
                    WAIT_TIMEOUT => WaitOutcome::TimedOut,
                    _ => WaitOutcome::Changed,
                }
            }
            Target::Unavailable => super::poll_wait(word, expected, timeout),
        }
    }

    pub fn wake(word: &AtomicU32) {
        match target(word) {
            // SAFETY: WakeByAddressAll only uses the address as a key.
            Target::Local => unsafe { WakeByAddressAll(word.as_ptr() as *const _) },
            Target::Shared(ev) => {
                // SAFETY: the handle is open (held by `ev`).
                unsafe { SetEvent(ev.0) };
            }
            Target::Unavailable => {}
        }
    }

    /// Creation time of `pid` (100 ns units since 1601), or None if it cannot be opened.
    pub fn start_time(pid: u32) -> Option<u64> {
        // SAFETY: plain call; a null result is handled.
        let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        if h.is_null() {
            return None;
        }
        let mut t = [FILETIME {
            dwLowDateTime: 0,
            dwHighDateTime: 0,
        }; 4];
        let [c, e, k, u] = &mut t;
        // SAFETY: `h` is an open process handle with query rights; the four out-params are valid.
        let ok = unsafe { GetProcessTimes(h, c, e, k, u) };
        // SAFETY: `h` is ours.
        unsafe { CloseHandle(h) };
        (ok != 0).then(|| ((t[0].dwHighDateTime as u64) << 32) | t[0].dwLowDateTime as u64)
    }

    /// True while `pid` names a process that has not exited. A process object outlives its
    /// process while someone holds a handle, so opening it is not enough: it must not be
    /// signalled (`WaitForSingleObject(h, 0)`), or, without SYNCHRONIZE rights, its exit code
    /// must be STILL_ACTIVE.
    pub fn pid_exists(pid: u32) -> bool {
        if pid == 0 {
            return false;
        }
        // SAFETY: plain calls on handles we own; null results are handled.
        unsafe {
            let h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_SYNCHRONIZE, 0, pid);
            if !h.is_null() {
                let r = WaitForSingleObject(h, 0);
                CloseHandle(h);
                return r == WAIT_TIMEOUT;
            }
            if GetLastError() != ERROR_ACCESS_DENIED {
                return false; // ERROR_INVALID_PARAMETER: no such process
            }
            let h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
            if h.is_null() {
                return true; // exists, but we may not even query it
            }
            const STILL_ACTIVE: u32 = 259;
            let mut code = 0u32;
            let ok = GetExitCodeProcess(h, &mut code);
            CloseHandle(h);
            ok == 0 || code == STILL_ACTIVE
        }
    }
}

/// A process, identified so that PID reuse cannot fool a liveness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    /// Opaque start time, 0 = unknown. Linux: clock ticks since boot (/proc/PID/task/PID/stat); macOS:
    /// microseconds since the epoch (kinfo_proc); Windows: the creation FILETIME (100 ns units
    /// since 1601). Only compared for equality, on one host.
    pub start_time: u64,
}

impl ProcessId {
    pub fn current() -> Self {
        let pid = std::process::id();
        ProcessId {
            pid,
            start_time: start_time(pid).unwrap_or(0),
        }
    }

    /// True while the process exists and is the same one (same start time when both are known).
    pub fn is_alive(&self) -> bool {
        if self.pid == 0 || !pid_exists(self.pid) {
            return false;
        }
        match (self.start_time, start_time(self.pid)) {
            (0, _) | (_, None) => true,
            (want, Some(have)) => want == have,
        }
    }
}

#[cfg(unix)]
fn pid_exists(pid: u32) -> bool {
    if pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 performs only the existence and permission check.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    (r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)) && !is_zombie(pid)
}

/// A process that exited but was not reaped yet still answers `kill(pid, 0)`. It holds nothing
/// any more, and its reaper may be the very process waiting for it (the primary's event loop
/// reaps cluster workers), so it counts as dead.
#[cfg(target_os = "linux")]
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next().map(|s| s == "Z" || s == "X"))
        })
        .unwrap_or(false)
}

/// macOS: `kp_proc.p_stat == SZOMB` in the process's `kinfo_proc` (see [`kinfo_proc`]).
#[cfg(target_os = "macos")]
fn is_zombie(pid: u32) -> bool {
    const SZOMB: u8 = 5; // <sys/proc.h>
    kinfo_proc(pid).is_some_and(|k| k.stat == SZOMB)
}

#[cfg(all(unix, not(any(target_os = "linux", target_os = "macos"))))]
fn is_zombie(_pid: u32) -> bool {
    false
}

#[cfg(windows)]
fn pid_exists(pid: u32) -> bool {
    win::pid_exists(pid)
}

#[cfg(not(any(unix, windows)))]
fn pid_exists(_pid: u32) -> bool {
    true
}

/// Start time of `pid`, from field 22 of the stat file of its main thread. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted from the last ')'.
///
/// `/proc/PID/task/PID/stat` holds the same start time as `/proc/PID/stat` (a process's start
/// time is its main thread's), but qemu-user fakes `/proc/self/stat` and `/proc/<own pid>/stat`
/// for the emulated process with a start time of its own, so the emulated process and the
/// others would disagree about it; the task file is read for real. `/proc/PID/stat` remains the
/// fallback.
#[cfg(target_os = "linux")]
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat"))
        .or_else(|_| std::fs::read_to_string(format!("/proc/{pid}/stat")))
        .ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    // after ')' come fields 3.. ; starttime is field 22, i.e. the 20th of these.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The fields of a macOS `struct kinfo_proc` that cluster-shm reads.
#[cfg(target_os = "macos")]
struct KinfoProc {
    /// `kp_proc.p_un.__p_starttime`, in microseconds since the epoch.
    start_us: u64,
    /// `kp_proc.p_stat` (SIDL 1, SRUN 2, SSLEEP 3, SSTOP 4, SZOMB 5).
    stat: u8,
}

/// `sysctl {CTL_KERN, KERN_PROC, KERN_PROC_PID, pid}`, which fills a `struct kinfo_proc` (648
/// bytes on every 64-bit macOS). The `libc` crate has no `kinfo_proc` for Apple, so the buffer is
/// raw, read at the offsets of `struct extern_proc` (<sys/proc.h>), its first member:
/// `p_un.__p_starttime` (a `struct timeval`: `time_t` seconds at 0, `int32` microseconds at 8),
/// `p_stat` (a `char` at 36) and `p_pid` (an `int32` at 40). The PID read back must be the one
/// asked for, which guards the offsets.
#[cfg(target_os = "macos")]
fn kinfo_proc(pid: u32) -> Option<KinfoProc> {
    if pid == 0 || pid > i32::MAX as u32 {
        return None;
    }
    let mut mib = [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PID, pid as libc::c_int];
    // A larger, 8-aligned buffer is fine: the kernel writes back the length it filled, 0 when
    // there is no such process.
    #[repr(C, align(8))]
    struct Buf([u8; 1024]);
    let mut buf = Buf([0; 1024]);
    let mut len = buf.0.len();
    // SAFETY: `mib` has 4 valid entries, `buf`/`len` describe a writable, 8-aligned buffer; no
    // new value is set.
    let r = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            mib.len() as libc::c_uint,
            buf.0.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if r != 0 || !(48..=buf.0.len()).contains(&len) {
        return None;
    }
    let bytes = &buf.0[..len];
    let i64_at = |o: usize| i64::from_ne_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    let i32_at = |o: usize| i32::from_ne_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    if i32_at(40) != pid as i32 {
        return None;
    }
    let (secs, micros) = (i64_at(0), i32_at(8));
    (secs > 0).then(|| KinfoProc {
        start_us: secs as u64 * 1_000_000 + micros.clamp(0, 999_999) as u64,
        stat: bytes[36],
    })
}

/// Start time of `pid` in microseconds since the epoch (see [`kinfo_proc`]).
#[cfg(target_os = "macos")]
pub fn start_time(pid: u32) -> Option<u64> {
    kinfo_proc(pid).map(|k| k.start_us)
}

/// Creation time of `pid` (`GetProcessTimes`), in 100 ns units since 1601.
#[cfg(windows)]
pub fn start_time(pid: u32) -> Option<u64> {
    win::start_time(pid)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub fn start_time(_pid: u32) -> Option<u64> {
    None
}

/// 64 random bits from the OS, for names that cannot be guessed.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("OS random source");
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn wait_times_out_with_subsecond_timeout() {
        let w = AtomicU32::new(0);
        let t = Instant::now();
        assert_eq!(wait(&w, 0, Duration::from_millis(30)), WaitOutcome::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(25));
    }

    #[test]
    fn wait_returns_at_once_when_word_differs() {
        let w = AtomicU32::new(1);
        assert_eq!(wait(&w, 0, Duration::from_secs(5)), WaitOutcome::Changed);
    }

    #[test]
    fn wake_releases_a_waiter() {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = w.clone();
        let h = std::thread::spawn(move || {
            while w2.load(Ordering::Acquire) == 0 {
                wait(&w2, 0, Duration::from_secs(5));
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        w.store(1, Ordering::Release);
        wake(&w);
        h.join().unwrap();
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::current();
        assert!(me.is_alive());
        if me.start_time != 0 {
            assert!(!ProcessId {
                start_time: me.start_time + 1,
                ..me
            }
            .is_alive());
        }
        assert!(!ProcessId { pid: 0, start_time: 0 }.is_alive());
    }
    #[test]
    fn a_reaped_child_is_not_alive() {
        let mut child = host_child("exit 0");
        let id = ProcessId {
            pid: child.id(),
            start_time: start_time(child.id()).unwrap_or(0),
        };
        child.wait().unwrap();
        assert!(!id.is_alive(), "{id:?} is still alive after it was reaped");
    }

    /// A killed child that nobody reaped yet (a zombie on Unix; on Windows a process object kept
    /// by the parent's handle) holds nothing any more and must count as dead.
    #[test]
    fn a_killed_child_not_yet_reaped_is_not_alive() {
        let mut child = host_child(if cfg!(windows) {
            "ping -n 30 127.0.0.1"
        } else {
            "sleep 30"
        });
        let id = ProcessId {
            pid: child.id(),
            start_time: start_time(child.id()).unwrap_or(0),
        };
        assert!(id.start_time != 0 || cfg!(not(any(target_os = "linux", target_os = "macos", windows))));
        assert!(id.is_alive(), "{id:?} is not alive while it runs");
        child.kill().unwrap();
        let t = Instant::now();
        while id.is_alive() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let dead_after = t.elapsed();
        child.wait().unwrap();
        assert!(
            dead_after < Duration::from_secs(5),
            "{id:?} still alive 5 s after it was killed"
        );
    }

    /// A child running a shell command. A shell, not this test binary: under qemu-user without
    /// binfmt_misc (the arm64 cross test) only host programs can be exec'd.
    fn host_child(command: &str) -> std::process::Child {
        #[cfg(unix)]
        let mut cmd = std::process::Command::new("sh");
        #[cfg(unix)]
        cmd.args(["-c", command]);
        #[cfg(windows)]
        let mut cmd = std::process::Command::new("cmd");
        #[cfg(windows)]
        cmd.args(["/C", command]);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    #[cfg(any(target_os = "linux", target_os = "macos", windows))]
    #[test]
    fn start_time_is_known_and_stable() {
        let me = ProcessId::current();
        assert!(me.start_time != 0);
        assert_eq!(start_time(me.pid), Some(me.start_time));
    }

    #[cfg(target_os = "macos")]
    #[test]
    fn macos_uses_a_kernel_wait() {
        if std::env::var_os("CLUSTER_SHM_DARWIN_WAIT").is_none() {
            assert_ne!(wait_mechanism(), "poll");
        }
    }
}
