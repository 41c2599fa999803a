//! The cluster's topic subscriptions, in the segment, so a publisher writes only into the rings
//! of processes that subscribed.
//!
//! An open-addressing table of topic names; each entry carries a bitmap of the endpoints
//! subscribed to it. Entries are inserted under the table's robust lock and never removed (a
//! name keeps its entry once used; its bitmap may become empty); bits are set and cleared with
//! atomic or/and, so a subscription is visible to every publisher as soon as `subscribe`
//! returns. Readers probe without a lock: an entry's name is immutable once its state is READY.
//!
//! Patterns: a name ending in `*` (`room.*`, or `*` alone) subscribes to every topic that starts
//! with what precedes the `*`, at any depth below a `.`. A publisher of `a.b.c` looks up
//! `a.b.c`, `a.b.*`, `a.*` and `*`: one hash probe per level, never a scan of all subscriptions.
//!
//! ```
//! use cluster_shm::core::{Shared, Endpoint, Attach, topics::Topics};
//! let shared = Shared::create(2, 4096).unwrap();
//! let me = Endpoint::attach(shared.clone(), Attach::Primary).unwrap();
//! let topics = Topics::open(&me).unwrap();
//! topics.subscribe("room.*", 0).unwrap();
//! topics.subscribe("room.7", 1).unwrap();
//! assert_eq!(topics.subscribers("room.7"), vec![0, 1]);
//! assert_eq!(topics.subscribers("room.8.x"), vec![0]);
//! assert!(topics.subscribers("lobby").is_empty());
//! shared.close_cluster();
//! ```

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::endpoint::{Endpoint, Shared};
use super::layout::MAX_ENDPOINTS;
use super::objects::{self, Kind, ObjectError, ObjectMemory};

/// Distinct topic names (patterns included) a cluster can use.
pub const MAX_TOPICS: usize = 1024;
/// Longest topic name in bytes.
pub const MAX_TOPIC: usize = 128;
const WORDS: usize = (MAX_ENDPOINTS as usize).div_ceil(64);
/// The name of the one topic table in the object table.
pub const TABLE_NAME: &str = "cluster-shm.topics";
const READY: u32 = 1;

#[repr(C, align(128))]
struct TopicsHeader {
    lock: AtomicU64,
    used: AtomicU32,
}

#[repr(C, align(64))]
struct TopicEntry {
    state: AtomicU32,
    name_len: u32,
    hash: u64,
    subscribers: [AtomicU64; WORDS],
    name: [u8; MAX_TOPIC],
}

const HEADER: usize = std::mem::size_of::<TopicsHeader>();
const ENTRY: usize = std::mem::size_of::<TopicEntry>();
const SLOTS: usize = MAX_TOPICS * 2; // load factor <= 1/2
const _: () = assert!(SLOTS.is_power_of_two() && ENTRY.is_multiple_of(64));

/// See [`Topics::watch`]. Bit `i % 64` of word `i / 64` of a bitmap is endpoint `i`.
pub struct TopicWatch<'a> {
    pub count: &'a AtomicU32,
    pub count_seen: u32,
    pub bitmaps: Vec<&'a [AtomicU64]>,
}

/// Why a topic was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// Empty, longer than `MAX_TOPIC` bytes, or a `*` other than a whole last level (`a.*`, `*`).
    InvalidName,
    /// A name to publish to that is empty, longer than `MAX_TOPIC` bytes, or has a `*` (patterns
    /// are for subscribing).
    InvalidPublishName,
    /// `MAX_TOPICS` distinct names are in use.
    TableFull,
}

impl std::fmt::Display for TopicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidName => {
                write!(
                    f,
                    "topic must be 1..={MAX_TOPIC} bytes; '*' only as a whole last level ('room.*' or '*')"
                )
            }
            Self::InvalidPublishName => write!(
                f,
                "a topic to publish to must be 1..={MAX_TOPIC} bytes without '*' (patterns are for subscribe)"
            ),
            Self::TableFull => write!(f, "the cluster uses {MAX_TOPICS} distinct topics already"),
        }
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Whether `name` can be subscribed to: 1..=`MAX_TOPIC` bytes; a `*` only as the whole name or
/// as the last level (`room.*`), the only patterns a publisher's per-level lookups can find.
/// The one statement of the rule: lib/ asks the addon (`checkTopicName`) instead of copying it.
pub fn check_name(name: &str) -> Result<(), TopicError> {
    let pattern_ok = match name.find('*') {
        None => true,
        Some(i) => i == name.len() - 1 && (name == "*" || name.ends_with(".*")),
    };
    if !name.is_empty() && name.len() <= MAX_TOPIC && pattern_ok {
        Ok(())
    } else {
        Err(TopicError::InvalidName)
    }
}

