//! `NativeBus`, one process's attachment to a cluster (`createCluster` / `attachCluster`), and
//! its shared state [`Inner`]: the endpoint, outbox and inbox, polling `read`, the completion
//! handler of queued sends and acquires, and close. The named objects it opens are in
//! semaphore.rs, region.rs and map.rs; pushed delivery (`start`) is in delivery.rs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use super::delivery::{batch_buffers, Delivery};
use super::errors::{
    attach_error, coded, init_error, js, object_error, send_error_code, topic_error, whole, write_error, CodedResult,
};
use super::lock;
use super::map::NativeMap;
use super::region::NativeRegion;
use super::semaphore::NativeSemaphore;
use crate::core::endpoint::{owner_gen, owner_pid};
use crate::core::join;
use crate::core::layout::{EndpointSlot, Geometry};
use crate::core::semaphore::Waiter;
use crate::core::topics::{self, Topics};
use crate::core::{Attach, Batch, Budget, Endpoint, Inbox, InitError, Outbox, SendError, Shared};

/// Marks a word of `topic_watch_state` as an index into `registrations_view`.
const REGISTRATION_WORD: u32 = 1 << 31;

/// An ArrayBuffer over `len` bytes of the mapping at `start`, which JS only reads: it holds an
/// Arc of the mapping until V8 collects it, so it never reads unmapped memory. V8 counts its
/// length as external memory (a reason to view a few words' region, never the whole mapping).
/// None where the runtime would hand over a copy instead (no external buffers), or on a
/// big-endian host (JS compares u64 words as two little-endian halves).
///
/// # Safety
/// `start..start + len` must lie inside the mapping of `shared`.
unsafe fn view<'env>(env: &'env Env, shared: &Arc<Shared>, start: *mut u8, len: usize) -> Option<ArrayBuffer<'env>> {
    if cfg!(target_endian = "big") {
        return None;
    }
    let copied = Arc::new(AtomicBool::new(false));
    let flag = copied.clone();
    // SAFETY: the range is inside the mapping (caller), which stays mapped while an Arc<Shared>
    // lives: the finalize hint holds one until the buffer is collected.
    let buffer = unsafe {
        ArrayBuffer::from_external(env, start, len, shared.clone(), move |_, shared| {
            flag.store(true, Ordering::SeqCst);
            drop(shared);
        })
    };
    // Finalized already: the runtime made a copy (no external buffers), useless here.
    buffer.ok().filter(|_| !copied.load(Ordering::SeqCst))
}

