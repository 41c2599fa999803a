//! Segments made, opened, shared and removed on the OS the tests run on.

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
