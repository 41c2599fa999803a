//! What an observer reads (see `core::stats`), as plain JS objects: `busStats(bus)` for
//! `bus.stats()`, and for the `cluster-shm` command `inspectSegment(name)` (a read-only view of
//! any of this user's segments), `listSegments()` and `cleanSegments()`. lib/stats.js shapes
//! them for users. Counters are JS numbers (exact up to 2^53).

use napi::bindgen_prelude::*;
use napi_derive::napi;

use super::bus::NativeBus;
use super::errors::{attach_error, coded, js};
use crate::core::ring::RingCounters;
use crate::core::stats::{self, Snapshot};
use crate::core::Shared;

#[napi(object)]
pub struct NativeCounters {
    pub fill: f64,
    pub written: f64,
    pub written_bytes: f64,
    pub full: f64,
    pub read: f64,
    pub read_bytes: f64,
    pub lost: f64,
    pub corrupt: f64,
}

#[napi(object)]
pub struct NativeProcessStats {
    pub index: u32,
    pub attached: bool,
    pub pid: u32,
    pub generation: u32,
    pub handles_requests: bool,
    pub totals: NativeCounters,
}

#[napi(object)]
pub struct NativeRingStats {
    pub from: u32,
    pub to: u32,
    pub counters: NativeCounters,
}

#[napi(object)]
pub struct NativeHolder {
    pub index: u32,
    pub pid: u32,
}

#[napi(object)]
pub struct NativeSemaphoreStats {
    pub name: String,
    pub permits: u32,
    pub available: u32,
    pub holders: Vec<NativeHolder>,
}

#[napi(object)]
pub struct NativeMapStats {
    pub name: String,
    pub size: u32,
    pub capacity: u32,
}

#[napi(object)]
pub struct NativeRegionStats {
    pub name: String,
    pub size: f64,
}

#[napi(object)]
pub struct NativeTopicStats {
    pub name: String,
    pub subscribers: Vec<u32>,
}

#[napi(object)]
pub struct NativeSnapshot {
    pub name: String,
    pub size: f64,
    pub ring_size: u32,
    pub endpoints: u32,
    pub primary_pid: u32,
    pub joined: bool,
    pub closed: u32,
    pub heap_size: f64,
    pub heap_used: f64,
    pub processes: Vec<NativeProcessStats>,
    pub rings: Vec<NativeRingStats>,
    pub semaphores: Vec<NativeSemaphoreStats>,
    pub maps: Vec<NativeMapStats>,
    pub regions: Vec<NativeRegionStats>,
    pub topics: Vec<NativeTopicStats>,
}

#[napi(object)]
pub struct NativeSegmentInfo {
    pub name: String,
    pub size: f64,
    /// Seconds since the epoch.
    pub modified: f64,
    pub joined: bool,
    pub primary_pid: u32,
    pub members: u32,
    pub stale: bool,
    pub error: Option<String>,
}

fn counters(c: RingCounters) -> NativeCounters {
    NativeCounters {
        fill: c.fill as f64,
        written: c.written as f64,
        written_bytes: c.written_bytes as f64,
        full: c.full as f64,
        read: c.read as f64,
        read_bytes: c.read_bytes as f64,
        lost: c.lost as f64,
        corrupt: c.corrupt as f64,
    }
}

fn to_js(s: Snapshot) -> NativeSnapshot {
    NativeSnapshot {
        name: s.name,
        size: s.size as f64,
        ring_size: s.ring_capacity,
        endpoints: s.endpoints,
        primary_pid: s.primary_pid,
        joined: s.joined,
        closed: s.closed,
        heap_size: s.heap_size as f64,
        heap_used: s.heap_used as f64,
        processes: s
            .processes
            .into_iter()
            .map(|p| NativeProcessStats {
                index: p.index,
                attached: p.attached,
                pid: p.pid,
                generation: p.generation,
                handles_requests: p.handles_requests,
                totals: counters(p.totals),
            })
            .collect(),
        rings: s
            .rings
            .into_iter()
            .map(|r| NativeRingStats {
                from: r.from,
                to: r.to,
                counters: counters(r.counters),
            })
            .collect(),
        semaphores: s
            .semaphores
            .into_iter()
            .map(|x| NativeSemaphoreStats {
                name: x.name,
                permits: x.permits,
                available: x.available,
                holders: x
                    .holders
                    .into_iter()
                    .map(|(index, pid)| NativeHolder { index, pid })
                    .collect(),
            })
            .collect(),
        maps: s
            .maps
            .into_iter()
            .map(|m| NativeMapStats {
                name: m.name,
                size: m.size,
                capacity: m.capacity,
            })
            .collect(),
        regions: s
            .regions
            .into_iter()
            .map(|r| NativeRegionStats {
                name: r.name,
                size: r.size as f64,
            })
            .collect(),
        topics: s
            .topics
            .into_iter()
            .map(|t| NativeTopicStats {
                name: t.name,
                subscribers: t.subscribers,
            })
            .collect(),
    }
}

/// The cluster of `bus` as it stands.
#[napi]
pub fn bus_stats(env: Env, bus: &NativeBus) -> Result<NativeSnapshot> {
    let r = if bus.closed() {
        Err(coded("ERR_CLOSED", "the bus is closed"))
    } else {
        Ok(to_js(stats::snapshot(bus.inner.ep.shared())))
    };
    js(&env, r)
}

/// The segment `name` (`/cshm_…`) opened read-only and validated as members validate it.
#[napi]
pub fn inspect_segment(env: Env, name: String) -> Result<NativeSnapshot> {
    let r = Shared::open_read_only(&name)
        .map(|s| to_js(stats::snapshot(&s)))
        .map_err(attach_error);
    js(&env, r)
}

/// This user's segments (Linux; empty elsewhere).
#[napi]
pub fn list_segments() -> Vec<NativeSegmentInfo> {
    stats::list()
        .into_iter()
        .map(|s| NativeSegmentInfo {
            name: s.name,
            size: s.size as f64,
            modified: s.modified as f64,
            joined: s.joined,
            primary_pid: s.primary_pid,
            members: s.members,
            stale: s.stale,
            error: s.error,
        })
        .collect()
}

/// Removes this user's stale segments and nothing else; returns their names.
#[napi]
pub fn clean_segments() -> Vec<String> {
    stats::clean()
}
