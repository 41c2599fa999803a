//! Helpers for tests that run the core across real processes.
//!
//! A parent test re-executes the test binary with `--exact child_entry` and the role in
//! `CSHM_CHILD_ROLE`; the child reports to the parent with lines `@@ ...` on stdout (one
//! `write` each, so a SIGKILL never tears a line). Every child is killed and reaped by
//! [`ChildProc`]'s `Drop`, every segment closed and unlinked by [`SegGuard`]'s `Drop`, and every
//! wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cluster_shm::core::{platform, Attach, Batch, Budget, Endpoint, Inbox, Outbox, SendError, Shared, WriteError};

pub const ROLE_ENV: &str = "CSHM_CHILD_ROLE";
pub const SEG_ENV: &str = "CSHM_SEGMENT";
/// The name of the child entry test in every test binary that uses these helpers.
pub const CHILD_TEST: &str = "child_entry";
/// The longest a child may live, whatever happens to its parent.
pub const CHILD_MAX_LIFE: Duration = Duration::from_secs(60);

// ---- segments -------------------------------------------------------------------------------

/// Owns a segment created by the test: closes the cluster and unlinks the name on drop, also
/// when the test panics.
pub struct SegGuard(pub Arc<Shared>);

impl SegGuard {
    pub fn create(workers: u32, ring: u32) -> SegGuard {
        SegGuard(Shared::create(workers, ring).expect("create segment"))
    }
    pub fn name(&self) -> String {
        self.0.name().to_owned()
    }
    /// The test's own endpoint: the primary's.
    pub fn primary(&self) -> Endpoint {
        Endpoint::attach(self.0.clone(), Attach::Primary).expect("attach primary")
    }
}

impl std::ops::Deref for SegGuard {
    type Target = Arc<Shared>;
    fn deref(&self) -> &Arc<Shared> {
        &self.0
    }
}

impl Drop for SegGuard {
    fn drop(&mut self) {
        self.0.close_cluster();
        self.0.unlink();
    }
}

#[cfg(target_os = "linux")]
pub fn segment_exists(name: &str) -> bool {
    std::path::Path::new(&format!("/dev/shm{name}")).exists()
}

// ---- child processes ------------------------------------------------------------------------

/// A child process running this test binary's `child_entry` in some role.
pub struct ChildProc {
    child: Child,
    pub pid: u32,
    lines: Receiver<String>,
    /// Every stdout line seen so far (for failure messages).
    pub log: Vec<String>,
    reader: Option<JoinHandle<()>>,
    reaped: Option<ExitStatus>,
    pub role: String,
    /// The pipe to the child's stdin (`spawn_with_stdin`), for `send`.
    stdin: Option<ChildStdin>,
}

impl ChildProc {
    /// Starts a child with no stdin.
    pub fn spawn(role: &str, segment: &str, env: &[(&str, String)]) -> ChildProc {
        Self::start(role, segment, env, false)
    }

    /// Starts a child that reads lines from the parent on stdin (`send`).
    pub fn spawn_with_stdin(role: &str, segment: &str, env: &[(&str, String)]) -> ChildProc {
        Self::start(role, segment, env, true)
    }

    fn start(role: &str, segment: &str, env: &[(&str, String)], with_stdin: bool) -> ChildProc {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(ROLE_ENV, role)
            .env(SEG_ENV, segment)
            .env("RUST_BACKTRACE", "0")
            .stdin(if with_stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn child");
        let pid = child.id();
        let out = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildProc {
            child,
            pid,
            lines: rx,
            log: vec![],
            reader: Some(reader),
            reaped: None,
            role: role.to_owned(),
            stdin,
        }
    }

    /// Sends the child one line on its stdin (a child started with `spawn_with_stdin`).
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("a child started with spawn_with_stdin");
        stdin.write_all(format!("{line}\n").as_bytes()).expect("write to child");
        stdin.flush().expect("flush child stdin");
    }

