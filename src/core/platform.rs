//! What differs per operating system, behind one small interface:
//!
//! - [`wait`] / [`wake`]: block on a 32-bit word in shared memory until it changes (Linux: a
//!   shared futex, i.e. without `FUTEX_PRIVATE_FLAG`, which would not cross processes).
//! - [`ProcessId`]: a PID plus the process start time, so that a reused PID is never mistaken
//!   for the process that held an index or a permit.
//!
//! Other Unix systems fall back to a bounded sleep-poll until their native wait lands (macOS:
//! `os_sync_wait_on_address` / `__ulock_wait` with the shared flag).

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
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
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

/// Portable fallback: poll the word with short, growing sleeps (bounded by `timeout`).
#[cfg(not(target_os = "linux"))]
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitOutcome {
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

#[cfg(not(target_os = "linux"))]
pub fn wake(_word: &AtomicU32) {}

/// A process, identified so that PID reuse cannot fool a liveness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    /// Opaque start time (Linux: clock ticks since boot from /proc/PID/stat); 0 = unknown.
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
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn pid_exists(_pid: u32) -> bool {
    true
}

/// Start time of `pid`, from field 22 of /proc/PID/stat. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted from the last ')'.
#[cfg(target_os = "linux")]
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    // after ')' come fields 3.. ; starttime is field 22, i.e. the 20th of these.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(not(target_os = "linux"))]
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
}
