//! Named objects in the segment's heap: semaphores ([`super::semaphore`]), maps
//! ([`super::map`]) and raw byte regions ([`Region`]), plus the two building blocks they share:
//!
//! - a **holder word** `pid | index << 32 | (generation & 0xffff) << 48` names the process that
//!   holds a permit or a lock. It is dead when its endpoint index was given up or re-taken
//!   (generation or PID differ) or when the process is gone (PID + start time), so a reused PID
//!   is never mistaken for the holder. PID 0 means free.
//! - a **robust lock**: one CAS to take it; a waiter that finds the holder dead steals it with a
//!   CAS and learns that the state it guards may be half-written ([`Locked::Recovered`]).
//!
//! Objects are created on first use under the table's robust lock and never freed; using a
//! name again with other parameters is an error.
//!
//! ```
//! use cluster_shm::core::{Shared, Endpoint, Attach, objects::{self, Region}};
//! let shared = Shared::create(1, 4096).unwrap();
//! let me = Endpoint::attach(shared.clone(), Attach::Primary).unwrap();
//! let r = Region::open(&me, "config", 64).unwrap();
//! r.write(8, b"hello").unwrap();
//! assert_eq!(r.read(8, 5).unwrap(), b"hello");
//! assert!(Region::open(&me, "config", 128).is_err()); // same name, other size
//! shared.close_cluster();
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::endpoint::{Endpoint, Shared};
use super::layout::{ObjectEntry, ObjectTable, LINE, MAX_NAME, MAX_OBJECTS};

/// Free, and the previous holder died holding it: the next holder is told.
pub const RECOVERED: u64 = 1 << 63;

pub fn holder_word(index: u32, generation: u32, pid: u32) -> u64 {
    pid as u64 | ((index as u64 & 0xffff) << 32) | ((generation as u64 & 0xffff) << 48)
}

impl Endpoint {
    /// This attachment as a holder of permits and locks (see [`holder_word`]).
    pub fn holder_word(&self) -> u64 {
        holder_word(self.index(), self.generation(), self.pid())
    }
}

pub fn is_free(word: u64) -> bool {
    word as u32 == 0
}

pub fn holder_pid(word: u64) -> u32 {
    word as u32
}

/// Whether the holder named by `word` still holds its endpoint and is alive.
pub fn holder_alive(shared: &Shared, word: u64) -> bool {
    let index = ((word >> 32) & 0xffff) as u32;
    if is_free(word) || index >= shared.geometry().endpoints {
        return false;
    }
    let owner = shared.slot(index).registration.owner.load(Ordering::Acquire);
    if owner as u32 != word as u32 || ((owner >> 32) & 0xffff) != word >> 48 {
        return false;
    }
    shared.holder(index).is_some_and(|p| p.is_alive())
}

/// How a robust lock was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    Clean,
    /// The previous holder died holding it.
    Recovered,
}

/// Takes the lock in `word` for `me`, stealing it from a dead holder. Spins, then yields; the
/// locks built on it guard a few hundred nanoseconds of work, never a wait. Whether the holder
/// lives is checked by elapsed time (after 1 ms, then backing off to every 50 ms), not by spin
/// count, so a dead holder is replaced promptly even on a loaded machine.
pub fn lock(shared: &Shared, word: &AtomicU64, me: u64) -> Locked {
    lock_within(shared, word, me, None).expect("an unbounded wait ends only with the lock")
}

