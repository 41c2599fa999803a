//! What differs per operating system, behind one small interface. This file is the contract;
//! `linux.rs`, `macos.rs` and `windows.rs` implement it (`other.rs` for any other system), with
//! `unix.rs` (PID liveness) and `poll.rs` (the polling fallback) shared between them.
//!
//! - [`wait`] / [`wake`]: block on a 32-bit word in shared memory until it changes, across
//!   processes. The signatures are the same everywhere; each OS has its own mechanism:
//!   - Linux: a shared futex (without `FUTEX_PRIVATE_FLAG`, which would not cross processes).
//!   - macOS: `os_sync_wait_on_address_with_timeout` / `os_sync_wake_by_address_all` with the
//!     `SHARED` flags (macOS 14.4+), else `__ulock_wait` / `__ulock_wake` with
//!     `UL_COMPARE_AND_WAIT_SHARED`, else a bounded sleep-poll. All three are resolved once at
//!     run time with `dlsym`, so one binary runs on every macOS version Node supports.
//!   - Windows: `WaitOnAddress` does not cross processes, so a word inside a registered
//!     segment (see `register_segment`) gets a named manual-reset Event, named from the
//!     segment's name and the word's offset in it; words outside any segment (process-local,
//!     e.g. in tests) use `WaitOnAddress` / `WakeByAddressAll`.
//!   - Elsewhere: a bounded sleep-poll.
//! - [`ProcessId`]: a PID plus the process start time, so that a reused PID is never mistaken
//!   for the process that held an index or a permit (Linux: `/proc/PID/stat`; macOS: `sysctl`
//!   `KERN_PROC_PID`; Windows: `GetProcessTimes`).
//! - [`random_u64`]: unguessable names.
//!
//! Each OS module provides `wait`, `wake`, `wait_mechanism`, `start_time` and `pid_exists`
//! with the signatures below (Windows also `register_segment` / `unregister_segment`).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use self::linux as os;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use self::macos as os;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use self::windows as os;

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod other;
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
use self::other as os;

#[cfg(not(target_os = "linux"))]
mod poll;
#[cfg(unix)]
mod unix;

#[cfg(test)]
mod tests;

/// Why [`wait`] returned. Every caller re-checks its condition, so the variants are advisory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken, or the word no longer held `expected`.
    Changed,
    /// The timeout elapsed.
    TimedOut,
}

/// Sleeps while `*word == expected`, at most `timeout`. Spurious returns are allowed.
#[inline]
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitOutcome {
    os::wait(word, expected, timeout)
}

/// Wakes every thread of every process waiting on `word` (Windows: see `windows.rs` for the
/// one race).
#[inline]
pub fn wake(word: &AtomicU32) {
    os::wake(word)
}

/// Which wait/wake mechanism this process uses (for diagnostics and tests): `futex`,
/// `os_sync_wait_on_address`, `ulock`, `named-event` or `poll`.
pub fn wait_mechanism() -> &'static str {
    os::wait_mechanism()
}

/// Windows only: makes the words of a mapped segment wake across processes. Called by
/// `segment::Segment` for each mapping it makes; undone by [`unregister_segment`].
#[cfg(windows)]
pub fn register_segment(base: *mut u8, len: usize, name: &str) {
    os::register_segment(base, len, name)
}

/// Windows only: forgets a mapping (at unmap) and closes its events.
#[cfg(windows)]
pub fn unregister_segment(base: *mut u8) {
    os::unregister_segment(base)
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
    /// This process.
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

/// Start time of `pid` (see [`ProcessId::start_time`]), None if it cannot be read.
pub fn start_time(pid: u32) -> Option<u64> {
    os::start_time(pid)
}

/// True while `pid` names a process that has not exited (a zombie counts as exited).
fn pid_exists(pid: u32) -> bool {
    os::pid_exists(pid)
}

/// 64 random bits from the OS, for names that cannot be guessed.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("OS random source");
    u64::from_le_bytes(b)
}
