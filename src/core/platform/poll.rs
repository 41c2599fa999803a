//! The last resort of every non-Linux system: polling the word.

use super::WaitOutcome;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Polls the word with short, growing sleeps (20 µs doubling up to 1 ms), bounded by `timeout`.
/// The last resort of every non-Linux system; a waker needs to do nothing.
pub fn poll_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitOutcome {
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