/// Whether `name` can be published to: 1..=`MAX_TOPIC` bytes and no `*` (a message goes to one
/// topic; the patterns it reaches are the subscribers').
pub fn check_publish_name(name: &str) -> Result<(), TopicError> {
    if !name.is_empty() && name.len() <= MAX_TOPIC && !name.contains('*') {
        Ok(())
    } else {
        Err(TopicError::InvalidPublishName)
    }
}

pub struct Topics {
    mem: ObjectMemory,
    me: u64,
}

impl Topics {
    /// Opens the cluster's topic table (created by the first process that uses topics).
    pub fn open(ep: &Endpoint) -> Result<Topics, ObjectError> {
        let size = (HEADER + SLOTS * ENTRY) as u64;
        let init = |p: *mut u8, n: usize| {
            // SAFETY: `open_or_create` hands us `n` writable bytes; all-zero is an empty table.
            unsafe { std::ptr::write_bytes(p, 0, n) }
        };
        let mem = objects::open_or_create(
            ep,
            Kind::Topics,
            TABLE_NAME,
            [MAX_TOPICS as u64, MAX_TOPIC as u64, 0, 0],
            size,
            init,
        )?;
        if mem.size < size as usize {
            return Err(ObjectError::Corrupt);
        }
        Ok(Topics {
            mem,
            me: ep.holder_word(),
        })
    }

    /// The table's memory (start, length): inside the mapping, alive as long as its `Shared`.
    pub fn memory(&self) -> (*mut u8, usize) {
        (self.mem.ptr, self.mem.size)
    }

    fn header(&self) -> &TopicsHeader {
        // SAFETY: the object is HEADER + SLOTS * ENTRY bytes (checked in `open`), 128-aligned;
        // the header holds only atomics.
        unsafe { &*(self.mem.ptr as *const TopicsHeader) }
    }

    fn entry(&self, i: usize) -> &TopicEntry {
        assert!(i < SLOTS);
        // SAFETY: i < SLOTS: inside the object; 64-aligned. Plain fields are read only after
        // `state` is READY (Acquire) and are never written again after that.
        unsafe { &*(self.mem.ptr.add(HEADER) as *const TopicEntry).add(i) }
    }

    fn name_of(&self, e: &TopicEntry) -> Vec<u8> {
        // SAFETY: plain fields of a READY entry (immutable); the length is clamped.
        unsafe {
            let len = (std::ptr::read_volatile(&e.name_len) as usize).min(MAX_TOPIC);
            std::ptr::read_volatile(&e.name)[..len].to_vec()
        }
    }

    fn find(&self, name: &[u8]) -> Option<&TopicEntry> {
        let hash = fnv1a(name);
        for k in 0..SLOTS {
            let e = self.entry((hash as usize).wrapping_add(k) & (SLOTS - 1));
            if e.state.load(Ordering::Acquire) != READY {
                return None;
            }
            // SAFETY: READY entry: `hash` is immutable.
            if unsafe { std::ptr::read_volatile(&e.hash) } == hash && self.name_of(e) == name {
                return Some(e);
            }
        }
        None
    }

