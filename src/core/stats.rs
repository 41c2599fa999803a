//! What is inside a cluster, for `bus.stats()`, the `cluster-shm` command and metrics: the
//! registry (who holds which index, generations), every ring's fill and counters, and the named
//! objects (semaphores and their holders, maps, regions, topics, the heap).
//!
//! Everything here only loads from the segment, so it works the same on a member's mapping and
//! on an observer's read-only one ([`Shared::open_read_only`]), and never changes the cluster.
//! Figures read while the cluster runs are each exact but not simultaneous.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::endpoint::Shared;
use super::join;
use super::layout::HANDLES_REQUESTS;
use super::map;
use super::objects::{self, holder_pid, is_free, Kind};
use super::ring::RingCounters;
use super::segment;
use super::semaphore;
use super::topics;

/// One endpoint index and its holder.
#[derive(Debug, Clone, Default)]
pub struct ProcessStats {
    pub index: u32,
    /// Held by a process now (its PID is in the registry).
    pub attached: bool,
    /// The holder's PID (the last holder's while free: 0).
    pub pid: u32,
    /// Times the index was taken (restarts of the process at this index, plus one).
    pub generation: u32,
    /// The holder answers requests.
    pub handles_requests: bool,
    /// Sums over the rings this index writes (written, full) and reads (read, lost, corrupt).
    pub totals: RingCounters,
}

/// One ring, `from` → `to`.
#[derive(Debug, Clone)]
pub struct RingStats {
    pub from: u32,
    pub to: u32,
    pub counters: RingCounters,
}

#[derive(Debug, Clone)]
pub struct SemaphoreStats {
    pub name: String,
    pub permits: u32,
    pub available: u32,
    /// `(index, pid)` of each permit held.
    pub holders: Vec<(u32, u32)>,
}

#[derive(Debug, Clone)]
pub struct MapStats {
    pub name: String,
    pub size: u32,
    pub capacity: u32,
}

#[derive(Debug, Clone)]
pub struct RegionStats {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct TopicStats {
    pub name: String,
    pub subscribers: Vec<u32>,
}

/// A cluster as it stands.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub name: String,
    pub size: u64,
    pub ring_capacity: u32,
    /// Endpoints: the workers, then the primary (the last index).
    pub endpoints: u32,
    /// The primary's PID (0 in a segment made by `join`).
    pub primary_pid: u32,
    pub joined: bool,
    /// 0 open, 1 closed by the primary, 2 the primary died.
    pub closed: u32,
    pub heap_size: u64,
    pub heap_used: u64,
    pub processes: Vec<ProcessStats>,
    /// Every ring, in `(from, to)` order.
    pub rings: Vec<RingStats>,
    pub semaphores: Vec<SemaphoreStats>,
    pub maps: Vec<MapStats>,
    pub regions: Vec<RegionStats>,
    pub topics: Vec<TopicStats>,
}

fn add(t: &mut RingCounters, c: &RingCounters, writer: bool) {
    if writer {
        t.written += c.written;
        t.written_bytes += c.written_bytes;
        t.full += c.full;
    } else {
        t.read += c.read;
        t.read_bytes += c.read_bytes;
        t.lost += c.lost;
        t.corrupt += c.corrupt;
        t.fill += c.fill;
    }
}

/// Reads everything `Snapshot` holds. Loads only.
pub fn snapshot(shared: &Arc<Shared>) -> Snapshot {
    let geo = shared.geometry();
    let e = geo.endpoints;
    let mut processes: Vec<ProcessStats> = (0..e)
        .map(|index| {
            let reg = &shared.slot(index).registration;
            let owner = reg.owner.load(Ordering::Acquire);
            ProcessStats {
                index,
                attached: owner as u32 != 0,
                pid: owner as u32,
                generation: (owner >> 32) as u32,
                handles_requests: owner as u32 != 0 && reg.flags.load(Ordering::Acquire) & HANDLES_REQUESTS != 0,
                totals: RingCounters::default(),
            }
        })
        .collect();
    let mut rings = Vec::with_capacity(geo.rings());
    for from in 0..e {
        for to in (0..e).filter(|&to| to != from) {
            let counters = shared.ring(from, to).counters();
            add(&mut processes[from as usize].totals, &counters, true);
            add(&mut processes[to as usize].totals, &counters, false);
            rings.push(RingStats { from, to, counters });
        }
    }
    let h = shared.header();
    let joined = shared.is_joined();
    // SAFETY: a plain integer field of the validated header, written before `magic`.
    let primary_pid = unsafe { std::ptr::read_volatile(std::ptr::addr_of!(h.primary_pid)) };
    let mut snap = Snapshot {
        name: shared.name().to_owned(),
        size: geo.total_size() as u64,
        ring_capacity: geo.ring_capacity,
        endpoints: e,
        primary_pid: if joined { 0 } else { primary_pid },
        joined,
        closed: shared.closed_reason(),
        heap_size: geo.heap_size,
        heap_used: objects::heap_used(shared),
        processes,
        rings,
        semaphores: vec![],
        maps: vec![],
        regions: vec![],
        topics: vec![],
    };
    let mut topics_listed = false;
    for (kind, name, mem) in objects::entries(shared) {
        match kind {
            Kind::Semaphore => {
                let slots = semaphore::slots_of(&mem);
                let holders: Vec<(u32, u32)> = slots
                    .iter()
                    .filter(|&&w| !is_free(w))
                    .map(|&w| (((w >> 32) & 0xffff) as u32, holder_pid(w)))
                    .collect();
                snap.semaphores.push(SemaphoreStats {
                    name,
                    permits: slots.len() as u32,
                    available: (slots.len() - holders.len()) as u32,
                    holders,
                });
            }
            Kind::Map => snap.maps.push(MapStats {
                name,
                size: map::count_of(&mem),
                capacity: mem.params[0].min(u32::MAX as u64) as u32,
            }),
            Kind::Region => snap.regions.push(RegionStats {
                name,
                size: mem.params[0],
            }),
            // The table under its own name, once: more entries of this kind (a hostile process can
            // add them, pointing at the same memory) would multiply the list.
            Kind::Topics if name == topics::TABLE_NAME && !topics_listed => {
                topics_listed = true;
                snap.topics.extend(
                    topics::list(&mem)
                        .into_iter()
                        .map(|(name, subscribers)| TopicStats { name, subscribers }),
                )
            }
            Kind::Topics => {}
        }
    }
    snap
}