type CompletionFn =
    ThreadsafeFunction<(u32, &'static str), Unknown<'static>, FnArgs<(u32, &'static str)>, Status, false, true>;

/// What a bus and the objects opened through it share; lives until the last of them is dropped.
pub(super) struct Inner {
    pub(super) ep: Arc<Endpoint>,
    outbox: Arc<Outbox>,
    pub(super) inbox: Arc<Mutex<Inbox>>,
    delivery: Mutex<Option<Delivery>>,
    /// Commits of the record last handed to a polling `read`, applied at the next poll.
    poll_commits: Mutex<Vec<(u32, u64)>>,
    /// Waiter queues of the semaphores this process opened, by name (closed with the bus).
    pub(super) semaphores: Mutex<HashMap<String, Arc<Waiter>>>,
    /// The cluster's topic table, opened on first use.
    topics: OnceLock<Topics>,
    /// Topics this process publishes to, each with the targets last handed to JS (see
    /// `topic_targets_changed`).
    watched_topics: Mutex<Vec<(String, Vec<u32>)>>,
    /// Batches handed to the ThreadsafeFunction whose JS callback has not run yet.
    pub(super) in_flight: Arc<AtomicU32>,
    /// Where queued sends and acquires report how they ended, as `(id, result)`. Weak: a send or
    /// acquire still waiting never keeps the event loop alive (invariant 7).
    completions: OnceLock<CompletionFn>,
    next_completion: AtomicU32,
    pub(super) closed: AtomicBool,
}

impl Inner {
    pub(super) fn new(ep: Endpoint) -> Arc<Inner> {
        let ep = Arc::new(ep);
        Arc::new(Inner {
            outbox: Outbox::new(ep.clone()),
            inbox: Arc::new(Mutex::new(Inbox::new(&ep))),
            ep,
            delivery: Mutex::new(None),
            poll_commits: Mutex::new(Vec::new()),
            semaphores: Mutex::new(HashMap::new()),
            topics: OnceLock::new(),
            watched_topics: Mutex::new(Vec::new()),
            in_flight: Arc::new(AtomicU32::new(0)),
            completions: OnceLock::new(),
            next_completion: AtomicU32::new(1),
            closed: AtomicBool::new(false),
        })
    }

    pub(super) fn open(&self) -> CodedResult<&Inner> {
        if self.closed.load(Ordering::Acquire) {
            Err(coded("ERR_CLOSED", "the bus is closed"))
        } else {
            Ok(self)
        }
    }

    fn topics(&self) -> CodedResult<&Topics> {
        self.open()?;
        if let Some(t) = self.topics.get() {
            return Ok(t);
        }
        let t = Topics::open(&self.ep).map_err(object_error)?;
        Ok(self.topics.get_or_init(|| t))
    }

    /// `[index, generation & 0xffff, ...]` of the attached processes subscribed to `topic`.
    fn topic_targets(&self, topic: &str) -> CodedResult<Vec<u32>> {
        let t = self.topics()?;
        topics::check_publish_name(topic).map_err(topic_error)?;
        let shared = self.ep.shared();
        Ok(t.subscribers(topic)
            .into_iter()
            .filter(|&i| i < shared.geometry().endpoints)
            .filter_map(|i| shared.holder_info(i).map(|(g, _)| [i, g & 0xffff]))
            .flatten()
            .collect())
    }

    /// `[n, index, generation & 0xffff, ... (n numbers), word, value, word, value, ...]`: the
    /// targets as `topic_targets`, computed from the values of the segment words that follow,
    /// each read once, before the targets are derived from them: the table's entry count, the
    /// subscriber bitmaps of the names `topic` looks up (the words of this cluster's endpoints),
    /// and the owner word of each target. While none of them changes, the targets do not either.
    /// A word is a u32 index into `topics_view`, or `REGISTRATION_WORD` + an index into
    /// `registrations_view`.
    fn topic_watch_state(&self, topic: &str) -> CodedResult<Vec<u32>> {
        let t = self.topics()?;
        topics::check_publish_name(topic).map_err(topic_error)?;
        let shared = self.ep.shared();
        let endpoints = shared.geometry().endpoints;
        let table = t.memory().0 as usize;
        let word = |p: *const u8| ((p as usize - table) / 4) as u32;
        let slots = shared.slot(0) as *const EndpointSlot as usize;
        let w = t.watch(topic);
        let mut words = vec![word(w.count as *const AtomicU32 as *const u8), w.count_seen];
        let mut bits = vec![0u64; endpoints.div_ceil(64) as usize];
        for bitmap in &w.bitmaps {
            for (b, a) in bits.iter_mut().zip(bitmap.iter()) {
                let v = a.load(Ordering::SeqCst);
                *b |= v;
                let at = word(a as *const AtomicU64 as *const u8);
                words.extend([at, v as u32, at + 1, (v >> 32) as u32]); // little-endian halves
            }
        }
        let mut out = vec![0];
        for (k, &b) in bits.iter().enumerate() {
            let mut rest = b;
            while rest != 0 {
                let i = k as u32 * 64 + rest.trailing_zeros();
                rest &= rest - 1;
                if i >= endpoints {
                    continue;
                }
                let owner = &shared.slot(i).registration.owner;
                let o = owner.load(Ordering::SeqCst);
                let at = REGISTRATION_WORD + ((owner as *const AtomicU64 as usize - slots) / 4) as u32;
                words.extend([at, o as u32, at + 1, (o >> 32) as u32]);
                if owner_pid(o) != 0 {
                    out.extend([i, owner_gen(o) & 0xffff]);
                }
            }
        }
        out[0] = (out.len() - 1) as u32;
        out.extend(words);
        Ok(out)
    }

    fn commit_polled(&self) {
        for (from, pos) in lock(&self.poll_commits).drain(..) {
            self.ep.commit(from, pos);
        }
    }

    fn poll(&self, max: u32) -> CodedResult<Option<Vec<Buffer>>> {
        self.open()?;
        if lock(&self.delivery).is_some() {
            return Err(coded(
                "ERR_SUBSCRIBED",
                "read() cannot be used while a subscription delivers messages",
            ));
        }
        self.commit_polled();
        if self.in_flight.load(Ordering::Acquire) != 0 {
            // Batches of a stopped subscription are still on their way to JS: reading past
            // them would reorder messages. index.js queues them when they arrive.
            return Ok(None);
        }
        let mut batch = Batch::default();
        let budget = Budget {
            max_records: max.max(1),
            max_bytes: Budget::BATCH.max_bytes,
        };
        lock(&self.inbox).drain(&self.ep, &mut batch, budget);
        *lock(&self.poll_commits) = std::mem::take(&mut batch.commits);
        Ok((batch.records > 0).then(|| batch_buffers(batch)))
    }

    fn start(
        self: &Arc<Self>,
        env: &Env,
        callback: Function<Vec<Buffer>, Unknown<'static>>,
        spin: Duration,
    ) -> CodedResult<()> {
        self.open()?;
        let mut slot = lock(&self.delivery);
        if slot.is_some() {
            return Ok(());
        }
        self.commit_polled();
        *slot = Some(Delivery::start(self, env, callback, spin)?);
        Ok(())
    }

    fn stop_delivery(&self) {
        let taken = lock(&self.delivery).take();
        if let Some(delivery) = taken {
            delivery.stop(self);
        }
    }

    /// A fresh completion id and the callback that reports `result` for it to JS.
    pub(super) fn completion(self: &Arc<Self>) -> CodedResult<(u32, impl FnOnce(&'static str) + Send + 'static)> {
        if self.completions.get().is_none() {
            return Err(coded("ERR_INTERNAL", "no completion handler registered"));
        }
        let id = self.next_completion.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        Ok((id, move |result: &'static str| {
            if let Some(t) = this.completions.get() {
                t.call((id, result), ThreadsafeFunctionCallMode::NonBlocking);
            }
        }))
    }

    fn send_queued(
        self: &Arc<Self>,
        to: u32,
        kind: u32,
        data: &[u8],
        timeout_ms: Option<f64>,
        bound: bool,
    ) -> CodedResult<u32> {
        self.open()?;
        let (id, report) = self.completion()?;
        let timeout = timeout_ms
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map(|t| Duration::from_secs_f64(t / 1000.0));
        let done =
            Box::new(move |r: std::result::Result<(), SendError>| report(r.err().map_or("", |e| send_error_code(&e))));
        self.outbox
            .send_queued(to, kind as u8, data, timeout, bound, done)
            .map_err(write_error)?;
        Ok(id)
    }

    /// Detaches; the primary also closes the cluster and unlinks the segment. Idempotent.
    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stop_delivery();
        self.outbox.close();
        release_freed_memory();
        for w in lock(&self.semaphores).values() {
            w.close();
        }
        self.commit_polled();
        let shared = self.ep.shared();
        if shared.is_joined() {
            return join::leave(&self.ep); // the last one out removes the segment
        }
        self.ep.detach();
        if shared.is_creator() {
            shared.close_cluster();
        } else if !shared.primary_alive() {
            // The primary died without cleaning up: do not let its segment outlive the cluster.
            shared.unlink();
        }
    }
}

/// Gives the pages of what close() just freed (the copies of queued messages) back to the OS:
/// glibc keeps freed blocks below its mmap threshold in its arenas otherwise.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only hands free memory of the allocator back to the OS; it touches no
    // live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub(super) fn register_cleanup(env: &Env, inner: &Arc<Inner>) -> CodedResult<()> {
    // At environment teardown (process exit, worker thread end) detach and stop the threads,
    // even when JS never called close().
    let weak = Arc::downgrade(inner);
    env.add_env_cleanup_hook(weak, |weak| {
        if let Some(inner) = weak.upgrade() {
            inner.close();
        }
    })
    .map(|_| ())
    .map_err(|e| coded("ERR_INTERNAL", e.reason))
}

