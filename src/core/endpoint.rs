//! A cluster's segment ([`Shared`]) and one process's place in it ([`Endpoint`]).
//!
//! This is the registry of who holds which index, and nothing above it: taking and giving back
//! an index (`Endpoint::claim`, `Endpoint::give_back`, `Shared::free_indices_of`) does not
//! touch what the objects keep per index. [`super::reclaim`] does, and offers the public
//! `Endpoint::attach` / `detach` and `Shared::release_pid` / `process_exited` built on these;
//! `Endpoint::holder_word` lives with the holder words in [`super::objects`].
//!
//! ```
//! use cluster_shm::core::{Shared, Endpoint, Attach};
//! let primary = Shared::create(2, 64 * 1024).unwrap();          // 2 workers + the primary
//! let worker = Shared::open(primary.name()).unwrap();
//! let w = Endpoint::attach(worker, Attach::Any).unwrap();
//! assert_eq!(w.index(), 0);
//! w.detach();
//! primary.unlink();
//! ```

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use super::layout::{
    Bell, EndpointSlot, Geometry, GeometryError, RingHeader, SegmentHeader, LAYOUT_VERSION, MAGIC, MAGIC_PREFIX,
};
use super::loop_bell::{self, bell_state};
use super::platform::{self, ProcessId};
use super::ring::Ring;
use super::segment::{self, CreateError, OpenError, Segment};

/// Why [`Shared::create`] failed.
#[derive(Debug)]
pub enum InitError {
    /// The worker count or ring size is out of range.
    Geometry(GeometryError),
    /// The OS refused the segment.
    Segment(CreateError),
}

/// Why [`Shared::open`] or [`Endpoint::attach`] failed.
#[derive(Debug)]
pub enum AttachError {
    /// The segment cannot be opened.
    Segment(OpenError),
    /// The segment is not a cluster-shm segment of this layout version, or its header is
    /// inconsistent with its size (`what` says which check failed).
    BadHeader(&'static str),
    /// The requested index is not a worker index of this cluster.
    IndexOutOfRange { index: u32, workers: u32 },
    /// The requested index is held by a live process.
    IndexTaken(u32),
    /// Every worker index is held by a live process.
    NoFreeIndex,
    /// The primary closed the cluster.
    Closed,
}

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitError::Geometry(e) => e.fmt(f),
            InitError::Segment(e) => e.fmt(f),
        }
    }
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Segment(e) => e.fmt(f),
            Self::BadHeader(what) => write!(f, "not a cluster-shm segment of layout {LAYOUT_VERSION}: {what}"),
            Self::IndexOutOfRange { index, workers } => write!(f, "index {index} is out of range (workers: {workers})"),
            Self::IndexTaken(i) => write!(f, "index {i} is held by a live process"),
            Self::NoFreeIndex => f.write_str("every worker index is held by a live process"),
            Self::Closed => f.write_str("the cluster was closed by its primary"),
        }
    }
}

/// A mapped cluster segment with its validated geometry.
pub struct Shared {
    seg: Segment,
    geo: Geometry,
    creator: bool,
}

/// The PID half of an owner word (0: the index is free).
pub fn owner_pid(owner: u64) -> u32 {
    owner as u32
}
/// The generation half of an owner word.
pub fn owner_gen(owner: u64) -> u32 {
    (owner >> 32) as u32
}
fn owner(gen: u32, pid: u32) -> u64 {
    ((gen as u64) << 32) | pid as u64
}

impl Shared {
    /// Creates a new segment for `workers` workers plus the primary, after removing stale
    /// segments of dead primaries.
    pub fn create(workers: u32, ring_capacity: u32) -> Result<Arc<Shared>, InitError> {
        Self::create_with(Geometry::new(workers.saturating_add(1), ring_capacity).map_err(InitError::Geometry)?)
    }