/// One of this user's segments, as `cluster-shm ls` shows it.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub name: String,
    pub size: u64,
    /// Last modification of the segment file (seconds since the epoch): about its creation.
    pub modified: i64,
    pub joined: bool,
    /// The primary's PID (from the name), or 0 for a joined segment.
    pub primary_pid: u32,
    /// Indices held by live processes.
    pub members: u32,
    /// Its owner is dead: `clean` removes it.
    pub stale: bool,
    /// Why the segment could not be read, if it could not (then members is 0).
    pub error: Option<String>,
}

fn is_join_name(name: &str) -> bool {
    name.starts_with(&format!("/{}j", segment::NAME_PREFIX))
}

/// Opens `name` read-only and validates it as members do; the error says why it is refused.
pub fn open(name: &str) -> Result<Arc<Shared>, String> {
    Shared::open_read_only(name).map_err(|e| e.to_string())
}

fn info(name: String, size: u64, modified: i64) -> SegmentInfo {
    let joined = is_join_name(&name);
    let primary_pid = if joined {
        0
    } else {
        name.trim_start_matches('/')
            .trim_start_matches(segment::NAME_PREFIX)
            .split('_')
            .next()
            .and_then(|p| u32::from_str_radix(p, 16).ok())
            .unwrap_or(0)
    };
    let opened = open(&name);
    let members = opened.as_ref().map_or(0, |s| {
        (0..s.geometry().endpoints)
            .filter(|&i| s.holder(i).is_some_and(|p| p.is_alive()))
            .count() as u32
    });
    let stale = if joined {
        opened.as_ref().is_ok_and(|s| join::abandoned(s))
    } else {
        segment::primary_alive(&name) == Some(false)
    };
    SegmentInfo {
        name,
        size,
        modified,
        joined,
        primary_pid,
        members,
        stale,
        error: opened.err(),
    }
}

/// This user's segments (Linux; empty elsewhere), by name.
pub fn list() -> Vec<SegmentInfo> {
    segment::list()
        .into_iter()
        .map(|(name, size, modified)| info(name, size, modified))
        .collect()
}