/// [`lock`], giving up after `bound` (None: never) while a live holder keeps it: a holder that
/// is stopped (SIGSTOP, a debugger, a frozen cgroup) must not stall its waiters' JS threads.
pub fn lock_within(shared: &Shared, word: &AtomicU64, me: u64, bound: Option<std::time::Duration>) -> Option<Locked> {
    let mut spins: u32 = 0;
    let mut started: Option<std::time::Instant> = None;
    let mut next_check = std::time::Duration::from_millis(1);
    // The holder last found running, and when: /proc is read again only after a few ms, not on
    // every yield of the wait.
    let mut running: Option<(u64, std::time::Instant)> = None;
    loop {
        let cur = word.load(Ordering::Relaxed);
        if is_free(cur) {
            if word
                .compare_exchange_weak(cur, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Some(if cur == RECOVERED {
                    Locked::Recovered
                } else {
                    Locked::Clean
                });
            }
            continue;
        }
        spins = spins.saturating_add(1);
        if spins < 64 {
            std::hint::spin_loop();
            continue;
        }
        std::thread::yield_now();
        let since = *started.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() >= next_check {
            next_check = since.elapsed() + (next_check * 2).min(std::time::Duration::from_millis(50));
            if !holder_alive(shared, cur)
                && word
                    .compare_exchange(cur, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Some(Locked::Recovered);
            }
        }
        if let Some(b) = bound {
            let waited = since.elapsed();
            // A holder that is not stopped is making progress, only slowed down on a busy machine
            // (preempted, or in a page fault): it gets up to STARVED_BOUND; a stopped one (or one
            // whose state is unknown) gets `b`.
            if waited >= b {
                if waited >= STARVED_BOUND.max(b) {
                    return None;
                }
                let seen = running.is_some_and(|(w, at)| w == cur && at.elapsed() < STATE_RECHECK);
                if !seen {
                    if !holder_not_stopped(cur) {
                        return None;
                    }
                    running = Some((cur, std::time::Instant::now()));
                }
            }
        }
    }
}

/// How long [`lock_within`] trusts that a holder it found running is still not stopped.
const STATE_RECHECK: std::time::Duration = std::time::Duration::from_millis(2);

/// How long [`lock_within`] waits at most for a holder that is not stopped.
pub const STARVED_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether the process of the holder `word` is known not to be stopped (Linux: its state in
/// /proc/PID/stat is not `T`, stopped, nor `t`, stopped by a tracer; read only once a wait passed
/// its bound). False elsewhere: unknown.
fn holder_not_stopped(word: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", holder_pid(word))).unwrap_or_default();
        // The state is the first field after the command name, which ends with the last ')'.
        stat.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'T' && state != 't')
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = word;
        false
    }
}

pub fn unlock(word: &AtomicU64, me: u64) {
    let _ = word.compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed);
}

/// What a named object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    Semaphore = 1,
    Region = 2,
    Map = 3,
    Topics = 4,
}

impl Kind {
    /// The kind an entry's word names, if any.
    fn from_u32(k: u32) -> Option<Kind> {
        [Kind::Semaphore, Kind::Region, Kind::Map, Kind::Topics]
            .into_iter()
            .find(|x| *x as u32 == k)
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Semaphore => "semaphore",
            Kind::Region => "region",
            Kind::Map => "map",
            Kind::Topics => "topic table",
        }
    }
}

/// Why a named object cannot be opened or created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectError {
    /// Empty, or longer than `MAX_NAME` bytes.
    InvalidName,
    /// The parameters are out of range (`what` says which).
    InvalidParams(&'static str),
    /// The name exists with another kind or other parameters.
    Mismatch(String),
    /// All `MAX_OBJECTS` entries are used.
    TableFull,
    /// The heap has no room for the object (`need` bytes, `free` left): raise `heapSize`.
    NoSpace { need: u64, free: u64 },
    /// The entry in the segment is inconsistent with the heap.
    Corrupt,
}

impl std::fmt::Display for ObjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidName => write!(f, "name must be 1..={MAX_NAME} bytes of UTF-8"),
            Self::InvalidParams(what) => f.write_str(what),
            Self::Mismatch(what) => f.write_str(what),
            Self::TableFull => write!(f, "the cluster holds {MAX_OBJECTS} named objects already"),
            Self::NoSpace { need, free } => write!(
                f,
                "the shared heap has {free} bytes left, {need} are needed (raise heapSize)"
            ),
            Self::Corrupt => f.write_str("the object table entry is corrupt"),
        }
    }
}

const READY: u32 = 1;

/// An object's memory: `size` bytes at `ptr`, inside the live mapping held by `shared`.
#[derive(Clone)]
pub struct ObjectMemory {
    pub shared: Arc<Shared>,
    pub ptr: *mut u8,
    pub size: usize,
    pub params: [u64; 4],
}

