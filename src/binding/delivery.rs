//! How drained batches reach JS after `start()`: on Linux the event loop polls the endpoint's
//! loop bell (event_loop.rs); elsewhere (or where that is unavailable) a delivery thread
//! sleeps on the futex and hands batches over by ThreadsafeFunction. Both commit a batch only
//! after the JS callback returned, and not after close().

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};

use super::bus::Inner;
use super::errors::{coded, CodedResult};
#[cfg(target_os = "linux")]
use super::event_loop;
use super::lock;
use crate::core::endpoint::ring_bell_always;
use crate::core::Batch;

/// Weak: a subscription alone never keeps the event loop alive (invariant 7).
type DeliverFn = ThreadsafeFunction<Batch, Unknown<'static>, Vec<Buffer>, Status, false, true>;

/// A batch as JS gets it: `[records, ...large payloads]`, every Vec handed over without a copy.
pub(super) fn batch_buffers(batch: Batch) -> Vec<Buffer> {
    std::iter::once(batch.bytes)
        .chain(batch.large)
        .map(Buffer::from)
        .collect()
}

pub(super) enum Delivery {
    /// Linux: the event loop polls the endpoint's loop bell (one wake-up per idle period).
    #[cfg(target_os = "linux")]
    EventLoop(event_loop::LoopDelivery),
    /// Elsewhere: a thread sleeps on the futex and hands batches over by ThreadsafeFunction.
    Thread {
        stop: Arc<AtomicBool>,
        thread: JoinHandle<()>,
    },
}

impl Delivery {
    /// Starts delivering `inner`'s rings to `callback`: on the event loop where it can, else on
    /// a delivery thread. The caller has committed what polling handed out.
    pub(super) fn start(
        inner: &Arc<Inner>,
        env: &Env,
        callback: Function<Vec<Buffer>, Unknown<'static>>,
        spin: Duration,
    ) -> CodedResult<Delivery> {
        #[cfg(not(target_os = "linux"))]
        let _ = env; // the delivery thread needs no env
        #[cfg(target_os = "linux")]
        if inner.in_flight.load(Ordering::Acquire) == 0 {
            // (Batches of an earlier thread subscription still on their way would be overtaken.)
            if let Some(d) = event_loop::start(env.raw(), inner, callback.value().value, spin) {
                return Ok(Delivery::EventLoop(d));
            }
        }
        let tsfn: DeliverFn = callback
            .build_threadsafe_function::<Batch>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(|ctx| Ok(batch_buffers(ctx.value)))
            .map_err(|e| coded("ERR_INTERNAL", e.reason))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (this, stop2) = (inner.clone(), stop.clone());
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
        Ok(Delivery::Thread { stop, thread })
    }

    /// Stops delivering (messages stay in the rings for `read` or a later `start`); a delivery
    /// thread is woken and joined. Called without the `Inner::delivery` lock held.
    pub(super) fn stop(self, inner: &Inner) {
        match self {
            Delivery::Thread { stop, thread } => {
                stop.store(true, Ordering::Release);
                ring_bell_always(inner.ep.data_bell());
                let _ = thread.join();
            }
            #[cfg(target_os = "linux")]
            Delivery::EventLoop(d) => d.stop(),
        }
    }

    /// How messages are being delivered, as the `delivery` getter reports it.
    pub(super) fn name(&self) -> &'static str {
        match self {
            #[cfg(target_os = "linux")]
            Delivery::EventLoop(_) => "event-loop",
            Delivery::Thread { .. } => "thread",
        }
    }
}
