#![cfg_attr(test, allow(dead_code))] // the #[napi] exports are only referenced by the addon build
//! The `#[napi]` surface: converts JS values, maps core errors to JS errors with stable `code`
//! strings, and delivers messages to JS. The ergonomic API (payload encoding, EventEmitter,
//! cluster integration) is in `lib/` (behind `index.js`). One file per exported class, plus errors and delivery:
//!
//! - `errors.rs`: `Coded` errors and how they are thrown, every core error's code,
//!   `registerErrorClass`, and the check of whole numbers;
//! - `bus.rs`: `NativeBus` (`createCluster`, `attachCluster`) and the state it shares with the
//!   objects it opens (`Inner`); the core's topic-name rule (`checkTopicName`, `MAX_TOPIC_BYTES`);
//! - `join.rs`: `joinCluster` (create-or-attach with no primary), `reapDead`, `cleanupJoined`;
//! - `delivery.rs`: pushed delivery (`start`/`stop`): the delivery thread with its
//!   ThreadsafeFunction, or else
//! - `event_loop.rs` (Linux): delivery on the JS thread's event loop;
//! - `semaphore.rs`, `region.rs`, `map.rs`: `NativeSemaphore`, `NativeRegion`, `NativeMap`;
//! - `stats.rs`: `busStats`, and for the `cluster-shm` command `inspectSegment`,
//!   `listSegments`, `cleanSegments`.

use std::sync::{Mutex, MutexGuard};

mod bus;
mod delivery;
mod errors;
#[cfg(target_os = "linux")]
mod event_loop;
mod join;
mod map;
mod region;
mod semaphore;
mod stats;

/// Locks `m`; a lock poisoned by a panic elsewhere is used anyway.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