fn create(env: &Env, workers: u32, ring_size: u32, heap_size: f64) -> CodedResult<NativeBus> {
    let geo = Geometry::with_heap(workers.saturating_add(1), ring_size, whole(heap_size, "heapSize")?)
        .map_err(|e| init_error(InitError::Geometry(e)))?;
    let shared = Shared::create_with(geo).map_err(init_error)?;
    let ep = Endpoint::attach(shared.clone(), Attach::Primary).map_err(|e| {
        shared.unlink();
        attach_error(e)
    })?;
    let inner = Inner::new(ep);
    register_cleanup(env, &inner)?;
    Ok(NativeBus { inner })
}

fn attach(env: &Env, name: &str, index: i32) -> CodedResult<NativeBus> {
    let shared = Shared::open(name).map_err(attach_error)?;
    let how = if index < 0 {
        Attach::Any
    } else {
        Attach::Index(index as u32)
    };
    let inner = Inner::new(Endpoint::attach(shared, how).map_err(attach_error)?);
    register_cleanup(env, &inner)?;
    Ok(NativeBus { inner })
}

/// Creates this cluster's segment (`workers` + the primary) and attaches the primary.
#[napi]
pub fn create_cluster(env: Env, workers: u32, ring_size: u32, heap_size: f64) -> Result<NativeBus> {
    js(&env, create(&env, workers, ring_size, heap_size))
}