    /// Creates a new segment of the given geometry (see [`Shared::create`]).
    pub fn create_with(geo: Geometry) -> Result<Arc<Shared>, InitError> {
        geo.validate().map_err(InitError::Geometry)?;
        segment::remove_stale();
        let seg = loop {
            match Segment::create(&segment::new_name(), geo.total_size()) {
                Err(CreateError::AlreadyExists) => continue, // 64 random bits collided: try again
                r => break r.map_err(InitError::Segment)?,
            }
        };
        Ok(Self::publish(seg, geo, ProcessId::current(), true))
    }

    /// Writes the header of the fresh, zeroed segment `seg` (made for `geo`) naming `primary`,
    /// and publishes it (`magic`, last).
    pub(super) fn publish(seg: Segment, geo: Geometry, primary: ProcessId, creator: bool) -> Arc<Shared> {
        let hdr = seg.as_ptr() as *mut SegmentHeader;
        // SAFETY: the mapping is fresh, zeroed, page aligned and at least a header long; no other
        // process uses these fields before `magic` is published below.
        unsafe {
            (*hdr).layout_version = LAYOUT_VERSION;
            (*hdr).endpoints = geo.endpoints;
            (*hdr).ring_capacity = geo.ring_capacity;
            (*hdr).total_size = geo.total_size() as u64;
            (*hdr).heap_size = geo.heap_size;
            (*hdr).primary_pid = primary.pid;
            (*hdr).primary_start = primary.start_time;
            (*hdr).magic.store(MAGIC, Ordering::Release);
        }
        Arc::new(Shared { seg, geo, creator })
    }

    /// Opens and validates an existing segment.
    pub fn open(name: &str) -> Result<Arc<Shared>, AttachError> {
        Self::validate(Segment::open(name).map_err(AttachError::Segment)?)
    }

    /// Opens and validates an existing segment mapped read-only, for observers (`stats`): only
    /// loads may be made through it; anything that stores (attach, commit, sweep, ...) faults.
    pub fn open_read_only(name: &str) -> Result<Arc<Shared>, AttachError> {
        Self::validate(Segment::open_read_only(name).map_err(AttachError::Segment)?)
    }

    /// Validates the header of the opened segment `seg`.
    pub(super) fn validate(seg: Segment) -> Result<Arc<Shared>, AttachError> {
        if seg.len() < std::mem::size_of::<SegmentHeader>() {
            return Err(AttachError::BadHeader("smaller than a header"));
        }
        let hdr = seg.as_ptr() as *const SegmentHeader;
        // SAFETY: the mapping is page aligned and holds at least a header; every field read is a
        // plain integer, so any bytes are a valid value, and each is validated below.
        let (magic, version, endpoints, cap, total, heap) = unsafe {
            (
                (*hdr).magic.load(Ordering::Acquire),
                std::ptr::read_volatile(std::ptr::addr_of!((*hdr).layout_version)),
                std::ptr::read_volatile(std::ptr::addr_of!((*hdr).endpoints)),
                std::ptr::read_volatile(std::ptr::addr_of!((*hdr).ring_capacity)),
                std::ptr::read_volatile(std::ptr::addr_of!((*hdr).total_size)),
                std::ptr::read_volatile(std::ptr::addr_of!((*hdr).heap_size)),
            )
        };
        if magic.to_le_bytes()[..6] != MAGIC_PREFIX {
            return Err(AttachError::BadHeader("magic"));
        }
        if magic != MAGIC || version != LAYOUT_VERSION {
            return Err(AttachError::BadHeader("layout version"));
        }
        let geo = Geometry::with_heap(endpoints, cap, heap).map_err(|_| AttachError::BadHeader("geometry"))?;
        if total != geo.total_size() as u64 || seg.len() < geo.total_size() {
            return Err(AttachError::BadHeader("sizes larger than the mapping"));
        }
        Ok(Arc::new(Shared {
            seg,
            geo,
            creator: false,
        }))
    }

