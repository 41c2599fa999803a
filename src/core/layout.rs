//! The shared-memory layout, in one place.
//!
//! ```text
//! offset 0            SegmentHeader                      (128 B)
//! slots_offset        EndpointSlot  × E                  (384 B each; E = workers + 1, primary last)
//! ring_hdrs_offset    RingHeader    × E·(E-1)            (256 B each; one per ordered pair)
//! ring_data_offset    ring data     × E·(E-1)            (capacity bytes each, page aligned)
//! objects_offset      ObjectTable                        (128 B: creation lock, heap cursor)
//!                     ObjectEntry   × MAX_OBJECTS        (256 B each: name, kind, parameters)
//! heap_offset         heap                               (heap_size bytes: semaphores, regions, maps)
//! ```
//!
//! Every struct is `repr(C)` with its size and alignment asserted at compile time, so all
//! processes (and all builds of one layout version) agree byte for byte. Offsets are computed
//! once from the geometry ([`Geometry`]); nothing in the segment stores an offset or a pointer,
//! so a corrupt header can at worst make [`Geometry::validate`] refuse the segment.
//!
//! The cache lines are 128 bytes apart: the writer's cursor and the reader's cursor of a ring
//! never share a line (nor the adjacent-line prefetch pair on x86).

use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

/// `b"CLSHM\0"` + layout version in the last two bytes.
pub const MAGIC: u64 = u64::from_le_bytes(*b"CLSHM\0\x04\x00");
/// 3: the rings' counters ([`WriterLine`], [`ReaderLine`]). 4: the REMOTE flag on the kind byte of
/// topic envelopes (lib/codec.js), which a process of layout 3 would misread.
pub const LAYOUT_VERSION: u32 = 4;
pub const LINE: usize = 128;
pub const PAGE: usize = 4096;
pub const MIN_RING: u32 = 4096;
pub const MAX_RING: u32 = 1 << 30;
pub const MAX_ENDPOINTS: u32 = 257;
/// Named objects (semaphores, regions, maps) a cluster can hold.
pub const MAX_OBJECTS: usize = 256;
/// Longest object name in bytes (UTF-8).
pub const MAX_NAME: usize = 128;
pub const DEFAULT_HEAP: u64 = 4 << 20;
pub const MAX_HEAP: u64 = 1 << 34;
/// Frames are 16-byte aligned, so the space left before the end of a ring is always either zero
/// or room for at least one frame header (a wrap marker).
pub const FRAME_ALIGN: u64 = 16;
pub const FRAME_HEADER: usize = 16;

/// Created by the primary; read-only after `magic` is published (Release), except for the atomics.
///
/// The first 24 bytes (magic, version, primary PID and start time) stay at these offsets in
/// every layout version: stale-segment cleanup of any version reads them to decide whether a
/// segment's primary is alive, and must never misread another version's header.
#[repr(C, align(128))]
pub struct SegmentHeader {
    /// `MAGIC_PREFIX` + layout version. Written last: a process that reads [`MAGIC`] (Acquire)
    /// sees every other field initialised.
    pub magic: AtomicU64,
    pub layout_version: u32,
    pub primary_pid: u32,
    /// Start time of the primary (see `platform::ProcessId`): a PID alone can be reused.
    pub primary_start: u64,
    pub endpoints: u32,
    pub ring_capacity: u32,
    pub total_size: u64,
    pub heap_size: u64,
    /// Bumped on every attach/detach: delivery threads compare it to notice peers changing.
    pub registry_epoch: AtomicU32,
    /// Set to 1 by the primary's `close()`: the cluster is gone.
    pub closed: AtomicU32,
    /// Segments made by `join` only (0 in a primary's segment): the state word of the join
    /// protocol, `state << 56 | generation << 32 | pid` (see `core::join`).
    pub join_state: AtomicU64,
    /// Start time of the pid in `join_state`, valid when `join_start_gen` is its generation.
    pub join_start: AtomicU64,
    /// Random, written before `magic`: tells this segment from a later one of the same name.
    pub join_nonce: AtomicU64,
    pub join_start_gen: AtomicU32,
}

/// The first six bytes of every layout version's magic.
pub const MAGIC_PREFIX: [u8; 6] = *b"CLSHM\0";

