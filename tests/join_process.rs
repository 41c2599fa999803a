//! `core::join` across real processes: the creation race (many rounds of processes that start
//! together, one of them SIGKILLed at a stage of its join or at a random moment), the last
//! member leaving while others join, dead members, mismatches and a held index. The test binary
//! re-executes itself (`child_entry`, role in `CSHM_CHILD_ROLE`, the application name in
//! `CSHM_SEGMENT`: the harness of tests/common). Every child is SIGKILLed and reaped by
//! [`ChildProc`]'s `Drop`; every test checks that no segment is left.

#![cfg(unix)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use cluster_shm::core::join::{self, JoinError, Stage};
use cluster_shm::core::layout::Geometry;
use cluster_shm::core::{Attach, Endpoint, Shared};

use common::*;

const STAGES: [Stage; 5] = [
    Stage::Created,
    Stage::Claimed,
    Stage::Published,
    Stage::Claiming,
    Stage::Joined,
];
const LONG: Duration = Duration::from_secs(30);

fn geo(workers: u32) -> Geometry {
    Geometry::with_heap(workers + 1, 1 << 16, 1 << 16).expect("geometry")
}

/// A name no other test (nor run) uses.
fn app(tag: &str, n: u64) -> String {
    format!("test-{tag}-{}-{n}", std::process::id())
}

/// Unlinks `app`'s segment when dropped: a failed test leaves nothing in /dev/shm (its children,
/// declared after this guard, are killed and reaped first).
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        cluster_shm::core::segment::unlink(&join::segment_name(&self.0));
    }
}

fn gone(app: &str) -> bool {
    !segment_exists(&join::segment_name(app))
}

#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    child_watchdog(None);
    let app = std::env::var(SEG_ENV).expect("app name");
    match role.as_str() {
        "joiner" => child_joiner(&app),
        "flapper" => child_flapper(&app),
        other => bad(format!("unknown role {other}")),
    }
    std::process::exit(0);
}

fn kill_self() -> ! {
    // SAFETY: plain syscalls on this process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILL")
}

/// Joins (4 workers), reports `JOINED <index> <nonce> <creator>`, leaves on "leave" from stdin.
/// `CSHM_DIE_AT` (a stage number): SIGKILLs itself there (or once joined, if it never passes
/// that stage); `CSHM_DIE_AFTER_US`: SIGKILLs itself that long after starting.
fn child_joiner(app: &str) {
    if let Some(us) = env_u64("CSHM_DIE_AFTER_US") {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(us));
            kill_self();
        });
    }
    let die_at = env_u64("CSHM_DIE_AT").map(|s| STAGES[s as usize]);
    let mut at = |stage: Stage| {
        report!("STAGE {stage:?}");
        if die_at == Some(stage) || (die_at.is_some() && stage == Stage::Joined) {
            kill_self();
        }
    };
    let ep = join::join_observed(app, geo(4), Attach::Any, Duration::from_secs(20), &mut at)
        .unwrap_or_else(|e| bad(format!("join: {e}")));
    let s = ep.shared();
    report!("JOINED {} {} {}", ep.index(), join::nonce(s), s.is_creator());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    join::leave(&ep);
    report!("LEFT");
}

/// Joins and leaves `CSHM_ITERS` times; after each join, checks that the name still leads to
/// the segment it joined (never one about to be unlinked).
fn child_flapper(app: &str) {
    let mut rng = Rng(platform_seed());
    for _ in 0..required_u64("CSHM_ITERS") {
        let ep =
            join::join(app, geo(4), Attach::Any, Duration::from_secs(20)).unwrap_or_else(|e| bad(format!("join: {e}")));
        let mine = join::nonce(ep.shared());
        match Shared::open(&join::segment_name(app)) {
            Ok(s) if join::nonce(&s) == mine => {}
            Ok(s) => bad(format!("joined {mine:x}, the name leads to {:x}", join::nonce(&s))),
            Err(e) => bad(format!("joined {mine:x}, the name is gone: {e}")),
        }
        std::thread::sleep(Duration::from_micros(rng.range(0, 300)));
        join::leave(&ep);
    }
    report!("DONE");
}

fn platform_seed() -> u64 {
    cluster_shm::core::platform::random_u64()
}

