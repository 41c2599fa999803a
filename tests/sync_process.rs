//! The shared-state core (semaphores, the robust map lock, named objects) across real
//! processes. The test binary re-executes itself (`child_entry`, role in `CSHM_CHILD_ROLE`,
//! segment name in `CSHM_SEGMENT`: the harness of tests/common); the parent drives, kills and
//! checks the children.
//!
//! Every child is SIGKILLed and reaped by [`ChildProc`]'s `Drop`, every segment closed and
//! unlinked by [`SegGuard`]'s `Drop` (also when a test panics), every wait is bounded, and each
//! child exits by itself when its parent dies, the cluster is closed, or it lived a minute. The
//! tests take a common lock and run one at a time: they measure latencies and count on the CPUs.
//! Randomised tests print their seed; `CSHM_SEED=<n>` replays one.

#![cfg(unix)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cluster_shm::core::layout::MIN_RING;
use cluster_shm::core::map::{kind, SharedMap};
use cluster_shm::core::objects::{self, Kind, ObjectError, Region};
use cluster_shm::core::semaphore::{AcquireError, Acquired, Semaphore, Waiter};
use cluster_shm::core::{Attach, Endpoint};

use common::*;

// ---- harness --------------------------------------------------------------------------------

/// One test at a time (timings, and only a few CPUs to share).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for `done` from every child and its exit; returns the `done` lines.
fn collect_done(kids: &mut [ChildProc], timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut out = vec![];
    for k in kids.iter_mut() {
        out.push(k.expect_line("done", deadline.saturating_duration_since(Instant::now())));
    }
    for k in kids.iter_mut() {
        k.expect_success(deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(2));
    }
    out
}

/// Starts `procs` children in `role` (children that report `ready`, wait for `go`, run `ITERS`
/// iterations and report `done`), their `MODE` cycling through `modes`; lets them go together
/// once all are ready and waits until all are done. Returns their `done` lines and how long
/// they took from the go.
fn run_contenders(role: &str, seg: &SegGuard, procs: usize, iters: u64, modes: &[&str]) -> (Vec<String>, Duration) {
    let mut kids: Vec<ChildProc> = (0..procs)
        .map(|i| {
            ChildProc::spawn_with_stdin(
                role,
                &seg.name(),
                &[
                    ("ITERS", iters.to_string()),
                    ("MODE", modes[i % modes.len()].to_string()),
                ],
            )
        })
        .collect();
    for k in kids.iter_mut() {
        k.expect_line("ready", Duration::from_secs(10));
    }
    let t0 = Instant::now();
    for k in kids.iter_mut() {
        k.send("go");
    }
    let done = collect_done(&mut kids, Duration::from_secs(25));
    (done, t0.elapsed())
}

/// `name=<u64>` in a report line.
fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

/// Runs `f` on another thread and panics if it does not finish within `limit` (a hang in the
/// core must fail the test, not stall it).
fn bounded<T: Send + 'static>(what: &str, limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(_) => panic!("{what} did not return within {limit:?} (hang)"),
    }
}

fn epoch_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

// ---- child side -----------------------------------------------------------------------------

/// Opens the segment, starts the watchdog and attaches to a free worker index.
fn child_attach() -> Arc<Endpoint> {
    attach_or_exit(open_child_segment().1, Attach::Any)
}

/// Reads one line from the parent.
fn child_read_line() -> String {
    let mut s = String::new();
    std::io::stdin()
        .read_line(&mut s)
        .unwrap_or_else(|e| bad(format!("stdin {e}")));
    s.trim().to_owned()
}

/// Waits for the parent's `go` on stdin.
fn child_wait_go() {
    let l = child_read_line();
    if l != "go" {
        bad(format!("expected go, got {l:?}"));
    }
}

/// A child's contended loop: reports `ready`, waits for the parent's `go`, then `ITERS` times
/// takes a permit of `sem` (spinning on `try_acquire`, or queued on a `Waiter` when `MODE` is
/// `waiter`) and runs `hold(i)`, which gives it back. Returns how many permits came `Recovered`.
fn acquire_loop(sem: &Semaphore, mut hold: impl FnMut(u64)) -> u64 {
    let use_waiter = std::env::var("MODE").as_deref() == Ok("waiter");
    let waiter = Waiter::new(sem.clone());
    let n = required_u64("ITERS");
    report!("ready");
    child_wait_go();
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut recovered = 0;
    for i in 0..n {
        let a = if use_waiter {
            waiter_acquire(&waiter, i, Duration::from_secs(20)).unwrap_or_else(|e| bad(format!("acquire {i}: {e:?}")))
        } else {
            spin_acquire(sem, deadline)
        };
        if a != Acquired::Clean {
            recovered += 1;
        }
        hold(i);
    }
    recovered
}

