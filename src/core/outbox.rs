//! The sending side of an endpoint.
//!
//! [`Outbox::try_write`] publishes a whole message now or nothing (the caller's thread never
//! waits). [`Outbox::send_queued`] hands a message to the outbox's own sender thread, which
//! writes it chunk by chunk as the receiver frees space, sleeping on this endpoint's space bell in
//! between; the `done` callback reports the outcome. Messages to one target leave in call order:
//! while anything is queued for a target, `try_write` to it returns false.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::endpoint::{ring_bell_always, Endpoint};
use super::platform;
use super::ring::Outgoing;

/// Why [`Outbox::try_write`] or [`Outbox::send_queued`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// The target is not an endpoint of this cluster.
    TargetOutOfRange { to: u32, endpoints: u32 },
    /// The target is this endpoint itself (rings connect distinct endpoints).
    ToSelf,
    /// Larger than `try_write` accepts (half a ring) or than a message can be (4 GiB - 1).
    TooLarge { len: usize, max: usize },
    /// The outbox was closed.
    Closed,
    /// The primary closed the cluster: nobody will read.
    ClusterClosed,
    /// The ring to the target is corrupt.
    Corrupt,
}

/// How a queued send ended (passed to its `done` callback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The outbox closed before the message was written.
    Closed,
    /// The primary closed the cluster before the message was written.
    ClusterClosed,
    /// The deadline passed before the first byte could be written.
    TimedOut,
    /// The ring to the target is corrupt.
    Corrupt,
    /// The job was bound to the process holding the target index, and that process left before
    /// a byte was written (broadcast, publish and requests go to processes, not mailboxes).
    TargetLeft,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TargetOutOfRange { to, endpoints } => write!(
                f,
                "target {to} is not an endpoint of this cluster ({endpoints} endpoints)"
            ),
            Self::ToSelf => f.write_str("cannot write to this endpoint itself"),
            Self::TooLarge { len, max } => write!(f, "payload of {len} bytes is larger than {max} bytes"),
            Self::Closed => f.write_str("the bus is closed"),
            Self::ClusterClosed => f.write_str("the primary closed the cluster"),
            Self::Corrupt => f.write_str("the ring to the target is corrupt"),
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed => f.write_str("the bus was closed before the message was sent"),
            Self::TimedOut => f.write_str("no room in the receiver's ring before the timeout"),
            Self::ClusterClosed => f.write_str("the primary closed the cluster"),
            Self::TargetLeft => f.write_str("the receiving process left"),
            Self::Corrupt => f.write_str("the ring to the target is corrupt"),
        }
    }
}

pub type Done = Box<dyn FnOnce(Result<(), SendError>) + Send>;

struct Job {
    kind: u8,
    data: Vec<u8>,
    out: Outgoing,
    deadline: Option<Instant>,
    /// Owner word of the target index when queued, for jobs bound to that process.
    bound_to: Option<u64>,
    done: Done,
}

pub struct Outbox {
    ep: Arc<Endpoint>,
    queues: Vec<Mutex<VecDeque<Job>>>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Copy buffers of written jobs, kept for the next ones: a fresh multi-megabyte allocation
    /// costs a page fault per 4 KiB on first touch, as much as the copy itself.
    spare: Mutex<Vec<Vec<u8>>>,
}