    pub fn name(&self) -> &str {
        self.seg.name()
    }
    /// Start of the mapping (for modules that compute their own validated offsets).
    pub(crate) fn base(&self) -> *mut u8 {
        self.seg.as_ptr()
    }
    pub fn geometry(&self) -> Geometry {
        self.geo
    }
    pub fn is_creator(&self) -> bool {
        self.creator
    }
    pub fn header(&self) -> &SegmentHeader {
        // SAFETY: validated at open/create: the mapping holds a header at offset 0, aligned.
        unsafe { &*(self.seg.as_ptr() as *const SegmentHeader) }
    }
    pub fn slot(&self, index: u32) -> &EndpointSlot {
        assert!(index < self.geo.endpoints);
        // SAFETY: index < endpoints and the geometry was validated against the mapping's size, so
        // the slot lies inside the mapping; EndpointSlot holds only atomics.
        unsafe { &*(self.seg.as_ptr().add(self.geo.slots_offset()) as *const EndpointSlot).add(index as usize) }
    }
    /// The ring carrying `from` → `to`.
    pub fn ring(&self, from: u32, to: u32) -> Ring {
        assert!(from != to && from < self.geo.endpoints && to < self.geo.endpoints);
        let i = self.geo.ring_index(from, to);
        // SAFETY: i < rings(); header and data offsets come from the validated geometry and lie
        // inside the mapping, which lives as long as `self` (callers hold Arc<Shared>).
        unsafe {
            let hdr = (self.seg.as_ptr().add(self.geo.ring_headers_offset()) as *const RingHeader).add(i);
            let data = self
                .seg
                .as_ptr()
                .add(self.geo.ring_data_offset() + i * self.geo.ring_capacity as usize);
            Ring::new(hdr, data, self.geo.ring_capacity as u64)
        }
    }

    /// The process holding `index`, if any.
    pub fn holder(&self, index: u32) -> Option<ProcessId> {
        let reg = &self.slot(index).registration;
        let o = reg.owner.load(Ordering::Acquire);
        (owner_pid(o) != 0).then(|| {
            let known = reg.start_generation.load(Ordering::Acquire) == owner_gen(o);
            ProcessId {
                pid: owner_pid(o),
                start_time: if known {
                    reg.start_time.load(Ordering::Acquire)
                } else {
                    0
                },
            }
        })
    }

    /// The holder of `index` as `(generation, flags)`, if any. The generation tells a holder from
    /// the ones before and after it; the flags say what it offers (`layout::HANDLES_REQUESTS`).
    pub fn holder_info(&self, index: u32) -> Option<(u32, u32)> {
        let reg = &self.slot(index).registration;
        let o = reg.owner.load(Ordering::Acquire);
        (owner_pid(o) != 0).then(|| (owner_gen(o), reg.flags.load(Ordering::Acquire)))
    }

    /// Owner word of `index`: changes whenever its holder changes (0 in the PID half: free).
    pub fn owner_word(&self, index: u32) -> u64 {
        self.slot(index).registration.owner.load(Ordering::Acquire)
    }

    /// Raw owner words of every slot (for change detection).
    pub fn owners(&self) -> Vec<u64> {
        (0..self.geo.endpoints)
            .map(|i| self.slot(i).registration.owner.load(Ordering::Acquire))
            .collect()
    }

    /// Frees every index held by `pid`, and returns them. Does not announce it: see
    /// `Shared::release_pid` in [`super::reclaim`].
    pub(super) fn free_indices_of(&self, pid: u32) -> Vec<u32> {
        let mut freed = vec![];
        for i in 0..self.geo.endpoints {
            let reg = &self.slot(i).registration;
            let o = reg.owner.load(Ordering::Acquire);
            if pid != 0
                && owner_pid(o) == pid
                && reg
                    .owner
                    .compare_exchange(o, owner(owner_gen(o), 0), Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                freed.push(i);
            }
        }
        freed
    }

    /// Bumps the registry epoch and wakes every endpoint (delivery thread or event loop).
    pub fn registry_changed(&self) {
        self.header().registry_epoch.fetch_add(1, Ordering::AcqRel);
        for i in 0..self.geo.endpoints {
            // The futex for every waiter, announced or not (a sleeping thread gets a second,
            // redundant ring from `wake_announced`: registry changes are rare).
            ring_bell_always(&self.slot(i).data_bell);
            self.wake_announced(i);
        }
    }

