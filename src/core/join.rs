//! Joining a segment with no primary: every process calls [`join`] with the same application
//! name; the first creates the segment, the others attach, and the last one out removes it.
//!
//! The segment's name is derived from the application name and the user
//! ([`segment_name`]: `/cshm_j` + 64-bit FNV-1a of both, 23 bytes, under macOS's 31), so two
//! apps or two users never meet. Its header carries one state word, `join_state` =
//! `state << 56 | generation << 32 | pid`, changed only by compare-and-swap. The pid is the
//! state's *owner* (the one process allowed to move it on), judged alive by pid and start time
//! (`join_start`, valid for the word's generation), so a dead owner's duty is taken over by
//! whoever notices, with one CAS that only one taker wins.
//!
//! ```text
//!  (no name) --O_EXCL create--> 0 --CAS by creator--> INIT(creator) --magic, index, CAS--> LIVE
//!  LIVE --CAS by a leaver or joiner who sees no live member--> CLOSING(it)
//!  CLOSING(p) --p sees a live member--> LIVE        CLOSING(p) --p sees none--> GONE(p) --p unlinks
//!  0 for longer than STUCK, INIT(dead), GONE(dead) --CAS by a joiner--> GONE(joiner) --unlinks
//!  CLOSING(dead) --CAS by a joiner--> CLOSING(joiner) (and it decides as above)
//! ```
//!
//! Why each race is safe:
//! - Two creators: `O_EXCL` (Windows: `CreateFileMapping` reporting `ERROR_ALREADY_EXISTS`)
//!   lets exactly one create; the others open the name and wait, bounded, until its state is
//!   LIVE. LIVE is set after `magic` (which is published after every header field), so nobody
//!   attaches to a half-initialised segment.
//! - A creator killed halfway: in INIT its pid is known, so the first joiner that sees it dead
//!   marks the segment GONE and unlinks it; the next round creates it anew. Before its CAS to
//!   INIT (between `shm_open` and the CAS: sizing and mapping) nothing names it: a joiner that
//!   sees state 0 (or a size-0 object) for [`STUCK`] takes it as abandoned. A creator that was
//!   only slow then fails its CAS (0 → INIT), or, once LIVE, finds that the name leads to
//!   another segment, and starts over: it never stays in a segment that lost its name.
//! - Last one out against a joiner: the joiner takes an index (CAS on the registry), then a
//!   SeqCst fence, then reads the state; the leaver moves LIVE → CLOSING (CAS), then a SeqCst
//!   fence, then scans the registry. One of the two sees the other: either the joiner sees
//!   CLOSING (it gives the index back and tries again) or the closer sees the new member (it
//!   sets LIVE again and unlinks nothing). A segment is unlinked only from GONE, which is
//!   final, so no joiner ever attaches to a segment that is about to lose its name.
//! - Unlinking the right segment: only the owner of GONE unlinks, and only after checking that
//!   the name still leads to a segment with its own `join_nonce` (a dead owner may have
//!   unlinked already, and a new segment of that name been created since). Segments that died
//!   before their nonce was written (state 0 or INIT) are compared by a zero nonce: that check
//!   is weaker (see docs/design.md).
//!
//! Dead members (SIGKILL, crash): their indices are taken back by whoever notices first
//! ([`reap_dead`], and [`super::endpoint::Attach::Index`] reclaims a dead holder's index), and
//! a segment whose members are all dead is removed by the next [`join`] (which then creates a
//! fresh one) or by [`cleanup`].
//!
//! Windows: the segment is a named section that the kernel removes with its last handle, so
//! "unlink" only closes this process's handles; a GONE segment disappears when the joiners
//! waiting on it have closed theirs (each round of [`join`] drops what it opened).

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::endpoint::{Attach, AttachError, Endpoint, Shared};
use super::layout::{Geometry, GeometryError, SegmentHeader};
use super::platform::{self, ProcessId};
use super::segment::{self, CreateError, OpenError, Segment};