// SAFETY: the pointer is into the shared mapping kept alive by `shared`; all accesses through it
// are atomics or bounds-checked raw copies.
unsafe impl Send for ObjectMemory {}
// SAFETY: see Send.
unsafe impl Sync for ObjectMemory {}

fn table(shared: &Shared) -> &ObjectTable {
    // SAFETY: objects_offset lies inside the validated mapping and is 128-aligned (it follows
    // page-aligned ring data of power-of-two sizes); ObjectTable holds only atomics.
    unsafe { &*(shared.base().add(shared.geometry().objects_offset()) as *const ObjectTable) }
}

fn entry(shared: &Shared, i: usize) -> &ObjectEntry {
    assert!(i < MAX_OBJECTS);
    let off = shared.geometry().objects_offset() + std::mem::size_of::<ObjectTable>();
    // SAFETY: i < MAX_OBJECTS and the table lies inside the validated mapping; the entry's
    // non-atomic fields are read with read_volatile copies and validated before use.
    unsafe { &*(shared.base().add(off) as *const ObjectEntry).add(i) }
}

fn read_entry(e: &ObjectEntry) -> (u32, u32, Vec<u8>, [u64; 4], u64, u64) {
    // SAFETY: plain integer/byte fields of a live entry; any bit pattern is a valid value.
    unsafe {
        let kind = std::ptr::read_volatile(&e.kind);
        let len = (std::ptr::read_volatile(&e.name_len) as usize).min(MAX_NAME);
        let name = std::ptr::read_volatile(&e.name)[..len].to_vec();
        (
            e.state.load(Ordering::Acquire),
            kind,
            name,
            std::ptr::read_volatile(&e.params),
            std::ptr::read_volatile(&e.offset),
            std::ptr::read_volatile(&e.size),
        )
    }
}

/// Finds `name`, or creates it with `size` bytes initialised by `init` (which must write every
/// byte: the memory may hold the remains of a creator that died).
pub fn open_or_create(
    ep: &Endpoint,
    kind: Kind,
    name: &str,
    params: [u64; 4],
    size: u64,
    init: impl FnOnce(*mut u8, usize),
) -> Result<ObjectMemory, ObjectError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(ObjectError::InvalidName);
    }
    let shared = ep.shared();
    if let Some(found) = find(shared, kind, name, params)? {
        return Ok(found);
    }
    let t = table(shared);
    let me = ep.holder_word();
    lock(shared, &t.create_lock, me);
    let result = (|| {
        if let Some(found) = find(shared, kind, name, params)? {
            return Ok(found);
        }
        let i = (0..MAX_OBJECTS)
            .find(|&i| entry(shared, i).state.load(Ordering::Acquire) != READY)
            .ok_or(ObjectError::TableFull)?;
        let heap = shared.geometry().heap_size;
        let used = t.heap_used.load(Ordering::Acquire).min(heap);
        let offset = used.div_ceil(LINE as u64) * LINE as u64;
        let free = heap.saturating_sub(offset);
        if size > free {
            return Err(ObjectError::NoSpace { need: size, free });
        }
        // SAFETY: offset + size <= heap_size and the heap lies inside the validated mapping.
        let ptr = unsafe { shared.base().add(shared.geometry().heap_offset() + offset as usize) };
        init(ptr, size as usize);
        let e = entry(shared, i);
        let mut name_buf = [0u8; MAX_NAME];
        name_buf[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: the entry is not READY, so no process reads its plain fields, and the create
        // lock makes us its only writer; the writes are plain stores into the mapping.
        unsafe {
            let e = e as *const ObjectEntry as *mut ObjectEntry;
            std::ptr::write_volatile(&mut (*e).kind, kind as u32);
            std::ptr::write_volatile(&mut (*e).name_len, name.len() as u32);
            std::ptr::write_volatile(&mut (*e).name, name_buf);
            std::ptr::write_volatile(&mut (*e).params, params);
            std::ptr::write_volatile(&mut (*e).offset, offset);
            std::ptr::write_volatile(&mut (*e).size, size);
        }
        t.heap_used.store(offset + size, Ordering::Release);
        e.state.store(READY, Ordering::Release);
        Ok(ObjectMemory {
            shared: shared.clone(),
            ptr,
            size: size as usize,
            params,
        })
    })();
    unlock(&t.create_lock, me);
    result
}