/// Who holds an endpoint index. `owner` packs `(generation << 32) | pid`; pid 0 means free. All
/// transitions are one CAS on that word, so two processes can never both take an index. A new
/// generation is stored only with a nonzero pid (attach), and freeing keeps the generation:
/// lib/requests.js (`#holder`) reads the two halves with two loads and relies on this.
#[repr(C, align(128))]
pub struct Registration {
    pub owner: AtomicU64,
    /// Process start time of the owner, valid when `start_generation` equals the owner's generation.
    pub start_time: AtomicU64,
    pub start_generation: AtomicU32,
    /// What the holder offers, set by the holder (bit 0: it answers requests). Reset on attach.
    pub flags: AtomicU32,
}

/// `Registration::flags`: the holder has request handlers, so requests to it will be answered.
pub const HANDLES_REQUESTS: u32 = 1;

/// An eventcount: `seq` is the futex word, `sleeping` says a waiter announced that it will sleep.
#[repr(C, align(128))]
pub struct Bell {
    pub seq: AtomicU32,
    pub sleeping: AtomicU32,
}

#[repr(C)]
pub struct EndpointSlot {
    pub registration: Registration,
    /// Rung by a sender that published a frame for this endpoint (and by registry changes).
    pub data_bell: Bell,
    /// Rung by a receiver that freed space in a ring this endpoint writes to.
    pub space_bell: Bell,
}

/// The writer's line of a ring.
#[repr(C, align(128))]
pub struct WriterLine {
    /// Bytes ever published (monotonic); the writer stores it with Release after the frame.
    pub tail: AtomicU64,
    /// Sequence number of the next message; published with `tail`.
    pub next_seq: AtomicU32,
    /// 1 while the writer waits for space; the reader swaps it to 0 and rings the writer's space bell.
    pub writer_waiting: AtomicU32,
    /// Counters for `stats()`, written by the writer alone, once per published batch (plain
    /// load + store on this line, which the `tail` store dirties anyway): whole messages
    /// published, their payload bytes, and the times a write found the ring without room.
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub full: AtomicU64,
}

/// The reader's line of a ring.
#[repr(C, align(128))]
pub struct ReaderLine {
    /// Bytes ever consumed (monotonic); stored by the reader after the frames were delivered.
    pub head: AtomicU64,
    /// Counters for `stats()`, written by the reader alone, once per drain of this ring: whole
    /// messages taken out and their payload bytes (a batch taken by a reader killed before it
    /// committed is taken and counted again by its successor), messages reported lost, and
    /// corruption resets.
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub lost: AtomicU64,
    pub corrupt: AtomicU64,
}

#[repr(C)]
pub struct RingHeader {
    pub writer: WriterLine,
    pub reader: ReaderLine,
}

/// In front of the object entries.
#[repr(C, align(128))]
pub struct ObjectTable {
    /// Holder word (see `objects::holder_word`) of the process creating an object; 0 = free.
    pub create_lock: AtomicU64,
    /// Bytes of the heap handed out so far (bump allocation; objects are never freed).
    pub heap_used: AtomicU64,
}

/// One named object. Written only under `ObjectTable::create_lock`; `state` is stored last
/// (Release), so a reader that sees `READY` sees the rest.
#[repr(C, align(128))]
pub struct ObjectEntry {
    pub state: AtomicU32,
    pub kind: u32,
    pub name_len: u32,
    pub _reserved: u32,
    /// Kind-specific parameters (semaphore: permits; region: size; map: capacity, key and value sizes).
    pub params: [u64; 4],
    /// Offset of the object's memory from the heap's start, and its length.
    pub offset: u64,
    pub size: u64,
    pub name: [u8; MAX_NAME],
}

const _: () = {
    assert!(size_of::<SegmentHeader>() == LINE && align_of::<SegmentHeader>() == LINE);
    assert!(std::mem::offset_of!(SegmentHeader, primary_pid) == 12);
    assert!(std::mem::offset_of!(SegmentHeader, primary_start) == 16);
    assert!(size_of::<Registration>() == LINE);
    assert!(size_of::<Bell>() == LINE);
    assert!(size_of::<EndpointSlot>() == 3 * LINE);
    assert!(size_of::<RingHeader>() == 2 * LINE && align_of::<RingHeader>() == LINE);
    assert!(size_of::<FrameHeader>() == FRAME_HEADER);
    assert!(size_of::<ObjectTable>() == LINE);
    assert!(size_of::<ObjectEntry>() == 2 * LINE);
};