/// Attaches to an existing segment as a worker: at `index` (>= 0) or the lowest free one (-1).
#[napi]
pub fn attach_cluster(env: Env, name: String, index: i32) -> Result<NativeBus> {
    js(&env, attach(&env, &name, index))
}

/// Longest topic name in bytes (the core's rule, for lib/ code that builds topic names).
#[napi]
pub const MAX_TOPIC_BYTES: u32 = topics::MAX_TOPIC as u32;

/// Longest name of a semaphore, region or map in bytes (for lib/ code that derives names).
#[napi]
pub const MAX_NAME_BYTES: u32 = crate::core::layout::MAX_NAME as u32;

/// Throws what `topicSubscribe(name)` would throw for a name the core refuses (ERR_INVALID_ARG):
/// lib/ checks topics it subscribes to later (bus.bridge's) with the core's rule, not a copy.
#[napi]
pub fn check_topic_name(env: Env, name: String) -> Result<()> {
    js(&env, topics::check_name(&name).map_err(topic_error))
}

/// One process's attachment to a cluster segment. Created by `createCluster` / `attachCluster`.
#[napi]
pub struct NativeBus {
    pub(super) inner: Arc<Inner>,
}

#[napi]
impl NativeBus {
    #[napi(getter)]
    pub fn index(&self) -> u32 {
        self.inner.ep.index()
    }

    #[napi(getter)]
    pub fn name(&self) -> String {
        self.inner.ep.shared().name().to_owned()
    }

    /// Endpoints in the cluster: workers + 1 (the primary is the last index).
    #[napi(getter)]
    pub fn endpoints(&self) -> u32 {
        self.inner.ep.geometry().endpoints
    }

    #[napi(getter)]
    pub fn ring_size(&self) -> u32 {
        self.inner.ep.geometry().ring_capacity
    }

    /// Largest payload `write` accepts (larger ones go through `sendQueued`).
    #[napi(getter)]
    pub fn max_write(&self) -> u32 {
        self.inner.outbox.max_write() as u32
    }

    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Messages waiting in this process's outbox for room in a receiver's ring.
    #[napi(getter)]
    pub fn queued(&self) -> u32 {
        self.inner.outbox.queued() as u32
    }

    /// Publishes a whole message now or nothing (false: ring full or earlier sends queued).
    #[napi]
    pub fn write(&self, env: &Env, to: u32, kind: u32, data: &[u8]) -> Result<bool> {
        let r = self
            .inner
            .open()
            .and_then(|i| i.outbox.try_write(to, kind as u8, data).map_err(write_error));
        js(env, r)
    }