/// Acquires by spinning on `try_acquire` (yielding after a few tries).
fn spin_acquire(sem: &Semaphore, deadline: Instant) -> Acquired {
    let mut spins = 0u32;
    loop {
        if let Some(a) = sem.try_acquire() {
            return a;
        }
        spins = spins.wrapping_add(1);
        if spins < 32 {
            std::hint::spin_loop();
        } else {
            thread::yield_now();
        }
        if spins.is_multiple_of(1024) && Instant::now() > deadline {
            bad(format!("no permit after {spins} tries"));
        }
    }
}

/// Acquires through this process's queued `Waiter` (the blocking path: futex sleep, sweeps).
fn waiter_acquire(w: &Arc<Waiter>, id: u64, timeout: Duration) -> Result<Acquired, AcquireError> {
    let (tx, rx) = mpsc::channel();
    w.acquire(
        id,
        Some(timeout),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv_timeout(timeout + Duration::from_secs(5))
        .unwrap_or_else(|_| bad(format!("waiter callback for {id} never ran")))
}

/// Entry point of every child process; a no-op in a normal test run.
#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "locked_counter" => child_locked_counter(),
        "map_increment" => child_map_increment(),
        "bounded_holders" => child_bounded_holders(),
        "permit_holder" => child_permit_holder(),
        "permit_waiter" => child_permit_waiter(),
        "map_writer" => child_map_writer(),
        "object_racer" => child_object_racer(),
        other => bad(format!("unknown role {other}")),
    }
    std::process::exit(0);
}

// ---- 1. exact sums --------------------------------------------------------------------------

const SUM_PROCS: u64 = 4;
const SUM_ITERS: u64 = 20_000;
const SUM_KEY: &[u8] = b"plain";

fn open_sum_objects(ep: &Endpoint) -> (Semaphore, SharedMap) {
    let sem = Semaphore::open(ep, "sum.sem", 1).unwrap_or_else(|e| bad(format!("sem {e}")));
    let map = SharedMap::open(ep, "sum.map", 8, 16, 16).unwrap_or_else(|e| bad(format!("map {e}")));
    (sem, map)
}

fn read_plain(map: &SharedMap) -> u64 {
    match map.get(SUM_KEY).unwrap() {
        None => 0,
        Some((kind::BYTES, v)) if v.len() == 8 => u64::from_le_bytes(v.try_into().unwrap()),
        Some(other) => bad(format!("plain value is {other:?}")),
    }
}

/// Read-modify-write of a plain (non-atomic) value in the map, under a 1-permit semaphore.
fn child_locked_counter() {
    let ep = child_attach();
    let (sem, map) = open_sum_objects(&ep);
    let recovered = acquire_loop(&sem, |i| {
        let v = read_plain(&map);
        // Widen the window a lost exclusion would need.
        if i % 64 == 0 {
            thread::yield_now();
        }
        map.set(SUM_KEY, kind::BYTES, &(v + 1).to_le_bytes())
            .unwrap_or_else(|e| bad(format!("set {e}")));
        if !sem.release() {
            bad(format!("release {i}: this process held no permit"));
        }
    });
    report!("done recovered={recovered} held={}", sem.held());
}

/// `SharedMap::increment` alone (the map's own lock makes it atomic).
fn child_map_increment() {
    let ep = child_attach();
    let (_, map) = open_sum_objects(&ep);
    let n = required_u64("ITERS");
    report!("ready");
    child_wait_go();
    for i in 0..n {
        map.increment(b"hits", 1.0)
            .unwrap_or_else(|e| bad(format!("increment {i}: {e}")));
    }
    report!("done");
}

fn run_sum(role: &str, modes: &[&str]) -> (SegGuard, Endpoint, Duration) {
    let seg = SegGuard::create(SUM_PROCS as u32, MIN_RING);
    let primary = seg.primary();
    open_sum_objects(&primary);
    let (done, took) = run_contenders(role, &seg, SUM_PROCS as usize, SUM_ITERS, modes);
    if role == "locked_counter" {
        for d in &done {
            assert_eq!(
                field(d, "recovered"),
                0,
                "a permit was recovered with no process dead: {d}"
            );
            assert_eq!(field(d, "held"), 0, "{d}");
        }
    }
    (seg, primary, took)
}

/// 4 processes × 20k read-modify-writes of a plain value, each under a 1-permit semaphore (two
/// processes spin on try_acquire, two queue on a Waiter): no update is lost, so the semaphore
/// excludes across processes and its release publishes the guarded writes.
#[test]
fn semaphore_guarded_plain_value_sums_exactly() {
    let _serial = serial();
    let (seg, primary, took) = run_sum("locked_counter", &["spin", "waiter"]);
    let (sem, map) = open_sum_objects(&primary);
    println!("locked counter: {} acquires in {took:?}", SUM_PROCS * SUM_ITERS);
    assert_eq!(read_plain(&map), SUM_PROCS * SUM_ITERS);
    assert_eq!(sem.available(), 1);
    drop(seg);
}