/// How long a segment may stay without a known creator (state 0, or no size yet) before a
/// joiner takes it as abandoned by a creator that died between creating and claiming it.
pub const STUCK: Duration = Duration::from_secs(2);

const INIT: u8 = 1;
const LIVE: u8 = 2;
const CLOSING: u8 = 3;
const GONE: u8 = 4;

fn state(w: u64) -> u8 {
    (w >> 56) as u8
}
fn gen(w: u64) -> u32 {
    ((w >> 32) & 0xff_ffff) as u32
}
fn word(state: u8, gen: u32, pid: u32) -> u64 {
    ((state as u64) << 56) | (((gen & 0xff_ffff) as u64) << 32) | pid as u64
}

/// Why [`join`] failed.
#[derive(Debug)]
pub enum JoinError {
    Geometry(GeometryError),
    Create(CreateError),
    Open(OpenError),
    Attach(AttachError),
    /// The live segment was made with another `what`.
    Mismatch {
        what: &'static str,
        asked: u64,
        found: u64,
    },
    /// Nothing changed within the timeout; says what we waited for.
    Timeout(String),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Geometry(e) => e.fmt(f),
            Self::Create(e) => e.fmt(f),
            Self::Open(e) => e.fmt(f),
            Self::Attach(e) => e.fmt(f),
            Self::Mismatch { what, asked, found } => {
                write!(
                    f,
                    "{what} mismatch: this process asked for {asked}, the live segment has {found}"
                )
            }
            Self::Timeout(what) => write!(f, "timed out waiting for {what}"),
        }
    }
}

/// The segment name of application `app` for this user.
pub fn segment_name(app: &str) -> String {
    #[cfg(unix)]
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() } as u64;
    #[cfg(not(unix))]
    let uid = 0u64; // Windows: the section's ACL admits this user only (see segment/windows.rs)
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uid.to_le_bytes().iter().chain(app.as_bytes()) {
        h = (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("/{}j{h:016x}", segment::NAME_PREFIX)
}

fn header(seg: &Segment) -> &SegmentHeader {
    // SAFETY: `Segment::open`/`create` guarantee at least `LINE` (= one header) bytes, page
    // aligned; the join fields are atomics, valid for any bytes.
    unsafe { &*(seg.as_ptr() as *const SegmentHeader) }
}

/// Whether the owner of state word `w` lives (pid and, when known, start time).
fn owner_alive(h: &SegmentHeader, w: u64) -> bool {
    let start = if h.join_start_gen.load(Ordering::Acquire) == gen(w) {
        h.join_start.load(Ordering::Acquire)
    } else {
        0
    };
    ProcessId {
        pid: w as u32,
        start_time: start,
    }
    .is_alive()
}

/// Moves the state word from `from` to `to` owned by this process (pid 0 for LIVE).
fn advance(h: &SegmentHeader, from: u64, to: u8) -> Option<u64> {
    let me = ProcessId::current();
    let pid = if to == LIVE { 0 } else { me.pid };
    let new = word(to, gen(from).wrapping_add(1), pid);
    h.join_state
        .compare_exchange(from, new, Ordering::AcqRel, Ordering::Acquire)
        .ok()?;
    h.join_start.store(me.start_time, Ordering::Release);
    h.join_start_gen.store(gen(new), Ordering::Release);
    Some(new)
}

/// Whether a live process holds an index of `shared`.
fn any_live_member(shared: &Shared) -> bool {
    (0..shared.geometry().endpoints).any(|i| shared.holder(i).is_some_and(|p| p.is_alive()))
}

/// Unlinks `name` if it still leads to the segment whose nonce is `nonce`.
fn unlink_if_same(name: &str, nonce: u64) {
    if cfg!(windows) {
        return segment::unlink(name); // closes our handles only: cannot hit another section
    }
    if let Ok(seg) = Segment::open(name) {
        if header(&seg).join_nonce.load(Ordering::Acquire) == nonce {
            drop(seg);
            segment::unlink(name);
        }
    }
}

/// Moves GONE-owned-by-us on: unlinks the segment.
fn remove(name: &str, h: &SegmentHeader) {
    unlink_if_same(name, h.join_nonce.load(Ordering::Acquire));
}

/// As the owner of CLOSING (`mine`): back to LIVE if a live member appeared, else GONE and
/// unlinked. Returns true when the segment was removed.
fn decide(shared: &Shared, mine: u64) -> bool {
    fence(Ordering::SeqCst);
    let h = shared.header();
    if any_live_member(shared) {
        advance(h, mine, LIVE);
        false
    } else if advance(h, mine, GONE).is_some() {
        remove(shared.name(), h);
        true
    } else {
        false
    }
}

/// Moves the segment toward LIVE or gone when its state's owner is dead (or, for state 0, when
/// it has been stuck since `since` for [`STUCK`]). Returns what to wait for if it is not LIVE.
fn tidy(name: &str, seg: &Segment, since: Instant) -> Option<String> {
    let h = header(seg);
    let w = h.join_state.load(Ordering::Acquire);
    match state(w) {
        LIVE => None,
        0 if since.elapsed() >= STUCK => {
            if advance(h, w, GONE).is_some() {
                remove(name, h);
            }
            Some("an abandoned segment to be removed".into())
        }
        0 | INIT if w == 0 || owner_alive(h, w) => Some("its creator to initialise the segment".into()),
        INIT | GONE if !owner_alive(h, w) => {
            if advance(h, w, GONE).is_some() {
                remove(name, h);
            }
            Some("a dead process's segment to be removed".into())
        }
        CLOSING if !owner_alive(h, w) => {
            // Ours now: the name leads to this segment until its GONE owner unlinks it.
            if let Some(mine) = advance(h, w, CLOSING) {
                if let Some(shared) = Segment::open(name).ok().and_then(|s| Shared::validate(s).ok()) {
                    decide(&shared, mine);
                }
            }
            Some("a dead leaver's segment to be settled".into())
        }
        _ => Some("the last member to leave".into()),
    }
}

/// Points of a join that tests kill a process at (see [`join_observed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Created the name exclusively; nobody knows who yet (state 0).
    Created,
    /// Claimed it (INIT) but not written the header.
    Claimed,
    /// Header written and `magic` published, state still INIT.
    Published,
    /// Took an index: the creator before setting LIVE, a joiner before checking it still is.
    Claiming,
    /// Joined.
    Joined,
}

