//! Linux: a shared futex for wait/wake (without `FUTEX_PRIVATE_FLAG`, which would not cross
//! processes), and process identity from `/proc`.

use super::WaitOutcome;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// `FUTEX_WAIT` on the shared word, bounded by `timeout`.
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

/// `FUTEX_WAKE` of every waiter (`i32::MAX` of them).
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

pub fn wait_mechanism() -> &'static str {
    "futex"
}

/// `kill(pid, 0)`, and not a zombie (see [`super::unix::pid_exists`]).
pub fn pid_exists(pid: u32) -> bool {
    super::unix::pid_exists(pid, is_zombie)
}

/// State `Z` (zombie) or `X` (dead) in `/proc/PID/stat`.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next().map(|s| s == "Z" || s == "X"))
        })
        .unwrap_or(false)
}

/// Start time of `pid`, from field 22 of the stat file of its main thread. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted from the last ')'.
///
/// `/proc/PID/task/PID/stat` holds the same start time as `/proc/PID/stat` (a process's start
/// time is its main thread's), but qemu-user fakes `/proc/self/stat` and `/proc/<own pid>/stat`
/// for the emulated process with a start time of its own, so the emulated process and the
/// others would disagree about it; the task file is read for real. `/proc/PID/stat` remains the
/// fallback.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat"))
        .or_else(|_| std::fs::read_to_string(format!("/proc/{pid}/stat")))
        .ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    // after ')' come fields 3.. ; starttime is field 22, i.e. the 20th of these.
    after.split_whitespace().nth(19)?.parse().ok()
}
