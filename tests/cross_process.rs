//! The core across real processes: the test binary re-executes itself (`child_entry`, role in
//! `CSHM_CHILD_ROLE`, segment name in `CSHM_SEGMENT`) and the parent drives, kills and checks
//! the children. Randomised tests print their seed; `CSHM_SEED=<n>` replays one. Unix only
//! (signals, fork/exec'd children, POSIX shared memory).

#![cfg(unix)]

mod common;

use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use cluster_shm::core::layout::SegmentHeader;
use cluster_shm::core::{event, kind, Attach, AttachError, Batch, Budget, Endpoint, Inbox, Outbox, Shared};

use common::*;

const RING_64K: u32 = 64 * 1024;

/// Entry point of every child process; a no-op in a normal test run.
#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "stream_writer" => child_stream_writer(),
        "duplex" => child_duplex(),
        "crash_writer" => child_crash_writer(),
        "crash_reader" => child_crash_reader(),
        "attach_and_wait" => child_attach_and_wait(),
        "open_and_report" => child_open_and_report(),
        "reassembly_reader" => child_reassembly_reader(),
        "primary_and_wait" => child_primary_and_wait(),
        other => panic!("unknown child role {other}"),
    }
}

// ---- 1. streaming ---------------------------------------------------------------------------

const STREAM_N: u64 = 200_000;
/// The writer pauses before these messages, long enough for the reader to fall asleep.
const STREAM_PAUSES: [u64; 2] = [1_000, 100_000];
const STREAM_PAUSE: Duration = Duration::from_millis(300);

fn stream_len(seq: u64) -> usize {
    1 + (mix(seq ^ 0x5157) % 3000) as usize
}

fn child_stream_writer() {
    let (_, shared) = open_child_segment();
    let ep = attach_or_exit(shared, Attach::Any);
    let primary = ep.geometry().primary();
    let out = Outbox::new(ep.clone());
    let mut stats = WaitStats::default();
    let n = env_u64("CSHM_COUNT").unwrap_or(STREAM_N);
    for seq in 0..n {
        if STREAM_PAUSES.contains(&seq) {
            thread::sleep(STREAM_PAUSE);
        }
        let p = seq_payload(seq, stream_len(seq));
        // A 2 s nap: with a live reader that commits, a timed-out wait is a lost wakeup.
        let ok = write_blocking(
            &out,
            primary,
            kind::BYTES,
            &p,
            Duration::from_secs(2),
            &mut stats,
            &|| false,
        );
        if ok != Ok(true) {
            bad(format!("write of message {seq} failed: {ok:?}"));
        }
    }
    report!("done waits={} timeouts={}", stats.waits, stats.timeouts);
}