/// 4 processes × 20k `SharedMap::increment` with no semaphore: the map's lock alone makes each
/// increment atomic across processes.
#[test]
fn map_increment_sums_exactly() {
    let _serial = serial();
    let (seg, primary, took) = run_sum("map_increment", &["-"]);
    let (_, map) = open_sum_objects(&primary);
    println!("map increment: {} increments in {took:?}", SUM_PROCS * SUM_ITERS);
    assert_eq!(
        map.get(b"hits").unwrap(),
        Some((kind::F64, ((SUM_PROCS * SUM_ITERS) as f64).to_le_bytes().to_vec()))
    );
    assert_eq!(map.len().unwrap(), 1);
    drop(seg);
}

// ---- 2. at most N holders -------------------------------------------------------------------

const HOLD_PERMITS: u32 = 3;
const HOLD_PROCS: usize = 6;
const HOLD_ITERS: u64 = 3_000;

fn open_hold_objects(ep: &Endpoint) -> (Semaphore, SharedMap) {
    let sem = Semaphore::open(ep, "hold.sem", HOLD_PERMITS).unwrap_or_else(|e| bad(format!("sem {e}")));
    let map = SharedMap::open(ep, "hold.map", 8, 16, 16).unwrap_or_else(|e| bad(format!("map {e}")));
    (sem, map)
}

fn child_bounded_holders() {
    let ep = child_attach();
    let (sem, map) = open_hold_objects(&ep);
    let (mut max, mut over) = (0u64, 0u64);
    let recovered = acquire_loop(&sem, |i| {
        if sem.held() != 1 {
            bad(format!("holds {} permits after one acquire", sem.held()));
        }
        let holders = map
            .increment(b"holders", 1.0)
            .unwrap_or_else(|e| bad(format!("inc {e}")));
        max = max.max(holders as u64);
        if holders > HOLD_PERMITS as f64 {
            over += 1;
        }
        // Hold the permit a little, sometimes across a reschedule.
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(5) {
            std::hint::spin_loop();
        }
        if i % 16 == 0 {
            thread::yield_now();
        }
        map.increment(b"holders", -1.0)
            .unwrap_or_else(|e| bad(format!("dec {e}")));
        if !sem.release() {
            bad(format!("release {i}: no permit held"));
        }
    });
    report!("done max={max} over={over} recovered={recovered}");
}

/// 6 processes contend for a 3-permit semaphore; a holder counter kept in a shared map
/// (incremented after acquire, decremented before release) never exceeds 3.
#[test]
fn semaphore_of_3_never_has_more_than_3_holders() {
    let _serial = serial();
    let seg = SegGuard::create(HOLD_PROCS as u32, MIN_RING);
    let primary = seg.primary();
    let (sem, map) = open_hold_objects(&primary);
    let (done, took) = run_contenders("bounded_holders", &seg, HOLD_PROCS, HOLD_ITERS, &["spin", "waiter"]);
    let max = done.iter().map(|d| field(d, "max")).max().unwrap();
    println!(
        "holders: {} acquires in {took:?}, max concurrent holders {max}",
        HOLD_PROCS as u64 * HOLD_ITERS
    );
    for d in &done {
        assert_eq!(field(d, "over"), 0, "more than {HOLD_PERMITS} holders: {d}");
        assert_eq!(field(d, "recovered"), 0, "{d}");
        assert!(field(d, "max") <= HOLD_PERMITS as u64, "{d}");
    }
    assert!(
        max >= 2,
        "the processes never held permits at the same time (max {max}): the test proved nothing"
    );
    assert_eq!(
        map.get(b"holders").unwrap(),
        Some((kind::F64, 0f64.to_le_bytes().to_vec()))
    );
    assert_eq!(sem.available(), HOLD_PERMITS);
    drop(seg);
}

// ---- 3. a holder SIGKILLed ------------------------------------------------------------------

fn child_permit_holder() {
    let ep = child_attach();
    let sem = Semaphore::open(&ep, &std::env::var("SEM").unwrap(), 1).unwrap_or_else(|e| bad(format!("sem {e}")));
    match sem.try_acquire() {
        Some(Acquired::Clean) => {}
        other => bad(format!("holder could not take the free permit: {other:?}")),
    }
    report!("holding index={}", ep.index());
    loop {
        thread::sleep(Duration::from_secs(1));
    }
}

fn child_permit_waiter() {
    let ep = child_attach();
    let sem = Semaphore::open(&ep, &std::env::var("SEM").unwrap(), 1).unwrap_or_else(|e| bad(format!("sem {e}")));
    let waiter = Waiter::new(sem.clone());
    report!("waiting");
    let r = waiter_acquire(&waiter, 1, Duration::from_secs(20));
    report!("acquired {r:?} held={}", sem.held());
    if r.is_ok() && !sem.release() {
        bad("release after acquire failed".into());
    }
    report!("done");
}

