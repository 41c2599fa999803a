#![cfg_attr(test, allow(dead_code))] // the #[napi] exports are only referenced by the addon build
//! The `#[napi]` surface: converts JS values, maps core errors to JS errors with stable `code`
//! strings, and owns the delivery thread with its ThreadsafeFunction. The ergonomic API (payload
//! encoding, EventEmitter, cluster integration) is in `index.js`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

#[cfg(target_os = "linux")]
mod event_loop;

use crate::core::endpoint::ring_bell_always;
use crate::core::kind;
use crate::core::layout::Geometry;
use crate::core::map::{MapError, SharedMap};
use crate::core::objects::{ObjectError, OutOfBounds, Region};
use crate::core::semaphore::{AcquireError, Acquired, Semaphore, Waiter};
use crate::core::topics::{TopicError, Topics};
use crate::core::{
    Attach, AttachError, Batch, Budget, Endpoint, Inbox, InitError, Outbox, SendError, Shared, WriteError,
};

/// A JS error with a stable `code` (see README, "Error codes").
pub struct Coded {
    code: &'static str,
    message: String,
}

type CodedResult<T> = std::result::Result<T, Coded>;

fn coded(code: &'static str, msg: impl ToString) -> Coded {
    Coded {
        code,
        message: msg.to_string(),
    }
}

/// The JS error class (index.js's ClusterShmError), registered once per environment.
type ErrorClass = FunctionRef<FnArgs<(String, String)>, Unknown<'static>>;

/// index.js registers its `ClusterShmError(code, message)` class here, so that errors thrown by
/// the addon are instances of it.
#[napi]
pub fn register_error_class(env: Env, error_class: Function<FnArgs<(String, String)>, Unknown<'static>>) -> Result<()> {
    env.set_instance_data(error_class.create_ref()?, (), |_| {})
}

/// Throws `Coded` errors as `ClusterShmError`s (or, before index.js registered it, as plain errors
/// with the same `code`).
fn js<T>(env: &Env, r: CodedResult<T>) -> Result<T> {
    r.or_else(|e| {
        let class = env.get_instance_data::<ErrorClass>().ok().flatten();
        let thrown = class
            .and_then(|c| c.borrow_back(env).ok())
            .and_then(|ctor| ctor.new_instance((e.code.to_owned(), e.message.clone()).into()).ok())
            .map(|err| env.throw(err));
        if !matches!(thrown, Some(Ok(()))) {
            env.throw_error(&e.message, Some(e.code))?;
        }
        Err(Error::new(Status::PendingException, e.message))
    })
}

fn init_error(e: InitError) -> Coded {
    use crate::core::segment::CreateError;
    let code = match &e {
        InitError::Geometry(_) => "ERR_INVALID_ARG",
        InitError::Segment(CreateError::NoSpace) => "ERR_NO_SPACE",
        InitError::Segment(_) => "ERR_SEGMENT_CREATE",
    };
    coded(code, e)
}

fn attach_error(e: AttachError) -> Coded {
    use crate::core::segment::OpenError;
    let code = match &e {
        AttachError::Segment(OpenError::NotFound) => "ERR_SEGMENT_NOT_FOUND",
        AttachError::Segment(OpenError::InvalidName) => "ERR_INVALID_ARG",
        AttachError::Segment(OpenError::PermissionDenied) => "ERR_SEGMENT_ACCESS",
        AttachError::Segment(_) | AttachError::BadHeader(_) => "ERR_BAD_SEGMENT",
        AttachError::IndexOutOfRange { .. } => "ERR_INDEX_OUT_OF_RANGE",
        AttachError::IndexTaken(_) => "ERR_INDEX_TAKEN",
        AttachError::NoFreeIndex => "ERR_NO_FREE_INDEX",
        AttachError::Closed => "ERR_CLUSTER_CLOSED",
    };
    coded(code, e)
}