/// Frame kinds. The binding maps payload types onto them; the ring only needs `Wrap`.
pub mod kind {
    /// Padding from here to the end of the ring; the next frame starts at offset 0.
    pub const WRAP: u8 = 0;
    pub const BYTES: u8 = 1;
    pub const UTF8: u8 = 2;
    pub const VALUE: u8 = 3;
    /// Highest kind a frame may carry; anything above is corruption.
    pub const MAX: u8 = 15;
}

pub mod flags {
    /// First frame of a message (carries `msg_len`).
    pub const FIRST: u8 = 1;
    /// Last frame of a message.
    pub const LAST: u8 = 2;
}

/// The 16 bytes in front of every frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload bytes in this frame.
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub _reserved: u16,
    /// Length of the whole message (equal on every frame of it).
    pub msg_len: u32,
    /// Sequence number of the message in its ring (equal on every frame of it).
    pub seq: u32,
}

impl FrameHeader {
    pub fn to_bytes(self) -> [u8; FRAME_HEADER] {
        let mut b = [0u8; FRAME_HEADER];
        b[0..4].copy_from_slice(&self.len.to_le_bytes());
        b[4] = self.kind;
        b[5] = self.flags;
        b[8..12].copy_from_slice(&self.msg_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.seq.to_le_bytes());
        b
    }
    pub fn from_bytes(b: &[u8; FRAME_HEADER]) -> Self {
        FrameHeader {
            len: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            kind: b[4],
            flags: b[5],
            _reserved: u16::from_le_bytes([b[6], b[7]]),
            msg_len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            seq: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }
}

/// Size of a frame with `payload` bytes, header and padding included.
pub const fn frame_size(payload: usize) -> u64 {
    ((FRAME_HEADER + payload) as u64 + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

/// The shape of a segment: everything else is derived from these two numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Workers + 1; the primary is the last endpoint.
    pub endpoints: u32,
    /// Bytes of each ring's data area; a power of two.
    pub ring_capacity: u32,
    /// Bytes for named objects (semaphores, regions, maps); a multiple of the page size.
    pub heap_size: u64,
}

/// Why a geometry is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeometryError {
    /// Fewer than 1 worker or more than `MAX_ENDPOINTS - 1`.
    EndpointCount(u32),
    /// Not a power of two, or outside `MIN_RING..=MAX_RING`.
    RingCapacity(u32),
    /// Not a multiple of the page size, or above `MAX_HEAP`.
    HeapSize(u64),
    /// The segment would exceed the address space.
    TooLarge,
}

impl std::fmt::Display for GeometryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EndpointCount(n) => write!(
                f,
                "workers must be 1..={}, got {}",
                MAX_ENDPOINTS - 1,
                n.saturating_sub(1)
            ),
            Self::RingCapacity(n) => write!(f, "ringSize must be a power of two in {MIN_RING}..={MAX_RING}, got {n}"),
            Self::HeapSize(n) => write!(f, "heapSize must be a multiple of {PAGE} up to {MAX_HEAP}, got {n}"),
            Self::TooLarge => write!(f, "segment would be too large for this geometry"),
        }
    }
}

impl Geometry {
    /// A geometry with the default heap ([`DEFAULT_HEAP`]).
    pub fn new(endpoints: u32, ring_capacity: u32) -> Result<Self, GeometryError> {
        Self::with_heap(endpoints, ring_capacity, DEFAULT_HEAP)
    }

    pub fn with_heap(endpoints: u32, ring_capacity: u32, heap_size: u64) -> Result<Self, GeometryError> {
        let g = Geometry {
            endpoints,
            ring_capacity,
            heap_size,
        };
        g.validate()?;
        Ok(g)
    }

    pub fn validate(&self) -> Result<(), GeometryError> {
        if !(2..=MAX_ENDPOINTS).contains(&self.endpoints) {
            return Err(GeometryError::EndpointCount(self.endpoints));
        }
        let c = self.ring_capacity;
        if !c.is_power_of_two() || !(MIN_RING..=MAX_RING).contains(&c) {
            return Err(GeometryError::RingCapacity(c));
        }
        if !self.heap_size.is_multiple_of(PAGE as u64) || self.heap_size > MAX_HEAP {
            return Err(GeometryError::HeapSize(self.heap_size));
        }
        self.checked_total_size().map(|_| ()).ok_or(GeometryError::TooLarge)
    }