/// At most this many spare copy buffers are kept, none larger than `SPARE_MAX_BYTES`.
const SPARE_BUFFERS: usize = 4;
const SPARE_MAX_BYTES: usize = 16 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a queue half-updated (push/pop are atomic
    // with respect to panics), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Outbox {
    pub fn new(ep: Arc<Endpoint>) -> Arc<Outbox> {
        let queues = (0..ep.geometry().endpoints)
            .map(|_| Mutex::new(VecDeque::new()))
            .collect();
        Arc::new(Outbox {
            ep,
            queues,
            closed: AtomicBool::new(false),
            thread: Mutex::new(None),
            spare: Mutex::new(Vec::new()),
        })
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.ep
    }

    /// Largest payload [`try_write`](Self::try_write) accepts: half a ring, so that it fits
    /// wherever the ring's cursors stand once the ring has drained.
    pub fn max_write(&self) -> usize {
        let max_frame = self.ep.geometry().max_frame_payload();
        2 * max_frame
    }

    fn check(&self, to: u32, len: usize, max: usize) -> Result<(), WriteError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(WriteError::Closed);
        }
        if self.ep.shared().is_closed() {
            return Err(WriteError::ClusterClosed);
        }
        let endpoints = self.ep.geometry().endpoints;
        if to >= endpoints {
            return Err(WriteError::TargetOutOfRange { to, endpoints });
        }
        if to == self.ep.index() {
            return Err(WriteError::ToSelf);
        }
        if len > max {
            return Err(WriteError::TooLarge { len, max });
        }
        Ok(())
    }

    /// Publishes the whole message to `to` now, or nothing: false when the ring lacks room or
    /// earlier messages to `to` are still queued.
    pub fn try_write(&self, to: u32, kind: u8, data: &[u8]) -> Result<bool, WriteError> {
        self.check(to, data.len(), self.max_write())?;
        let q = lock(&self.queues[to as usize]);
        if !q.is_empty() {
            return Ok(false);
        }
        let ring = self.ep.ring_to(to);
        let ok = ring
            .write_message(
                kind,
                data,
                &mut Outgoing::default(),
                self.ep.geometry().max_frame_payload(),
                true,
            )
            .map_err(|_| WriteError::Corrupt)?;
        drop(q);
        if ok {
            self.ep.notify(to);
        }
        Ok(ok)
    }

    /// Writes small messages `(kind, payload)` to `to` in order, each whole or not at all, until
    /// one does not fit; one publication and at most one wake-up for all of them. Returns how
    /// many were written (none while sends to `to` are queued). Payloads longer than a frame
    /// stop the batch: write those with [`Outbox::try_write`].
    pub fn try_write_many<'a>(
        &self,
        to: u32,
        messages: impl Iterator<Item = (u8, &'a [u8])>,
    ) -> Result<usize, WriteError> {
        self.check(to, 0, 0)?;
        let q = lock(&self.queues[to as usize]);
        if !q.is_empty() {
            return Ok(0);
        }
        let n = self
            .ep
            .ring_to(to)
            .write_single_frames(messages, self.ep.geometry().max_frame_payload())
            .map_err(|_| WriteError::Corrupt)?;
        drop(q);
        if n > 0 {
            self.ep.notify(to);
        }
        Ok(n)
    }

    /// `bytes` in a spare buffer when one is large enough, else in a new one.
    fn copy_of(&self, bytes: &[u8]) -> Vec<u8> {
        let reused = {
            let mut spare = lock(&self.spare);
            let fit = spare.iter().position(|b| b.capacity() >= bytes.len());
            fit.map(|i| spare.swap_remove(i))
        };
        let mut v = reused.unwrap_or_default();
        v.clear();
        v.extend_from_slice(bytes);
        v
    }

    fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() >= 64 * 1024 && buf.capacity() <= SPARE_MAX_BYTES {
            let mut spare = lock(&self.spare);
            if spare.len() < SPARE_BUFFERS {
                spare.push(buf);
            }
        }
    }

    /// Ring bytes to `to` that surely take whole messages now (0 while sends to it are queued,
    /// so that nothing written later overtakes them). See `Ring::credit`.
    pub fn credit(&self, to: u32) -> u64 {
        if self.check(to, 0, 0).is_err() || !lock(&self.queues[to as usize]).is_empty() {
            return 0;
        }
        self.ep.ring_to(to).credit(self.ep.geometry().max_frame_payload())
    }

    /// Queues the message for the sender thread; `done` runs on that thread when it is written,
    /// or with the reason it never will be.
    /// With `bound`, the message is for the process holding `to` now: if it leaves before the
    /// message could be started, `done` gets `TargetLeft` instead of the message waiting for the
    /// next holder.
    pub fn send_queued(
        self: &Arc<Self>,
        to: u32,
        kind: u8,
        data: &[u8],
        timeout: Option<Duration>,
        bound: bool,
        done: Done,
    ) -> Result<(), WriteError> {
        self.check(to, data.len(), u32::MAX as usize)?;
        let mut q = lock(&self.queues[to as usize]);
        let mut out = Outgoing::default();
        if q.is_empty() {
            // Write what fits now straight from the caller's bytes; only the rest is copied.
            let ring = self.ep.ring_to(to);
            let r = ring.write_message(kind, data, &mut out, self.ep.geometry().max_frame_payload(), false);
            if out.written > 0 {
                self.ep.notify(to);
            }
            match r {
                Ok(true) => {
                    drop(q);
                    done(Ok(()));
                    return Ok(());
                }
                Ok(false) => {}
                Err(_) => {
                    drop(q);
                    done(Err(SendError::Corrupt));
                    return Ok(());
                }
            }
        }
        out.skipped = out.written;
        let job = Job {
            kind,
            data: self.copy_of(&data[out.written..]),
            out,
            deadline: timeout.map(|t| Instant::now() + t),
            bound_to: bound.then(|| self.ep.shared().owner_word(to)),
            done,
        };
        q.push_back(job);
        drop(q);
        self.start_thread();
        ring_bell_always(self.ep.space_bell());
        Ok(())
    }

    /// Messages still queued (all targets).
    pub fn queued(&self) -> usize {
        self.queues.iter().map(|q| lock(q).len()).sum()
    }

    fn start_thread(self: &Arc<Self>) {
        let mut t = lock(&self.thread);
        if t.is_none() && !self.closed.load(Ordering::Acquire) {
            let me = self.clone();
            *t = Some(
                std::thread::Builder::new()
                    .name("cluster-shm-send".into())
                    .spawn(move || me.run())
                    .expect("spawn sender thread"),
            );
        }
    }

    /// Fails every queued message with `Closed` and stops the sender thread. Idempotent.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        ring_bell_always(self.ep.space_bell());
        if let Some(t) = lock(&self.thread).take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        self.fail_all(SendError::Closed);
    }

    fn fail_all(&self, why: SendError) {
        for q in &self.queues {
            let jobs: Vec<Job> = lock(q).drain(..).collect();
            for j in jobs {
                (j.done)(Err(why.clone()));
            }
        }
    }

    fn run(self: Arc<Self>) {
        let bell = self.ep.space_bell();
        let max_frame = self.ep.geometry().max_frame_payload();
        let mut finished: Vec<(Done, Result<(), SendError>)> = Vec::new();
        loop {
            let seq = bell.seq.load(Ordering::Acquire);
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            if self.ep.shared().is_closed() {
                self.fail_all(SendError::ClusterClosed);
            }
            let mut any = false;
            let mut blocked = Vec::new();
            let mut wake_at: Option<Instant> = None;
            let now = Instant::now();
            for to in 0..self.queues.len() as u32 {
                let mut q = lock(&self.queues[to as usize]);
                let ring = if q.is_empty() { continue } else { self.ep.ring_to(to) };
                any = true;
                let mut progressed = false;
                // Jobs not started yet end wherever they stand in the queue when their deadline
                // passes or their process leaves; the others keep their order.
                let owner = self.ep.shared().owner_word(to);
                let mut i = 0;
                while i < q.len() {
                    let job = &q[i];
                    let why = if job.out.written != 0 {
                        None
                    } else if job.deadline.is_some_and(|d| d <= now) {
                        Some(SendError::TimedOut)
                    } else if job.bound_to.is_some_and(|o| o != owner) {
                        Some(SendError::TargetLeft)
                    } else {
                        None
                    };
                    match why {
                        Some(why) => finished.push((q.remove(i).expect("index in range").done, Err(why))),
                        None => {
                            if job.out.written == 0 {
                                wake_at = match (wake_at, job.deadline) {
                                    (Some(a), Some(b)) => Some(a.min(b)),
                                    (a, b) => a.or(b),
                                };
                            }
                            i += 1;
                        }
                    }
                }
                while let Some(job) = q.front_mut() {
                    let before = job.out.written;
                    match ring.write_message(job.kind, &job.data, &mut job.out, max_frame, false) {
                        Ok(true) => {
                            progressed = true;
                            let j = q.pop_front().expect("front exists");
                            self.recycle(j.data);
                            finished.push((j.done, Ok(())));
                        }
                        Ok(false) => {
                            progressed |= job.out.written != before;
                            blocked.push(to);
                            break;
                        }
                        Err(_) => {
                            let j = q.pop_front().expect("front exists");
                            finished.push((j.done, Err(SendError::Corrupt)));
                        }
                    }
                }
                drop(q);
                if progressed {
                    self.ep.notify(to);
                }
            }
            for (done, r) in finished.drain(..) {
                done(r);
            }
            if !any {
                platform::wait(&bell.seq, seq, Duration::from_secs(1));
                continue;
            }
            if blocked.is_empty() {
                continue;
            }
            for &to in &blocked {
                self.ep.ring_to(to).announce_writer_waiting();
            }
            if blocked
                .iter()
                .any(|&to| self.ep.ring_to(to).has_room_for_frame(max_frame))
            {
                continue;
            }
            let mut nap = Duration::from_millis(250);
            if let Some(at) = wake_at {
                nap = nap.min(at.saturating_duration_since(Instant::now()));
            }
            platform::wait(&bell.seq, seq, nap);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::core::loop_bell::{bell_state, LoopBell};
    use crate::core::{Attach, Shared};

    #[test]
    fn a_sender_rings_the_loop_bell_only_of_an_announced_sleeping_event_loop() {
        let shared = Shared::create(1, 4096).unwrap();
        let primary = Arc::new(Endpoint::attach(shared.clone(), Attach::Primary).unwrap());
        let worker = Arc::new(Endpoint::attach(Shared::open(shared.name()).unwrap(), Attach::Any).unwrap());
        let bell = LoopBell::bind(shared.name(), primary.index()).unwrap();
        let out = Outbox::new(worker.clone());
        let sleeping = &primary.data_bell().sleeping;

        // Awake receiver: no datagram, no system call.
        assert!(out.try_write(primary.index(), crate::core::kind::BYTES, b"a").unwrap());
        assert!(!bell.clear());
        // A delivery thread sleeps: the futex is rung, not the loop bell.
        sleeping.store(bell_state::THREAD, Ordering::SeqCst);
        assert!(out.try_write(primary.index(), crate::core::kind::BYTES, b"b").unwrap());
        assert!(!bell.clear());
        assert_eq!(sleeping.load(Ordering::SeqCst), bell_state::AWAKE);
        // The event loop sleeps: exactly one datagram, and the announcement is consumed.
        sleeping.store(bell_state::EVENT_LOOP, Ordering::SeqCst);
        assert!(out.try_write(primary.index(), crate::core::kind::BYTES, b"c").unwrap());
        assert!(out.try_write(primary.index(), crate::core::kind::BYTES, b"d").unwrap());
        assert!(bell.clear());
        assert!(!bell.clear());
        assert_eq!(sleeping.load(Ordering::SeqCst), bell_state::AWAKE);
        // Registry changes wake a sleeping event loop too.
        sleeping.store(bell_state::EVENT_LOOP, Ordering::SeqCst);
        shared.registry_changed();
        assert!(bell.clear());
        shared.close_cluster();
    }
}
