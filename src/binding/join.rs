//! `joinCluster`: the symmetric entry of `join()` (lib/join.js), where every process creates or
//! attaches to its application's segment (see `core::join`); `reapDead`, the primary's duty of
//! taking back dead members' indices, done by whichever member notices; `cleanupJoined`.

use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use super::bus::{register_cleanup, Inner, NativeBus};
use super::errors::{attach_error, coded, init_error, js, whole, Coded, CodedResult};
use crate::core::join::{self, JoinError};
use crate::core::layout::Geometry;
use crate::core::{Attach, AttachError, InitError};

fn join_error(e: JoinError) -> Coded {
    match e {
        JoinError::Geometry(e) => init_error(InitError::Geometry(e)),
        JoinError::Create(e) => init_error(InitError::Segment(e)),
        JoinError::Open(e) => attach_error(AttachError::Segment(e)),
        JoinError::Attach(e) => attach_error(e),
        e @ JoinError::Mismatch { .. } => coded("ERR_MISMATCH", e),
        e @ JoinError::Timeout(_) => coded("ERR_TIMEOUT", e),
    }
}

fn join_cluster_inner(
    env: &Env,
    app: &str,
    workers: u32,
    ring_size: u32,
    heap_size: f64,
    index: i32,
    timeout_ms: u32,
) -> CodedResult<NativeBus> {
    let geo = Geometry::with_heap(workers.saturating_add(1), ring_size, whole(heap_size, "heapSize")?)
        .map_err(|e| init_error(InitError::Geometry(e)))?;
    let how = if index < 0 {
        Attach::Any
    } else {
        Attach::Index(index as u32)
    };
    let ep = join::join(app, geo, how, Duration::from_millis(timeout_ms as u64)).map_err(join_error)?;
    let inner = Inner::new(ep);
    register_cleanup(env, &inner)?;
    Ok(NativeBus { inner })
}

/// Joins application `app`'s segment (created by the first joiner): at `index` (>= 0) or the
/// lowest free one (-1), waiting at most `timeoutMs` for a creator, a leaver or the index.
#[napi]
pub fn join_cluster(
    env: Env,
    app: String,
    workers: u32,
    ring_size: u32,
    heap_size: f64,
    index: i32,
    timeout_ms: u32,
) -> Result<NativeBus> {
    let r = join_cluster_inner(&env, &app, workers, ring_size, heap_size, index, timeout_ms);
    js(&env, r)
}

/// Frees the indices and permits of `bus`'s members that died; returns the freed indices.
#[napi]
pub fn reap_dead(bus: &NativeBus) -> Vec<u32> {
    if bus.closed() {
        return vec![];
    }
    join::reap_dead(bus.inner.ep.shared())
}

/// Removes application `app`'s segment if no live process is a member; true when none is left.
#[napi]
pub fn cleanup_joined(app: String) -> bool {
    join::cleanup(&app)
}
