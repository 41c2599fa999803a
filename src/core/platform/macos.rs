//! macOS: wait/wake through the kernel's address waits, process identity through `sysctl`
//! `KERN_PROC_PID`.
//!
//! Wait/wake: every symbol is looked up with `dlsym` once per process:
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

pub fn wait_mechanism() -> &'static str {
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
        Backend::Poll => super::poll::poll_wait(word, expected, timeout),
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

/// `kill(pid, 0)`, and not a zombie (see [`super::unix::pid_exists`]).
pub fn pid_exists(pid: u32) -> bool {
    super::unix::pid_exists(pid, is_zombie)
}

/// `kp_proc.p_stat == SZOMB` in the process's `kinfo_proc` (see [`kinfo_proc`]).
fn is_zombie(pid: u32) -> bool {
    const SZOMB: u8 = 5; // <sys/proc.h>
    kinfo_proc(pid).is_some_and(|k| k.stat == SZOMB)
}

/// The fields of a macOS `struct kinfo_proc` that cluster-shm reads.
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
pub fn start_time(pid: u32) -> Option<u64> {
    kinfo_proc(pid).map(|k| k.start_us)
}
