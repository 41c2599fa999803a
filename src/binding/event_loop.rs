//! Delivery on the JS thread's event loop: one wake-up per idle period instead of two.
//!
//! The delivery thread sleeps on the endpoint's futex and hands batches to the JS thread through
//! a ThreadsafeFunction, which wakes the event loop a second time. Here libuv itself polls the
//! endpoint's loop bell ([`crate::core::loop_bell`]); when it becomes readable, the poll callback
//! drains the rings on the JS thread and calls the JS delivery callback with the batch (through
//! `napi_make_callback`, so microtasks and `nextTick`s run after it as after any I/O callback).
//! A repeating unref'd timer (1 s) checks that the primary lives and catches a missed wake-up.
//!
//! Both handles are unref'd: a subscription alone never keeps the process alive (invariant 7).
//! libuv's functions come from the host process (Node exports them), looked up at run time; where
//! they are missing or `CLUSTER_SHM_DELIVERY=thread`, [`start`] returns `None` and the caller
//! uses the delivery thread, as on every platform but Linux (the loop bell needs abstract
//! socket names; this module is compiled for Linux only).

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use napi::bindgen_prelude::{Buffer, ToNapiValue};
use napi::sys;

use super::bus::Inner;
use super::delivery::batch_buffers;
use super::lock;
use crate::core::loop_bell::{self, bell_state, LoopBell};
use crate::core::{Batch, Budget};

type PollCb = unsafe extern "C" fn(handle: *mut c_void, status: c_int, events: c_int);
type TimerCb = unsafe extern "C" fn(handle: *mut c_void);
type CloseCb = unsafe extern "C" fn(handle: *mut c_void);

/// `uv_handle_type` values (stable across libuv 1.x) and `UV_READABLE`.
const UV_POLL: c_int = 8;
const UV_TIMER: c_int = 13;
const UV_READABLE: c_int = 1;

/// The libuv functions this module calls, resolved once in the host process.
struct Uv {
    poll_init: unsafe extern "C" fn(*mut sys::uv_loop_s, *mut c_void, c_int) -> c_int,
    poll_start: unsafe extern "C" fn(*mut c_void, c_int, PollCb) -> c_int,
    poll_stop: unsafe extern "C" fn(*mut c_void) -> c_int,
    timer_init: unsafe extern "C" fn(*mut sys::uv_loop_s, *mut c_void) -> c_int,
    timer_start: unsafe extern "C" fn(*mut c_void, TimerCb, u64, u64) -> c_int,
    timer_stop: unsafe extern "C" fn(*mut c_void) -> c_int,
    close: unsafe extern "C" fn(*mut c_void, CloseCb),
    unref: unsafe extern "C" fn(*mut c_void),
    poll_size: usize,
    timer_size: usize,
}

fn uv() -> Option<&'static Uv> {
    static UV: OnceLock<Option<Uv>> = OnceLock::new();
    UV.get_or_init(resolve).as_ref()
}

fn resolve() -> Option<Uv> {
    fn sym(name: &std::ffi::CStr) -> Option<*mut c_void> {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads the loaded images.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    }
    /// # Safety
    /// `p` is a function whose C signature is `F` (a function pointer type).
    unsafe fn cast<F: Copy>(p: *mut c_void) -> F {
        assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
        // SAFETY: same size (checked), and per the contract `p` is a function of type `F`.
        unsafe { std::mem::transmute_copy(&p) }
    }
    // SAFETY: `uv_handle_size` has this signature in every libuv 1.x.
    let handle_size: unsafe extern "C" fn(c_int) -> usize = unsafe { cast(sym(c"uv_handle_size")?) };
    // SAFETY (every cast below): each symbol is the libuv 1.x function of that name, whose C
    // signature the field's type spells out (handles passed as opaque pointers).
    unsafe {
        let uv = Uv {
            poll_init: cast(sym(c"uv_poll_init")?),
            poll_start: cast(sym(c"uv_poll_start")?),
            poll_stop: cast(sym(c"uv_poll_stop")?),
            timer_init: cast(sym(c"uv_timer_init")?),
            timer_start: cast(sym(c"uv_timer_start")?),
            timer_stop: cast(sym(c"uv_timer_stop")?),
            close: cast(sym(c"uv_close")?),
            unref: cast(sym(c"uv_unref")?),
            poll_size: handle_size(UV_POLL),
            timer_size: handle_size(UV_TIMER),
        };
        // A size outside this range means the enum values are not what this module assumes.
        let sane = |s: usize| (std::mem::size_of::<usize>()..=4096).contains(&s);
        (sane(uv.poll_size) && sane(uv.timer_size)).then_some(uv)
    }
}