    /// The next protocol line (text after `@@ `), or `None` when the timeout passed or the
    /// child's stdout closed.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    // libtest may print "test child_entry ... " in front of the first line.
                    if let Some(at) = l.find("@@ ") {
                        return Some(l[at + 3..].to_owned());
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// A protocol line available right now, if any.
    pub fn try_line(&mut self) -> Option<String> {
        while let Ok(l) = self.lines.try_recv() {
            self.log.push(l.clone());
            if let Some(at) = l.find("@@ ") {
                return Some(l[at + 3..].to_owned());
            }
        }
        None
    }

    /// Waits for a line starting with `prefix`; panics (with the child's output) otherwise.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while let Some(l) = self.next_line(deadline.saturating_duration_since(Instant::now())) {
            if l.starts_with(prefix) {
                return l;
            }
            if l.starts_with("BAD") || l.starts_with("FAIL") {
                panic!(
                    "child {} ({}) reported: {l}\n{}",
                    self.role,
                    self.pid,
                    self.log.join("\n")
                );
            }
        }
        panic!(
            "child {} ({}) did not print '{prefix}' within {timeout:?}; output:\n{}",
            self.role,
            self.pid,
            self.log.join("\n")
        );
    }

    /// All remaining protocol lines until stdout closes (after the child died), bounded.
    pub fn rest_of_lines(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut v = vec![];
        while let Some(l) = self.next_line(deadline.saturating_duration_since(Instant::now())) {
            v.push(l);
        }
        v
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().expect("try_wait");
        }
        self.reaped
    }

    /// Waits for the child to exit on its own; `None` when it is still running at the deadline.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                self.join_reader();
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for a successful exit; panics with the child's output otherwise.
    pub fn expect_success(&mut self, timeout: Duration) {
        match self.wait_timeout(timeout) {
            Some(s) if s.success() => {}
            other => {
                let _ = self.kill();
                let rest = self.rest_of_lines(Duration::from_millis(500));
                let _ = rest;
                panic!(
                    "child {} ({}) did not exit successfully within {timeout:?}: {other:?}; output:\n{}",
                    self.role,
                    self.pid,
                    self.log.join("\n")
                );
            }
        }
    }

    /// SIGKILL without reaping: the child stays a zombie until `reap`.
    pub fn sigkill(&mut self) {
        // SAFETY: plain syscall on our own, not yet reaped, child.
        let r = unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        assert_eq!(r, 0, "kill {}", self.pid);
    }

    /// Blocks until the child is dead, without reaping it (waitid with WNOWAIT).
    pub fn wait_dead_unreaped(&mut self) {
        // SAFETY: waitid on our own child; `info` is a valid out-parameter.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            );
            assert_eq!(r, 0, "waitid {}", self.pid);
        }
    }

    /// Reaps a dead child (bounded). Returns the exit status.
    pub fn reap(&mut self) -> ExitStatus {
        self.wait_timeout(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("child {} not reaped within 10 s", self.pid))
    }

    /// SIGKILL, then reap (bounded). Returns the exit status.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(s) = self.try_status() {
            return s;
        }
        let _ = self.child.kill(); // SIGKILL on Unix
        let s = self
            .wait_timeout(Duration::from_secs(10))
            .expect("a SIGKILLed child is reaped within 10 s");
        self.join_reader();
        s
    }

    fn join_reader(&mut self) {
        // The pipe closes when the child dies (no grandchildren hold it), so this ends promptly.
        if let Some(r) = self.reader.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !r.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if r.is_finished() {
                let _ = r.join();
            }
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            let _ = self.child.kill();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }
    }
}

/// In a child: the role, or `None` in a normal test run.
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// In a child: the number in `name`, or a `BAD` report and exit.
pub fn required_u64(name: &str) -> u64 {
    env_u64(name).unwrap_or_else(|| bad(format!("missing {name}")))
}

/// Prints a protocol line (one `write`: stdout is line buffered and lines are short).
#[macro_export]
macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write;
        let line = format!("@@ {}\n", format!($($t)*));
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }};
}

/// In a child: reports `BAD <msg>` (the parent's `expect_line` panics with it) and exits with 3.
pub fn bad(msg: String) -> ! {
    report!("BAD {msg}");
    std::process::exit(3)
}

/// In a child: opens the parent's segment (named in `SEG_ENV`) and starts the watchdog; reports
/// `FAIL` and exits when it cannot.
pub fn open_child_segment() -> (String, Arc<Shared>) {
    let name = std::env::var(SEG_ENV).expect("CSHM_SEGMENT");
    let shared = Shared::open(&name).unwrap_or_else(|e| {
        report!("FAIL open {e}");
        std::process::exit(1)
    });
    child_watchdog(Some(shared.clone()));
    (name, shared)
}