fn write_error(e: WriteError) -> Coded {
    let code = match &e {
        WriteError::TargetOutOfRange { .. } | WriteError::ToSelf => "ERR_INDEX_OUT_OF_RANGE",
        WriteError::TooLarge { .. } => "ERR_PAYLOAD_TOO_LARGE",
        WriteError::Closed => "ERR_CLOSED",
        WriteError::ClusterClosed => "ERR_CLUSTER_CLOSED",
        WriteError::Corrupt => "ERR_CORRUPT",
    };
    coded(code, e)
}

fn object_error(e: ObjectError) -> Coded {
    let code = match &e {
        ObjectError::InvalidName | ObjectError::InvalidParams(_) => "ERR_INVALID_ARG",
        ObjectError::Mismatch(_) => "ERR_MISMATCH",
        ObjectError::TableFull | ObjectError::NoSpace { .. } => "ERR_NO_SPACE",
        ObjectError::Corrupt => "ERR_CORRUPT",
    };
    coded(code, e)
}

fn topic_error(e: TopicError) -> Coded {
    let code = match &e {
        TopicError::InvalidName => "ERR_INVALID_ARG",
        TopicError::TableFull => "ERR_NO_SPACE",
    };
    coded(code, e)
}

fn map_error(e: MapError) -> Coded {
    let code = match &e {
        MapError::KeyTooLarge { .. } | MapError::ValueTooLarge { .. } => "ERR_PAYLOAD_TOO_LARGE",
        MapError::Full { .. } => "ERR_MAP_FULL",
        MapError::NotANumber => "ERR_NOT_A_NUMBER",
    };
    coded(code, e)
}

fn bounds_error(e: OutOfBounds) -> Coded {
    coded("ERR_OUT_OF_BOUNDS", e)
}

/// A JS number that must be a whole, non-negative, exactly representable integer.
fn whole(v: f64, what: &str) -> CodedResult<u64> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9007199254740991.0 {
        Ok(v as u64)
    } else {
        Err(coded(
            "ERR_INVALID_ARG",
            format!("{what} must be a non-negative integer, got {v}"),
        ))
    }
}