/// Starts a holder of the 1-permit semaphore `name` and a waiter queued behind it; checks that
/// the waiter does not get the permit while the holder lives.
fn holder_and_waiter(seg: &SegGuard, name: &str) -> (ChildProc, ChildProc) {
    let mut holder = ChildProc::spawn_with_stdin("permit_holder", &seg.name(), &[("SEM", name.into())]);
    holder.expect_line("holding", Duration::from_secs(10));
    let mut waiter = ChildProc::spawn_with_stdin("permit_waiter", &seg.name(), &[("SEM", name.into())]);
    waiter.expect_line("waiting", Duration::from_secs(10));
    // Several sweep periods with the holder alive: the permit must stay with it.
    thread::sleep(Duration::from_millis(350));
    if let Some(l) = waiter.try_line() {
        panic!("the waiter got past a live holder: {l}");
    }
    (holder, waiter)
}

/// A child holding a permit is SIGKILLed. (a) With no help from the primary, a Waiter in
/// another process takes the permit back within 1 s, told `Recovered`. (b) Separately, the
/// primary's `Shared::process_exited(pid)` (cluster's 'exit') hands it back at once, waking the
/// waiter. The call is made right after the holder died, before it is reaped: the waiter's
/// sweep runs every 100 ms (and, as written, takes an unreaped zombie for alive), so a
/// wake-up within a few milliseconds is the call's doing.
#[test]
fn a_killed_holder_s_permit_comes_back() {
    let _serial = serial();
    let seg = SegGuard::create(4, MIN_RING);
    let primary = seg.primary();

    // (a) the waiter's sweep.
    let sem_a = Semaphore::open(&primary, "crash.a", 1).unwrap();
    let (mut holder, mut waiter) = holder_and_waiter(&seg, "crash.a");
    let t0 = Instant::now();
    let status = holder.kill();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let got = waiter.expect_line("acquired", Duration::from_secs(5));
    let sweep_latency = t0.elapsed();
    assert!(got.starts_with("acquired Ok(Recovered) held=1"), "{got}");
    waiter.expect_line("done", Duration::from_secs(5));
    waiter.expect_success(Duration::from_secs(5));
    assert_eq!(sem_a.available(), 1);
    assert_eq!(
        sem_a.try_acquire(),
        Some(Acquired::Clean),
        "the waiter's release is a clean one"
    );

    // (b) process_exited.
    let sem_b = Semaphore::open(&primary, "crash.b", 1).unwrap();
    let (mut holder, mut waiter) = holder_and_waiter(&seg, "crash.b");
    let holder_index = {
        let l = holder.log.iter().find(|l| l.contains("@@ holding")).cloned().unwrap();
        field(&l[l.find("@@ ").unwrap() + 3..], "index") as u32
    };
    holder.sigkill();
    holder.wait_dead_unreaped();
    let t0 = Instant::now();
    let freed = seg.0.process_exited(holder.pid);
    let call = t0.elapsed();
    let got = waiter.expect_line("acquired", Duration::from_secs(5));
    let exit_latency = t0.elapsed();
    assert_eq!(
        freed,
        vec![holder_index],
        "process_exited frees the dead holder's index"
    );
    assert!(got.starts_with("acquired Ok(Recovered) held=1"), "{got}");
    waiter.expect_line("done", Duration::from_secs(5));
    waiter.expect_success(Duration::from_secs(5));
    assert_eq!(holder.reap().signal(), Some(libc::SIGKILL));
    assert_eq!(sem_b.available(), 1);

    println!(
        "permit of a SIGKILLed holder: waiter's sweep {sweep_latency:?}; process_exited {exit_latency:?} \
         (the call itself {call:?})"
    );
    assert!(
        sweep_latency < Duration::from_secs(1),
        "sweep recovery took {sweep_latency:?}"
    );
    assert!(
        exit_latency < Duration::from_millis(100),
        "process_exited → waiter acquired took {exit_latency:?}"
    );
    drop(seg);
}

// ---- 4. the map lock when writers die -------------------------------------------------------

const MAP_VALUE: u64 = 48 * 1024;
/// Keys only ever set (one that disappears was torn by a kill and dropped by the repair).
const SET_KEYS: u64 = 8;
/// Keys set and deleted.
const DEL_KEYS: u64 = 4;
const KILLS: usize = 20;

fn map_key(i: u64) -> Vec<u8> {
    if i < SET_KEYS {
        format!("set{i}").into_bytes()
    } else {
        format!("del{i}").into_bytes()
    }
}

fn open_crash_map(ep: &Endpoint) -> Result<SharedMap, ObjectError> {
    SharedMap::open(ep, "crash.map", 16, 16, MAP_VALUE)
}