    fn find_or_insert(&self, name: &str) -> Result<&TopicEntry, TopicError> {
        if let Some(e) = self.find(name.as_bytes()) {
            return Ok(e);
        }
        let shared = self.mem.shared.clone();
        let hdr = self.header();
        objects::lock(&shared, &hdr.lock, self.me);
        let r = (|| {
            if let Some(e) = self.find(name.as_bytes()) {
                return Ok(e);
            }
            if hdr.used.load(Ordering::Acquire) as usize >= MAX_TOPICS {
                return Err(TopicError::TableFull);
            }
            let hash = fnv1a(name.as_bytes());
            let i = (0..SLOTS)
                .map(|k| (hash as usize).wrapping_add(k) & (SLOTS - 1))
                .find(|&i| self.entry(i).state.load(Ordering::Acquire) != READY)
                .ok_or(TopicError::TableFull)?;
            let e = self.entry(i);
            let mut buf = [0u8; MAX_TOPIC];
            buf[..name.len()].copy_from_slice(name.as_bytes());
            // SAFETY: the entry is not READY, so nobody reads its plain fields, and the table lock
            // makes us its only writer. A writer that died here left it not READY: it is simply
            // written again.
            unsafe {
                let p = e as *const TopicEntry as *mut TopicEntry;
                std::ptr::write_volatile(&mut (*p).name_len, name.len() as u32);
                std::ptr::write_volatile(&mut (*p).hash, hash);
                std::ptr::write_volatile(&mut (*p).name, buf);
            }
            for w in &e.subscribers {
                w.store(0, Ordering::Relaxed);
            }
            e.state.store(READY, Ordering::Release);
            hdr.used.fetch_add(1, Ordering::AcqRel);
            Ok(e)
        })();
        objects::unlock(&hdr.lock, self.me);
        r
    }

    /// Adds endpoint `index` to `topic`'s subscribers (visible to publishers on return).
    pub fn subscribe(&self, topic: &str, index: u32) -> Result<(), TopicError> {
        check_name(topic)?;
        if index >= MAX_ENDPOINTS {
            return Err(TopicError::InvalidName);
        }
        let e = self.find_or_insert(topic)?;
        e.subscribers[index as usize / 64].fetch_or(1 << (index % 64), Ordering::SeqCst);
        Ok(())
    }

    /// Removes endpoint `index` from `topic`'s subscribers.
    pub fn unsubscribe(&self, topic: &str, index: u32) {
        if let Some(e) = self.find(topic.as_bytes()).filter(|_| index < MAX_ENDPOINTS) {
            e.subscribers[index as usize / 64].fetch_and(!(1 << (index % 64)), Ordering::SeqCst);
        }
    }

    /// Calls `f` with every name a publish of `topic` looks up: `a.b.c`, `a.b.*`, `a.*`, `*`.
    fn lookups(topic: &str, mut f: impl FnMut(&[u8])) {
        f(topic.as_bytes());
        let mut pattern = Vec::with_capacity(topic.len() + 1);
        for (i, _) in topic.match_indices('.').rev() {
            pattern.clear();
            pattern.extend_from_slice(&topic.as_bytes()[..=i]);
            pattern.push(b'*');
            f(&pattern);
        }
        f(b"*");
    }

    /// What `subscribers(topic)` is computed from, for a reader that watches it for changes
    /// instead of asking each time: the table's entry count, read first (a name `topic` looks up
    /// may be added later: the count changes), and the subscriber bitmaps of the names it looks
    /// up that exist now (entries are never removed).
    pub fn watch(&self, topic: &str) -> TopicWatch<'_> {
        let count = &self.header().used;
        let count_seen = count.load(Ordering::SeqCst);
        let mut bitmaps = vec![];
        Self::lookups(topic, |name| {
            if let Some(e) = self.find(name) {
                bitmaps.push(&e.subscribers[..]);
            }
        });
        TopicWatch {
            count,
            count_seen,
            bitmaps,
        }
    }

    /// Endpoints subscribed to `topic` directly or through a pattern, ascending.
    pub fn subscribers(&self, topic: &str) -> Vec<u32> {
        let mut bits = [0u64; WORDS];
        Self::lookups(topic, |name| {
            if let Some(e) = self.find(name) {
                for (b, w) in bits.iter_mut().zip(&e.subscribers) {
                    *b |= w.load(Ordering::SeqCst);
                }
            }
        });
        // The set bits only (a publish asks this each time; testing all MAX_ENDPOINTS bits cost
        // more than the lookups above).
        let mut out = Vec::new();
        for (w, &word) in bits.iter().enumerate() {
            let mut rest = word;
            while rest != 0 {
                out.push(w as u32 * 64 + rest.trailing_zeros());
                rest &= rest - 1;
            }
        }
        out
    }

    /// Drops every subscription of endpoint `index` (its holder is gone or replaced).
    pub fn clear(&self, index: u32) {
        if index >= MAX_ENDPOINTS {
            return;
        }
        for i in 0..SLOTS {
            let e = self.entry(i);
            if e.state.load(Ordering::Acquire) == READY {
                e.subscribers[index as usize / 64].fetch_and(!(1 << (index % 64)), Ordering::SeqCst);
            }
        }
    }
}

