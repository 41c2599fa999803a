//! A fixed-capacity hash map in shared memory, for counters, rate limits and small caches.
//!
//! Open addressing with linear probing over `slots` (a power of two ≥ 1.5 × capacity); deleted
//! slots become tombstones that later inserts reuse. Every operation runs under the map's robust
//! lock (see [`super::objects::lock_within`]) for a bounded copy of at most one key and one value,
//! so each operation is atomic; with a bound set ([`SharedMap::set_lock_bound`]) an operation
//! that waited that long for a stopped holder fails with [`MapError::Busy`], changing nothing. Before touching a slot the writer records it in `dirty`; a process
//! that steals the lock from a dead writer drops that slot (the key reads as absent), so a value
//! torn by a crash is never returned.
//!
//! ```
//! use cluster_shm::core::{Shared, Endpoint, Attach, map::{SharedMap, kind}};
//! let shared = Shared::create(1, 4096).unwrap();
//! let me = Endpoint::attach(shared.clone(), Attach::Primary).unwrap();
//! let m = SharedMap::open(&me, "hits", 100, 32, 64).unwrap();
//! assert_eq!(m.increment(b"/home", 1.0).unwrap(), 1.0);
//! assert_eq!(m.increment(b"/home", 2.0).unwrap(), 3.0);
//! m.set(b"greeting", kind::UTF8, b"hi").unwrap();
//! assert_eq!(m.get(b"greeting").unwrap(), Some((kind::UTF8, b"hi".to_vec())));
//! assert_eq!(m.len().unwrap(), 2);
//! shared.close_cluster();
//! ```

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::endpoint::Endpoint;
use super::objects::{self, Kind, Locked, ObjectError, ObjectMemory};

/// Value kinds: the message kinds, plus numbers stored as f64 (so `increment` works on them).
pub mod kind {
    pub use crate::core::layout::kind::{BYTES, UTF8, VALUE};
    pub const F64: u8 = 4;
}

pub const MAX_CAPACITY: u64 = 1 << 24;
pub const MAX_KEY: u64 = 1024;
pub const MAX_VALUE: u64 = 1 << 20;

#[repr(C, align(128))]
struct MapHeader {
    lock: AtomicU64,
    /// Slot index + 1 being written under the lock; 0 when none.
    dirty: AtomicU32,
    count: AtomicU32,
}

const HEADER: usize = std::mem::size_of::<MapHeader>();
const SLOT_HEADER: usize = 32;
const EMPTY: u32 = 0;
const FULL: u32 = 1;
const TOMBSTONE: u32 = 2;

/// Why a map operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapError {
    KeyTooLarge {
        len: usize,
        max: usize,
    },
    ValueTooLarge {
        len: usize,
        max: usize,
    },
    /// The map holds `capacity` keys already.
    Full {
        capacity: u32,
    },
    /// `increment` on a value that is not a number.
    NotANumber,
    /// Another process held the map's lock longer than the bound (it is stopped, or starved).
    Busy {
        bound: std::time::Duration,
    },
}

impl std::fmt::Display for MapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::KeyTooLarge { len, max } => write!(f, "key of {len} bytes is larger than maxKeyBytes ({max})"),
            Self::ValueTooLarge { len, max } => write!(f, "value of {len} bytes is larger than maxValueBytes ({max})"),
            Self::Full { capacity } => write!(f, "the map holds its capacity of {capacity} keys"),
            Self::NotANumber => f.write_str("increment() on a value that is not a number"),
            Self::Busy { bound } => write!(
                f,
                "another process held the map's lock for more than {} ms (stopped or starved)",
                bound.as_secs_f64() * 1000.0
            ),
        }
    }
}

/// The fixed header of a slot, copied out.
#[derive(Clone, Copy, Default)]
struct SlotHead {
    state: u32,
    key_len: u32,
    val_len: u32,
    val_kind: u32,
    hash: u64,
}

pub struct SharedMap {
    mem: ObjectMemory,
    me: u64,
    slots: usize,
    stride: usize,
    capacity: u32,
    max_key: usize,
    max_value: usize,
    /// How long an operation waits for a live holder of the lock (None: as long as it holds it).
    lock_bound: Option<std::time::Duration>,
}