/// Removes this user's stale segments (judged again just before), and nothing else. Returns
/// the names removed.
pub fn clean() -> Vec<String> {
    let mut removed = vec![];
    for s in list().into_iter().filter(|s| s.stale) {
        let gone = if s.joined {
            join::cleanup_segment(&s.name)
        } else if segment::primary_alive(&s.name) == Some(false) {
            segment::unlink(&s.name);
            true
        } else {
            false
        };
        if gone {
            removed.push(s.name);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::layout::kind;
    use crate::core::semaphore::Semaphore;
    use crate::core::{Attach, Endpoint, Outbox};

    #[test]
    fn more_topic_tables_pointing_at_the_real_one_do_not_multiply_the_list() {
        use crate::core::objects::{
            open_or_create,
            tests::{offset_of, set_offset},
        };
        let shared = Shared::create(1, 1 << 20).unwrap();
        let me = Endpoint::attach(shared.clone(), Attach::Primary).unwrap();
        let t = topics::Topics::open(&me).unwrap();
        t.subscribe("a", 0).unwrap();
        t.subscribe("b.*", 0).unwrap();
        // What a hostile process can do: more objects of the topic table's kind, each then
        // pointed at the real table.
        let real = offset_of(&shared, topics::TABLE_NAME);
        let size = shared_table_size(&shared);
        for i in 0..4 {
            let name = format!("copy.{i}");
            open_or_create(&me, Kind::Topics, &name, [0; 4], size, |p, n| {
                // SAFETY: open_or_create hands over `n` writable bytes of the new object.
                unsafe { std::ptr::write_bytes(p, 0, n) }
            })
            .unwrap();
            set_offset(&shared, &name, real);
        }
        let s = snapshot(&shared);
        let names: Vec<&str> = s.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b.*"], "each topic once");
        shared.close_cluster();
    }

    /// The size of the real topic table's object.
    fn shared_table_size(shared: &Arc<Shared>) -> u64 {
        objects::entries(shared)
            .into_iter()
            .find(|(_, name, _)| name == topics::TABLE_NAME)
            .map(|(_, _, mem)| mem.size as u64)
            .unwrap()
    }

    #[test]
    fn a_read_only_snapshot_sees_messages_holders_and_topics() {
        let shared = Shared::create(2, 4096).unwrap();
        let primary = Arc::new(Endpoint::attach(shared.clone(), Attach::Primary).unwrap());
        let out = Outbox::new(primary.clone());
        assert!(out.try_write(0, kind::BYTES, &[7; 100]).unwrap());
        assert_eq!(
            out.try_write_many(0, [(kind::BYTES, &[1u8; 10][..]); 3].into_iter())
                .unwrap(),
            3
        );
        let sem = Semaphore::open(&primary, "jobs", 3).unwrap();
        assert!(sem.try_acquire().is_some());
        topics::Topics::open(&primary).unwrap().subscribe("room.*", 1).unwrap();

        let view = Shared::open_read_only(shared.name()).unwrap();
        let s = snapshot(&view);
        assert_eq!(s.endpoints, 3);
        let p = &s.processes[2];
        assert!(p.attached && p.pid == std::process::id() && p.generation == 1);
        assert!(!s.processes[0].attached);
        assert_eq!((p.totals.written, p.totals.written_bytes), (4, 130));
        let r = s.rings.iter().find(|r| r.from == 2 && r.to == 0).unwrap();
        assert_eq!(r.counters.written, 4);
        assert_eq!(r.counters.fill, 128 + 3 * 32);
        assert_eq!(s.processes[0].totals.fill, 128 + 3 * 32);
        let sem = &s.semaphores[0];
        assert_eq!((sem.name.as_str(), sem.permits, sem.available), ("jobs", 3, 2));
        assert_eq!(sem.holders, vec![(2, std::process::id())]);
        assert_eq!(s.topics.len(), 1);
        assert_eq!(
            (s.topics[0].name.as_str(), &s.topics[0].subscribers[..]),
            ("room.*", &[1][..])
        );
        assert!(s.heap_used > 0);
        shared.close_cluster();
    }

    #[test]
    fn writers_and_readers_count_messages_bytes_full_lost_and_corrupt() {
        use crate::core::inbox::{Batch, Budget, RingReader};
        use crate::core::layout::RingHeader;
        use crate::core::ring::Outgoing;
        let shared = Shared::create(1, 4096).unwrap();
        let geo = shared.geometry();
        let r = shared.ring(0, 1);
        let max = geo.max_frame_payload();
        let mut reader = RingReader::new(0);
        let drain = |reader: &mut RingReader| {
            let mut batch = Batch::default();
            reader.drain(0, &r, &mut batch, Budget::BATCH);
            r.commit(reader.cursor());
        };
        // A message of 5 frames in a ring that takes 4: 4 frames published, then no room.
        let mut partial = Outgoing::default();
        assert!(!r
            .write_message(kind::BYTES, &[1; 5000], &mut partial, max, false)
            .unwrap());
        assert!(!r
            .write_message(kind::BYTES, &[1; 5000], &mut partial, max, false)
            .unwrap());
        let c = r.counters();
        assert_eq!(
            (c.written, c.written_bytes, c.full, c.fill),
            (0, 4 * max as u64, 1, 4096)
        );
        drain(&mut reader);
        // Its sender "died": the next message starts afresh, so the first is lost.
        assert!(r
            .write_message(kind::BYTES, &[2; 30], &mut Outgoing::default(), max, true)
            .unwrap());
        assert_eq!(
            r.write_single_frames([(kind::BYTES, &[3u8; 7][..]); 2].into_iter(), max)
                .unwrap(),
            2
        );
        drain(&mut reader);
        let c = r.counters();
        assert_eq!((c.written, c.written_bytes), (3, 4 * max as u64 + 44));
        assert_eq!((c.read, c.read_bytes, c.lost, c.corrupt, c.fill), (3, 44, 1, 0, 0));
        // A tail moved out of range: the reader resets the ring and counts it once.
        // SAFETY: the ring's header lies inside the live mapping (validated geometry, index in
        // range) and holds atomics only.
        let hdr =
            unsafe { &*(shared.base().add(geo.ring_headers_offset()) as *const RingHeader).add(geo.ring_index(0, 1)) };
        hdr.writer.tail.store(1 << 40, Ordering::SeqCst);
        drain(&mut reader);
        assert_eq!((r.counters().corrupt, r.counters().read), (1, 3));
        shared.unlink();
    }

    #[test]
    fn a_corrupt_header_is_refused_with_a_reason() {
        let shared = Shared::create(1, 4096).unwrap();
        shared.header().magic.store(0, Ordering::SeqCst);
        let err = open(shared.name()).err().unwrap();
        assert!(err.contains("magic"), "{err}");
        shared.unlink();
    }
}