    /// Wakes endpoint `index` if it announced that it sleeps, the way it sleeps.
    pub fn wake_endpoint(&self, index: u32) {
        fence(Ordering::SeqCst);
        if self.slot(index).data_bell.sleeping.load(Ordering::Relaxed) == bell_state::AWAKE {
            return;
        }
        self.wake_announced(index);
    }

    /// Takes back endpoint `index`'s announcement that it sleeps (its `sleeping` word becomes
    /// AWAKE) and wakes it the way it announced: the futex for a thread, the loop bell for an
    /// event loop. Any other value of the shared word (damage) gets both wake-ups.
    fn wake_announced(&self, index: u32) {
        let bell = &self.slot(index).data_bell;
        let was = bell.sleeping.swap(bell_state::AWAKE, Ordering::AcqRel);
        if was == bell_state::AWAKE {
            return;
        }
        if was != bell_state::EVENT_LOOP {
            ring_bell_always(bell);
        }
        if was != bell_state::THREAD {
            loop_bell::ring(self.name(), index);
        }
    }

    /// Marks the cluster closed (primary), wakes everyone, and removes the name.
    pub fn close_cluster(&self) {
        self.header().closed.store(1, Ordering::Release);
        self.registry_changed();
        self.unlink();
    }

    /// Whether the process that created the segment is still running (PID and start time).
    /// A segment made by `join` has no primary: always true there.
    pub fn primary_alive(&self) -> bool {
        if self.is_joined() {
            return true;
        }
        let h = self.header();
        // SAFETY: plain integer fields of the validated header, written before `magic`.
        let (pid, start_time) = unsafe {
            (
                std::ptr::read_volatile(std::ptr::addr_of!(h.primary_pid)),
                std::ptr::read_volatile(std::ptr::addr_of!(h.primary_start)),
            )
        };
        ProcessId { pid, start_time }.is_alive()
    }

    /// Made by `join` (no primary; see [`super::join`]).
    pub fn is_joined(&self) -> bool {
        self.header().join_state.load(Ordering::Acquire) != 0
    }

    pub fn is_closed(&self) -> bool {
        self.header().closed.load(Ordering::Acquire) != 0
    }

    /// Why the cluster is closed: 0 it is not, 1 its primary closed it, 2 its primary died.
    pub fn closed_reason(&self) -> u32 {
        self.header().closed.load(Ordering::Acquire)
    }

    /// Checks that the primary lives; if it died, marks the cluster closed (2) for every member,
    /// whose writes then fail, and wakes them. Returns [`closed_reason`](Self::closed_reason).
    pub fn check_primary(&self) -> u32 {
        let h = self.header();
        if h.closed.load(Ordering::Acquire) == 0
            && !self.is_creator()
            && !self.primary_alive()
            && h.closed
                .compare_exchange(0, 2, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.registry_changed();
        }
        self.closed_reason()
    }

    /// Removes the segment's name (processes that mapped it keep their mapping).
    pub fn unlink(&self) {
        segment::unlink(self.seg.name());
    }
}

/// Which index to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// The primary's endpoint (the last one).
    Primary,
    /// This worker index, if free or held by a dead process.
    Index(u32),
    /// The lowest free worker index (reclaiming those of dead processes if none is free).
    Any,
}

/// One process's endpoint: the index it holds and the rings it reads and writes.
pub struct Endpoint {
    shared: Arc<Shared>,
    index: u32,
    owner: u64,
}