fn parse_joined(line: &str) -> (u32, u64, bool) {
    let v: Vec<&str> = line.split(' ').collect();
    (v[1].parse().unwrap(), v[2].parse().unwrap(), v[3] == "true")
}

#[test]
fn creation_race_many_rounds_with_a_creator_killed_at_random_points() {
    let mut rng = Rng(seed("creation_race"));
    for round in 0..50 {
        let app = app("race", round);
        let _unlink_app = Unlink(app.clone());
        let dier = rng.range(0, 4) as usize;
        // a third of the rounds nobody dies, a third one process dies at a stage, a third after
        // a random delay (anywhere from its start-up to after it joined)
        let mode = rng.range(0, 3);
        let mut kids: Vec<ChildProc> = (0..4)
            .map(|i| {
                let mut env = vec![];
                if i == dier && mode == 1 {
                    env.push(("CSHM_DIE_AT", rng.range(0, STAGES.len() as u64).to_string()));
                }
                if i == dier && mode == 2 {
                    env.push(("CSHM_DIE_AFTER_US", rng.range(0, 6000).to_string()));
                }
                ChildProc::spawn_with_stdin("joiner", &app, &env)
            })
            .collect();
        let mut dead_published = false;
        if mode != 0 {
            let k = &mut kids[dier];
            let status = k.wait_timeout(LONG).expect("the dier dies");
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "round {round}: {}",
                k.log.join("\n")
            );
            let rest = k.rest_of_lines(Duration::from_millis(200));
            dead_published = k.log.iter().chain(rest.iter()).any(|l| l.contains("STAGE Published"));
        }
        let mut joined = vec![];
        for (i, k) in kids.iter_mut().enumerate() {
            if mode == 0 || i != dier {
                joined.push(parse_joined(&k.expect_line("JOINED", LONG)));
            }
        }
        let nonce = joined[0].1;
        assert!(
            joined.iter().all(|j| j.1 == nonce),
            "round {round}: several segments: {joined:?}"
        );
        let mut indices: Vec<u32> = joined.iter().map(|j| j.0).collect();
        indices.sort();
        indices.dedup();
        assert_eq!(indices.len(), joined.len(), "round {round}: an index twice: {joined:?}");
        let creators = joined.iter().filter(|j| j.2).count();
        // exactly one process created the segment: a survivor, or the dier once it had published
        assert!(
            creators == 1 || (creators == 0 && dead_published),
            "round {round}: {creators} creators among the survivors {joined:?}"
        );
        for (i, k) in kids.iter_mut().enumerate() {
            if mode == 0 || i != dier {
                k.send("leave");
            }
        }
        for (i, k) in kids.iter_mut().enumerate() {
            if mode == 0 || i != dier {
                k.expect_line("LEFT", LONG);
                k.expect_success(LONG);
            }
        }
        assert!(gone(&app), "round {round}: the last member out left the segment");
    }
}

#[test]
fn a_joiner_never_attaches_to_a_segment_that_its_last_member_is_removing() {
    let app = app("flap", 0);
    let _unlink_app = Unlink(app.clone());
    let iters = ("CSHM_ITERS", "300".to_string());
    let mut kids: Vec<ChildProc> = (0..3)
        .map(|_| ChildProc::spawn("flapper", &app, std::slice::from_ref(&iters)))
        .collect();
    for k in &mut kids {
        k.expect_line("DONE", Duration::from_secs(120));
        k.expect_success(LONG);
    }
    assert!(gone(&app));
}

#[test]
fn the_segment_of_dead_members_is_removed_by_the_next_join_or_by_cleanup() {
    // the next join starts clean
    let app1 = app("dead", 1);
    let _unlink_app1 = Unlink(app1.clone());
    let mut k = ChildProc::spawn_with_stdin("joiner", &app1, &[]);
    let (_, dead_nonce, _) = parse_joined(&k.expect_line("JOINED", LONG));
    k.kill();
    assert!(!gone(&app1), "a SIGKILLed member cannot remove it");
    let ep = join::join(&app1, geo(4), Attach::Any, LONG).expect("join");
    assert_ne!(join::nonce(ep.shared()), dead_nonce, "a fresh segment");
    assert!(ep.shared().is_creator());
    join::leave(&ep);
    assert!(gone(&app1));

    // or cleanup removes it
    let app2 = app("dead", 2);
    let _unlink_app2 = Unlink(app2.clone());
    let mut k = ChildProc::spawn_with_stdin("joiner", &app2, &[]);
    k.expect_line("JOINED", LONG);
    assert!(!join::cleanup(&app2), "a live member keeps it");
    k.kill();
    assert!(!gone(&app2));
    assert!(join::cleanup(&app2));
    assert!(gone(&app2));
}

