//! The platform interface, exercised on the OS the tests run on.

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