impl Endpoint {
    /// Takes an index as `how` says. Does not announce it, nor drop what the previous holder
    /// left: see `Endpoint::attach` in [`super::reclaim`].
    pub(super) fn claim(shared: Arc<Shared>, how: Attach) -> Result<Endpoint, AttachError> {
        if shared.is_closed() {
            return Err(AttachError::Closed);
        }
        let geo = shared.geometry();
        let me = ProcessId::current();
        let workers = geo.endpoints - 1;
        let try_take = |i: u32, reclaim: bool| -> Option<u64> {
            let reg = &shared.slot(i).registration;
            let o = reg.owner.load(Ordering::Acquire);
            let free = owner_pid(o) == 0;
            let dead = !free && reclaim && shared.holder(i).is_some_and(|p| !p.is_alive());
            if !(free || dead) {
                return None;
            }
            let new = owner(owner_gen(o).wrapping_add(1), me.pid);
            reg.owner
                .compare_exchange(o, new, Ordering::AcqRel, Ordering::Relaxed)
                .ok()?;
            reg.start_time.store(me.start_time, Ordering::Release);
            reg.start_generation.store(owner_gen(new), Ordering::Release);
            Some(new)
        };
        let (index, owner) = match how {
            Attach::Primary => (
                geo.primary(),
                try_take(geo.primary(), true).ok_or(AttachError::IndexTaken(geo.primary()))?,
            ),
            Attach::Index(i) if i >= workers => return Err(AttachError::IndexOutOfRange { index: i, workers }),
            Attach::Index(i) => (i, try_take(i, true).ok_or(AttachError::IndexTaken(i))?),
            Attach::Any => (0..workers)
                .find_map(|i| try_take(i, false).map(|o| (i, o)))
                .or_else(|| (0..workers).find_map(|i| try_take(i, true).map(|o| (i, o))))
                .ok_or(AttachError::NoFreeIndex)?,
        };
        shared.slot(index).data_bell.sleeping.store(0, Ordering::Release);
        shared.slot(index).registration.flags.store(0, Ordering::Release);
        Ok(Endpoint { shared, index, owner })
    }

    pub fn index(&self) -> u32 {
        self.index
    }
    /// This attachment's generation: distinguishes it from earlier and later holders of its index.
    pub fn generation(&self) -> u32 {
        owner_gen(self.owner)
    }

    /// Sets or clears flags this process offers (`layout::HANDLES_REQUESTS`).
    pub fn set_flag(&self, flag: u32, on: bool) {
        let flags = &self.shared.slot(self.index).registration.flags;
        if on {
            flags.fetch_or(flag, Ordering::AcqRel);
        } else {
            flags.fetch_and(!flag, Ordering::AcqRel);
        }
    }

    /// The PID of this attachment's process.
    pub(super) fn pid(&self) -> u32 {
        owner_pid(self.owner)
    }
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
    pub fn geometry(&self) -> Geometry {
        self.shared.geometry()
    }
    /// Still the holder of the index (the primary may have freed it, thinking this process dead).
    pub fn holds_index(&self) -> bool {
        self.shared.slot(self.index).registration.owner.load(Ordering::Acquire) == self.owner
    }

