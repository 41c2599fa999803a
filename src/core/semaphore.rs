//! Cross-process counting semaphores that survive a crashed holder.
//!
//! A semaphore of N permits is N permit slots, each a holder word (see [`super::objects`]).
//! Acquiring is one CAS of a free slot to this process's word; releasing is one CAS back. There
//! is no intermediate state, so a process killed at any instruction holds a permit or does not.
//! A permit of a dead holder is taken back by a sweep (waiters sweep on every bounded wait; the
//! primary sweeps when cluster reports a worker's exit) and marked [`RECOVERED`]: the next
//! process to take that permit learns that the state it guarded may be half-written.
//!
//! Waits run on one [`Waiter`] thread per semaphore and process, never on the caller's thread.
//! No fairness across processes: a release wakes every waiting process and one of them wins.
//!
//! ```
//! use cluster_shm::core::{Shared, Endpoint, Attach, semaphore::{Semaphore, Acquired}};
//! let shared = Shared::create(1, 4096).unwrap();
//! let me = Endpoint::attach(shared.clone(), Attach::Primary).unwrap();
//! let sem = Semaphore::open(&me, "jobs", 2).unwrap();
//! assert_eq!(sem.try_acquire(), Some(Acquired::Clean));
//! assert_eq!(sem.available(), 1);
//! assert!(sem.release());
//! shared.close_cluster();
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::endpoint::Endpoint;
use super::objects::{self, holder_alive, is_free, Kind, ObjectError, ObjectMemory, RECOVERED};
use super::platform;

pub const MAX_PERMITS: u32 = 4096;
/// How often a waiting process checks whether holders died (bounds recovery time).
const SWEEP_EVERY: Duration = Duration::from_millis(100);

#[repr(C, align(128))]
struct SemHeader {
    /// Futex word: bumped by every release and recovery.
    seq: AtomicU32,
    /// Processes' waiter threads currently sleeping (a dead one only causes extra wake-ups).
    waiters: AtomicU32,
}

const HEADER: usize = std::mem::size_of::<SemHeader>();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    Clean,
    /// The permit was taken back from a holder that died or detached holding it.
    Recovered,
}

/// How a queued acquire ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireError {
    TimedOut,
    /// Cancelled by the caller (an AbortSignal).
    Cancelled,
    /// The process closed its bus.
    Closed,
}

#[derive(Clone)]
pub struct Semaphore {
    mem: ObjectMemory,
    me: u64,
    permits: u32,
}

impl Semaphore {
    pub fn open(ep: &Endpoint, name: &str, permits: u32) -> Result<Semaphore, ObjectError> {
        if !(1..=MAX_PERMITS).contains(&permits) {
            return Err(ObjectError::InvalidParams("permits must be 1..=4096"));
        }
        let size = (HEADER + permits as usize * 8) as u64;
        let init = |p: *mut u8, n: usize| {
            // SAFETY: `open_or_create` hands us `n` writable bytes; all-zero is a valid state
            // (no holders, no waiters).
            unsafe { std::ptr::write_bytes(p, 0, n) }
        };
        let mem = objects::open_or_create(ep, Kind::Semaphore, name, [permits as u64, 0, 0, 0], size, init)?;
        if mem.size < size as usize {
            return Err(ObjectError::Corrupt);
        }
        Ok(Semaphore {
            mem,
            me: ep.holder_word(),
            permits,
        })
    }

    fn header(&self) -> &SemHeader {
        // SAFETY: the object is at least HEADER + permits * 8 bytes (checked in `open`) and
        // 128-aligned in the heap; SemHeader holds only atomics.
        unsafe { &*(self.mem.ptr as *const SemHeader) }
    }