/// Every libuv handle starts with `void* data`.
#[repr(C)]
struct HandleHead {
    data: *mut c_void,
}

fn handle_layout(size: usize) -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(size, 16).expect("size checked in resolve")
}

/// How long one poll callback may keep the JS thread when spinning (`spinMicros`), so that
/// timers and other I/O still get their turn.
const SPIN_SLICE: Duration = Duration::from_millis(1);

struct State {
    inner: Weak<Inner>,
    env: sys::napi_env,
    callback: sys::napi_ref,
    async_context: sys::napi_async_context,
    /// The socket libuv polls; `None` once stopped. A Cell, like the flags below: `stop` closes
    /// it at once (its name is free for a new subscription) while this State, shared by both
    /// handles, lives until their close callbacks, a loop iteration later. Only `&State` is ever
    /// at hand (on the JS thread), so a field set once could not be closed early.
    bell: Cell<Option<LoopBell>>,
    poll: *mut c_void,
    timer: *mut c_void,
    spin: Duration,
    /// A datagram that woke us is still unread, so the bell polls readable again.
    pending: Cell<bool>,
    stopped: Cell<bool>,
    delivering: Cell<bool>,
    js_released: Cell<bool>,
}

// SAFETY: a State is created, used and released only on the JS thread of `env` (libuv callbacks
// of that thread's loop and N-API calls of that env); other threads only move the Arc around
// inside `Inner` (which must be Send + Sync) and never dereference it.
unsafe impl Send for State {}
// SAFETY: see Send.
unsafe impl Sync for State {}

/// Event-loop delivery of one endpoint (see the module docs).
pub(super) struct LoopDelivery {
    state: Arc<State>,
}

