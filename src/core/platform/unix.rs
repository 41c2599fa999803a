//! What every Unix shares: whether a PID names a running process.

/// True while `pid` names a process that has not exited: `kill(pid, 0)` finds it (EPERM: it
/// exists, but is another user's) and the OS's `is_zombie` does not call it a zombie. A process
/// that exited but was not reaped yet still answers `kill(pid, 0)`; it holds nothing any more,
/// and its reaper may be the very process waiting for it (the primary's event loop reaps
/// cluster workers), so it counts as dead.
pub fn pid_exists(pid: u32, is_zombie: fn(u32) -> bool) -> bool {
    if pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 performs only the existence and permission check.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    (r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)) && !is_zombie(pid)
}