fn fnv1a(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Keys held by the map in `mem` as last counted (read without its lock: loads only, for
/// observers; a writer that died mid-operation may leave it one off until the next repair).
pub fn count_of(mem: &ObjectMemory) -> u32 {
    if mem.size < HEADER {
        return 0;
    }
    // SAFETY: the object holds at least the header (checked above), 128-aligned; atomics only.
    unsafe { &*(mem.ptr as *const MapHeader) }.count.load(Ordering::Acquire)
}

impl SharedMap {
    pub fn open(
        ep: &Endpoint,
        name: &str,
        capacity: u64,
        max_key: u64,
        max_value: u64,
    ) -> Result<SharedMap, ObjectError> {
        if !(1..=MAX_CAPACITY).contains(&capacity) {
            return Err(ObjectError::InvalidParams("capacity must be 1..=16777216"));
        }
        if !(1..=MAX_KEY).contains(&max_key) {
            return Err(ObjectError::InvalidParams("maxKeyBytes must be 1..=1024"));
        }
        if !(8..=MAX_VALUE).contains(&max_value) {
            return Err(ObjectError::InvalidParams("maxValueBytes must be 8..=1048576"));
        }
        let slots = (capacity + capacity / 2 + 1).next_power_of_two() as usize;
        let stride = (SLOT_HEADER + max_key as usize + max_value as usize).div_ceil(8) * 8;
        let size = HEADER as u64 + slots as u64 * stride as u64;
        let init = |p: *mut u8, n: usize| {
            // SAFETY: `open_or_create` hands us `n` writable bytes; all-zero means unlocked,
            // clean, empty.
            unsafe { std::ptr::write_bytes(p, 0, n) }
        };
        let mem = objects::open_or_create(ep, Kind::Map, name, [capacity, max_key, max_value, 0], size, init)?;
        if (mem.size as u64) < size {
            return Err(ObjectError::Corrupt);
        }
        Ok(SharedMap {
            mem,
            me: ep.holder_word(),
            slots,
            stride,
            capacity: capacity as u32,
            max_key: max_key as usize,
            max_value: max_value as usize,
            lock_bound: None,
        })
    }

    fn header(&self) -> &MapHeader {
        // SAFETY: the object holds HEADER + slots * stride bytes (checked in `open`), 128-aligned;
        // MapHeader holds only atomics.
        unsafe { &*(self.mem.ptr as *const MapHeader) }
    }

    fn slot_ptr(&self, i: usize) -> *mut u8 {
        assert!(i < self.slots);
        // SAFETY: i < slots, so the slot lies inside the object (see `header`).
        unsafe { self.mem.ptr.add(HEADER + i * self.stride) }
    }

    // Slot accessors. Callers hold the map's lock, so no well-behaved process writes the slot
    // concurrently; lengths read back are clamped to the configured maxima before use.
    fn head(&self, i: usize) -> SlotHead {
        let p = self.slot_ptr(i) as *const u32;
        // SAFETY: the slot header is 32 bytes, 8-aligned, inside the object; plain integers.
        unsafe {
            SlotHead {
                state: p.read_volatile(),
                key_len: p.add(1).read_volatile().min(self.max_key as u32),
                val_len: p.add(2).read_volatile().min(self.max_value as u32),
                val_kind: p.add(3).read_volatile(),
                hash: (p.add(4) as *const u64).read_volatile(),
            }
        }
    }

    fn set_head(&self, i: usize, h: SlotHead) {
        let p = self.slot_ptr(i) as *mut u32;
        // SAFETY: as in `head`.
        unsafe {
            p.add(1).write_volatile(h.key_len);
            p.add(2).write_volatile(h.val_len);
            p.add(3).write_volatile(h.val_kind);
            (p.add(4) as *mut u64).write_volatile(h.hash);
            p.write_volatile(h.state);
        }
    }

    fn set_state(&self, i: usize, state: u32) {
        // SAFETY: as in `head`.
        unsafe { (self.slot_ptr(i) as *mut u32).write_volatile(state) }
    }

    fn key_eq(&self, i: usize, h: &SlotHead, key: &[u8]) -> bool {
        if h.key_len as usize != key.len() {
            return false;
        }
        let mut buf = vec![0u8; key.len()];
        // SAFETY: key_len <= max_key (clamped), so the copy stays inside the slot's key area.
        unsafe { std::ptr::copy_nonoverlapping(self.slot_ptr(i).add(SLOT_HEADER), buf.as_mut_ptr(), key.len()) };
        buf == key
    }

    fn value(&self, i: usize, h: &SlotHead) -> (u8, Vec<u8>) {
        let mut v = vec![0u8; h.val_len as usize];
        // SAFETY: val_len <= max_value (clamped); the value area follows the key area in the slot.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.slot_ptr(i).add(SLOT_HEADER + self.max_key),
                v.as_mut_ptr(),
                v.len(),
            )
        };
        (h.val_kind as u8, v)
    }

    /// Writes key (when `key` is Some) and value into slot `i`, marked dirty meanwhile.
    fn write_slot(&self, i: usize, hash: u64, key: Option<&[u8]>, kind: u8, val: &[u8]) {
        let hdr = self.header();
        hdr.dirty.store(i as u32 + 1, Ordering::Release);
        let p = self.slot_ptr(i);
        let mut h = self.head(i);
        // SAFETY: key.len() <= max_key and val.len() <= max_value were checked by the callers, so
        // both copies stay inside the slot.
        unsafe {
            if let Some(k) = key {
                std::ptr::copy_nonoverlapping(k.as_ptr(), p.add(SLOT_HEADER), k.len());
                h.key_len = k.len() as u32;
                h.hash = hash;
            }
            std::ptr::copy_nonoverlapping(val.as_ptr(), p.add(SLOT_HEADER + self.max_key), val.len());
        }
        h.val_len = val.len() as u32;
        h.val_kind = kind as u32;
        h.state = FULL;
        self.set_head(i, h);
        hdr.dirty.store(0, Ordering::Release);
    }

    /// Bounds the wait of every operation for a live holder of the lock (None: unbounded); past
    /// it the operation fails with [`MapError::Busy`] and changes nothing.
    pub fn set_lock_bound(&mut self, bound: Option<std::time::Duration>) {
        self.lock_bound = bound;
    }

    /// Runs `f` under the map's lock, repairing the map first when its last holder died.
    fn locked<R>(&self, f: impl FnOnce() -> R) -> Result<R, MapError> {
        let hdr = self.header();
        let bound = self.lock_bound;
        match objects::lock_within(&self.mem.shared, &hdr.lock, self.me, bound) {
            Some(Locked::Recovered) => self.repair(),
            Some(Locked::Clean) => {}
            None => {
                return Err(MapError::Busy {
                    bound: bound.unwrap_or_default(),
                })
            }
        }
        let r = f();
        objects::unlock(&hdr.lock, self.me);
        Ok(r)
    }

    /// After a holder died: drop the slot it was writing, and recount.
    fn repair(&self) {
        let hdr = self.header();
        let dirty = hdr.dirty.swap(0, Ordering::AcqRel) as usize;
        if dirty != 0 && dirty <= self.slots {
            self.set_state(dirty - 1, TOMBSTONE);
        }
        let count = (0..self.slots).filter(|&i| self.head(i).state == FULL).count();
        hdr.count.store(count as u32, Ordering::Release);
    }

    /// (slot of `key`, first reusable slot on its probe path).
    fn probe(&self, key: &[u8], hash: u64) -> (Option<usize>, Option<usize>) {
        let mask = self.slots - 1;
        let mut free = None;
        for k in 0..self.slots {
            let i = (hash as usize).wrapping_add(k) & mask;
            let h = self.head(i);
            match h.state {
                FULL if h.hash == hash && self.key_eq(i, &h, key) => return (Some(i), free),
                FULL => {}
                EMPTY => return (None, free.or(Some(i))),
                _ => free = free.or(Some(i)),
            }
        }
        (None, free)
    }

    fn check_key(&self, key: &[u8]) -> Result<(), MapError> {
        if key.len() > self.max_key {
            return Err(MapError::KeyTooLarge {
                len: key.len(),
                max: self.max_key,
            });
        }
        Ok(())
    }

    fn check_value(&self, val: &[u8]) -> Result<(), MapError> {
        if val.len() > self.max_value {
            return Err(MapError::ValueTooLarge {
                len: val.len(),
                max: self.max_value,
            });
        }
        Ok(())
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Keys held now (under the lock, so that a dead writer's slot is repaired first).
    pub fn len(&self) -> Result<u32, MapError> {
        self.locked(|| self.header().count.load(Ordering::Acquire))
    }

    pub fn is_empty(&self) -> Result<bool, MapError> {
        self.len().map(|n| n == 0)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<(u8, Vec<u8>)>, MapError> {
        if key.len() > self.max_key {
            return Ok(None);
        }
        let hash = fnv1a(key);
        self.locked(|| self.probe(key, hash).0.map(|i| self.value(i, &self.head(i))))
    }

    pub fn has(&self, key: &[u8]) -> Result<bool, MapError> {
        if key.len() > self.max_key {
            return Ok(false);
        }
        self.locked(|| self.probe(key, fnv1a(key)).0.is_some())
    }

    /// Inserts into a free slot (the caller holds the lock and checked sizes).
    fn insert(&self, free: Option<usize>, hash: u64, key: &[u8], kind: u8, val: &[u8]) -> Result<(), MapError> {
        let hdr = self.header();
        match free {
            Some(i) if hdr.count.load(Ordering::Acquire) < self.capacity => {
                self.write_slot(i, hash, Some(key), kind, val);
                hdr.count.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            _ => Err(MapError::Full {
                capacity: self.capacity,
            }),
        }
    }

    pub fn set(&self, key: &[u8], kind: u8, val: &[u8]) -> Result<(), MapError> {
        self.check_key(key)?;
        self.check_value(val)?;
        let hash = fnv1a(key);
        self.locked(|| match self.probe(key, hash) {
            (Some(i), _) => {
                self.write_slot(i, hash, None, kind, val);
                Ok(())
            }
            (None, free) => self.insert(free, hash, key, kind, val),
        })?
    }

    pub fn delete(&self, key: &[u8]) -> Result<bool, MapError> {
        if key.len() > self.max_key {
            return Ok(false);
        }
        let hash = fnv1a(key);
        self.locked(|| match self.probe(key, hash).0 {
            Some(i) => {
                self.set_state(i, TOMBSTONE);
                self.header().count.fetch_sub(1, Ordering::AcqRel);
                true
            }
            None => false,
        })
    }

    /// Adds `by` to the number at `key` (a missing key counts as 0); returns the new value.
    pub fn increment(&self, key: &[u8], by: f64) -> Result<f64, MapError> {
        self.check_key(key)?;
        let hash = fnv1a(key);
        self.locked(|| match self.probe(key, hash) {
            (Some(i), _) => {
                let h = self.head(i);
                let (k, v) = self.value(i, &h);
                let old: [u8; 8] = v.try_into().map_err(|_| MapError::NotANumber)?;
                if k != kind::F64 {
                    return Err(MapError::NotANumber);
                }
                let new = f64::from_le_bytes(old) + by;
                self.write_slot(i, hash, None, kind::F64, &new.to_le_bytes());
                Ok(new)
            }
            (None, free) => self.insert(free, hash, key, kind::F64, &by.to_le_bytes()).map(|_| by),
        })?
    }

    /// Replaces the value at `key` with `new` (None: deletes it) if the current value equals
    /// `expected` (same kind and bytes; None: the key is absent). Returns whether it replaced.
    pub fn compare_and_set(
        &self,
        key: &[u8],
        expected: Option<(u8, &[u8])>,
        new: Option<(u8, &[u8])>,
    ) -> Result<bool, MapError> {
        self.check_key(key)?;
        if let Some((_, v)) = new {
            self.check_value(v)?;
        }
        let hash = fnv1a(key);
        self.locked(|| {
            let (at, free) = self.probe(key, hash);
            let current = at.map(|i| self.value(i, &self.head(i)));
            let matches = match (&current, expected) {
                (None, None) => true,
                (Some((k, v)), Some((ek, ev))) => *k == ek && v.as_slice() == ev,
                _ => false,
            };
            if !matches {
                return Ok(false);
            }
            match (at, new) {
                (Some(i), Some((k, v))) => self.write_slot(i, hash, None, k, v),
                (Some(i), None) => {
                    self.set_state(i, TOMBSTONE);
                    self.header().count.fetch_sub(1, Ordering::AcqRel);
                }
                (None, Some((k, v))) => self.insert(free, hash, key, k, v)?,
                (None, None) => {}
            }
            Ok(true)
        })?
    }

    /// Every key (UTF-8 bytes), in slot order.
    pub fn keys(&self) -> Result<Vec<Vec<u8>>, MapError> {
        self.locked(|| {
            (0..self.slots)
                .filter_map(|i| {
                    let h = self.head(i);
                    (h.state == FULL).then(|| {
                        let mut k = vec![0u8; h.key_len as usize];
                        // SAFETY: key_len <= max_key (clamped): inside the slot's key area.
                        unsafe {
                            std::ptr::copy_nonoverlapping(self.slot_ptr(i).add(SLOT_HEADER), k.as_mut_ptr(), k.len())
                        };
                        k
                    })
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Attach, Shared};
    use std::sync::Arc;

    fn setup() -> (Arc<Shared>, Endpoint) {
        let s = Shared::create(2, 4096).unwrap();
        let e = Endpoint::attach(s.clone(), Attach::Primary).unwrap();
        (s, e)
    }

    #[test]
    fn set_get_delete_and_reuse_tombstones() {
        let (s, e) = setup();
        let m = SharedMap::open(&e, "m", 4, 16, 16).unwrap();
        for round in 0..10 {
            for k in 0..4 {
                m.set(format!("k{k}").as_bytes(), kind::BYTES, &[round, k]).unwrap();
            }
            assert_eq!(m.len().unwrap(), 4);
            assert_eq!(m.set(b"other", kind::BYTES, b"x"), Err(MapError::Full { capacity: 4 }));
            assert_eq!(m.get(b"k2").unwrap(), Some((kind::BYTES, vec![round, 2])));
            for k in 0..4 {
                assert!(m.delete(format!("k{k}").as_bytes()).unwrap());
            }
            assert!(m.is_empty().unwrap());
        }
        assert_eq!(
            m.set(&[0; 17], kind::BYTES, b""),
            Err(MapError::KeyTooLarge { len: 17, max: 16 })
        );
        assert_eq!(
            m.set(b"a", kind::BYTES, &[0; 17]),
            Err(MapError::ValueTooLarge { len: 17, max: 16 })
        );
        s.close_cluster();
    }

    #[test]
    fn increment_and_compare_and_set() {
        let (s, e) = setup();
        let m = SharedMap::open(&e, "c", 8, 16, 16).unwrap();
        assert_eq!(m.increment(b"n", 5.0), Ok(5.0));
        assert_eq!(m.increment(b"n", -2.0), Ok(3.0));
        m.set(b"s", kind::UTF8, b"x").unwrap();
        assert_eq!(m.increment(b"s", 1.0), Err(MapError::NotANumber));
        assert_eq!(
            m.compare_and_set(b"s", Some((kind::UTF8, b"y")), Some((kind::UTF8, b"z"))),
            Ok(false)
        );
        assert_eq!(
            m.compare_and_set(b"s", Some((kind::UTF8, b"x")), Some((kind::UTF8, b"z"))),
            Ok(true)
        );
        assert_eq!(m.get(b"s").unwrap(), Some((kind::UTF8, b"z".to_vec())));
        assert_eq!(m.compare_and_set(b"new", None, Some((kind::BYTES, b"1"))), Ok(true));
        assert_eq!(m.compare_and_set(b"new", None, Some((kind::BYTES, b"2"))), Ok(false));
        assert_eq!(m.compare_and_set(b"new", Some((kind::BYTES, b"1")), None), Ok(true));
        assert!(!m.has(b"new").unwrap());
        s.close_cluster();
    }

    #[test]
    fn a_dead_writer_s_slot_is_dropped_and_the_lock_recovered() {
        let (s, e) = setup();
        let m = SharedMap::open(&e, "r", 8, 16, 16).unwrap();
        m.set(b"good", kind::BYTES, b"1").unwrap();
        m.set(b"torn", kind::BYTES, b"2").unwrap();
        let (torn, _) = m.probe(b"torn", fnv1a(b"torn"));
        // Simulate a writer that died mid-update of "torn": lock held by a dead holder word,
        // slot marked dirty.
        m.header().dirty.store(torn.unwrap() as u32 + 1, Ordering::Release);
        m.header()
            .lock
            .store(objects::holder_word(0, 1, 0x7fff_fff0), Ordering::Release);
        assert_eq!(m.get(b"torn").unwrap(), None);
        assert_eq!(m.get(b"good").unwrap(), Some((kind::BYTES, b"1".to_vec())));
        assert_eq!(m.len().unwrap(), 1);
        s.close_cluster();
    }

    #[test]
    fn same_name_other_parameters_is_refused() {
        let (s, e) = setup();
        SharedMap::open(&e, "x", 8, 16, 16).unwrap();
        assert!(matches!(
            SharedMap::open(&e, "x", 9, 16, 16),
            Err(ObjectError::Mismatch(_))
        ));
        assert!(matches!(
            crate::core::objects::Region::open(&e, "x", 16),
            Err(ObjectError::Mismatch(_))
        ));
        assert!(SharedMap::open(&e, "x", 8, 16, 16).is_ok());
        s.close_cluster();
    }
}