/// Set for runtimes whose libuv functions are stubs that abort the process (Bun panics in
/// `uv_poll_init`): there every subscription uses the delivery thread.
static THREAD_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// lib/incoming.js calls this under a runtime that is not Node (`process.versions.bun`).
#[napi_derive::napi]
pub fn use_delivery_thread() {
    THREAD_ONLY.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Starts delivery on the event loop of `env`, or returns `None` where it is not available.
pub(super) fn start(
    env: sys::napi_env,
    inner: &Arc<Inner>,
    callback: sys::napi_value,
    spin: Duration,
) -> Option<LoopDelivery> {
    if THREAD_ONLY.load(std::sync::atomic::Ordering::Relaxed)
        || std::env::var_os("CLUSTER_SHM_DELIVERY").is_some_and(|v| v == "thread")
    {
        return None;
    }
    let uv = uv()?;
    let name = inner.ep.shared().name().to_owned();
    let index = inner.ep.index();
    let bell = LoopBell::bind(&name, index).ok()?;
    let fd = bell.fd();
    let mut uv_loop = ptr::null_mut();
    let mut callback_ref = ptr::null_mut();
    let mut async_context = ptr::null_mut();
    // SAFETY: called on the JS thread with its live env; `callback` is a function value of this
    // call's scope; the out-pointers are valid locals.
    unsafe {
        let mut resource_name = ptr::null_mut();
        if sys::napi_get_uv_event_loop(env, &mut uv_loop) != sys::Status::napi_ok
            || sys::napi_create_string_utf8(env, c"cluster-shm:deliver".as_ptr(), -1, &mut resource_name)
                != sys::Status::napi_ok
            || sys::napi_async_init(env, ptr::null_mut(), resource_name, &mut async_context) != sys::Status::napi_ok
        {
            return None;
        }
        if sys::napi_create_reference(env, callback, 1, &mut callback_ref) != sys::Status::napi_ok {
            sys::napi_async_destroy(env, async_context);
            return None;
        }
    }
    // SAFETY: the layouts have the non-zero sizes libuv reported; the memory is freed in the
    // handles' close callbacks (or below on failure), never before libuv is done with it.
    let (poll, timer) = unsafe {
        (
            std::alloc::alloc_zeroed(handle_layout(uv.poll_size)) as *mut c_void,
            std::alloc::alloc_zeroed(handle_layout(uv.timer_size)) as *mut c_void,
        )
    };
    let state = Arc::new(State {
        inner: Arc::downgrade(inner),
        env,
        callback: callback_ref,
        async_context,
        bell: Cell::new(Some(bell)),
        poll,
        timer,
        spin,
        pending: Cell::new(false),
        stopped: Cell::new(false),
        delivering: Cell::new(false),
        js_released: Cell::new(false),
    });
    // SAFETY: `uv_loop` is this thread's loop; the handles are zeroed memory of libuv's sizes;
    // `fd` is the bell's open socket, which stays open until `uv_poll_stop` (see `stop`).
    unsafe {
        if poll.is_null() || timer.is_null() || (uv.poll_init)(uv_loop, poll, fd) != 0 {
            release_js(&state);
            free_handle(poll, uv.poll_size);
            free_handle(timer, uv.timer_size);
            return None;
        }
        (uv.timer_init)(uv_loop, timer);
        // Each handle owns one strong count, returned in its close callback.
        (*(poll as *mut HandleHead)).data = Arc::into_raw(state.clone()) as *mut c_void;
        (*(timer as *mut HandleHead)).data = Arc::into_raw(state.clone()) as *mut c_void;
        (uv.poll_start)(poll, UV_READABLE, on_readable);
        (uv.timer_start)(timer, on_timer, 1000, 1000);
        (uv.unref)(poll);
        (uv.unref)(timer);
    }
    // Deliver what is already in the rings on the next loop iteration (never inside start()).
    loop_bell::ring(&name, index);
    Some(LoopDelivery { state })
}

impl LoopDelivery {
    /// Stops polling and closes the handles (freed in their close callbacks). The bell's name is
    /// released at once, so a new subscription can bind it. On the JS thread.
    pub(super) fn stop(self) {
        let st = &self.state;
        if st.stopped.replace(true) {
            return;
        }
        let uv = uv().expect("resolved when started");
        // SAFETY: the handles were initialised in `start` and are not closed yet (`stopped`
        // guards); the bell is closed only after `uv_poll_stop` removed it from the loop.
        unsafe {
            (uv.poll_stop)(st.poll);
            (uv.timer_stop)(st.timer);
            st.bell.set(None); // closes the socket, releasing its name
            (uv.close)(st.poll, on_poll_closed);
            (uv.close)(st.timer, on_timer_closed);
        }
        if !st.delivering.get() {
            release_js(st);
        }
    }
}

/// Drops the callback reference and the async context (on the JS thread, env alive).
fn release_js(st: &State) {
    if st.js_released.replace(true) {
        return;
    }
    // SAFETY: both were created on this env in `start` and are released once (`js_released`).
    unsafe {
        sys::napi_delete_reference(st.env, st.callback);
        sys::napi_async_destroy(st.env, st.async_context);
    }
}

/// # Safety
/// `handle` was allocated by `start` with `size` bytes and libuv no longer uses it.
unsafe fn free_handle(handle: *mut c_void, size: usize) {
    if !handle.is_null() {
        // SAFETY: per the contract, allocated with this layout and no longer referenced.
        unsafe { std::alloc::dealloc(handle as *mut u8, handle_layout(size)) };
    }
}

/// # Safety
/// `handle` is one of the handles set up by `start`, whose data holds a strong count of State.
unsafe fn state_of(handle: *mut c_void) -> Arc<State> {
    // SAFETY: per the contract; the count owned by the handle is kept, a new one is returned.
    unsafe {
        let p = (*(handle as *mut HandleHead)).data as *const State;
        Arc::increment_strong_count(p);
        Arc::from_raw(p)
    }
}

unsafe extern "C" fn on_readable(handle: *mut c_void, _status: c_int, _events: c_int) {
    // SAFETY: libuv passes the poll handle set up by `start`.
    let st = unsafe { state_of(handle) };
    st.pending.set(true);
    service(&st);
}

unsafe extern "C" fn on_timer(handle: *mut c_void) {
    // SAFETY: libuv passes the timer handle set up by `start`.
    let st = unsafe { state_of(handle) };
    service(&st);
}

unsafe extern "C" fn on_poll_closed(handle: *mut c_void) {
    // SAFETY: the close callback is libuv's last use of the handle; its data holds the strong
    // count taken in `start`, given back here.
    unsafe {
        drop(Arc::from_raw((*(handle as *mut HandleHead)).data as *const State));
        free_handle(handle, uv().expect("resolved").poll_size);
    }
}

unsafe extern "C" fn on_timer_closed(handle: *mut c_void) {
    // SAFETY: as in `on_poll_closed`.
    unsafe {
        drop(Arc::from_raw((*(handle as *mut HandleHead)).data as *const State));
        free_handle(handle, uv().expect("resolved").timer_size);
    }
}

/// Drains and delivers, then either announces sleep (bell cleared, `EVENT_LOOP` stored) or, with
/// work left, returns with the bell readable so the loop comes back after its other work.
fn service(st: &Arc<State>) {
    let Some(inner) = st.inner.upgrade() else { return };
    let ep = &inner.ep;
    ep.data_bell()
        .sleeping
        .store(bell_state::AWAKE, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    loop {
        if st.stopped.get() || inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut batch = Batch::default();
        {
            let mut inbox = lock(&inner.inbox);
            inbox.check_primary(ep, &mut batch);
            inbox.drain(ep, &mut batch, Budget::BATCH);
        }
        if !batch.is_empty() {
            deliver(st, &inner, batch);
            if st.stopped.get() {
                release_js(st);
                return;
            }
            if lock(&inner.inbox).has_work(ep) {
                if st.spin.is_zero() || started.elapsed() >= SPIN_SLICE {
                    // Yield to the loop; the bell must poll readable to bring it back here.
                    if !st.pending.get() {
                        loop_bell::ring(ep.shared().name(), ep.index());
                        st.pending.set(true);
                    }
                    return;
                }
                continue;
            }
        }
        if !st.spin.is_zero() && started.elapsed() < SPIN_SLICE {
            let until = Instant::now() + st.spin;
            let inbox = lock(&inner.inbox);
            while Instant::now() < until && !inbox.has_work(ep) {
                std::hint::spin_loop();
            }
            if inbox.has_work(ep) {
                continue;
            }
        }
        // Idle: consume the wake-ups, then announce the sleep; a datagram sent after this wakes us.
        if let Some(bell) = st.bell.take() {
            bell.clear();
            st.bell.set(Some(bell));
        }
        st.pending.set(false);
        if lock(&inner.inbox).announce_sleep(ep, bell_state::EVENT_LOOP).is_some() {
            return;
        }
    }
}

/// Calls the JS delivery callback with the batch, then commits it (the same contract as the
/// delivery thread's: `head` moves only after the callback returned, and not after close()).
fn deliver(st: &State, inner: &Inner, mut batch: Batch) {
    let commits = std::mem::take(&mut batch.commits);
    st.delivering.set(true);
    let mut handed_over = false;
    // SAFETY: on the JS thread of `st.env`, outside any JS frame (a libuv callback), hence the
    // handle scope; the reference and async context are live (`stopped` was false).
    unsafe {
        let env = st.env;
        let mut scope = ptr::null_mut();
        sys::napi_open_handle_scope(env, &mut scope);
        let mut callback = ptr::null_mut();
        let mut recv = ptr::null_mut();
        sys::napi_get_reference_value(env, st.callback, &mut callback);
        // `recv` must be an object for napi_make_callback (undefined throws a TypeError).
        sys::napi_get_global(env, &mut recv);
        if let Ok(arg) = Vec::<Buffer>::to_napi_value(env, batch_buffers(batch)) {
            let mut result = ptr::null_mut();
            handed_over = true;
            sys::napi_make_callback(env, st.async_context, recv, callback, 1, &arg, &mut result);
            let mut pending = false;
            sys::napi_is_exception_pending(env, &mut pending);
            if pending {
                // Not ours to swallow: report it as Node reports an exception from any callback.
                let mut error = ptr::null_mut();
                sys::napi_get_and_clear_last_exception(env, &mut error);
                sys::napi_fatal_exception(env, error);
            }
        }
        sys::napi_close_handle_scope(env, scope);
    }
    st.delivering.set(false);
    // A batch that never reached JS is not committed: it stays in the ring for the next holder
    // of this index, as with a ThreadsafeFunction call that could not be queued.
    if handed_over && !inner.closed.load(std::sync::atomic::Ordering::Acquire) {
        for (from, pos) in commits {
            inner.ep.commit(from, pos);
        }
    }
}
