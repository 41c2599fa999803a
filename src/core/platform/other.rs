//! Any other system: wait by polling, no process start times, and liveness from `kill(pid, 0)`
//! where there is one (no zombie check) or not at all.

use super::WaitOutcome;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Polls the word (see [`super::poll::poll_wait`]).
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitOutcome {
    super::poll::poll_wait(word, expected, timeout)
}

/// Nothing to do: waiters poll.
pub fn wake(_word: &AtomicU32) {}

pub fn wait_mechanism() -> &'static str {
    "poll"
}

#[cfg(unix)]
pub fn pid_exists(pid: u32) -> bool {
    super::unix::pid_exists(pid, |_| false)
}

#[cfg(not(unix))]
pub fn pid_exists(_pid: u32) -> bool {
    true
}

pub fn start_time(_pid: u32) -> Option<u64> {
    None
}