    pub fn rings(&self) -> usize {
        let e = self.endpoints as usize;
        e * (e - 1)
    }
    pub fn primary(&self) -> u32 {
        self.endpoints - 1
    }
    pub const fn slots_offset(&self) -> usize {
        LINE
    }
    pub fn ring_headers_offset(&self) -> usize {
        self.slots_offset() + self.endpoints as usize * size_of::<EndpointSlot>()
    }
    pub fn ring_data_offset(&self) -> usize {
        let end = self.ring_headers_offset() + self.rings() * size_of::<RingHeader>();
        end.div_ceil(PAGE) * PAGE
    }
    pub fn objects_offset(&self) -> usize {
        self.ring_data_offset() + self.rings() * self.ring_capacity as usize
    }
    pub fn heap_offset(&self) -> usize {
        self.objects_offset() + size_of::<ObjectTable>() + MAX_OBJECTS * size_of::<ObjectEntry>()
    }
    fn checked_total_size(&self) -> Option<usize> {
        let data = (self.rings()).checked_mul(self.ring_capacity as usize)?;
        let objects = size_of::<ObjectTable>() + MAX_OBJECTS * size_of::<ObjectEntry>();
        let total = self
            .ring_data_offset()
            .checked_add(data)?
            .checked_add(objects)?
            .checked_add(self.heap_size as usize)?;
        (total as u64 <= isize::MAX as u64 / 2).then_some(total)
    }
    pub fn total_size(&self) -> usize {
        self.checked_total_size().expect("validated geometry")
    }
    /// Index of the ring that carries messages `from` → `to` (`from != to`, both in range).
    pub fn ring_index(&self, from: u32, to: u32) -> usize {
        debug_assert!(from != to && from < self.endpoints && to < self.endpoints);
        let e1 = self.endpoints as usize - 1;
        from as usize * e1 + (to as usize - usize::from(to > from))
    }
    /// Largest payload one frame carries: a quarter of the ring, so that chunks of a large
    /// message pipeline (the writer fills one quarter while the reader drains another) and
    /// four chunks tile the ring exactly.
    pub fn max_frame_payload(&self) -> usize {
        self.ring_capacity as usize / 4 - FRAME_HEADER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_index_is_a_bijection() {
        let g = Geometry::new(5, MIN_RING).unwrap();
        let mut seen = vec![false; g.rings()];
        for from in 0..5 {
            for to in 0..5 {
                if from != to {
                    let i = g.ring_index(from, to);
                    assert!(!seen[i]);
                    seen[i] = true;
                }
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn geometry_rejects_bad_shapes() {
        assert_eq!(Geometry::new(1, MIN_RING), Err(GeometryError::EndpointCount(1)));
        assert_eq!(Geometry::new(3, 5000), Err(GeometryError::RingCapacity(5000)));
        assert_eq!(Geometry::new(3, 1024), Err(GeometryError::RingCapacity(1024)));
        assert!(Geometry::new(MAX_ENDPOINTS + 1, MIN_RING).is_err());
        let g = Geometry::new(3, MIN_RING).unwrap();
        assert_eq!(g.ring_data_offset() % PAGE, 0);
        assert_eq!(g.objects_offset(), g.ring_data_offset() + 6 * MIN_RING as usize);
        assert_eq!(g.total_size(), g.heap_offset() + DEFAULT_HEAP as usize);
        assert_eq!(g.heap_offset() % LINE, 0);
        assert!(Geometry::with_heap(3, MIN_RING, 100).is_err());
    }

    #[test]
    fn frame_header_round_trips() {
        let h = FrameHeader {
            len: 7,
            kind: kind::UTF8,
            flags: flags::FIRST | flags::LAST,
            _reserved: 0,
            msg_len: 7,
            seq: 42,
        };
        assert_eq!(FrameHeader::from_bytes(&h.to_bytes()), h);
        assert_eq!(frame_size(0), 16);
        assert_eq!(frame_size(1), 32);
        assert_eq!(frame_size(16), 32);
    }
}