/// A self-checking value: `len u32 | key u32 | tag u64 | bytes of mix(tag, position)`.
fn map_value(key: u64, tag: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    v[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    v[4..8].copy_from_slice(&(key as u32).to_le_bytes());
    v[8..16].copy_from_slice(&tag.to_le_bytes());
    for (j, chunk) in v[16..].chunks_mut(8).enumerate() {
        let w = mix(tag ^ ((j as u64) << 40)).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
    v
}

fn check_value(key: u64, v: &[u8]) -> Result<(), String> {
    if v.len() < 16 {
        return Err(format!("key {key}: {} bytes, shorter than the header", v.len()));
    }
    let len = u32::from_le_bytes(v[0..4].try_into().unwrap()) as usize;
    let k = u32::from_le_bytes(v[4..8].try_into().unwrap()) as u64;
    let tag = u64::from_le_bytes(v[8..16].try_into().unwrap());
    if len != v.len() || k != key {
        return Err(format!(
            "key {key}: header says len {len} key {k}, value has {} bytes",
            v.len()
        ));
    }
    if v != map_value(key, tag, len).as_slice() {
        let at = v
            .iter()
            .zip(map_value(key, tag, len))
            .position(|(a, b)| *a != b)
            .unwrap();
        return Err(format!("key {key}: {len}-byte value (tag {tag:#x}) torn at byte {at}"));
    }
    Ok(())
}

fn child_map_writer() {
    let ep = child_attach();
    let map = open_crash_map(&ep).unwrap_or_else(|e| bad(format!("map {e}")));
    let mut rng = Rng(required_u64("SEED"));
    // Values are prepared in advance so that the loop spends most of its time inside the
    // map's lock (copying), where a kill is interesting.
    let values: Vec<(u64, Vec<u8>)> = (0..48)
        .map(|_| {
            let key = rng.range(0, SET_KEYS + DEL_KEYS);
            let len = rng.range(16, MAP_VALUE + 1) as usize;
            (key, map_value(key, rng.next_u64(), len))
        })
        .collect();
    report!("ready");
    let mut ops = 0u64;
    loop {
        let (key, v) = &values[rng.range(0, values.len() as u64) as usize];
        if *key >= SET_KEYS && rng.range(0, 4) == 0 {
            map.delete(&map_key(*key)).unwrap();
        } else {
            map.set(&map_key(*key), kind::BYTES, v)
                .unwrap_or_else(|e| bad(format!("set {e}")));
        }
        ops += 1;
        if ops == 1000 {
            report!("busy");
        }
    }
}

/// Reads every key from the parent with each operation bounded; checks that every value is
/// complete and that `keys()` and `len()` (after the reads) agree with what `get` finds.
/// Returns the keys found and what `len()` said before any other call.
fn check_map(map: &Arc<SharedMap>, when: &str) -> (BTreeSet<u64>, u32) {
    let limit = Duration::from_secs(3);
    let m = map.clone();
    let len_first = bounded(&format!("len() {when}"), limit, move || m.len().unwrap());
    let mut found = BTreeSet::new();
    for key in 0..SET_KEYS + DEL_KEYS {
        let m = map.clone();
        let got = bounded(&format!("get({key}) {when}"), limit, move || {
            m.get(&map_key(key)).unwrap()
        });
        if let Some((k, v)) = got {
            assert_eq!(k, kind::BYTES, "{when}: key {key} kind");
            if let Err(e) = check_value(key, &v) {
                panic!("{when}: get returned an incomplete value: {e}");
            }
            found.insert(key);
        }
    }
    let m = map.clone();
    let keys = bounded(&format!("keys() {when}"), limit, move || m.keys().unwrap());
    let m = map.clone();
    let len_last = bounded(&format!("len() {when}"), limit, move || m.len().unwrap());
    let listed: BTreeSet<u64> = keys
        .iter()
        .map(|k| {
            (0..SET_KEYS + DEL_KEYS)
                .find(|&i| map_key(i) == *k)
                .unwrap_or_else(|| panic!("{when}: keys() lists unknown key {k:?}"))
        })
        .collect();
    assert_eq!(keys.len(), listed.len(), "{when}: keys() lists a key twice: {keys:?}");
    assert_eq!(listed, found, "{when}: keys() and get() disagree");
    assert_eq!(len_last as usize, found.len(), "{when}: len() after the reads");
    (found, len_first)
}

/// A child setting large values in a tight loop is SIGKILLed at random moments, 20 times: the
/// parent never hangs on the map (each operation bounded), never reads a torn value, and
/// `len()` (first thing after the crash, and after the reads) and `keys()` match what `get()`
/// finds. Afterwards the map works normally.
#[test]
fn map_survives_writers_killed_mid_set() {
    let _serial = serial();
    let seed = seed("map_survives_writers_killed_mid_set");
    let mut rng = Rng(seed);
    let seg = SegGuard::create(4, MIN_RING);
    let primary = seg.primary();
    let map = Arc::new(open_crash_map(&primary).unwrap());
    let mut present = BTreeSet::new();
    let mut dropped = 0;
    // Rounds where len(), the first call after the crash, disagreed with get(); asserted at the
    // end so that every other check runs first.
    let mut stale_len = vec![];
    let t0 = Instant::now();
    for round in 0..KILLS {
        let mut kid = ChildProc::spawn_with_stdin("map_writer", &seg.name(), &[("SEED", rng.next_u64().to_string())]);
        kid.expect_line("busy", Duration::from_secs(10));
        // Read alongside the live writer for a random while, then kill it at a random moment.
        let until = Instant::now() + Duration::from_micros(rng.range(0, 20_000));
        while Instant::now() < until {
            let key = rng.range(0, SET_KEYS + DEL_KEYS);
            let m = map.clone();
            if let Some((_, v)) = bounded("get beside a live writer", Duration::from_secs(3), move || {
                m.get(&map_key(key)).unwrap()
            }) {
                if let Err(e) = check_value(key, &v) {
                    panic!("round {round}: get beside a live writer: {e}");
                }
            }
        }
        thread::sleep(Duration::from_micros(rng.range(0, 3_000)));
        assert_eq!(kid.kill().signal(), Some(libc::SIGKILL));
        let (found, len_first) = check_map(&map, &format!("after kill {round}"));
        if len_first as usize != found.len() {
            stale_len.push(format!(
                "after kill {round}: len() said {len_first}, get() finds {} keys {found:?} (and so does len() after the reads)",
                found.len()
            ));
        }
        // A key that was only ever set and is now gone was being written when the kill came.
        dropped += (0..SET_KEYS)
            .filter(|k| present.contains(k) && !found.contains(k))
            .count();
        present = found;
    }
    println!(
        "{KILLS} writers killed in {:?}; {dropped} torn slots dropped by the repair",
        t0.elapsed()
    );
    // The map still works: every key can be written, read and deleted.
    let m = map.clone();
    bounded("final writes", Duration::from_secs(5), move || {
        for key in 0..SET_KEYS + DEL_KEYS {
            let v = map_value(key, 7, 100 + key as usize);
            m.set(&map_key(key), kind::BYTES, &v).unwrap();
            assert_eq!(m.get(&map_key(key)).unwrap(), Some((kind::BYTES, v)));
        }
        assert_eq!(m.len().unwrap() as u64, SET_KEYS + DEL_KEYS);
        for key in 0..SET_KEYS + DEL_KEYS {
            assert!(m.delete(&map_key(key)).unwrap());
        }
        assert!(m.is_empty().unwrap());
        assert!(m.keys().unwrap().is_empty());
    });
    assert!(
        stale_len.is_empty(),
        "len() right after a writer died disagrees with get() in {} of {KILLS} rounds:\n{}",
        stale_len.len(),
        stale_len.join("\n")
    );
    drop(seg);
}

/// The same writer, SIGKILLed, but the parent reads the map *before* reaping it, as a Node
/// primary does: its map calls run synchronously on the event loop, which is also what reaps
/// dead workers (libuv's SIGCHLD handling), so a lock held by a dead but unreaped worker must
/// be taken back without the reaping, or the primary spins in `lock` forever. Each kill is
/// followed by reads of every key with the child still a zombie, bounded; until one kill lands
/// inside the lock this proves nothing, so it repeats (a kill lands there about every other
/// time).
#[test]
fn map_lock_of_a_killed_unreaped_writer_does_not_hang_its_parent() {
    let _serial = serial();
    let seed = seed("map_lock_of_a_killed_unreaped_writer_does_not_hang_its_parent");
    let mut rng = Rng(seed);
    let seg = SegGuard::create(4, MIN_RING);
    let primary = seg.primary();
    let map = Arc::new(open_crash_map(&primary).unwrap());
    let (mut dropped, mut present) = (0, BTreeSet::new());
    for round in 0..15 {
        let mut kid = ChildProc::spawn_with_stdin("map_writer", &seg.name(), &[("SEED", rng.next_u64().to_string())]);
        kid.expect_line("busy", Duration::from_secs(10));
        thread::sleep(Duration::from_micros(rng.range(0, 5_000)));
        kid.sigkill();
        kid.wait_dead_unreaped();
        let (tx, rx) = mpsc::channel();
        let m = map.clone();
        thread::spawn(move || {
            let t0 = Instant::now();
            let mut found = BTreeSet::new();
            for key in 0..SET_KEYS + DEL_KEYS {
                if let Some((_, v)) = m.get(&map_key(key)).unwrap() {
                    if let Err(e) = check_value(key, &v) {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    found.insert(key);
                }
            }
            let _ = tx.send(Ok((found, m.len().unwrap(), t0.elapsed())));
        });
        match rx.recv_timeout(Duration::from_millis(1500)) {
            Ok(Err(e)) => panic!("round {round}: get returned an incomplete value: {e}"),
            Err(RecvTimeoutError::Disconnected) => panic!("round {round}: the reading thread panicked"),
            Ok(Ok((found, len, _))) => {
                assert_eq!(len as usize, found.len(), "round {round}");
                dropped += (0..SET_KEYS)
                    .filter(|k| present.contains(k) && !found.contains(k))
                    .count();
                present = found;
                assert_eq!(kid.reap().signal(), Some(libc::SIGKILL));
            }
            Err(RecvTimeoutError::Timeout) => {
                let reaped = Instant::now();
                assert_eq!(kid.reap().signal(), Some(libc::SIGKILL));
                let after = rx.recv_timeout(Duration::from_secs(3));
                panic!(
                    "round {round}: the parent's get() spun for 1.5 s on the map lock of a SIGKILLed child that \
                     it had not reaped yet (a zombie, which holder_alive takes for alive); after reaping, the \
                     reads {} (the {round} kills before did not hang the reads; {dropped} of them \
                     landed inside a write, whose torn slot was dropped)",
                    match after {
                        Ok(Ok((_, _, took))) =>
                            format!("finished {:?} later (blocked {took:?} in all)", reaped.elapsed()),
                        Ok(Err(e)) => format!("returned an incomplete value: {e}"),
                        Err(_) => "still had not finished 3 s later".into(),
                    },
                );
            }
        }
    }
    println!("15 writers killed and read before reaping; {dropped} torn slots dropped");
    drop(seg);
}

// ---- 5. objects created concurrently by name ------------------------------------------------

const RACERS: usize = 6;
const RACE_ROUNDS: u64 = 30;
const RACE_STEP: Duration = Duration::from_millis(4);

/// The outcome of opening a contested name: `ok:<variant>`, `mismatch:<variant>`, or an error.
fn outcome<T>(variant: u64, r: Result<T, ObjectError>) -> String {
    match r {
        Ok(_) => format!("ok:{variant}"),
        Err(ObjectError::Mismatch(_)) => format!("mismatch:{variant}"),
        Err(e) => format!("error:{e:?}"),
    }
}

/// Opens a contested name as variant 0 or 1 of the object (other parameters or another kind).
fn open_variant(ep: &Endpoint, r: u64, which: &str, variant: u64) -> String {
    match which {
        "region_size" => outcome(variant, Region::open(ep, &format!("xr{r}"), 64 << variant)),
        "sem_permits" => outcome(variant, Semaphore::open(ep, &format!("xs{r}"), 1 + variant as u32)),
        "map_capacity" => outcome(variant, SharedMap::open(ep, &format!("xm{r}"), 8 + variant, 16, 16)),
        "kind" if variant == 0 => outcome(0, Region::open(ep, &format!("xk{r}"), 64)),
        "kind" => outcome(1, SharedMap::open(ep, &format!("xk{r}"), 8, 16, 16)),
        _ => unreachable!(),
    }
}

const CONTESTS: [&str; 4] = ["region_size", "sem_permits", "map_capacity", "kind"];

fn child_object_racer() {
    let ep = child_attach();
    let me = required_u64("ID");
    let variant = me % 2;
    report!("ready");
    let start = child_read_line()
        .strip_prefix("go ")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or_else(|| bad("expected go <time>".into()));
    let mut regions = vec![];
    let mut maps = vec![];
    let mut sems = vec![];
    for r in 0..RACE_ROUNDS {
        // Every racer opens round r's names at the same instant: sleep close to it, then spin.
        let at = start + r * RACE_STEP.as_nanos() as u64;
        loop {
            let now = epoch_nanos();
            if now >= at {
                break;
            }
            if at - now > 1_000_000 {
                thread::sleep(Duration::from_nanos(at - now - 1_000_000));
            } else {
                std::hint::spin_loop();
            }
        }
        let region = Region::open(&ep, &format!("r{r}"), 64).unwrap_or_else(|e| bad(format!("region r{r}: {e}")));
        let map = SharedMap::open(&ep, &format!("m{r}"), 8, 16, 16).unwrap_or_else(|e| bad(format!("map m{r}: {e}")));
        let sem = Semaphore::open(&ep, &format!("s{r}"), 2).unwrap_or_else(|e| bad(format!("sem s{r}: {e}")));
        let contested: Vec<String> = CONTESTS.iter().map(|c| open_variant(&ep, r, c, variant)).collect();
        report!("round {r} {}", contested.join(" "));
        // Write through this process's handles.
        region.write(me * 8, &(me + 1).to_le_bytes()).unwrap();
        map.increment(b"n", 1.0)
            .unwrap_or_else(|e| bad(format!("increment {e}")));
        map.set(format!("c{me}").as_bytes(), kind::BYTES, &me.to_le_bytes())
            .unwrap();
        if me == 0 && sem.try_acquire() != Some(Acquired::Clean) {
            bad(format!("s{r}: no free permit for racer 0"));
        }
        regions.push(region);
        maps.push(map);
        sems.push(sem);
    }
    // Every other racer's writes become visible through this process's own handles.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let missing = (0..RACE_ROUNDS as usize).find(|&r| {
            let marks_ok = (0..RACERS as u64).all(|c| regions[r].read(c * 8, 8).unwrap() == (c + 1).to_le_bytes());
            let count_ok = maps[r].get(b"n").unwrap() == Some((kind::F64, (RACERS as f64).to_le_bytes().to_vec()));
            let keys_ok = maps[r].len().unwrap() as usize == RACERS + 1;
            let sem_ok = sems[r].available() == 1;
            !(marks_ok && count_ok && keys_ok && sem_ok)
        });
        match missing {
            None => break,
            Some(r) if Instant::now() > deadline => bad(format!(
                "round {r}: others' writes not visible: region {:?}, n {:?}, len {}, permits free {}",
                regions[r].read(0, RACERS * 8).unwrap(),
                maps[r].get(b"n").unwrap(),
                maps[r].len().unwrap(),
                sems[r].available()
            )),
            Some(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
    report!("done");
}

/// 6 processes open the same names at the same instant, 30 times. Same name and parameters
/// resolve to one object (each process sees every other's writes through its own handle, and
/// the table holds one entry per name); for contested names (other size, permits, capacity or
/// kind) exactly one variant wins, every process that asked for it gets it, and every other
/// gets `ObjectError::Mismatch`.
#[test]
fn objects_created_concurrently_by_name_are_one_object() {
    let _serial = serial();
    let seg = SegGuard::create(RACERS as u32, MIN_RING);
    let primary = seg.primary();
    let mut kids: Vec<ChildProc> = (0..RACERS)
        .map(|i| ChildProc::spawn_with_stdin("object_racer", &seg.name(), &[("ID", i.to_string())]))
        .collect();
    for k in kids.iter_mut() {
        k.expect_line("ready", Duration::from_secs(10));
    }
    let start = epoch_nanos() + 50_000_000;
    for k in kids.iter_mut() {
        k.send(&format!("go {start}"));
    }
    // round -> contest -> outcomes of every racer
    let mut results: BTreeMap<u64, Vec<Vec<String>>> = BTreeMap::new();
    for k in kids.iter_mut() {
        for r in 0..RACE_ROUNDS {
            let l = k.expect_line(&format!("round {r} "), Duration::from_secs(10));
            let words: Vec<String> = l.split_whitespace().skip(2).map(str::to_owned).collect();
            assert_eq!(words.len(), CONTESTS.len(), "{l}");
            results.entry(r).or_default().push(words);
        }
    }
    collect_done(&mut kids, Duration::from_secs(20));

    let mut winners = [[0u32; 2]; CONTESTS.len()];
    for (r, per_kid) in &results {
        for (c, contest) in CONTESTS.iter().enumerate() {
            let outcomes: Vec<&str> = per_kid.iter().map(|w| w[c].as_str()).collect();
            let ok: BTreeSet<&str> = outcomes.iter().filter_map(|o| o.strip_prefix("ok:")).collect();
            assert_eq!(ok.len(), 1, "round {r} {contest}: winners {outcomes:?}");
            let win = *ok.iter().next().unwrap();
            for o in &outcomes {
                let (what, variant) = o.split_once(':').unwrap();
                match what {
                    "ok" => {}
                    "mismatch" => assert_ne!(variant, win, "round {r} {contest}: {outcomes:?}"),
                    _ => panic!("round {r} {contest}: {outcomes:?}"),
                }
            }
            // Every racer that asked for the winning variant got it.
            let asked_win = (0..RACERS).filter(|i| (i % 2).to_string() == win).count();
            assert_eq!(
                outcomes.iter().filter(|o| o.starts_with("ok:")).count(),
                asked_win,
                "round {r} {contest}: {outcomes:?}"
            );
            winners[c][win.parse::<usize>().unwrap()] += 1;
        }
    }
    println!(
        "contested names won by variant 0/1: {:?}",
        CONTESTS.iter().zip(winners).collect::<Vec<_>>()
    );

    // The parent sees the same objects; the table holds exactly one entry per name.
    for r in 0..RACE_ROUNDS {
        let region = Region::open(&primary, &format!("r{r}"), 64).unwrap();
        let want: Vec<u8> = (0..RACERS as u64).flat_map(|c| (c + 1).to_le_bytes()).collect();
        assert_eq!(region.read(0, RACERS * 8).unwrap(), want, "round {r}");
        let map = SharedMap::open(&primary, &format!("m{r}"), 8, 16, 16).unwrap();
        assert_eq!(
            map.get(b"n").unwrap(),
            Some((kind::F64, (RACERS as f64).to_le_bytes().to_vec()))
        );
        let sem = Semaphore::open(&primary, &format!("s{r}"), 2).unwrap();
        assert_eq!(
            sem.available(),
            1,
            "round {r}: racer 0's permit (its process exited holding it)"
        );
        assert!(matches!(
            Semaphore::open(&primary, &format!("s{r}"), 3),
            Err(ObjectError::Mismatch(_))
        ));
        assert!(matches!(
            Region::open(&primary, &format!("m{r}"), 64),
            Err(ObjectError::Mismatch(_))
        ));
    }
    let count = |k: Kind| {
        let mut n = 0;
        objects::for_each(&seg.0, k, |_| n += 1);
        n
    };
    let rounds = RACE_ROUNDS as usize;
    // r, xr and the region variant of xk / s, xs / m, xm and the map variant of xk.
    let kind_regions = winners[3][0] as usize;
    assert_eq!(count(Kind::Region), 2 * rounds + kind_regions, "duplicate regions");
    assert_eq!(count(Kind::Semaphore), 2 * rounds, "duplicate semaphores");
    assert_eq!(count(Kind::Map), 2 * rounds + (rounds - kind_regions), "duplicate maps");
    drop(seg);
}