    fn slot(&self, i: u32) -> &AtomicU64 {
        debug_assert!(i < self.permits);
        // SAFETY: i < permits, so the slot is inside the object (see `header`); 8-aligned.
        unsafe { &*(self.mem.ptr.add(HEADER) as *const AtomicU64).add(i as usize) }
    }

    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// Takes a free permit now, if any.
    pub fn try_acquire(&self) -> Option<Acquired> {
        // Start at a per-process offset so that processes do not all contend on slot 0.
        let start = (self.me as u32).wrapping_mul(2654435761) % self.permits;
        for k in 0..self.permits {
            let slot = self.slot((start + k) % self.permits);
            let w = slot.load(Ordering::Relaxed);
            if is_free(w)
                && slot
                    .compare_exchange(w, self.me, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            {
                return Some(if w == RECOVERED {
                    Acquired::Recovered
                } else {
                    Acquired::Clean
                });
            }
        }
        None
    }

    /// Gives back one permit held by this process. False when it holds none.
    pub fn release(&self) -> bool {
        for i in 0..self.permits {
            let slot = self.slot(i);
            if slot.load(Ordering::Relaxed) == self.me
                && slot
                    .compare_exchange(self.me, 0, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            {
                self.wake();
                return true;
            }
        }
        false
    }

    /// Permits free now (recovered ones included).
    pub fn available(&self) -> u32 {
        (0..self.permits)
            .filter(|&i| is_free(self.slot(i).load(Ordering::Acquire)))
            .count() as u32
    }

    /// Permits this process holds.
    pub fn held(&self) -> u32 {
        (0..self.permits)
            .filter(|&i| self.slot(i).load(Ordering::Acquire) == self.me)
            .count() as u32
    }

    fn wake(&self) {
        let h = self.header();
        h.seq.fetch_add(1, Ordering::SeqCst);
        if h.waiters.load(Ordering::SeqCst) != 0 {
            platform::wake(&h.seq);
        }
    }

    /// Takes back the permits of holders for which `dead` is true; returns how many.
    fn reclaim(&self, dead: impl Fn(u64) -> bool) -> u32 {
        let mut n = 0;
        for i in 0..self.permits {
            let slot = self.slot(i);
            let w = slot.load(Ordering::Acquire);
            if !is_free(w)
                && dead(w)
                && slot
                    .compare_exchange(w, RECOVERED, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            {
                n += 1;
            }
        }
        if n > 0 {
            self.wake();
        }
        n
    }

    /// Takes back permits whose holder died or detached.
    pub fn sweep(&self) -> u32 {
        let shared = self.mem.shared.clone();
        self.reclaim(|w| !holder_alive(&shared, w))
    }

    /// Sleeps until a release or recovery may have happened, at most `timeout`. The caller
    /// retries `try_acquire` afterwards.
    fn wait(&self, timeout: Duration) {
        let h = self.header();
        let seq = h.seq.load(Ordering::SeqCst);
        h.waiters.fetch_add(1, Ordering::SeqCst);
        if self.available() == 0 {
            platform::wait(&h.seq, seq, timeout);
        }
        h.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The holder word of every permit slot of the semaphore in `mem` (0 or [`RECOVERED`]: free).
/// Loads only (works on a read-only mapping); an entry too small for its permits gives none.
pub fn slots_of(mem: &ObjectMemory) -> Vec<u64> {
    let permits = mem.params[0].min(MAX_PERMITS as u64) as usize;
    if mem.size < HEADER + permits * 8 {
        return vec![];
    }
    // SAFETY: the slots lie inside the object (checked above), 8-aligned after the 128-aligned header.
    let slots = unsafe { std::slice::from_raw_parts(mem.ptr.add(HEADER) as *const AtomicU64, permits) };
    slots.iter().map(|s| s.load(Ordering::Acquire)).collect()
}

/// Takes back, in every semaphore of the cluster, the permits held by `pid` (the primary calls
/// this when cluster reports that a worker exited). Returns how many.
pub fn release_pid(shared: &Arc<super::endpoint::Shared>, pid: u32) -> u32 {
    let mut n = 0;
    objects::for_each(shared, Kind::Semaphore, |mem| {
        let permits = mem.params[0].min(MAX_PERMITS as u64) as u32;
        if mem.size >= HEADER + permits as usize * 8 {
            let sem = Semaphore { mem, me: 0, permits };
            n += sem.reclaim(|w| objects::holder_pid(w) == pid);
        }
    });
    n
}

/// Result passed to a queued acquire's callback.
pub type AcquireDone = Box<dyn FnOnce(Result<Acquired, AcquireError>) + Send>;

struct Request {
    id: u64,
    deadline: Option<Instant>,
    done: AcquireDone,
}

/// The queue of acquires of one process on one semaphore, served in order by one thread.
pub struct Waiter {
    sem: Semaphore,
    queue: Mutex<VecDeque<Request>>,
    cancelled: Mutex<Vec<u64>>,
    running: AtomicBool,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Waiter {
    pub fn new(sem: Semaphore) -> Arc<Waiter> {
        Arc::new(Waiter {
            sem,
            queue: Mutex::new(VecDeque::new()),
            cancelled: Mutex::new(Vec::new()),
            running: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    pub fn semaphore(&self) -> &Semaphore {
        &self.sem
    }

    /// Queues an acquire; `done` runs on the waiter thread.
    pub fn acquire(self: &Arc<Self>, id: u64, timeout: Option<Duration>, done: AcquireDone) {
        if self.closed.load(Ordering::Acquire) {
            return done(Err(AcquireError::Closed));
        }
        lock(&self.queue).push_back(Request {
            id,
            deadline: timeout.map(|t| Instant::now() + t),
            done,
        });
        if !self.running.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            std::thread::Builder::new()
                .name("cluster-shm-sem".into())
                .spawn(move || me.run())
                .expect("spawn waiter thread");
        } else {
            self.sem.wake();
        }
    }

    /// Cancels a queued acquire (its callback gets `Cancelled`); no-op once it was granted.
    pub fn cancel(&self, id: u64) {
        lock(&self.cancelled).push(id);
        self.sem.wake();
    }

    /// Fails every queued acquire with `Closed`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.sem.wake();
        let pending: Vec<Request> = lock(&self.queue).drain(..).collect();
        for r in pending {
            (r.done)(Err(AcquireError::Closed));
        }
    }

    fn run(self: Arc<Self>) {
        let mut last_sweep = Instant::now();
        loop {
            let mut finished = Vec::new();
            let empty = {
                let mut q = lock(&self.queue);
                let cancelled: Vec<u64> = lock(&self.cancelled).drain(..).collect();
                let now = Instant::now();
                q.retain_mut(|_| true);
                let mut kept = VecDeque::new();
                for r in q.drain(..) {
                    if cancelled.contains(&r.id) {
                        finished.push((r.done, Err(AcquireError::Cancelled)));
                    } else if r.deadline.is_some_and(|d| d <= now) {
                        finished.push((r.done, Err(AcquireError::TimedOut)));
                    } else {
                        kept.push_back(r);
                    }
                }
                *q = kept;
                while !q.is_empty() {
                    match self.sem.try_acquire() {
                        Some(a) => finished.push((q.pop_front().expect("non-empty").done, Ok(a))),
                        None => break,
                    }
                }
                if q.is_empty() {
                    // Stop only while holding the queue lock, so a concurrent `acquire` either
                    // sees `running == false` and starts a thread, or its request is served here.
                    self.running.store(false, Ordering::Release);
                }
                q.is_empty()
            };
            for (done, r) in finished {
                done(r);
            }
            if empty || self.closed.load(Ordering::Acquire) {
                return;
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                if self.sem.sweep() > 0 {
                    continue;
                }
            }
            let next_deadline = lock(&self.queue).iter().filter_map(|r| r.deadline).min();
            let mut nap = SWEEP_EVERY;
            if let Some(d) = next_deadline {
                nap = nap.min(d.saturating_duration_since(Instant::now()));
            }
            self.sem.wait(nap);
        }
    }
}