/// 200k messages of 1..=3000 bytes through one 64 KiB ring, from a child writer to the parent,
/// which sleeps on its doorbell (Inbox::run without spinning) and checks order and content.
#[test]
fn stream_200k_messages_in_order_between_processes() {
    let seg = SegGuard::create(1, RING_64K);
    let primary = Arc::new(seg.primary());
    let stop = Arc::new(AtomicBool::new(false));
    let mut inbox = Inbox::new(&primary);

    struct Stats {
        next: u64,
        err: Option<String>,
        batches: u64,
        max_gap: Duration,
        wall: Duration,
        cpu: Duration,
    }
    let reader = {
        let ep = primary.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let (mut next, mut err, mut batches, mut max_gap) = (0u64, None::<String>, 0u64, Duration::ZERO);
            let (t0, cpu0) = (Instant::now(), thread_cpu_time());
            let mut last = Instant::now();
            inbox.run(&ep, &stop, Duration::ZERO, |batch: Batch| {
                let now = Instant::now();
                if next > 0 {
                    max_gap = max_gap.max(now - last);
                }
                last = now;
                batches += 1;
                for (from, k, p) in batch.iter() {
                    if err.is_some() {
                        break;
                    }
                    match k {
                        event::LOST | event::CORRUPT | event::CLOSED => {
                            err = Some(format!("unexpected event {k} from {from} at message {next}"));
                        }
                        _ if k > kind::MAX => {} // peer up/down
                        _ if from != 0 || k != kind::BYTES => {
                            err = Some(format!("message {next}: from {from} kind {k}"));
                        }
                        _ if p.len() != stream_len(next) || !is_seq_payload(next, p) => {
                            err = Some(format!(
                                "message {next}: {} bytes (want {}), first bytes {:?} (out of order or corrupt)",
                                p.len(),
                                stream_len(next),
                                &p[..p.len().min(8)]
                            ));
                        }
                        _ => next += 1,
                    }
                }
                for &(from, pos) in &batch.commits {
                    ep.commit(from, pos);
                }
                if next == STREAM_N || err.is_some() {
                    stop.store(true, Ordering::Release);
                }
            });
            Stats {
                next,
                err,
                batches,
                max_gap,
                wall: t0.elapsed(),
                cpu: thread_cpu_time() - cpu0,
            }
        })
    };

    let t0 = Instant::now();
    let mut child = ChildProc::spawn("stream_writer", &seg.name(), &[]);
    let deadline = Deadline::after(Duration::from_secs(25));
    while !reader.is_finished() {
        let early_exit = child.try_status().is_some_and(|s| !s.success());
        if early_exit || deadline.passed() {
            set_and_ring(&stop, &primary);
            let s = reader.join().unwrap();
            panic!(
                "stream stalled or writer failed after {} of {STREAM_N} messages (child status {:?}, err {:?}); child output:\n{}",
                s.next,
                child.try_status(),
                s.err,
                child.log.join("\n")
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
    let s = reader.join().unwrap();
    assert_eq!(s.err, None);
    assert_eq!(s.next, STREAM_N);
    let done = child.expect_line("done", Duration::from_secs(10));
    child.expect_success(Duration::from_secs(10));
    let field = |name: &str| -> u64 {
        done.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in '{done}'"))
    };
    let (waits, timeouts) = (field("waits"), field("timeouts"));
    println!(
        "stream: {STREAM_N} msgs in {:?} ({} batches, max gap {:?}); reader cpu {:?} of {:?} wall; writer slept {waits}x, {timeouts} timeouts",
        t0.elapsed(),
        s.batches,
        s.max_gap,
        s.cpu,
        s.wall
    );
    assert!(
        waits > 0,
        "the 64 KiB ring never filled: the writer never slept on its space bell"
    );
    assert_eq!(
        timeouts, 0,
        "the writer's space-bell sleep timed out {timeouts}x: lost wakeup"
    );
    // The writer paused twice for 300 ms: a reader that slept on its doorbell used no CPU then.
    assert!(
        s.cpu + Duration::from_millis(400) < s.wall,
        "reader used {:?} CPU in {:?}: it spins instead of sleeping on the doorbell",
        s.cpu,
        s.wall
    );
    // A lost data-bell wakeup shows as a gap of the reader's bounded 1 s sleep.
    assert!(
        s.max_gap < Duration::from_millis(950),
        "a {:?} gap between batches: lost doorbell wakeup?",
        s.max_gap
    );
}

// ---- 2. messages larger than the ring, both ways at once -------------------------------------

const PARENT_BIG: [usize; 3] = [5 << 20, 17, (1 << 20) + 3];
const CHILD_BIG: [usize; 4] = [(5 << 20) + 7, 1, 0, 2 << 20];
const PARENT_BASE: u64 = 1_000;
const CHILD_BASE: u64 = 2_000;

/// Receives `lens.len()` messages from `from` on its own thread (Inbox::run) and checks them.
fn receive_big(
    ep: Arc<Endpoint>,
    from: u32,
    base: u64,
    lens: &'static [usize],
) -> thread::JoinHandle<Result<(), String>> {
    let mut inbox = Inbox::new(&ep);
    let stop = AtomicBool::new(false);
    thread::spawn(move || {
        let mut got = 0usize;
        let mut err = None;
        let deadline = Deadline::after(Duration::from_secs(25));
        let stop_ref = &stop;
        inbox.run(&ep, stop_ref, Duration::ZERO, |batch: Batch| {
            for (f, k, p) in batch.iter() {
                if k == event::LOST || k == event::CORRUPT {
                    err = Some(format!("event {k} from {f}"));
                } else if k <= kind::MAX {
                    let seq = base + got as u64;
                    if f != from || got >= lens.len() || p.len() != lens[got] || !is_seq_payload(seq, p) {
                        err = Some(format!(
                            "message {got} from {f}: {} bytes, want {:?}, intact {}",
                            p.len(),
                            lens.get(got),
                            is_seq_payload(seq, p)
                        ));
                    }
                    got += 1;
                }
            }
            for &(f, pos) in &batch.commits {
                ep.commit(f, pos);
            }
            if got >= lens.len() || err.is_some() || deadline.passed() {
                stop_ref.store(true, Ordering::Release);
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        if got != lens.len() {
            return Err(format!("got {got} of {} messages", lens.len()));
        }
        Ok(())
    })
}

fn send_big(
    out: &Arc<Outbox>,
    to: u32,
    base: u64,
    lens: &[usize],
) -> mpsc::Receiver<(usize, Result<(), cluster_shm::core::SendError>)> {
    let (tx, rx) = mpsc::channel();
    for (i, &len) in lens.iter().enumerate() {
        let tx = tx.clone();
        queue_send(
            out,
            to,
            seq_payload(base + i as u64, len),
            Box::new(move |r| {
                let _ = tx.send((i, r));
            }),
        )
        .expect("queue_send");
    }
    rx
}

fn child_duplex() {
    let (_, shared) = open_child_segment();
    let ep = attach_or_exit(shared, Attach::Any);
    let primary = ep.geometry().primary();
    let receiver = receive_big(ep.clone(), primary, PARENT_BASE, &PARENT_BIG);
    let out = Outbox::new(ep.clone());
    let done = send_big(&out, primary, CHILD_BASE, &CHILD_BIG);
    for _ in 0..CHILD_BIG.len() {
        match done.recv_timeout(Duration::from_secs(25)) {
            Ok((i, Ok(()))) => report!("sent {i}"),
            other => bad(format!("send: {other:?}")),
        }
    }
    match receiver.join() {
        Ok(Ok(())) => report!("received all"),
        other => bad(format!("receive: {other:?}")),
    }
    out.close();
    report!("done");
}

/// A 5 MiB message (and others around it, empty included) through 64 KiB rings with
/// send_queued, in both directions at the same time, between two processes.
#[test]
fn messages_larger_than_the_ring_cross_both_ways() {
    let seg = SegGuard::create(1, RING_64K);
    let primary = Arc::new(seg.primary());
    let t0 = Instant::now();
    let receiver = receive_big(primary.clone(), 0, CHILD_BASE, &CHILD_BIG);
    let out = Outbox::new(primary.clone());
    let done = send_big(&out, 0, PARENT_BASE, &PARENT_BIG);
    let mut child = ChildProc::spawn("duplex", &seg.name(), &[]);
    for want in 0..PARENT_BIG.len() {
        match done.recv_timeout(Duration::from_secs(25)) {
            Ok((i, Ok(()))) => assert_eq!(i, want, "queued sends finish in order"),
            other => panic!("parent send: {other:?}; child output:\n{}", child.log.join("\n")),
        }
    }
    child.expect_line("received all", Duration::from_secs(25));
    child.expect_line("done", Duration::from_secs(10));
    child.expect_success(Duration::from_secs(10));
    match receiver.join() {
        Ok(Ok(())) => {}
        other => panic!("parent receive: {other:?}"),
    }
    out.close();
    println!(
        "duplex: {} + {} bytes in {:?}",
        PARENT_BIG.iter().sum::<usize>(),
        CHILD_BIG.iter().sum::<usize>(),
        t0.elapsed()
    );
}

// ---- 3. a sender killed mid-write -----------------------------------------------------------

const CRASH_RUNS: u32 = 20;
const FINAL_RUN_MESSAGES: u32 = 300;

fn child_crash_writer() {
    let (_, shared) = open_child_segment();
    let ep = attach_or_exit(shared, Attach::Index(0));
    let primary = ep.geometry().primary();
    let run = env_u64("CSHM_RUN").unwrap() as u32;
    let count = env_u64("CSHM_COUNT").unwrap_or(u64::MAX);
    let mut rng = Rng(env_u64("CSHM_SEED").unwrap());
    let out = Outbox::new(ep.clone());
    let mut stats = WaitStats::default();
    report!("attached {}", ep.index());
    let mut i = 0u32;
    while (i as u64) < count {
        if rng.chance(30) {
            // Larger than the ring: written chunk by chunk by the sender thread, so a kill can
            // leave its first frames published and the rest never.
            let len = rng.range(64 << 10, 600 << 10) as usize;
            let (tx, rx) = mpsc::channel();
            queue_send(
                &out,
                primary,
                checked_msg(run, i, len),
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            )
            .unwrap();
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(Ok(())) => {}
                other => bad(format!("queued send {i}: {other:?}")),
            }
        } else {
            let len = rng.range(CHECKED_HEADER as u64, 3001) as usize;
            let r = write_blocking(
                &out,
                primary,
                kind::BYTES,
                &checked_msg(run, i, len),
                Duration::from_millis(200),
                &mut stats,
                &|| false,
            );
            if r != Ok(true) {
                bad(format!("write {i}: {r:?}"));
            }
        }
        i += 1;
    }
    out.close();
    report!("done {i}");
}

/// A child writer is SIGKILLed at random moments while writing (often in the middle of a
/// message larger than the ring), 19 times; each time the index is freed with release_pid and
/// a fresh child takes it with Attach::Index. The reader never gets a torn or corrupt message,
/// each run's messages arrive complete and in order, and the last run finishes normally.
#[test]
fn killed_sender_never_leaves_a_torn_message() {
    let seed = seed("killed_sender");
    let mut rng = Rng(seed);
    let seg = SegGuard::create(1, RING_64K);
    let primary = Arc::new(seg.primary());
    let mut inbox = Inbox::new(&primary);
    let t0 = Instant::now();
    let deadline = Deadline::after(Duration::from_secs(25));

    let mut per_run = vec![0u32; CRASH_RUNS as usize];
    let mut cur_run = 0u32;
    let mut lost = 0u32;
    let mut batch = Batch::default();
    for run in 0..CRASH_RUNS {
        let last = run == CRASH_RUNS - 1;
        assert!(seg.holder(0).is_none(), "index 0 is free before run {run}");
        let mut env = vec![
            ("CSHM_RUN", run.to_string()),
            ("CSHM_SEED", (seed ^ mix(run as u64)).to_string()),
        ];
        if last {
            env.push(("CSHM_COUNT", FINAL_RUN_MESSAGES.to_string()));
        }
        let mut child = ChildProc::spawn("crash_writer", &seg.name(), &env);
        let mut kill_at: Option<Instant> = None;
        loop {
            batch.clear();
            drain_or_sleep(
                &mut inbox,
                &primary,
                &mut batch,
                Budget::BATCH,
                Duration::from_millis(5),
            );
            for (from, k, p) in batch.iter() {
                match k {
                    event::LOST => lost += u32::from_le_bytes(p.try_into().unwrap()),
                    event::CORRUPT | event::CLOSED => panic!("run {run}: event {k} from {from}"),
                    _ if k > kind::MAX => {}
                    _ => {
                        assert_eq!((from, k), (0, kind::BYTES));
                        let (r, i) =
                            check_msg(p).unwrap_or_else(|e| panic!("torn or corrupt message during run {run}: {e}"));
                        assert!(
                            r <= run && r >= cur_run,
                            "message of run {r} after run {cur_run} (now {run})"
                        );
                        if r > cur_run {
                            cur_run = r;
                        }
                        assert_eq!(
                            i, per_run[r as usize],
                            "run {r}: message {i} out of order (gap or repeat)"
                        );
                        per_run[r as usize] += 1;
                    }
                }
            }
            for &(from, pos) in &batch.commits {
                primary.commit(from, pos);
            }
            if per_run[run as usize] > 0 && kill_at.is_none() {
                kill_at = Some(Instant::now() + Duration::from_micros(rng.range(0, 25_000)));
            }
            if last && per_run[run as usize] == FINAL_RUN_MESSAGES {
                break;
            }
            if !last && kill_at.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            if !last && child.try_status().is_some() {
                panic!(
                    "writer of run {run} exited on its own: {:?}\n{}",
                    child.try_status(),
                    child.log.join("\n")
                );
            }
            if deadline.passed() {
                panic!(
                    "run {run}: timed out with {} messages of this run; child output:\n{}",
                    per_run[run as usize],
                    child.log.join("\n")
                );
            }
        }
        if last {
            child.expect_line("done", Duration::from_secs(10));
            child.expect_success(Duration::from_secs(10));
        } else {
            let status = child.kill();
            assert_eq!(status.signal(), Some(libc::SIGKILL), "run {run}: {status:?}");
            assert_eq!(
                seg.release_pid(child.pid),
                vec![0],
                "run {run}: release_pid frees index 0"
            );
        }
    }
    assert_eq!(per_run[CRASH_RUNS as usize - 1], FINAL_RUN_MESSAGES);
    assert!(per_run.iter().all(|&n| n > 0), "every run delivered: {per_run:?}");
    assert!(lost < CRASH_RUNS, "at most one message lost per kill, got {lost}");
    assert!(
        lost >= 1,
        "no kill landed inside a multi-frame message in {CRASH_RUNS} runs (seed {seed}): the test did not exercise it"
    );
    println!(
        "killed sender: {} runs, messages per run {per_run:?}, {lost} kills inside a message larger than the ring (reported LOST) in {:?}",
        CRASH_RUNS,
        t0.elapsed()
    );
}

// ---- 4. a receiver killed mid-drain ---------------------------------------------------------

const DRAIN_N: u64 = 20_000;
const KILLED_READERS: usize = 5;

fn drain_len(seq: u64) -> usize {
    8 + (mix(seq ^ 0xd4a1) % 1993) as usize
}

fn child_crash_reader() {
    let (_, shared) = open_child_segment();
    let ep = attach_or_exit(shared, Attach::Index(0));
    let primary = ep.geometry().primary();
    let n = env_u64("CSHM_COUNT").unwrap();
    let fin = env_u64("CSHM_FINAL") == Some(1);
    let hold_after = env_u64("CSHM_HOLD_AFTER").unwrap_or(u64::MAX);
    let mut rng = Rng(env_u64("CSHM_SEED").unwrap());
    let mut inbox = Inbox::new(&ep);
    let mut expect: Option<u64> = None;
    let mut received = 0u64;
    let (mut holding, mut hold_reported) = (false, false);
    let mut idle_since = Instant::now();
    // The last batch received but not committed (a later commit covers the earlier ones).
    let mut pending: Option<u64> = None;
    let mut pending_commits = vec![];
    loop {
        let budget = Budget {
            max_records: rng.range(1, 64) as u32,
            max_bytes: usize::MAX,
        };
        let mut batch = Batch::default();
        drain_or_sleep(&mut inbox, &ep, &mut batch, budget, Duration::from_millis(10));
        let mut range: Option<(u64, u64)> = None;
        for (from, k, p) in batch.iter() {
            match k {
                event::LOST | event::CORRUPT => bad(format!("event {k} from {from} after {expect:?}")),
                _ if k > kind::MAX => continue,
                _ => {}
            }
            let Some(seq) = payload_seq(p) else {
                bad(format!("message of {} bytes after {expect:?}", p.len()))
            };
            if from != primary || p.len() != drain_len(seq) || !is_seq_payload(seq, p) {
                bad(format!("message {seq} from {from}: {} bytes, corrupt", p.len()));
            }
            if expect.is_some_and(|e| e != seq) {
                bad(format!("message {seq} where {expect:?} was due"));
            }
            expect = Some(seq + 1);
            range = Some((range.map_or(seq, |r| r.0), seq));
            received += 1;
        }
        let Some((a, b)) = range else {
            if holding {
                if !hold_reported && idle_since.elapsed() > Duration::from_millis(30) {
                    report!("HOLD");
                    hold_reported = true;
                }
            } else if let Some(b) = pending.take() {
                // Idle with kept batches (the ring may be full): commit them now.
                report!("I {b}");
                for &(from, pos) in &pending_commits {
                    ep.commit(from, pos);
                }
                report!("C {b}");
            }
            continue;
        };
        idle_since = Instant::now();
        if received >= hold_after {
            holding = true;
        }
        report!("B {a} {b}");
        pending = Some(b);
        pending_commits = batch.commits.clone();
        if fin || (!holding && rng.chance(60)) {
            report!("I {b}");
            for &(from, pos) in &batch.commits {
                ep.commit(from, pos);
            }
            report!("C {b}");
            pending = None;
        }
        if fin && b == n - 1 {
            report!("DONE");
            return;
        }
    }
}

/// What one killed reader reported, checked against its successor's start.
#[derive(Debug, Default)]
struct ReaderLog {
    first: Option<u64>,
    last_b: Option<u64>,
    /// End of the last batch it meant to commit, and the last commit it confirmed (C line).
    intent: Option<u64>,
    confirmed: Option<u64>,
    done: bool,
}

fn parse_reader_lines(k: usize, start: u64, lines: &[String]) -> ReaderLog {
    let mut log = ReaderLog::default();
    for l in lines {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["B", a, b] => {
                let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
                let due = log.last_b.map_or(start, |x| x + 1);
                assert_eq!(
                    a, due,
                    "reader {k}: batch {a}..={b} where {due} was due (gap or repeat)\n{lines:?}"
                );
                assert!(b >= a);
                log.first.get_or_insert(a);
                log.last_b = Some(b);
            }
            ["I", x] => {
                let x: u64 = x.parse().unwrap();
                assert!(
                    Some(x) <= log.last_b && Some(x) > log.intent.or(start.checked_sub(1)),
                    "reader {k}: commit of {x}"
                );
                log.intent = Some(x);
            }
            ["C", x] => {
                let x: u64 = x.parse().unwrap();
                assert_eq!(Some(x), log.intent, "reader {k}: commit confirmed for {x}");
                log.confirmed = Some(x);
            }
            ["HOLD"] => {}
            ["DONE"] => log.done = true,
            _ if l.starts_with("attached") => {}
            _ => panic!("reader {k} reported: {l}\n{lines:?}"),
        }
    }
    log
}

/// A child receiver drains (committing only some batches, and none once it "holds") and is
/// SIGKILLed; a replacement attached to the same index (after release_pid) resumes exactly at the
/// last commit: every message that was not committed arrives again, in order, with no gap, and
/// nothing committed is repeated. Five killed readers, then one that reads to the end.
#[test]
fn killed_receiver_loses_nothing_uncommitted() {
    let seed = seed("killed_receiver");
    let mut rng = Rng(seed);
    let seg = SegGuard::create(1, RING_64K);
    let primary = Arc::new(seg.primary());
    let out = Outbox::new(primary.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (out, stop) = (out.clone(), stop.clone());
        thread::spawn(move || {
            let mut stats = WaitStats::default();
            for seq in 0..DRAIN_N {
                let p = seq_payload(seq, drain_len(seq));
                let stopped = || stop.load(Ordering::Acquire);
                match write_blocking(
                    &out,
                    0,
                    kind::BYTES,
                    &p,
                    Duration::from_millis(100),
                    &mut stats,
                    &stopped,
                ) {
                    Ok(true) => {}
                    Ok(false) => return seq,
                    Err(e) => panic!("write {seq}: {e:?}"),
                }
            }
            DRAIN_N
        })
    };
    struct StopWriter<'a>(&'a AtomicBool);
    impl Drop for StopWriter<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let _stop_writer = StopWriter(&stop);

    let t0 = Instant::now();
    let mut start = 0u64; // where the next reader must begin, or one of `allowed`
    let mut allowed = vec![0u64];
    let mut redelivered = 0u64;
    for k in 0..=KILLED_READERS {
        let fin = k == KILLED_READERS;
        let hold_after = if fin { u64::MAX } else { rng.range(50, 1500) };
        let env = [
            ("CSHM_COUNT", DRAIN_N.to_string()),
            ("CSHM_FINAL", u64::from(fin).to_string()),
            ("CSHM_HOLD_AFTER", hold_after.to_string()),
            ("CSHM_SEED", (seed ^ mix(k as u64)).to_string()),
        ];
        let mut child = ChildProc::spawn("crash_reader", &seg.name(), &env);
        let mut lines = vec![];
        if fin {
            let deadline = Deadline::after(Duration::from_secs(20));
            while lines.last().is_none_or(|l: &String| l != "DONE") {
                match child.next_line(deadline.left()) {
                    Some(l) => lines.push(l),
                    None => panic!("final reader did not finish; output:\n{}", child.log.join("\n")),
                }
            }
            child.expect_success(Duration::from_secs(10));
        } else {
            // Reader 0 is killed once it holds uncommitted batches and the ring is full; the
            // others at a random moment after their first batch (or when holding, if sooner).
            let deadline = Deadline::after(Duration::from_secs(15));
            let mut kill_at: Option<Instant> = None;
            loop {
                if let Some(l) = child.next_line(Duration::from_millis(1)) {
                    let hold = l == "HOLD";
                    if l.starts_with("B ") && kill_at.is_none() && k > 0 {
                        kill_at = Some(Instant::now() + Duration::from_micros(rng.range(0, 40_000)));
                    }
                    if l.starts_with("BAD") || l.starts_with("FAIL") {
                        panic!("reader {k}: {l}\n{}", child.log.join("\n"));
                    }
                    lines.push(l);
                    if hold {
                        break;
                    }
                }
                if kill_at.is_some_and(|t| Instant::now() >= t) {
                    break;
                }
                if child.try_status().is_some() || deadline.passed() {
                    panic!(
                        "reader {k} exited or stalled: {:?}\n{}",
                        child.try_status(),
                        child.log.join("\n")
                    );
                }
            }
            let status = child.kill();
            assert_eq!(status.signal(), Some(libc::SIGKILL));
            lines.extend(child.rest_of_lines(Duration::from_secs(2)));
            assert_eq!(
                seg.release_pid(child.pid),
                vec![0],
                "release_pid frees the killed reader's index"
            );
        }
        let log = parse_reader_lines(k, log_start(&lines), &lines);
        let first = log.first.unwrap_or_else(|| panic!("reader {k} got nothing: {lines:?}"));
        assert!(
            allowed.contains(&first),
            "reader {k} started at message {first}; it must start right after the last commit of its predecessor, i.e. at one of {allowed:?} (seed {seed})"
        );
        if k > 0 {
            redelivered += start.saturating_sub(first);
        }
        if fin {
            assert!(log.done);
            assert_eq!(log.last_b, Some(DRAIN_N - 1));
        } else {
            // The successor must start right after the last commit: the confirmed one, or the
            // one in flight when the kill came (between commit and its C line).
            let base = first.checked_sub(1);
            let confirmed = log.confirmed.or(base);
            let intent = log.intent.or(base);
            allowed = [confirmed, intent].iter().map(|c| c.map_or(0, |c| c + 1)).collect();
            start = log.last_b.unwrap() + 1;
        }
    }
    let written = writer.join().expect("writer thread");
    assert_eq!(written, DRAIN_N);
    out.close();
    assert!(
        redelivered > 0,
        "no uncommitted message was ever redelivered: the test did not exercise it"
    );
    println!(
        "killed receiver: {KILLED_READERS} readers killed, {redelivered} uncommitted messages redelivered, {DRAIN_N} in {:?}",
        t0.elapsed()
    );
}

/// The first message of a reader's lines (its first B line).
fn log_start(lines: &[String]) -> u64 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("B ")?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

// ---- 4b. a receiver killed while reassembling a message larger than the ring --------------

const AFTER_BIG: u64 = 50;

fn child_reassembly_reader() {
    let (_, shared) = open_child_segment();
    let ep = attach_or_exit(shared, Attach::Index(0));
    let stall = std::env::var("CSHM_MODE").as_deref() == Ok("stall");
    let mut inbox = Inbox::new(&ep);
    let (mut lost, mut next, mut first) = (0u32, None::<u64>, None::<u64>);
    let deadline = Deadline::after(Duration::from_secs(20));
    while !deadline.passed() {
        let mut batch = Batch::default();
        drain_or_sleep(&mut inbox, &ep, &mut batch, Budget::BATCH, Duration::from_millis(10));
        let mut messages = 0;
        for (from, k, p) in batch.iter() {
            match k {
                event::LOST => lost += u32::from_le_bytes(p.try_into().unwrap()),
                event::CORRUPT => bad(format!("corrupt ring from {from}")),
                _ if k > kind::MAX => {}
                _ => {
                    messages += 1;
                    let seq = payload_seq(p).unwrap_or(u64::MAX);
                    if stall {
                        bad(format!("the stalling reader got a whole message ({} bytes)", p.len()));
                    }
                    if seq == 0 || p.len() != drain_len(seq) || !is_seq_payload(seq, p) {
                        bad(format!(
                            "torn or corrupt message of {} bytes (seq field {seq})",
                            p.len()
                        ));
                    }
                    if next.is_some_and(|n| n != seq) {
                        bad(format!("message {seq} where {next:?} was due"));
                    }
                    first.get_or_insert(seq);
                    next = Some(seq + 1);
                }
            }
        }
        for &(from, pos) in &batch.commits {
            ep.commit(from, pos);
        }
        if stall && messages == 0 && !batch.commits.is_empty() {
            // Committed the first chunks of the big message; now die with it half assembled.
            report!("MID");
            loop {
                thread::sleep(Duration::from_millis(10));
            }
        }
        if next == Some(AFTER_BIG + 1) {
            report!("DONE lost={lost} first={}", first.unwrap());
            return;
        }
    }
    bad(format!("timed out: lost {lost}, next {next:?}"));
}

/// A receiver that committed the first chunks of a message larger than the ring and was killed
/// while reassembling it: its replacement gets exactly one LOST event for that message (never
/// its tail as a message), then every following message intact and in order.
#[test]
fn killed_receiver_mid_reassembly_reports_one_lost_message() {
    let seg = SegGuard::create(1, RING_64K);
    let primary = Arc::new(seg.primary());
    let out = Outbox::new(primary.clone());
    let (tx, done) = mpsc::channel();
    for seq in 0..=AFTER_BIG {
        let len = if seq == 0 { 1 << 20 } else { drain_len(seq) };
        let tx = tx.clone();
        queue_send(
            &out,
            0,
            seq_payload(seq, len),
            Box::new(move |r| {
                let _ = tx.send((seq, r));
            }),
        )
        .unwrap();
    }
    let mut a = ChildProc::spawn("reassembly_reader", &seg.name(), &[("CSHM_MODE", "stall".into())]);
    a.expect_line("MID", Duration::from_secs(10));
    assert_eq!(a.kill().signal(), Some(libc::SIGKILL));
    assert_eq!(seg.release_pid(a.pid), vec![0]);
    let mut b = ChildProc::spawn("reassembly_reader", &seg.name(), &[("CSHM_MODE", "finish".into())]);
    let line = b.expect_line("DONE", Duration::from_secs(20));
    b.expect_success(Duration::from_secs(10));
    assert_eq!(
        line, "DONE lost=1 first=1",
        "one LOST for the half-received message, then message 1 on"
    );
    for want in 0..=AFTER_BIG {
        match done.recv_timeout(Duration::from_secs(10)) {
            Ok((seq, Ok(()))) => assert_eq!(seq, want),
            other => panic!("send {want}: {other:?}"),
        }
    }
    out.close();
}

// ---- 5. liveness ----------------------------------------------------------------------------

fn child_attach_and_wait() {
    let (_, shared) = open_child_segment();
    let ep = attach_or_exit(shared, Attach::Any);
    report!("attached {}", ep.index());
    loop {
        thread::sleep(Duration::from_millis(10)); // until SIGKILL or the cluster closes
    }
}

fn registry_events(inbox: &mut Inbox, ep: &Endpoint) -> Vec<(u32, u8)> {
    let mut batch = Batch::default();
    inbox.drain(ep, &mut batch, Budget::BATCH);
    batch.iter().filter(|r| r.1 > kind::MAX).map(|r| (r.0, r.1)).collect()
}

/// A child that attached and was SIGKILLed is seen as dead, and Attach::Any reclaims its index
/// when no index is free (no release_pid here).
#[test]
fn killed_holder_is_dead_and_its_index_is_reclaimed() {
    let seg = SegGuard::create(2, 4096);
    let primary = seg.primary();
    let mine = Endpoint::attach(seg.0.clone(), Attach::Index(1)).unwrap();
    let mut inbox = Inbox::new(&primary);

    let mut a = ChildProc::spawn("attach_and_wait", &seg.name(), &[]);
    assert_eq!(a.expect_line("attached", Duration::from_secs(10)), "attached 0");
    let h = seg.holder(0).expect("index 0 held");
    assert_eq!(h.pid, a.pid);
    assert!(h.is_alive());
    assert!(matches!(
        Endpoint::attach(seg.0.clone(), Attach::Any),
        Err(AttachError::NoFreeIndex)
    ));
    assert!(matches!(
        Endpoint::attach(seg.0.clone(), Attach::Index(0)),
        Err(AttachError::IndexTaken(0))
    ));
    assert_eq!(registry_events(&mut inbox, &primary), vec![(0, event::PEER_UP)]);

    let status = a.kill();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let h = seg
        .holder(0)
        .expect("a dead holder still owns the slot until reclaimed");
    assert_eq!(h.pid, a.pid);
    assert!(!h.is_alive(), "a SIGKILLed (and reaped) holder is dead");

    let mut b = ChildProc::spawn("attach_and_wait", &seg.name(), &[]);
    assert_eq!(
        b.expect_line("attached", Duration::from_secs(10)),
        "attached 0",
        "Attach::Any reclaimed index 0"
    );
    let h = seg.holder(0).unwrap();
    assert_eq!(h.pid, b.pid);
    assert!(h.is_alive());
    assert!(mine.holds_index() && seg.holder(1).unwrap().is_alive());
    assert_eq!(
        registry_events(&mut inbox, &primary),
        vec![(0, event::PEER_DOWN), (0, event::PEER_UP)]
    );
    b.kill();
}

// ---- 6. a changed header --------------------------------------------------------------------

fn child_open_and_report() {
    let name = std::env::var(SEG_ENV).unwrap();
    child_watchdog(None);
    match Shared::open(&name) {
        Ok(shared) => match Endpoint::attach(shared, Attach::Any) {
            Ok(ep) => report!("open ok {}", ep.index()),
            Err(e) => report!("open attach-error {e:?}"),
        },
        Err(AttachError::BadHeader(what)) => report!("open badheader {what}"),
        Err(e) => report!("open other {e:?}"),
    }
}

/// A child opening the segment after the parent changed the header's magic (or its layout
/// version) gets AttachError::BadHeader; with the header restored it attaches.
#[cfg(target_os = "linux")] // reads and writes /dev/shm
#[test]
fn changed_magic_is_refused_by_a_child() {
    use cluster_shm::core::layout::MAGIC;
    let seg = SegGuard::create(1, 4096);
    let name = seg.name();
    let open_in_child = || {
        let mut c = ChildProc::spawn("open_and_report", &name, &[]);
        let l = c.expect_line("open", Duration::from_secs(10));
        c.expect_success(Duration::from_secs(10));
        l
    };
    seg.header().magic.store(MAGIC ^ 0xff, Ordering::SeqCst);
    assert_eq!(open_in_child(), "open badheader magic");
    seg.header().magic.store(MAGIC, Ordering::SeqCst);

    // The layout version, changed through the file (as another program would).
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm{name}"))
        .unwrap();
    let at = std::mem::offset_of!(SegmentHeader, layout_version) as u64;
    let mut v = [0u8; 4];
    f.read_exact_at(&mut v, at).unwrap();
    assert_eq!(u32::from_le_bytes(v), cluster_shm::core::layout::LAYOUT_VERSION);
    f.write_all_at(&(u32::from_le_bytes(v) + 1).to_le_bytes(), at).unwrap();
    assert_eq!(open_in_child(), "open badheader layout version");
    f.write_all_at(&v, at).unwrap();

    assert_eq!(open_in_child(), "open ok 0");
    drop(seg);
    assert!(!segment_exists(&name), "the guard unlinked the segment");
}

// ---- 7. stale segments ----------------------------------------------------------------------

/// Unlinks a segment created by a child (which is SIGKILLed and cannot clean up).
#[cfg(target_os = "linux")]
struct NameGuard(String);

#[cfg(target_os = "linux")]
impl Drop for NameGuard {
    fn drop(&mut self) {
        cluster_shm::core::segment::unlink(&self.0);
    }
}

/// How `child_primary_and_wait` disguises its header after creating the segment.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
enum Disguise {
    /// Left as created.
    None = 0,
    /// Another layout version: same magic prefix, other version, the identity fields (PID and
    /// start time, at their fixed offsets) intact, everything after them different.
    OtherVersion = 1,
    /// Not published yet (magic 0), with garbage where the start time goes: only the PID in the
    /// name can be trusted.
    Unpublished = 2,
}

/// A primary in a child process; its header is then changed as `CSHM_DISGUISE` says.
fn child_primary_and_wait() {
    child_watchdog(None);
    let shared = Shared::create(1, 4096).expect("create");
    let name = shared.name().to_owned();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm{name}"))
        .unwrap();
    let put = |off: usize, bytes: &[u8]| f.write_all_at(bytes, off as u64).unwrap();
    use std::mem::offset_of;
    match env_u64("CSHM_DISGUISE").unwrap_or(0) {
        1 => {
            put(offset_of!(SegmentHeader, endpoints), &0xdead_beefu32.to_le_bytes());
            put(offset_of!(SegmentHeader, ring_capacity), &3u32.to_le_bytes());
            put(offset_of!(SegmentHeader, total_size), &u64::MAX.to_le_bytes());
            put(offset_of!(SegmentHeader, layout_version), &99u32.to_le_bytes());
            put(offset_of!(SegmentHeader, magic), b"CLSHM\0\x63\x00");
        }
        2 => {
            put(offset_of!(SegmentHeader, magic), &0u64.to_le_bytes());
            put(offset_of!(SegmentHeader, primary_start), &0x1234_5678u64.to_le_bytes());
        }
        _ => {}
    }
    report!("created {name}");
    loop {
        thread::sleep(Duration::from_millis(10)); // until SIGKILL
    }
}

#[cfg(target_os = "linux")]
fn spawn_primary(disguise: Disguise) -> (ChildProc, NameGuard) {
    let mut c = ChildProc::spawn(
        "primary_and_wait",
        "",
        &[("CSHM_DISGUISE", (disguise as u64).to_string())],
    );
    let line = c.expect_line("created ", Duration::from_secs(10));
    let name = line["created ".len()..].to_owned();
    assert!(segment_exists(&name), "{name}");
    (c, NameGuard(name))
}

/// The segment of a primary that was SIGKILLed is removed by the next Shared::create (which
/// runs remove_stale); the segment of a live primary is kept.
#[cfg(target_os = "linux")] // lists /dev/shm
#[test]
fn stale_segment_of_a_killed_primary_is_removed() {
    let (mut dead, dead_name) = spawn_primary(Disguise::None);
    let (_live, live_name) = spawn_primary(Disguise::None);
    let _a = SegGuard::create(1, 4096);
    assert!(
        segment_exists(&dead_name.0) && segment_exists(&live_name.0),
        "live primaries' segments are kept"
    );
    assert_eq!(dead.kill().signal(), Some(libc::SIGKILL));
    let _b = SegGuard::create(1, 4096);
    assert!(
        !segment_exists(&dead_name.0),
        "the killed primary's segment was removed"
    );
    assert!(segment_exists(&live_name.0), "the live primary's segment was kept");
}

/// remove_stale must not trust a start time it cannot vouch for: the segment of a LIVE primary
/// whose header is of another layout version, or is not a published cluster-shm header, is kept;
/// once that primary is SIGKILLed it is removed. Regression test: remove_stale once read the
/// start time at its own layout's offset from any `cshm_*` segment, so two builds with different
/// layouts on one host unlinked each other's live segments (their workers then got NotFound).
#[cfg(target_os = "linux")] // lists /dev/shm
#[test]
fn live_primary_of_another_layout_keeps_its_segment() {
    use std::mem::offset_of;
    // The contract that lets every version judge every other one.
    assert_eq!(
        (
            offset_of!(SegmentHeader, magic),
            offset_of!(SegmentHeader, layout_version),
            offset_of!(SegmentHeader, primary_pid),
            offset_of!(SegmentHeader, primary_start)
        ),
        (0, 8, 12, 16),
        "the identity fields of the header moved"
    );
    let (mut other, other_name) = spawn_primary(Disguise::OtherVersion);
    let (mut unpublished, unpublished_name) = spawn_primary(Disguise::Unpublished);
    let mut opener = ChildProc::spawn("open_and_report", &other_name.0, &[]);
    let refused = opener.expect_line("open", Duration::from_secs(10));
    opener.expect_success(Duration::from_secs(10));
    assert!(
        refused.starts_with("open badheader"),
        "this version refuses the other version's segment: {refused}"
    );
    let _s = SegGuard::create(1, 4096); // runs remove_stale
    assert!(
        segment_exists(&other_name.0),
        "Shared::create removed the segment of a live primary because its header is of another layout version"
    );
    assert!(
        segment_exists(&unpublished_name.0),
        "Shared::create removed the segment of a live primary whose header is not a published cluster-shm header: \
         it trusted the start-time field of an unpublished header"
    );
    other.kill();
    unpublished.kill();
    let _t = SegGuard::create(1, 4096);
    assert!(
        !segment_exists(&other_name.0) && !segment_exists(&unpublished_name.0),
        "dead primaries' segments are removed"
    );
}