/// What one round of [`join`] found.
enum Round {
    Joined(Endpoint),
    /// Try again at once (the name just vanished).
    Again,
    /// Wait a little, then try again; says for what.
    Wait(String),
}

/// Joins application `app`'s segment, creating it (with geometry `geo`) if no live one exists,
/// and takes an index as `how` says, waiting at most `timeout` for a creator to finish, a
/// leaver to go, or the index to be freed.
pub fn join(app: &str, geo: Geometry, how: Attach, timeout: Duration) -> Result<Endpoint, JoinError> {
    join_observed(app, geo, how, timeout, &mut |_| {})
}

/// [`join`], calling `at` at each [`Stage`] it passes (tests kill the process there).
#[doc(hidden)]
pub fn join_observed(
    app: &str,
    geo: Geometry,
    how: Attach,
    timeout: Duration,
    at: &mut dyn FnMut(Stage),
) -> Result<Endpoint, JoinError> {
    geo.validate().map_err(JoinError::Geometry)?;
    let name = segment_name(app);
    let deadline = Instant::now() + timeout;
    let mut stuck: Option<(u64, Instant)> = None; // (state word or !0 for size 0, since)
    let mut again = 0u32; // rounds in a row that found the name vanishing
    loop {
        let why = match round(&name, geo, how, &mut stuck, at)? {
            Round::Joined(ep) => {
                at(Stage::Joined);
                return Ok(ep);
            }
            // At once, a few times: the name vanishes briefly in a normal race. A name that
            // keeps vanishing (another process creating and removing it) is waited out, bounded.
            Round::Again if again < 8 && Instant::now() < deadline => {
                again += 1;
                continue;
            }
            Round::Again => "a segment name that keeps vanishing".to_owned(),
            Round::Wait(why) => why,
        };
        again = 0;
        if Instant::now() >= deadline {
            return Err(JoinError::Timeout(why));
        }
        // 1..4 ms, random: two joiners that keep meeting fall out of step.
        std::thread::sleep(Duration::from_micros(1000 + platform::random_u64() % 3000));
    }
}

