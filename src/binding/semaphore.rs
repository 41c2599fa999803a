//! `NativeSemaphore`: a named cross-process semaphore opened through a bus (see
//! core::semaphore). Queued acquires wait on the semaphore's waiter thread and report through
//! the bus's completion handler.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use napi::bindgen_prelude::*;
use napi_derive::napi;

use super::bus::Inner;
use super::errors::{acquire_error_code, coded, js, object_error, CodedResult};
use super::lock;
use crate::core::semaphore::{Acquired, Semaphore, Waiter};

/// A named cross-process semaphore (see core::semaphore). Waits run on its waiter thread.
#[napi]
pub struct NativeSemaphore {
    bus: Arc<Inner>,
    waiter: Arc<Waiter>,
    last_sweep: Mutex<Instant>,
}

impl NativeSemaphore {
    /// Opens (creating on first use) the named semaphore of `permits` permits; one waiter per
    /// name and process, kept by the bus (closed with it).
    pub(super) fn open(bus: &Arc<Inner>, name: String, permits: u32) -> CodedResult<NativeSemaphore> {
        let waiter = bus.open().and_then(|inner| {
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
        })?;
        Ok(NativeSemaphore {
            bus: bus.clone(),
            waiter,
            last_sweep: Mutex::new(Instant::now()),
        })
    }
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
                        Err(e) => acquire_error_code(&e),
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