fn send_error_code(e: &SendError) -> &'static str {
    match e {
        SendError::Closed => "ERR_CLOSED",
        SendError::TimedOut => "ERR_TIMEOUT",
        SendError::ClusterClosed => "ERR_CLUSTER_CLOSED",
        SendError::TargetLeft => "ERR_PEER_GONE",
        SendError::Corrupt => "ERR_CORRUPT",
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type CompletionFn =
    ThreadsafeFunction<(u32, &'static str), Unknown<'static>, FnArgs<(u32, &'static str)>, Status, false, true>;

/// Weak: a subscription alone never keeps the event loop alive (invariant 7).
type DeliverFn = ThreadsafeFunction<Batch, Unknown<'static>, Vec<Buffer>, Status, false, true>;

/// A batch as JS gets it: `[records, ...large payloads]`, every Vec handed over without a copy.
fn batch_buffers(batch: Batch) -> Vec<Buffer> {
    std::iter::once(batch.bytes)
        .chain(batch.large)
        .map(Buffer::from)
        .collect()
}

enum Delivery {
    /// Linux: the event loop polls the endpoint's loop bell (one wake-up per idle period).
    #[cfg(target_os = "linux")]
    EventLoop(event_loop::LoopDelivery),
    /// Elsewhere: a thread sleeps on the futex and hands batches over by ThreadsafeFunction.
    Thread { stop: Arc<AtomicBool>, thread: JoinHandle<()> },
}

struct Inner {
    ep: Arc<Endpoint>,
    outbox: Arc<Outbox>,
    inbox: Arc<Mutex<Inbox>>,
    delivery: Mutex<Option<Delivery>>,
    /// Commits of the record last handed to a polling `read`, applied at the next poll.
    poll_commits: Mutex<Vec<(u32, u64)>>,
    /// Waiter queues of the semaphores this process opened, by name (closed with the bus).
    semaphores: Mutex<HashMap<String, Arc<Waiter>>>,
    /// The cluster's topic table, opened on first use.
    topics: OnceLock<Topics>,
    /// Batches handed to the ThreadsafeFunction whose JS callback has not run yet.
    in_flight: Arc<AtomicU32>,
    /// Where queued sends and acquires report how they ended, as `(id, result)`. Weak: a send or
    /// acquire still waiting never keeps the event loop alive (invariant 7).
    completions: OnceLock<CompletionFn>,
    next_completion: AtomicU32,
    closed: AtomicBool,
}

impl Inner {
    fn new(ep: Endpoint) -> Arc<Inner> {
        let ep = Arc::new(ep);
        Arc::new(Inner {
            outbox: Outbox::new(ep.clone()),
            inbox: Arc::new(Mutex::new(Inbox::new(&ep))),
            ep,
            delivery: Mutex::new(None),
            poll_commits: Mutex::new(Vec::new()),
            semaphores: Mutex::new(HashMap::new()),
            topics: OnceLock::new(),
            in_flight: Arc::new(AtomicU32::new(0)),
            completions: OnceLock::new(),
            next_completion: AtomicU32::new(1),
            closed: AtomicBool::new(false),
        })
    }

    fn open(&self) -> CodedResult<&Inner> {
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
        #[cfg(not(target_os = "linux"))]
        let _ = env; // the delivery thread needs no env
        #[cfg(target_os = "linux")]
        if self.in_flight.load(Ordering::Acquire) == 0 {
            // (Batches of an earlier thread subscription still on their way would be overtaken.)
            if let Some(d) = event_loop::start(env.raw(), self, callback.value().value, spin) {
                *slot = Some(Delivery::EventLoop(d));
                return Ok(());
            }
        }
        let tsfn: DeliverFn = callback
            .build_threadsafe_function::<Batch>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(|ctx| Ok(batch_buffers(ctx.value)))
            .map_err(|e| coded("ERR_INTERNAL", e.reason))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (this, stop2) = (self.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("cluster-shm-deliver".into())
            .spawn(move || {
                let mut inbox = lock(&this.inbox);
                inbox.run(&this.ep, &stop2, spin, |mut batch| {
                    // Every batch goes through the queue, even one with only chunks of a message
                    // being reassembled, so commits stay in order behind undelivered batches.
                    let commits = std::mem::take(&mut batch.commits);
                    let this = this.clone();
                    this.in_flight.fetch_add(1, Ordering::AcqRel);
                    let this2 = this.clone();
                    // Commit after the JS callback returned: a process killed before that leaves
                    // the batch in the ring for the next holder of this index. A batch that
                    // reaches JS after close() is dropped by index.js, so it is not committed.
                    let status =
                        tsfn.call_with_return_value(batch, ThreadsafeFunctionCallMode::NonBlocking, move |_, _| {
                            if !this.closed.load(Ordering::Acquire) {
                                for (from, pos) in commits {
                                    this.ep.commit(from, pos);
                                }
                            }
                            this.in_flight.fetch_sub(1, Ordering::AcqRel);
                            Ok(())
                        });
                    if status != Status::Ok {
                        // Not queued (the environment is closing): nothing will run; the batch stays in the ring.
                        this2.in_flight.fetch_sub(1, Ordering::AcqRel);
                    }
                });
            })
            .map_err(|e| coded("ERR_INTERNAL", e))?;
        *slot = Some(Delivery::Thread { stop, thread });
        Ok(())
    }

    fn stop_delivery(&self) {
        let taken = lock(&self.delivery).take();
        match taken {
            Some(Delivery::Thread { stop, thread }) => {
                stop.store(true, Ordering::Release);
                ring_bell_always(self.ep.data_bell());
                let _ = thread.join();
            }
            #[cfg(target_os = "linux")]
            Some(Delivery::EventLoop(d)) => d.stop(),
            None => {}
        }
    }

    /// A fresh completion id and the callback that reports `result` for it to JS.
    fn completion(self: &Arc<Self>) -> CodedResult<(u32, impl FnOnce(&'static str) + Send + 'static)> {
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
        for w in lock(&self.semaphores).values() {
            w.close();
        }
        self.commit_polled();
        self.ep.detach();
        let shared = self.ep.shared();
        if shared.is_creator() {
            shared.close_cluster();
        } else if !shared.primary_alive() {
            // The primary died without cleaning up: do not let its segment outlive the cluster.
            shared.unlink();
        }
    }
}

fn register_cleanup(env: &Env, inner: &Arc<Inner>) -> CodedResult<()> {
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

/// One process's attachment to a cluster segment. Created by `createCluster` / `attachCluster`.
#[napi]
pub struct NativeBus {
    inner: Arc<Inner>,
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

    /// Same as `write` for a string payload, without a Buffer in between.
    #[napi]
    pub fn write_string(&self, env: &Env, to: u32, data: String) -> Result<bool> {
        let r = self
            .inner
            .open()
            .and_then(|i| i.outbox.try_write(to, kind::UTF8, data.as_bytes()).map_err(write_error));
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

    /// `[generation & 0xffff, flags]` of the process holding `index`, or null when none does.
    #[napi]
    pub fn holder_info(&self, index: u32) -> Option<Vec<u32>> {
        let shared = self.inner.ep.shared();
        (index < shared.geometry().endpoints)
            .then(|| shared.holder_info(index))
            .flatten()
            .map(|(g, f)| vec![g & 0xffff, f])
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
        let r = self.inner.topics().and_then(|t| {
            if topic.is_empty() || topic.len() > crate::core::topics::MAX_TOPIC || topic.contains('*') {
                return Err(topic_error(TopicError::InvalidName));
            }
            let shared = self.inner.ep.shared();
            Ok(t.subscribers(&topic)
                .into_iter()
                .filter(|&i| i < shared.geometry().endpoints)
                .filter_map(|i| shared.holder_info(i).map(|(g, _)| [i, g & 0xffff]))
                .flatten()
                .collect())
        });
        js(env, r)
    }

    /// Opens (creating on first use) the named semaphore of `permits` permits.
    #[napi]
    pub fn semaphore(&self, env: &Env, name: String, permits: u32) -> Result<NativeSemaphore> {
        let r = self.inner.open().and_then(|inner| {
            let mut sems = lock(&inner.semaphores);
            if let Some(w) = sems.get(&name) {
                if w.semaphore().permits() != permits {
                    return Err(coded(
                        "ERR_MISMATCH",
                        format!("semaphore \"{name}\" exists with other parameters"),
                    ));
                }
                return Ok(w.clone());
            }
            let sem = Semaphore::open(&inner.ep, &name, permits).map_err(object_error)?;
            let w = Waiter::new(sem);
            sems.insert(name, w.clone());
            Ok(w)
        });
        js(env, r).map(|waiter| NativeSemaphore {
            bus: self.inner.clone(),
            waiter,
            last_sweep: Mutex::new(Instant::now()),
        })
    }

    /// Opens (creating on first use) the named region of `size` bytes.
    #[napi]
    pub fn region(&self, env: &Env, name: String, size: f64) -> Result<NativeRegion> {
        let r = self.inner.open().and_then(|inner| {
            let size = whole(size, "size")?;
            Region::open(&inner.ep, &name, size).map_err(object_error)
        });
        js(env, r).map(|region| NativeRegion {
            bus: self.inner.clone(),
            region,
        })
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
        let r = self.inner.open().and_then(|inner| {
            let (c, k, v) = (
                whole(capacity, "capacity")?,
                whole(max_key_bytes, "maxKeyBytes")?,
                whole(max_value_bytes, "maxValueBytes")?,
            );
            SharedMap::open(&inner.ep, &name, c, k, v).map_err(object_error)
        });
        js(env, r).map(|map| NativeMap {
            bus: self.inner.clone(),
            map,
        })
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
            self.inner.start(env, callback, Duration::from_micros(spin_micros as u64)),
        )
    }

    /// How messages are being delivered: "event-loop", "thread", or null (no subscription).
    #[napi(getter)]
    pub fn delivery(&self) -> Option<&'static str> {
        match &*lock(&self.inner.delivery) {
            #[cfg(target_os = "linux")]
            Some(Delivery::EventLoop(_)) => Some("event-loop"),
            Some(Delivery::Thread { .. }) => Some("thread"),
            None => None,
        }
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

/// A named cross-process semaphore (see core::semaphore). Waits run on its waiter thread.
#[napi]
pub struct NativeSemaphore {
    bus: Arc<Inner>,
    waiter: Arc<Waiter>,
    last_sweep: Mutex<Instant>,
}

fn acquired_code(a: Acquired) -> &'static str {
    match a {
        Acquired::Clean => "clean",
        Acquired::Recovered => "recovered",
    }
}

#[napi]
impl NativeSemaphore {
    #[napi(getter)]
    pub fn permits(&self) -> u32 {
        self.waiter.semaphore().permits()
    }

    #[napi(getter)]
    pub fn available(&self) -> u32 {
        self.waiter.semaphore().available()
    }

    /// Permits this process holds.
    #[napi(getter)]
    pub fn held(&self) -> u32 {
        self.waiter.semaphore().held()
    }

    /// Takes a permit now: "clean", "recovered" (its last holder died holding it), or null.
    #[napi(ts_return_type = "'clean' | 'recovered' | null")]
    pub fn try_acquire(&self, env: &Env) -> Result<Option<&'static str>> {
        let r = self.bus.open().map(|_| {
            let sem = self.waiter.semaphore();
            sem.try_acquire()
                .or_else(|| {
                    // No waiter sweeps for dead holders when nobody waits: do it here, at most
                    // every 100 ms per semaphore and process.
                    let mut last = lock(&self.last_sweep);
                    (last.elapsed() >= Duration::from_millis(100)).then(|| *last = Instant::now())?;
                    drop(last);
                    (sem.sweep() > 0).then(|| sem.try_acquire()).flatten()
                })
                .map(acquired_code)
        });
        js(env, r)
    }

    /// Gives back one permit this process holds; false when it holds none.
    #[napi]
    pub fn release(&self, env: &Env) -> Result<bool> {
        js(env, self.bus.open().map(|_| self.waiter.semaphore().release()))
    }

    /// Queues an acquire on the waiter thread; returns the id its completion will carry
    /// ('clean', 'recovered', or ERR_TIMEOUT, ERR_ABORTED, ERR_CLOSED). `cancel(id)` aborts it.
    #[napi]
    pub fn acquire(&self, env: &Env, timeout_ms: Option<f64>) -> Result<u32> {
        let r = self.bus.open().and_then(|_| {
            let (id, report) = self.bus.completion()?;
            let timeout = timeout_ms
                .filter(|t| t.is_finite() && *t >= 0.0)
                .map(|t| Duration::from_secs_f64(t / 1000.0));
            self.waiter.acquire(
                id as u64,
                timeout,
                Box::new(move |r| {
                    report(match r {
                        Ok(a) => acquired_code(a),
                        Err(AcquireError::TimedOut) => "ERR_TIMEOUT",
                        Err(AcquireError::Cancelled) => "ERR_ABORTED",
                        Err(AcquireError::Closed) => "ERR_CLOSED",
                    })
                }),
            );
            Ok(id)
        });
        js(env, r)
    }

    /// Cancels a queued acquire (it resolves with ERR_ABORTED unless already granted).
    #[napi]
    pub fn cancel(&self, id: f64) {
        self.waiter.cancel(id as u64);
    }
}

/// A named range of shared bytes.
#[napi]
pub struct NativeRegion {
    bus: Arc<Inner>,
    region: Region,
}

#[napi]
impl NativeRegion {
    #[napi(getter)]
    pub fn size(&self) -> f64 {
        self.region.size() as f64
    }

    #[napi]
    pub fn write(&self, env: &Env, offset: f64, data: &[u8]) -> Result<()> {
        let r = self
            .bus
            .open()
            .and_then(|_| self.region.write(whole(offset, "offset")?, data).map_err(bounds_error));
        js(env, r)
    }

    #[napi]
    pub fn read(&self, env: &Env, offset: f64, length: f64) -> Result<Buffer> {
        let r = self.bus.open().and_then(|_| {
            let len = whole(length, "length")?;
            let len = usize::try_from(len).map_err(|_| coded("ERR_OUT_OF_BOUNDS", "length too large"))?;
            self.region.read(whole(offset, "offset")?, len).map_err(bounds_error)
        });
        js(env, r).map(Buffer::from)
    }
}

/// A named shared map. Values cross as (kind, bytes); index.js encodes and decodes them.
#[napi]
pub struct NativeMap {
    bus: Arc<Inner>,
    map: SharedMap,
}

/// `[kind, ...bytes]`, the form values cross the boundary in.
fn kind_and_bytes(kind: u8, bytes: Vec<u8>) -> Buffer {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.push(kind);
    v.extend_from_slice(&bytes);
    Buffer::from(v)
}

#[napi]
impl NativeMap {
    #[napi(getter)]
    pub fn capacity(&self) -> u32 {
        self.map.capacity()
    }

    #[napi(getter)]
    pub fn size(&self) -> u32 {
        self.map.len()
    }

    /// The value as `[kind, ...bytes]`, or null.
    #[napi]
    pub fn get(&self, env: &Env, key: String) -> Result<Option<Buffer>> {
        let r = self
            .bus
            .open()
            .map(|_| self.map.get(key.as_bytes()).map(|(k, v)| kind_and_bytes(k, v)));
        js(env, r)
    }

    #[napi]
    pub fn has(&self, env: &Env, key: String) -> Result<bool> {
        js(env, self.bus.open().map(|_| self.map.has(key.as_bytes())))
    }

    #[napi]
    pub fn set(&self, env: &Env, key: String, kind: u32, value: &[u8]) -> Result<()> {
        let r = self
            .bus
            .open()
            .and_then(|_| self.map.set(key.as_bytes(), kind as u8, value).map_err(map_error));
        js(env, r)
    }

    #[napi]
    pub fn delete(&self, env: &Env, key: String) -> Result<bool> {
        js(env, self.bus.open().map(|_| self.map.delete(key.as_bytes())))
    }

    #[napi]
    pub fn increment(&self, env: &Env, key: String, by: f64) -> Result<f64> {
        let r = self
            .bus
            .open()
            .and_then(|_| self.map.increment(key.as_bytes(), by).map_err(map_error));
        js(env, r)
    }

    /// `expected`/`value` as `[kind, ...bytes]`, or null for "absent" / "delete".
    #[napi]
    pub fn compare_and_set(
        &self,
        env: &Env,
        key: String,
        expected: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<bool> {
        let split = |b: &[u8]| -> CodedResult<(u8, Vec<u8>)> {
            b.split_first()
                .map(|(k, rest)| (*k, rest.to_vec()))
                .ok_or_else(|| coded("ERR_INVALID_ARG", "empty encoded value"))
        };
        let r = self.bus.open().and_then(|_| {
            let e = expected.map(split).transpose()?;
            let v = value.map(split).transpose()?;
            self.map
                .compare_and_set(
                    key.as_bytes(),
                    e.as_ref().map(|(k, b)| (*k, b.as_slice())),
                    v.as_ref().map(|(k, b)| (*k, b.as_slice())),
                )
                .map_err(map_error)
        });
        js(env, r)
    }

    #[napi]
    pub fn keys(&self, env: &Env) -> Result<Vec<String>> {
        let r = self.bus.open().map(|_| {
            self.map
                .keys()
                .into_iter()
                .map(|k| String::from_utf8_lossy(&k).into_owned())
                .collect()
        });
        js(env, r)
    }
}