    /// Writes the messages staged by index.js, `[kind u8][0 u8 ×3][len u32 LE][payload]` back to
    /// back, each whole, in order, stopping at the first that does not fit. Returns
    /// `[accepted, credit]`: how many were written, and the ring bytes that surely take whole
    /// messages now (see `Outbox::credit`). One call for many small messages: the N-API
    /// boundary, not the ring, is what a small `write()` costs.
    #[napi]
    pub fn write_staged(&self, env: &Env, to: u32, records: &[u8]) -> Result<Vec<u32>> {
        let r = self.inner.open().and_then(|inner| {
            // Records: kind (u8), 3 unused bytes, len (u32 LE), payload; written as one batch.
            let mut malformed = false;
            let mut at = 0;
            let messages = std::iter::from_fn(|| {
                let header = records.get(at..at + 8)?;
                let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
                let Some(payload) = records.get(at + 8..at + 8 + len) else {
                    malformed = true;
                    return None;
                };
                at += 8 + len;
                Some((header[0], payload))
            });
            let accepted = inner.outbox.try_write_many(to, messages).map_err(write_error)? as u32;
            if malformed {
                return Err(coded("ERR_INVALID_ARG", "malformed staged records"));
            }
            Ok(vec![accepted, inner.outbox.credit(to).min(u32::MAX as u64) as u32])
        });
        js(env, r)
    }

    /// Ring bytes to `to` that surely take whole messages now (0 while sends to it are queued).
    #[napi]
    pub fn credit(&self, to: u32) -> u32 {
        self.inner.outbox.credit(to).min(u32::MAX as u64) as u32
    }

    /// Same as `write` for a string payload (UTF-8 text, or a value's JSON text), without a
    /// Buffer in between.
    #[napi]
    pub fn write_string(&self, env: &Env, to: u32, kind: u32, data: String) -> Result<bool> {
        let r = self
            .inner
            .open()
            .and_then(|i| i.outbox.try_write(to, kind as u8, data.as_bytes()).map_err(write_error));
        js(env, r)
    }