/// In a child: attaches to the segment `how`; reports `FAIL` and exits when it cannot.
pub fn attach_or_exit(shared: Arc<Shared>, how: Attach) -> Arc<Endpoint> {
    match Endpoint::attach(shared, how) {
        Ok(ep) => Arc::new(ep),
        Err(e) => {
            report!("FAIL attach {how:?}: {e:?}");
            std::process::exit(1)
        }
    }
}

/// In a child: exits the process when the parent is gone, the cluster was closed, or the child
/// lived too long, so that no child outlives a failed test.
pub fn child_watchdog(shared: Option<Arc<Shared>>) {
    let parent = std::os::unix::process::parent_id();
    let start = Instant::now();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(20));
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(2);
        }
        if shared.as_ref().is_some_and(|s| s.is_closed()) {
            std::process::exit(0);
        }
        if start.elapsed() > CHILD_MAX_LIFE {
            std::process::exit(4);
        }
    });
}

// ---- payloads -------------------------------------------------------------------------------

pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// splitmix64.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// A seed from `CSHM_SEED`, or a random one; printed so that a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let s = env_u64("CSHM_SEED").unwrap_or_else(platform::random_u64);
    println!("{test}: seed {s} (replay with CSHM_SEED={s})");
    s
}

const PATTERN_LEN: usize = 1 << 16;

fn pattern() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        let mut r = Rng(0x5eed);
        (0..PATTERN_LEN / 8).flat_map(|_| r.next_u64().to_le_bytes()).collect()
    })
}

/// Fills `out` with the cyclic pattern starting at `off`.
pub fn fill_cyclic(off: u64, out: &mut [u8]) {
    let p = pattern();
    let mut at = (off % PATTERN_LEN as u64) as usize;
    let mut done = 0;
    while done < out.len() {
        let n = (PATTERN_LEN - at).min(out.len() - done);
        out[done..done + n].copy_from_slice(&p[at..at + n]);
        done += n;
        at = 0;
    }
}

/// Whether `data` equals the cyclic pattern starting at `off`.
pub fn is_cyclic(off: u64, data: &[u8]) -> bool {
    let p = pattern();
    let mut at = (off % PATTERN_LEN as u64) as usize;
    let mut done = 0;
    while done < data.len() {
        let n = (PATTERN_LEN - at).min(data.len() - done);
        if data[done..done + n] != p[at..at + n] {
            return false;
        }
        done += n;
        at = 0;
    }
    true
}

/// Message `seq` of a numbered stream: its first 8 bytes (or fewer) are `seq`, the rest a
/// pattern slice chosen by `seq`.
pub fn seq_payload(seq: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_cyclic(mix(seq), &mut v);
    let s = seq.to_le_bytes();
    let k = len.min(8);
    v[..k].copy_from_slice(&s[..k]);
    v
}

pub fn is_seq_payload(seq: u64, data: &[u8]) -> bool {
    let s = seq.to_le_bytes();
    let k = data.len().min(8);
    data[..k] == s[..k] && is_cyclic(mix(seq).wrapping_add(k as u64), &data[k..])
}

/// Reads the sequence number in front of a `seq_payload` of at least 8 bytes.
pub fn payload_seq(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(..8)?.try_into().ok()?))
}

pub fn checksum(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x0000_0100_0000_01b3);
    }
    for &b in words.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ data.len() as u64
}

/// A self-checking message: `run u32 | i u32 | len u32 | 0 u32 | checksum(body) u64 | body`.
pub const CHECKED_HEADER: usize = 24;