#[test]
fn a_dead_members_index_is_reaped_by_a_member() {
    let app = app("reap", 0);
    let _unlink_app = Unlink(app.clone());
    let ep = join::join(&app, geo(4), Attach::Index(2), LONG).expect("join");
    let mut k = ChildProc::spawn_with_stdin("joiner", &app, &[]);
    let (index, _, creator) = parse_joined(&k.expect_line("JOINED", LONG));
    assert!(!creator);
    assert_eq!(ep.attached(), vec![index, 2]);
    assert!(join::reap_dead(ep.shared()).is_empty(), "nobody died yet");
    k.kill();
    assert_eq!(join::reap_dead(ep.shared()), vec![index]);
    assert_eq!(ep.attached(), vec![2]);
    join::leave(&ep);
    assert!(gone(&app));
}

#[test]
fn a_joiner_with_another_geometry_gets_both_values() {
    let app = app("mismatch", 0);
    let _unlink_app = Unlink(app.clone());
    let ep = join::join(&app, geo(2), Attach::Any, LONG).expect("join");
    match join::join(&app, geo(3), Attach::Any, LONG) {
        Err(JoinError::Mismatch { what, asked, found }) => assert_eq!((what, asked, found), ("workers", 3, 2)),
        other => panic!("expected a mismatch, got {:?}", other.map(|e| e.index())),
    }
    let g = Geometry::with_heap(3, 1 << 17, 1 << 16).unwrap();
    let e = join::join(&app, g, Attach::Any, LONG).map(|e| e.index()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "ringSize mismatch: this process asked for 131072, the live segment has 65536"
    );
    join::leave(&ep);
    assert!(gone(&app));
}

#[test]
fn a_held_index_is_waited_for_bounded() {
    let app = app("held", 0);
    let _unlink_app = Unlink(app.clone());
    let mut k = ChildProc::spawn_with_stdin("joiner", &app, &[]);
    let (index, _, _) = parse_joined(&k.expect_line("JOINED", LONG));
    match join::join(&app, geo(4), Attach::Index(index), Duration::from_millis(300)) {
        Err(JoinError::Timeout(what)) => assert_eq!(what, format!("index {index} to be given back")),
        other => panic!("expected a timeout, got {:?}", other.map(|e| e.index())),
    }
    // the holder leaves while we wait: we get the index
    let waiter = std::thread::spawn({
        let app = app.clone();
        move || join::join(&app, geo(4), Attach::Index(index), LONG).map(|e: Endpoint| e)
    });
    std::thread::sleep(Duration::from_millis(200));
    k.send("leave");
    k.expect_line("LEFT", LONG);
    let ep = waiter.join().unwrap().expect("joined once the index was given back");
    assert_eq!(ep.index(), index);
    join::leave(&ep);
    k.expect_success(LONG);
    assert!(gone(&app));
}

#[test]
fn a_creator_killed_at_each_stage_leaves_a_segment_the_next_joiner_replaces() {
    for (s, stage) in STAGES.iter().enumerate() {
        let app = app("stage", s as u64);
        let _unlink_app = Unlink(app.clone());
        let mut k = ChildProc::spawn_with_stdin("joiner", &app, &[("CSHM_DIE_AT", s.to_string())]);
        let status = k.wait_timeout(LONG).expect("the creator dies");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{stage:?}: {}", k.log.join("\n"));
        let said = k.rest_of_lines(Duration::from_secs(2));
        assert!(said.contains(&format!("STAGE {stage:?}")), "{stage:?}: {said:?}");
        assert!(!gone(&app), "{stage:?}: a killed creator leaves its segment");
        let ep = join::join(&app, geo(4), Attach::Any, LONG).unwrap_or_else(|e| panic!("{stage:?}: {e}"));
        assert!(ep.shared().is_creator(), "{stage:?}: the next joiner starts clean");
        assert_eq!(ep.index(), 0);
        join::leave(&ep);
        assert!(gone(&app), "{stage:?}");
    }
}