fn find(shared: &Arc<Shared>, kind: Kind, name: &str, params: [u64; 4]) -> Result<Option<ObjectMemory>, ObjectError> {
    for i in 0..MAX_OBJECTS {
        let (state, k, n, p, offset, size) = read_entry(entry(shared, i));
        if state != READY || n != name.as_bytes() {
            continue;
        }
        if k != kind as u32 {
            let other = Kind::from_u32(k).map_or("unknown object", |x| x.name());
            return Err(ObjectError::Mismatch(format!(
                "\"{name}\" is a {other}, not a {}",
                kind.name()
            )));
        }
        if p != params {
            return Err(ObjectError::Mismatch(format!(
                "{} \"{name}\" exists with other parameters",
                kind.name()
            )));
        }
        return memory_at(shared, offset, size, params)
            .map(Some)
            .ok_or(ObjectError::Corrupt);
    }
    Ok(None)
}

/// The memory of an object at heap `offset`, `size` bytes, as an entry of the table says: None
/// unless it lies inside the heap and starts on a cache line (the table is shared memory, so
/// untrusted; every object's header is read through atomics, which must be aligned).
fn memory_at(shared: &Arc<Shared>, offset: u64, size: u64, params: [u64; 4]) -> Option<ObjectMemory> {
    let heap = shared.geometry().heap_size;
    debug_assert_eq!(shared.geometry().heap_offset() % LINE, 0);
    if !offset.is_multiple_of(LINE as u64) || offset.checked_add(size).is_none_or(|end| end > heap) {
        return None;
    }
    // SAFETY: offset + size <= heap_size (checked above), inside the validated mapping; the
    // heap starts on a cache line, so `ptr` is LINE-aligned.
    let ptr = unsafe { shared.base().add(shared.geometry().heap_offset() + offset as usize) };
    Some(ObjectMemory {
        shared: shared.clone(),
        ptr,
        size: size as usize,
        params,
    })
}

/// Calls `f` with the memory of every object of `kind` (for recovery sweeps).
pub fn for_each(shared: &Arc<Shared>, kind: Kind, mut f: impl FnMut(ObjectMemory)) {
    for i in 0..MAX_OBJECTS {
        let (state, k, _, params, offset, size) = read_entry(entry(shared, i));
        if state == READY && k == kind as u32 {
            if let Some(mem) = memory_at(shared, offset, size, params) {
                f(mem);
            }
        }
    }
}

/// Every named object: its kind, name and memory (loads only: works on a read-only mapping).
/// Entries of an unknown kind or outside the heap are left out.
pub fn entries(shared: &Arc<Shared>) -> Vec<(Kind, String, ObjectMemory)> {
    (0..MAX_OBJECTS)
        .filter_map(|i| {
            let (state, k, name, params, offset, size) = read_entry(entry(shared, i));
            if state != READY {
                return None;
            }
            let kind = Kind::from_u32(k)?;
            let mem = memory_at(shared, offset, size, params)?;
            Some((kind, String::from_utf8_lossy(&name).into_owned(), mem))
        })
        .collect()
}

/// Bytes of the heap handed out to objects.
pub fn heap_used(shared: &Shared) -> u64 {
    table(shared)
        .heap_used
        .load(Ordering::Acquire)
        .min(shared.geometry().heap_size)
}

/// A named range of raw shared bytes. Reads and writes are bounds-checked copies; they are not
/// atomic with respect to each other (guard multi-byte updates with a semaphore).
pub struct Region {
    mem: ObjectMemory,
}

/// An access outside a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfBounds {
    pub offset: u64,
    pub len: u64,
    pub size: u64,
}

impl std::fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes at offset {} is outside the region of {} bytes",
            self.len, self.offset, self.size
        )
    }
}