pub fn checked_msg(run: u32, i: u32, len: usize) -> Vec<u8> {
    assert!(len >= CHECKED_HEADER);
    let mut v = vec![0u8; len];
    fill_cyclic(mix(((run as u64) << 32) | i as u64), &mut v[CHECKED_HEADER..]);
    let sum = checksum(&v[CHECKED_HEADER..]);
    v[0..4].copy_from_slice(&run.to_le_bytes());
    v[4..8].copy_from_slice(&i.to_le_bytes());
    v[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    v[16..24].copy_from_slice(&sum.to_le_bytes());
    v
}

/// `(run, i)` of an intact checked message, or why it is not intact.
pub fn check_msg(p: &[u8]) -> Result<(u32, u32), String> {
    if p.len() < CHECKED_HEADER {
        return Err(format!("message of {} bytes is shorter than its header", p.len()));
    }
    let u32_at = |o: usize| u32::from_le_bytes(p[o..o + 4].try_into().unwrap());
    let (run, i, len) = (u32_at(0), u32_at(4), u32_at(8) as usize);
    if len != p.len() {
        return Err(format!(
            "run {run} msg {i}: length field {len} but {} bytes arrived",
            p.len()
        ));
    }
    let sum = u64::from_le_bytes(p[16..24].try_into().unwrap());
    let body = &p[CHECKED_HEADER..];
    if checksum(body) != sum {
        return Err(format!("run {run} msg {i} ({len} bytes): checksum mismatch"));
    }
    if !is_cyclic(mix(((run as u64) << 32) | i as u64), body) {
        return Err(format!(
            "run {run} msg {i} ({len} bytes): body differs from its pattern"
        ));
    }
    Ok((run, i))
}

// ---- sending and receiving ------------------------------------------------------------------

#[derive(Default, Debug, Clone, Copy)]
pub struct WaitStats {
    /// Sleeps on the space bell.
    pub waits: u64,
    /// Sleeps that ended by timeout (with a live, draining reader: a lost wakeup).
    pub timeouts: u64,
}

/// Writes a whole message with `try_write`, sleeping on the space bell while the ring is full
/// (the eventcount protocol of the outbox's sender thread). Returns false when `stop()` said so.
pub fn write_blocking(
    out: &Outbox,
    to: u32,
    kind: u8,
    data: &[u8],
    nap: Duration,
    stats: &mut WaitStats,
    stop: &dyn Fn() -> bool,
) -> Result<bool, WriteError> {
    let ep = out.endpoint();
    let bell = ep.space_bell();
    let ring = ep.ring_to(to);
    let max_frame = ep.geometry().max_frame_payload();
    loop {
        if out.try_write(to, kind, data)? {
            return Ok(true);
        }
        if stop() {
            return Ok(false);
        }
        let seq = bell.seq.load(Ordering::Acquire);
        ring.announce_writer_waiting();
        if ring.has_room_for(data.len(), max_frame) {
            continue;
        }
        stats.waits += 1;
        if platform::wait(&bell.seq, seq, nap) == platform::WaitOutcome::TimedOut {
            stats.timeouts += 1;
        }
    }
}

/// `Outbox::send_queued` of a `BYTES` message without timeout (the one call site of it, to
/// follow its signature).
pub fn queue_send(
    out: &Arc<Outbox>,
    to: u32,
    data: Vec<u8>,
    done: Box<dyn FnOnce(Result<(), SendError>) + Send>,
) -> Result<(), WriteError> {
    out.send_queued(to, cluster_shm::core::kind::BYTES, &data, None, false, done)
}

/// Drains into `batch`; when there is nothing, sleeps on the data bell (eventcount: announce,
/// re-check, wait) for at most `nap`, then drains again.
pub fn drain_or_sleep(inbox: &mut Inbox, ep: &Endpoint, batch: &mut Batch, budget: Budget, nap: Duration) {
    inbox.drain(ep, batch, budget);
    if !batch.is_empty() {
        return;
    }
    let bell = ep.data_bell();
    let seq = bell.seq.load(Ordering::Acquire);
    bell.sleeping.store(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    if !inbox.has_work(ep) {
        platform::wait(&bell.seq, seq, nap);
    }
    bell.sleeping.store(0, Ordering::Relaxed);
    inbox.drain(ep, batch, budget);
}

/// CPU time consumed by the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-parameter; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A flag plus a deadline, for loops that must end.
pub struct Deadline(pub Instant);

impl Deadline {
    pub fn after(d: Duration) -> Deadline {
        Deadline(Instant::now() + d)
    }
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }
    pub fn left(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

pub fn set_and_ring(stop: &AtomicBool, ep: &Endpoint) {
    stop.store(true, Ordering::Release);
    cluster_shm::core::endpoint::ring_bell_always(ep.data_bell());
}