fn round(
    name: &str,
    geo: Geometry,
    how: Attach,
    stuck: &mut Option<(u64, Instant)>,
    at: &mut dyn FnMut(Stage),
) -> Result<Round, JoinError> {
    match Segment::create(name, geo.total_size()) {
        Ok(seg) => return create(seg, geo, how, at),
        Err(CreateError::AlreadyExists) => {}
        Err(e) => return Err(JoinError::Create(e)),
    }
    let seen = |stuck: &mut Option<(u64, Instant)>, w: u64| match *stuck {
        Some((was, since)) if was == w => since,
        _ => {
            *stuck = Some((w, Instant::now()));
            Instant::now()
        }
    };
    let seg = match Segment::open(name) {
        Ok(seg) => seg,
        Err(OpenError::NotFound) => return Ok(Round::Again),
        Err(OpenError::TooSmall) => {
            // Created, not sized yet: its creator is between shm_open and ftruncate.
            if seen(stuck, u64::MAX).elapsed() >= STUCK {
                segment::unlink(name);
            }
            return Ok(Round::Wait("its creator to size the segment".into()));
        }
        Err(e) => return Err(JoinError::Open(e)),
    };
    let w = header(&seg).join_state.load(Ordering::Acquire);
    if let Some(why) = tidy(name, &seg, seen(stuck, w)) {
        return Ok(Round::Wait(why));
    }
    let shared = Shared::validate(seg).map_err(JoinError::Attach)?;
    attach(shared, geo, how, at)
}

/// The creator's round: claim the fresh segment (0 → INIT), write it, publish it (LIVE).
fn create(seg: Segment, geo: Geometry, how: Attach, at: &mut dyn FnMut(Stage)) -> Result<Round, JoinError> {
    at(Stage::Created);
    let h = header(&seg);
    let Some(init) = advance(h, 0, INIT) else {
        return Ok(Round::Wait("a segment taken for abandoned to be removed".into()));
    };
    at(Stage::Claimed);
    h.join_nonce.store(platform::random_u64() | 1, Ordering::Release);
    let nobody = ProcessId { pid: 0, start_time: 0 };
    let shared = Shared::publish(seg, geo, nobody, true);
    at(Stage::Published);
    // The creator takes its index before LIVE: a LIVE segment has always had a member, so no
    // joiner takes a newborn one for a segment whose members all died.
    let ep = match Endpoint::attach(shared.clone(), how) {
        Ok(ep) => ep,
        Err(e) => {
            if advance(shared.header(), init, GONE).is_some() {
                remove(shared.name(), shared.header());
            }
            return Err(JoinError::Attach(e));
        }
    };
    at(Stage::Claiming);
    if advance(shared.header(), init, LIVE).is_none() {
        ep.detach();
        return Ok(Round::Wait("a segment taken for abandoned to be removed".into()));
    }
    // A creator stalled for STUCK before sizing its segment may have lost the name to a joiner
    // that took it for abandoned: it must not stay alone in a segment nobody else can open.
    let named =
        Segment::open(shared.name()).is_ok_and(|s| header(&s).join_nonce.load(Ordering::Acquire) == nonce(&shared));
    if !named {
        ep.detach();
        return Ok(Round::Again);
    }
    Ok(Round::Joined(ep))
}