    /// Registers `callback(id, result)`, through which queued sends and acquires report how they
    /// ended ('' or a code for sends; 'clean', 'recovered' or a code for acquires).
    #[napi(ts_args_type = "callback: (id: number, result: string) => void")]
    pub fn set_completion_handler(
        &self,
        callback: Function<FnArgs<(u32, &'static str)>, Unknown<'static>>,
    ) -> Result<()> {
        let tsfn: CompletionFn = callback
            .build_threadsafe_function::<(u32, &'static str)>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(|ctx| Ok(ctx.value.into()))?;
        let _ = self.inner.completions.set(tsfn);
        Ok(())
    }

    /// Queues a message for the sender thread; returns the id its completion will carry: '' once
    /// it is in the receiver's ring, or a code (`ERR_TIMEOUT`, `ERR_CLOSED`, `ERR_CLUSTER_CLOSED`,
    /// `ERR_CORRUPT`, `ERR_PEER_GONE`). With `bound`, the message is for the process holding `to`
    /// now, not for whoever holds the index later (broadcast, publish, requests).
    #[napi]
    pub fn send_queued(
        &self,
        env: &Env,
        to: u32,
        kind: u32,
        data: &[u8],
        timeout_ms: Option<f64>,
        bound: bool,
    ) -> Result<u32> {
        js(env, self.inner.send_queued(to, kind, data, timeout_ms, bound))
    }

    /// The once-a-second check of every attached process, subscribed or not (lib/incoming.js):
    /// 0 the cluster runs, 1 its primary closed it, 2 its primary died (then marked closed for
    /// every member, so that their writes fail with ERR_CLUSTER_CLOSED).
    #[napi]
    pub fn cluster_state(&self) -> u32 {
        self.inner.ep.shared().check_primary()
    }

    /// Indices held by a live attachment (this one included), primary last.
    #[napi]
    pub fn attached(&self) -> Vec<u32> {
        self.inner.ep.attached()
    }

    /// Primary: frees the indices and semaphore permits held by `pid` (cluster's 'exit').
    #[napi]
    pub fn process_exited(&self, pid: u32) -> Vec<u32> {
        self.inner.ep.shared().process_exited(pid)
    }

    /// This attachment's generation (low 16 bits): envelopes for processes carry the receiver's,
    /// so a successor at the same index can tell what was meant for its predecessor.
    #[napi(getter)]
    pub fn generation(&self) -> u32 {
        self.inner.ep.generation() & 0xffff
    }

    /// `(generation & 0xffff) + flags * 65536` of the process holding `index`, or -1 when none
    /// does: one number, not an array (a request asks this once per call, a responder once per
    /// request, and an array costs more to hand over than the lookup itself).
    #[napi]
    pub fn holder_info(&self, index: u32) -> f64 {
        let shared = self.inner.ep.shared();
        (index < shared.geometry().endpoints)
            .then(|| shared.holder_info(index))
            .flatten()
            .map_or(-1.0, |(g, f)| f64::from(g & 0xffff) + f64::from(f) * 65536.0)
    }

    /// `[owner, flags]`: u32 indices into `registrations_view` of the owner word (its low half;
    /// the high half follows) and the flags word of endpoint `index`, what `holder_info` reads:
    /// a requester reads them itself, without a call per request.
    #[napi]
    pub fn registration_words(&self, env: &Env, index: u32) -> Result<Vec<u32>> {
        let shared = self.inner.ep.shared();
        if index >= shared.geometry().endpoints {
            return js(env, Err(coded("ERR_INDEX_OUT_OF_RANGE", "no such endpoint")));
        }
        let base = shared.slot(0) as *const EndpointSlot as usize;
        let reg = &shared.slot(index).registration;
        let word = |p: usize| ((p - base) / 4) as u32;
        Ok(vec![
            word(&reg.owner as *const AtomicU64 as usize),
            word(&reg.flags as *const AtomicU32 as usize),
        ])
    }

    /// Says whether this process answers requests (read by requesters before they send).
    #[napi]
    pub fn set_handles_requests(&self, on: bool) {
        self.inner.ep.set_flag(crate::core::layout::HANDLES_REQUESTS, on);
    }

    /// Adds this process to `topic`'s subscribers (a trailing `*` makes it a pattern).
    #[napi]
    pub fn topic_subscribe(&self, env: &Env, topic: String) -> Result<()> {
        let r = self
            .inner
            .topics()
            .and_then(|t| t.subscribe(&topic, self.inner.ep.index()).map_err(topic_error));
        js(env, r)
    }

    #[napi]
    pub fn topic_unsubscribe(&self, env: &Env, topic: String) -> Result<()> {
        let r = self
            .inner
            .topics()
            .map(|t| t.unsubscribe(&topic, self.inner.ep.index()));
        js(env, r)
    }

    /// Attached processes subscribed to `topic` (directly or by pattern), this one included, as
    /// `[index, generation & 0xffff, index, generation, ...]`.
    #[napi]
    pub fn topic_targets(&self, env: &Env, topic: String) -> Result<Vec<u32>> {
        js(env, self.inner.topic_targets(&topic))
    }

    /// Starts watching the targets of `topic` for `topic_targets_changed`; returns its id.
    #[napi]
    pub fn topic_watch(&self, env: &Env, topic: String) -> Result<u32> {
        let r = self.inner.topic_targets(&topic).map(|_| {
            let mut watched = lock(&self.inner.watched_topics);
            // No valid target list is [u32::MAX]: the first topic_targets_changed reports them.
            watched.push((topic, vec![u32::MAX]));
            (watched.len() - 1) as u32
        });
        js(env, r)
    }

    /// The targets of watched topic `id` (as `topic_targets`) if they changed since the last
    /// call, else null: one call with a number and no array while the subscribers stay the same
    /// (crossing N-API with a string and an array is most of what a small publish costs).
    #[napi]
    pub fn topic_targets_changed(&self, env: &Env, id: u32) -> Result<Option<Vec<u32>>> {
        let r = (|| {
            let mut watched = lock(&self.inner.watched_topics);
            let Some((topic, last)) = watched.get_mut(id as usize) else {
                return Err(coded("ERR_INVALID_ARG", "unknown watched topic"));
            };
            let now = self.inner.topic_targets(topic)?;
            if now == *last {
                return Ok(None);
            }
            last.clone_from(&now);
            Ok(Some(now))
        })();
        js(env, r)
    }

    /// The watched topic `id`'s targets with the segment words they derive from (see
    /// `Inner::topic_watch_state`): lib/topics.js reads those words through `segment_view` on
    /// each publish and asks again only when one changed.
    #[napi]
    pub fn topic_watch_state(&self, env: &Env, id: u32) -> Result<Vec<u32>> {
        let topic = lock(&self.inner.watched_topics)
            .get(id as usize)
            .map(|(t, _)| t.clone());
        let r = match topic {
            Some(topic) => self.inner.topic_watch_state(&topic),
            None => Err(coded("ERR_INVALID_ARG", "unknown watched topic")),
        };
        js(env, r)
    }

    /// The endpoint slots (registrations) of the mapping as an ArrayBuffer, for reading with
    /// Atomics the words `registration_words` and `topic_watch_state` name; null where it cannot
    /// be a view of the memory itself (see `view`).
    #[napi(ts_return_type = "ArrayBuffer | null")]
    pub fn registrations_view<'env>(&self, env: &'env Env) -> Result<Option<ArrayBuffer<'env>>> {
        let shared = self.inner.ep.shared();
        let start = shared.slot(0) as *const EndpointSlot as *mut u8;
        let len = shared.geometry().endpoints as usize * std::mem::size_of::<EndpointSlot>();
        // SAFETY: the slots are `endpoints` contiguous EndpointSlots inside the mapping.
        Ok(unsafe { view(env, shared, start, len) })
    }