/// Every topic name of the table in `mem` with its subscribed endpoints, ascending (loads only,
/// for observers). A table too small for its entries gives none.
pub fn list(mem: &ObjectMemory) -> Vec<(String, Vec<u32>)> {
    if mem.size < HEADER + SLOTS * ENTRY {
        return vec![];
    }
    let t = Topics {
        mem: mem.clone(),
        me: 0,
    };
    let mut out: Vec<_> = (0..SLOTS)
        .map(|i| t.entry(i))
        .filter(|e| e.state.load(Ordering::Acquire) == READY)
        .map(|e| {
            let subs = (0..MAX_ENDPOINTS)
                .filter(|&i| e.subscribers[i as usize / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0)
                .collect();
            (String::from_utf8_lossy(&t.name_of(e)).into_owned(), subs)
        })
        .collect();
    out.sort();
    out
}

/// Drops the subscriptions of `indices` if the cluster uses topics at all.
pub fn clear_indices(shared: &std::sync::Arc<Shared>, indices: &[u32]) {
    if indices.is_empty() {
        return;
    }
    objects::for_each(shared, Kind::Topics, |mem| {
        if mem.size >= HEADER + SLOTS * ENTRY {
            let t = Topics { mem, me: 0 };
            for &i in indices {
                t.clear(i);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Attach;

    #[test]
    fn exact_and_pattern_subscriptions() {
        let s = Shared::create(3, 4096).unwrap();
        let me = Endpoint::attach(s.clone(), Attach::Primary).unwrap();
        let t = Topics::open(&me).unwrap();
        t.subscribe("a.b", 0).unwrap();
        t.subscribe("a.*", 1).unwrap();
        t.subscribe("*", 2).unwrap();
        assert_eq!(t.subscribers("a.b"), vec![0, 1, 2]);
        assert_eq!(t.subscribers("a.c.d"), vec![1, 2]);
        assert_eq!(t.subscribers("ab"), vec![2]);
        t.unsubscribe("*", 2);
        assert!(t.subscribers("ab").is_empty());
        clear_indices(&s, &[1]);
        assert_eq!(t.subscribers("a.b"), vec![0]);
        assert_eq!(t.subscribe("a*b", 0), Err(TopicError::InvalidName));
        assert_eq!(t.subscribe("new*", 0), Err(TopicError::InvalidName));
        assert_eq!(t.subscribe("", 0), Err(TopicError::InvalidName));
        assert_eq!(t.subscribe(&"x".repeat(129), 0), Err(TopicError::InvalidName));
        // `check_name` is what subscribe refuses by, and what lib/ asks before it subscribes.
        for ok in ["*", "a.*", "a.b", &"x".repeat(MAX_TOPIC)] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a*", "a.*.b", "**", ".**", &"x".repeat(MAX_TOPIC + 1)] {
            assert_eq!(check_name(bad), Err(TopicError::InvalidName), "{bad}");
        }
        // A published name is one topic: no pattern.
        for ok in ["a", "a.b", &"x".repeat(MAX_TOPIC)] {
            assert_eq!(check_publish_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "*", "a.*", "a*b", &"x".repeat(MAX_TOPIC + 1)] {
            assert_eq!(check_publish_name(bad), Err(TopicError::InvalidPublishName), "{bad}");
        }
        s.close_cluster();
    }

    #[test]
    fn many_topics_fill_the_table_and_stay_findable() {
        let s = Shared::create(1, 4096).unwrap();
        let me = Endpoint::attach(s.clone(), Attach::Primary).unwrap();
        let t = Topics::open(&me).unwrap();
        for i in 0..MAX_TOPICS {
            t.subscribe(&format!("t{i}"), (i % 2) as u32).unwrap();
        }
        assert_eq!(t.subscribe("one-more", 0), Err(TopicError::TableFull));
        assert_eq!(t.subscribers("t1023"), vec![1]);
        assert_eq!(t.subscribers("t0"), vec![0]);
        s.close_cluster();
    }
}