/// Takes an index in the LIVE segment `shared`, unless it has no live member (then it is
/// removed, and the next round creates a fresh one) or it started closing meanwhile.
fn attach(shared: Arc<Shared>, geo: Geometry, how: Attach, at: &mut dyn FnMut(Stage)) -> Result<Round, JoinError> {
    let h = shared.header();
    let w = h.join_state.load(Ordering::Acquire);
    if state(w) == LIVE && !any_live_member(&shared) {
        // Left by members that all died: remove it, the next round creates a fresh one.
        if let Some(mine) = advance(h, w, CLOSING) {
            if decide(&shared, mine) {
                return Ok(Round::Again);
            }
        }
    }
    let have = shared.geometry();
    let checks = [
        ("workers", (geo.endpoints - 1) as u64, (have.endpoints - 1) as u64),
        ("ringSize", geo.ring_capacity as u64, have.ring_capacity as u64),
        ("heapSize", geo.heap_size, have.heap_size),
    ];
    for (what, asked, found) in checks {
        if asked != found {
            return Err(JoinError::Mismatch { what, asked, found });
        }
    }
    let ep = match Endpoint::attach(shared.clone(), how) {
        Ok(ep) => ep,
        Err(AttachError::IndexTaken(i)) => return Ok(Round::Wait(format!("index {i} to be given back"))),
        Err(AttachError::NoFreeIndex) => return Ok(Round::Wait("a free index".into())),
        Err(e) => return Err(JoinError::Attach(e)),
    };
    at(Stage::Claiming);
    fence(Ordering::SeqCst);
    if state(h.join_state.load(Ordering::Acquire)) != LIVE {
        ep.detach();
        return Ok(Round::Wait("the last member to leave".into()));
    }
    Ok(Round::Joined(ep))
}

/// Gives `ep`'s index back; if no live member is left, removes the segment.
pub fn leave(ep: &Endpoint) {
    ep.detach();
    fence(Ordering::SeqCst);
    let shared = ep.shared();
    let h = shared.header();
    let w = h.join_state.load(Ordering::Acquire);
    if state(w) == LIVE && !any_live_member(shared) {
        if let Some(mine) = advance(h, w, CLOSING) {
            decide(shared, mine);
        }
    }
}

/// Frees the indices (and semaphore permits) of members that died; returns the freed indices.
pub fn reap_dead(shared: &Arc<Shared>) -> Vec<u32> {
    let mut freed = vec![];
    for i in 0..shared.geometry().endpoints {
        if let Some(p) = shared.holder(i).filter(|p| !p.is_alive()) {
            freed.extend(shared.process_exited(p.pid));
        }
    }
    freed
}

/// Removes application `app`'s segment if no live process is a member of it (its members were
/// killed) or its creator died halfway. Returns true when no segment of that name is left.
pub fn cleanup(app: &str) -> bool {
    cleanup_segment(&segment_name(app))
}

/// [`cleanup`] of the joined segment named `name` (`/cshm_j…`).
pub fn cleanup_segment(name: &str) -> bool {
    let seg = match Segment::open(name) {
        Ok(seg) => seg,
        Err(e) => return matches!(e, OpenError::NotFound), // unreadable is not "removed"
    };
    let h = header(&seg);
    let w = h.join_state.load(Ordering::Acquire);
    let long_ago = Instant::now().checked_sub(STUCK).unwrap_or_else(Instant::now);
    if tidy(name, &seg, long_ago).is_none() {
        if let Ok(shared) = Shared::validate(seg) {
            if state(w) == LIVE && !any_live_member(&shared) {
                if let Some(mine) = advance(shared.header(), w, CLOSING) {
                    decide(&shared, mine);
                }
            }
        }
    }
    matches!(Segment::open(name), Err(OpenError::NotFound))
}

/// Whether the joined segment `shared` is left behind: no live process holds an index, and its
/// state word names no live process either (one creating or closing it). Loads only.
pub fn abandoned(shared: &Shared) -> bool {
    let h = shared.header();
    let w = h.join_state.load(Ordering::Acquire);
    let owner_busy = state(w) != LIVE && w as u32 != 0 && owner_alive(h, w);
    !any_live_member(shared) && !owner_busy
}

/// The nonce of a joined segment: tells it from earlier and later segments of its name.
pub fn nonce(shared: &Shared) -> u64 {
    shared.header().join_nonce.load(Ordering::Acquire)
}