    /// Gives the index back; false when it was not held any more (given back already, or
    /// somebody else took it meanwhile). Does not announce it: see `Endpoint::detach` in
    /// [`super::reclaim`].
    pub(super) fn give_back(&self) -> bool {
        let reg = &self.shared.slot(self.index).registration;
        reg.owner
            .compare_exchange(
                self.owner,
                owner(owner_gen(self.owner), 0),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Indices currently held by a process (this one included), primary last.
    pub fn attached(&self) -> Vec<u32> {
        (0..self.geometry().endpoints)
            .filter(|&i| self.shared.holder(i).is_some())
            .collect()
    }

    pub fn ring_to(&self, to: u32) -> Ring {
        self.shared.ring(self.index, to)
    }
    pub fn ring_from(&self, from: u32) -> Ring {
        self.shared.ring(from, self.index)
    }

    /// Tells `to` that a frame was published for it: a system call only if it sleeps.
    pub fn notify(&self, to: u32) {
        self.shared.wake_endpoint(to);
    }

    /// Releases ring positions after delivery; rings the space bells of writers that wait.
    pub fn commit(&self, from: u32, pos: u64) {
        if self.ring_from(from).commit(pos) {
            ring_bell_always(&self.shared.slot(from).space_bell);
        }
    }

    pub fn data_bell(&self) -> &Bell {
        &self.shared.slot(self.index).data_bell
    }
    pub fn space_bell(&self) -> &Bell {
        &self.shared.slot(self.index).space_bell
    }
}

/// Bumps a bell and wakes its waiters unconditionally (rare events: registry, close, space).
pub fn ring_bell_always(bell: &Bell) {
    bell.seq.fetch_add(1, Ordering::Release);
    platform::wake(&bell.seq);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_takes_free_indices_and_refuses_taken_ones() {
        let s = Shared::create(2, 4096).unwrap();
        let p = Endpoint::attach(s.clone(), Attach::Primary).unwrap();
        assert_eq!(p.index(), 2);
        let a = Endpoint::attach(s.clone(), Attach::Any).unwrap();
        let b = Endpoint::attach(s.clone(), Attach::Any).unwrap();
        assert_eq!((a.index(), b.index()), (0, 1));
        // this process is alive, so its indices are not reclaimed
        assert!(matches!(
            Endpoint::attach(s.clone(), Attach::Any),
            Err(AttachError::NoFreeIndex)
        ));
        assert!(matches!(
            Endpoint::attach(s.clone(), Attach::Index(1)),
            Err(AttachError::IndexTaken(1))
        ));
        assert!(matches!(
            Endpoint::attach(s.clone(), Attach::Index(2)),
            Err(AttachError::IndexOutOfRange { .. })
        ));
        assert_eq!(p.attached(), vec![0, 1, 2]);
        b.detach();
        assert_eq!(p.attached(), vec![0, 2]);
        let c = Endpoint::attach(s.clone(), Attach::Index(1)).unwrap();
        assert!(c.holds_index() && !b.holds_index());
        b.detach(); // stale handle: must not free c's index
        assert!(c.holds_index());
        s.close_cluster();
        assert!(matches!(Endpoint::attach(s, Attach::Any), Err(AttachError::Closed)));
    }

    /// lib/requests.js reads the owner word as two halves and relies on this (layout.rs,
    /// Registration): a generation appears only with a nonzero pid; freeing keeps it.
    #[test]
    fn a_generation_is_stored_only_with_a_pid_and_freeing_keeps_it() {
        let s = Shared::create(1, 4096).unwrap();
        let me = ProcessId::current().pid;
        let mut last = s.owner_word(0);
        for round in 0..3 {
            let w = Endpoint::attach(s.clone(), Attach::Index(0)).unwrap();
            let held = s.owner_word(0);
            assert_eq!((owner_gen(held), owner_pid(held)), (owner_gen(last) + 1, me));
            if round == 1 {
                assert_eq!(s.release_pid(me), vec![0]);
            } else {
                w.detach();
            }
            last = s.owner_word(0);
            assert_eq!(last, owner(owner_gen(held), 0), "freed in round {round}");
        }
        // A dead holder taken over: the new generation comes with the new holder's pid.
        s.slot(0)
            .registration
            .owner
            .store(owner(owner_gen(last) + 1, 0x7fff_fff0), Ordering::Release);
        Endpoint::attach(s.clone(), Attach::Index(0)).unwrap();
        assert_eq!(s.owner_word(0), owner(owner_gen(last) + 2, me));
        s.unlink();
    }

    #[test]
    fn a_dead_holder_is_reclaimed() {
        let s = Shared::create(1, 4096).unwrap();
        // a PID that cannot exist holds index 0
        s.slot(0)
            .registration
            .owner
            .store(owner(5, 0x7fff_fff0), Ordering::Release);
        let w = Endpoint::attach(s.clone(), Attach::Any).unwrap();
        assert_eq!(w.index(), 0);
        assert!(w.holds_index());
        s.unlink();
    }

    #[test]
    fn open_validates_the_header() {
        let s = Shared::create(1, 4096).unwrap();
        assert!(Shared::open(s.name()).is_ok());
        s.header().magic.store(0, Ordering::Release);
        assert!(matches!(Shared::open(s.name()), Err(AttachError::BadHeader("magic"))));
        s.header().magic.store(MAGIC, Ordering::Release);
        // SAFETY: test-only write of a plain header field in our own mapping.
        unsafe { *(std::ptr::addr_of!(s.header().total_size) as *mut u64) = 1 << 40 };
        assert!(matches!(Shared::open(s.name()), Err(AttachError::BadHeader(_))));
        s.unlink();
    }
}
