//! Windows: wait/wake through named events, process identity through process handles.
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

/// Makes the words of the mapping at `base` wake across processes (see the module docs).
pub fn register_segment(base: *mut u8, len: usize, name: &str) {
    let region = Arc::new(Region {
        base: base as usize,
        len,
        prefix: format!("Local\\{}", name.trim_start_matches('/')),
        events: Mutex::new(HashMap::new()),
    });
    REGIONS.write().unwrap_or_else(PoisonError::into_inner).push(region);
}

/// Forgets the mapping at `base` (at unmap) and closes its events.
pub fn unregister_segment(base: *mut u8) {
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
        Target::Unavailable => super::poll::poll_wait(word, expected, timeout),
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

pub fn wait_mechanism() -> &'static str {
    "named-event"
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