    /// The topic table as an ArrayBuffer, for reading the words `topic_watch_state` names; null
    /// where it cannot be a view of the memory itself (see `view`).
    #[napi(ts_return_type = "ArrayBuffer | null")]
    pub fn topics_view<'env>(&self, env: &'env Env) -> Result<Option<ArrayBuffer<'env>>> {
        let (start, len) = js(env, self.inner.topics())?.memory();
        // SAFETY: the table's memory lies inside the mapping (`Topics::memory`).
        Ok(unsafe { view(env, self.inner.ep.shared(), start, len) })
    }

    /// Opens (creating on first use) the named semaphore of `permits` permits.
    #[napi]
    pub fn semaphore(&self, env: &Env, name: String, permits: u32) -> Result<NativeSemaphore> {
        js(env, NativeSemaphore::open(&self.inner, name, permits))
    }

    /// Opens (creating on first use) the named region of `size` bytes.
    #[napi]
    pub fn region(&self, env: &Env, name: String, size: f64) -> Result<NativeRegion> {
        js(env, NativeRegion::open(&self.inner, name, size))
    }

    /// Opens (creating on first use) the named map.
    #[napi]
    pub fn map(
        &self,
        env: &Env,
        name: String,
        capacity: f64,
        max_key_bytes: f64,
        max_value_bytes: f64,
    ) -> Result<NativeMap> {
        js(
            env,
            NativeMap::open(&self.inner, name, capacity, max_key_bytes, max_value_bytes),
        )
    }

    /// Polling: commits what the previous poll returned (the caller handed it out) and returns
    /// the next batch (at most `max` records), or null when nothing is waiting.
    #[napi]
    pub fn poll(&self, env: &Env, max: u32) -> Result<Option<Vec<Buffer>>> {
        js(env, self.inner.poll(max))
    }

    /// Starts delivery: `callback` gets one Buffer of records per drained batch, from the event
    /// loop where it can poll the loop bell (Linux), else from a delivery thread sleeping on the
    /// futex. `spinMicros` > 0 spins that long before sleeping (lower latency, one core busy
    /// meanwhile).
    #[napi(ts_args_type = "callback: (batch: Buffer[]) => void, spinMicros: number")]
    pub fn start(&self, env: &Env, callback: Function<Vec<Buffer>, Unknown<'static>>, spin_micros: u32) -> Result<()> {
        js(
            env,
            self.inner
                .start(env, callback, Duration::from_micros(spin_micros as u64)),
        )
    }

    /// How messages are being delivered: "event-loop", "thread", or null (no subscription).
    #[napi(getter)]
    pub fn delivery(&self) -> Option<&'static str> {
        lock(&self.inner.delivery).as_ref().map(Delivery::name)
    }

    /// Stops the delivery thread (messages stay in the rings for `read` or a later `start`).
    #[napi]
    pub fn stop(&self) {
        self.inner.stop_delivery();
    }

    /// Detaches (the primary also unlinks the segment and tells the workers). Idempotent.
    #[napi]
    pub fn close(&self) {
        self.inner.close();
    }
}