impl Region {
    pub fn open(ep: &Endpoint, name: &str, size: u64) -> Result<Region, ObjectError> {
        if size == 0 || size > ep.geometry().heap_size {
            return Err(ObjectError::InvalidParams("size must be 1..=heapSize bytes"));
        }
        let init = |p: *mut u8, n: usize| {
            // SAFETY: `open_or_create` hands us `n` writable bytes inside the mapping.
            unsafe { std::ptr::write_bytes(p, 0, n) }
        };
        Ok(Region {
            mem: open_or_create(ep, Kind::Region, name, [size, 0, 0, 0], size, init)?,
        })
    }

    pub fn size(&self) -> usize {
        self.mem.size
    }

    fn check(&self, offset: u64, len: usize) -> Result<usize, OutOfBounds> {
        let size = self.mem.size as u64;
        match offset.checked_add(len as u64) {
            Some(end) if end <= size => Ok(offset as usize),
            _ => Err(OutOfBounds {
                offset,
                len: len as u64,
                size,
            }),
        }
    }

    pub fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), OutOfBounds> {
        let at = self.check(offset, bytes.len())?;
        // SAFETY: [at, at + len) is inside the region (checked), which is inside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.mem.ptr.add(at), bytes.len()) };
        Ok(())
    }

    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, OutOfBounds> {
        let at = self.check(offset, len)?;
        let mut v = vec![0u8; len];
        // SAFETY: as in write; the destination is a fresh Vec of `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.mem.ptr.add(at), v.as_mut_ptr(), len) };
        Ok(v)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::Attach;

    /// The table entry of the object named `name`.
    fn entry_of<'a>(shared: &'a Shared, name: &str) -> &'a ObjectEntry {
        let i = (0..MAX_OBJECTS)
            .find(|&i| read_entry(entry(shared, i)).2 == name.as_bytes())
            .expect("the object exists");
        entry(shared, i)
    }

    /// Writes `offset` into the entry of `name`, as a corrupt or hostile process that maps the
    /// segment could (the entry stays READY with its kind, name, parameters and size).
    pub(crate) fn set_offset(shared: &Shared, name: &str, offset: u64) {
        let e = entry_of(shared, name);
        // SAFETY: test-only write of a plain u64 field of an entry in our own mapping; readers
        // copy it with read_volatile.
        unsafe { std::ptr::write_volatile(std::ptr::addr_of!(e.offset) as *mut u64, offset) };
    }

    /// The offset in the table of the object named `name`.
    pub(crate) fn offset_of(shared: &Shared, name: &str) -> u64 {
        // SAFETY: a plain field of a READY entry of our own mapping.
        unsafe { std::ptr::read_volatile(&entry_of(shared, name).offset) }
    }

    #[test]
    fn an_object_offset_off_the_cache_line_is_refused_by_every_reader() {
        let s = Shared::create(1, 4096).unwrap();
        let me = Endpoint::attach(s.clone(), Attach::Primary).unwrap();
        let good = Region::open(&me, "good", 64).unwrap();
        Region::open(&me, "bad", 64).unwrap();
        // SAFETY: a plain field of a READY entry of our own mapping.
        let at = unsafe { std::ptr::read_volatile(&entry_of(&s, "bad").offset) };
        for offset in [at + 1, at + 8, at + LINE as u64 / 2] {
            // Inside the heap: only the alignment rule can refuse it.
            assert!(offset + 64 <= s.geometry().heap_size);
            set_offset(&s, "bad", offset);
            assert_eq!(
                Region::open(&me, "bad", 64).err(),
                Some(ObjectError::Corrupt),
                "find, offset {offset}"
            );
            let listed: Vec<String> = entries(&s).into_iter().map(|(_, name, _)| name).collect();
            assert_eq!(listed, ["good"], "entries, offset {offset}");
            let mut seen = vec![];
            for_each(&s, Kind::Region, |mem| seen.push(mem.ptr));
            assert_eq!(seen, [good.mem.ptr], "for_each, offset {offset}");
        }
        // The entry as written is read again: what was refused was the offset alone.
        set_offset(&s, "bad", at);
        assert!(Region::open(&me, "bad", 64).is_ok());
        assert_eq!(entries(&s).len(), 2);
        s.close_cluster();
    }
}
