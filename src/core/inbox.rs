//! The receiving side of an endpoint: drains the rings of every sender into [`Batch`]es,
//! reassembles chunked messages, notices peers attaching and leaving, and sleeps on the
//! endpoint's doorbell when there is nothing to do.
//!
//! Delivery is two-phase. [`Inbox::drain`] copies frames out and advances a private cursor per
//! sender; the ring's `head` moves only when the batch is acknowledged ([`Batch::commits`] passed
//! to [`Endpoint::commit`]) after the application ran it. A process killed between the two
//! leaves the messages in the ring for its replacement: nothing undelivered is lost, nothing
//! delivered is repeated (except the batch whose callbacks were running at the moment of death).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::endpoint::Endpoint;
use super::layout::flags;
use super::loop_bell::bell_state;
use super::platform;
use super::ring::Ring;

/// Record kinds in a batch beyond the message kinds (`layout::kind::BYTES..=VALUE`).
pub mod event {
    /// A process attached to index `from`.
    pub const PEER_UP: u8 = 16;
    /// The process at index `from` detached or was declared dead.
    pub const PEER_DOWN: u8 = 17;
    /// Messages from `from` were lost (payload: u32 LE count): a sender died mid-message, or this
    /// index's previous holder died while reassembling one.
    pub const LOST: u8 = 18;
    /// The ring from `from` was corrupt and was reset (payload: u32 LE bytes dropped, or empty
    /// when that figure is unknown: the shared cursors were out of range).
    pub const CORRUPT: u8 = 19;
    /// The cluster is gone (payload: u32 LE 0 = the primary closed it, 1 = the primary died).
    pub const CLOSED: u8 = 20;
}

/// Bytes in front of every record of a batch: from (u16 LE), kind (u8), flags (u8), len (u32 LE).
pub const RECORD_HEADER: usize = 8;
/// Record flag: the payload is the next buffer of [`Batch::large`] (moved, not copied), and the
/// record's `len` is 0.
pub const RECORD_LARGE: u8 = 1;

/// Messages and events for the application, in one buffer, plus what to commit once delivered.
#[derive(Default, Debug)]
pub struct Batch {
    /// Records: `RECORD_HEADER` then `len` payload bytes, back to back.
    pub bytes: Vec<u8>,
    /// Payloads of reassembled (chunked) messages, in record order: handed over as they are
    /// instead of being copied into `bytes`.
    pub large: Vec<Vec<u8>>,
    pub records: u32,
    /// `(sender, ring position)` to pass to [`Endpoint::commit`] after delivery.
    pub commits: Vec<(u32, u64)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.records == 0 && self.commits.is_empty()
    }
    /// Empties the batch for reuse, keeping its allocation.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.large.clear();
        self.records = 0;
        self.commits.clear();
    }
    fn push_header(&mut self, from: u32, kind: u8, len: usize) {
        self.bytes.extend_from_slice(&(from as u16).to_le_bytes());
        self.bytes.push(kind);
        self.bytes.push(0);
        self.bytes.extend_from_slice(&(len as u32).to_le_bytes());
        self.records += 1;
    }
    fn push_event(&mut self, from: u32, kind: u8, value: Option<u32>) {
        match value {
            Some(v) => {
                self.push_header(from, kind, 4);
                self.bytes.extend_from_slice(&v.to_le_bytes());
            }
            None => self.push_header(from, kind, 0),
        }
    }
    fn push_large(&mut self, from: u32, kind: u8, payload: Vec<u8>) {
        self.push_header(from, kind, 0);
        let flags = self.bytes.len() - 5;
        self.bytes[flags] = RECORD_LARGE;
        self.large.push(payload);
    }
    /// Iterates `(from, kind, payload)` (for Rust users and tests).
    pub fn iter(&self) -> impl Iterator<Item = (u32, u8, &[u8])> {
        let mut at = 0;
        let mut large = self.large.iter();
        std::iter::from_fn(move || {
            let h = self.bytes.get(at..at + RECORD_HEADER)?;
            let from = u16::from_le_bytes([h[0], h[1]]) as u32;
            let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
            let p = if h[3] & RECORD_LARGE != 0 {
                large.next()?.as_slice()
            } else {
                &self.bytes[at + RECORD_HEADER..at + RECORD_HEADER + len]
            };
            at += RECORD_HEADER + len;
            Some((from, h[2], p))
        })
    }
    /// Payload bytes held (records and large payloads), for batch budgets.
    fn held(&self) -> usize {
        self.bytes.len() + self.large.iter().map(Vec::len).sum::<usize>()
    }
}

struct Assembly {
    kind: u8,
    seq: u32,
    msg_len: u32,
    buf: Vec<u8>,
    /// Owner word of the sending index when the first chunk was read (0 when not tracked).
    writer: u64,
}

/// The reading state of one incoming ring: private cursor, reassembly, loss accounting.
pub struct RingReader {
    cursor: u64,
    assembling: Option<Assembly>,
    /// Sequence of the last message counted as lost, so its further chunks are not counted again.
    lost_seq: Option<u32>,
    /// Owner word of the sending index as last seen by the inbox (0 when not tracked).
    writer: u64,
}

/// Caps on one drain, so the application gets regular batches.
#[derive(Clone, Copy)]
pub struct Budget {
    pub max_records: u32,
    pub max_bytes: usize,
}

impl Budget {
    pub const BATCH: Budget = Budget {
        max_records: 16 * 1024,
        max_bytes: 4 << 20,
    };
    pub const ONE: Budget = Budget {
        max_records: 1,
        max_bytes: usize::MAX,
    };
}

pub struct Inbox {
    senders: Vec<RingReader>,
    owners: Vec<u64>,
    epoch: u32,
    closed_reported: bool,
    start: usize,
    checked_primary: Instant,
}

impl Inbox {
    /// Starts reading where the previous holder of the index committed.
    pub fn new(ep: &Endpoint) -> Inbox {
        let e = ep.geometry().endpoints;
        let senders = (0..e)
            .map(|from| {
                RingReader::new(if from == ep.index() {
                    0
                } else {
                    ep.ring_from(from).head()
                })
            })
            .collect();
        Inbox {
            senders,
            owners: ep.shared().owners(),
            epoch: ep.shared().header().registry_epoch.load(Ordering::Acquire),
            closed_reported: false,
            start: 0,
            checked_primary: Instant::now(),
        }
    }

    /// True when something is waiting beyond the cursors, or the registry changed.
    pub fn has_work(&self, ep: &Endpoint) -> bool {
        ep.shared().header().registry_epoch.load(Ordering::Acquire) != self.epoch
            || (0..ep.geometry().endpoints)
                .any(|from| from != ep.index() && ep.ring_from(from).has_data_after(self.senders[from as usize].cursor))
    }

    /// Appends registry events and available messages to `batch`, within `budget`.
    pub fn drain(&mut self, ep: &Endpoint, batch: &mut Batch, budget: Budget) {
        self.registry_events(ep, batch);
        let e = ep.geometry().endpoints;
        let me = ep.index();
        // Rotate the starting sender so that a busy one cannot starve the others.
        self.start = (self.start + 1) % e as usize;
        for k in 0..e {
            let from = ((self.start as u32) + k) % e;
            if from == me {
                continue;
            }
            let ring = ep.ring_from(from);
            let reader = &mut self.senders[from as usize];
            let before = reader.cursor;
            let owner = ep.shared().owner_word(from);
            reader.writer = owner;
            reader.drain(from, &ring, batch, budget);
            // A message being reassembled whose sender left (or was replaced) can never complete
            // once the ring is read to its end: report it now, not when a next message comes.
            if let Some(a) = &reader.assembling {
                let gone = owner != a.writer || owner as u32 == 0;
                if gone && !ring.has_data_after(reader.cursor) {
                    reader.lost_seq = Some(a.seq);
                    reader.assembling = None;
                    batch.push_event(from, event::LOST, Some(1));
                    ring.count_read(0, 0, 1, 0);
                }
            }
            let after = reader.cursor;
            if after != before {
                batch.commits.push((from, after));
            }
            if batch.records >= budget.max_records || batch.held() >= budget.max_bytes {
                break;
            }
        }
    }
}

/// What one drain of a ring took out, added to the ring's reader counters once, when the drain
/// returns (whichever way): one store per drained ring and batch, none per message.
struct Tally<'a> {
    ring: &'a Ring,
    messages: u64,
    bytes: u64,
    lost: u64,
    corrupt: u64,
}

impl<'a> Tally<'a> {
    fn new(ring: &'a Ring) -> Self {
        Tally {
            ring,
            messages: 0,
            bytes: 0,
            lost: 0,
            corrupt: 0,
        }
    }
    fn message(&mut self, len: u32) {
        self.messages += 1;
        self.bytes += u64::from(len);
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        if self.messages | self.lost | self.corrupt != 0 {
            self.ring.count_read(self.messages, self.bytes, self.lost, self.corrupt);
        }
    }
}

impl RingReader {
    /// Starts reading at ring position `cursor` (the ring's committed `head`).
    pub fn new(cursor: u64) -> RingReader {
        RingReader {
            cursor,
            assembling: None,
            lost_seq: None,
            writer: 0,
        }
    }

    /// Where the next frame is read.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Appends what `ring` (from sender `from`) holds beyond the cursor to `batch`: complete
    /// messages, `LOST` for messages that can never complete, `CORRUPT` (and a reset ring) for
    /// inconsistent shared state. Never panics and never follows an unchecked length.
    pub fn drain(&mut self, from: u32, ring: &Ring, batch: &mut Batch, budget: Budget) {
        let st = self;
        let mut tally = Tally::new(ring);
        loop {
            if batch.records >= budget.max_records || batch.held() >= budget.max_bytes {
                return;
            }
            let frame = match ring.next_frame(st.cursor) {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(_) => {
                    // What was dropped is known only when the tail lies within a ring's length
                    // after the cursor; otherwise the event carries no figure (not a sentinel).
                    let tail = ring.reset();
                    let dropped = tail
                        .checked_sub(st.cursor)
                        .filter(|&d| d <= ring.capacity())
                        .map(|d| d as u32);
                    st.cursor = ring.head();
                    st.assembling = None;
                    batch.push_event(from, event::CORRUPT, dropped);
                    tally.corrupt += 1;
                    return;
                }
            };
            st.cursor = frame.next;
            let h = frame.header;
            let first = h.flags & flags::FIRST != 0;
            let last = h.flags & flags::LAST != 0;
            if first {
                if let Some(a) = st.assembling.take() {
                    // The sender started a new message: the one being reassembled will never end.
                    batch.push_event(from, event::LOST, Some(1));
                    tally.lost += 1;
                    st.lost_seq = Some(a.seq);
                }
                if last {
                    batch.push_header(from, h.kind, h.len as usize);
                    ring.copy_payload(&frame, &mut batch.bytes);
                    tally.message(h.len);
                } else {
                    // msg_len is untrusted: reserve at most 64 MiB up front, grow past that as chunks come.
                    let mut buf = Vec::with_capacity((h.msg_len as usize).min(64 << 20));
                    ring.copy_payload(&frame, &mut buf);
                    st.assembling = Some(Assembly {
                        kind: h.kind,
                        seq: h.seq,
                        msg_len: h.msg_len,
                        buf,
                        writer: st.writer,
                    });
                }
                continue;
            }
            let continues = st
                .assembling
                .as_ref()
                .is_some_and(|a| a.seq == h.seq && a.kind == h.kind && a.msg_len == h.msg_len);
            if !continues {
                // A chunk of a message whose beginning this reader never saw.
                if st.assembling.take().is_some() || st.lost_seq != Some(h.seq) {
                    batch.push_event(from, event::LOST, Some(1));
                    tally.lost += 1;
                }
                st.lost_seq = Some(h.seq);
                continue;
            }
            let a = st.assembling.as_mut().expect("checked above");
            if a.buf.len() + h.len as usize > a.msg_len as usize {
                st.assembling = None;
                batch.push_event(from, event::LOST, Some(1));
                tally.lost += 1;
                st.lost_seq = Some(h.seq);
                continue;
            }
            ring.copy_payload(&frame, &mut a.buf);
            if last {
                let a = st.assembling.take().expect("checked above");
                if a.buf.len() != a.msg_len as usize {
                    batch.push_event(from, event::LOST, Some(1));
                    tally.lost += 1;
                    continue;
                }
                tally.message(a.msg_len);
                batch.push_large(from, a.kind, a.buf);
            }
        }
    }
}

impl Inbox {
    fn registry_events(&mut self, ep: &Endpoint, batch: &mut Batch) {
        let shared = ep.shared();
        let epoch = shared.header().registry_epoch.load(Ordering::Acquire);
        if epoch == self.epoch {
            return;
        }
        self.epoch = epoch;
        let owners = shared.owners();
        for (i, (&old, &new)) in self.owners.iter().zip(&owners).enumerate() {
            if old == new || i as u32 == ep.index() {
                continue;
            }
            if old as u32 != 0 {
                batch.push_event(i as u32, event::PEER_DOWN, None);
            }
            if new as u32 != 0 {
                batch.push_event(i as u32, event::PEER_UP, None);
            }
        }
        self.owners = owners;
        if shared.is_closed() && !self.closed_reported {
            self.closed_reported = true;
            let died = shared.closed_reason() == 2;
            batch.push_event(ep.index(), event::CLOSED, Some(died as u32));
        }
    }

    /// A primary killed outright cannot say so: checks that it lives, at most once a second, and
    /// reports `CLOSED` (1) in `batch` once if it does not.
    pub fn check_primary(&mut self, ep: &Endpoint, batch: &mut Batch) {
        if !self.closed_reported && self.checked_primary.elapsed() >= Duration::from_secs(1) {
            self.checked_primary = Instant::now();
            if ep.shared().check_primary() == 2 {
                self.closed_reported = true;
                batch.push_event(ep.index(), event::CLOSED, Some(1));
            }
        }
    }

    /// Eventcount, first half, for a receiver that sleeps the way `how` says
    /// ([`bell_state::THREAD`] or [`bell_state::EVENT_LOOP`]): announces the sleep and re-checks.
    /// Returns the bell sequence to sleep on, or `None` (announcement withdrawn) when work came
    /// in meanwhile. A sender publishes, then checks `sleeping` (both SeqCst), so one of the two
    /// always sees the other.
    pub fn announce_sleep(&self, ep: &Endpoint, how: u32) -> Option<u32> {
        let bell = ep.data_bell();
        let seq = bell.seq.load(Ordering::Acquire);
        bell.sleeping.store(how, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.has_work(ep) {
            bell.sleeping.store(bell_state::AWAKE, Ordering::Relaxed);
            return None;
        }
        Some(seq)
    }

    /// Delivery loop for a dedicated thread: drain, hand each non-empty batch to `deliver`, and
    /// sleep on the doorbell when idle (spinning first for `spin`, if non-zero). Returns when
    /// `stop` is set; whoever sets it rings the data bell. Every sleep is bounded (1 s).
    pub fn run(&mut self, ep: &Endpoint, stop: &AtomicBool, spin: Duration, mut deliver: impl FnMut(Batch)) {
        let bell = ep.data_bell();
        while !stop.load(Ordering::Acquire) {
            let mut batch = Batch::default();
            self.check_primary(ep, &mut batch);
            self.drain(ep, &mut batch, Budget::BATCH);
            if !batch.is_empty() {
                deliver(batch);
                continue;
            }
            if !spin.is_zero() {
                let until = Instant::now() + spin;
                while Instant::now() < until && !self.has_work(ep) && !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
                if self.has_work(ep) {
                    continue;
                }
            }
            let Some(seq) = self.announce_sleep(ep, bell_state::THREAD) else {
                continue;
            };
            if !stop.load(Ordering::Acquire) {
                platform::wait(&bell.seq, seq, Duration::from_secs(1));
            }
            bell.sleeping.store(bell_state::AWAKE, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::layout::{kind, RingHeader};
    use crate::core::ring::Outgoing;

    /// The `CORRUPT` events a reader at `cursor` reports when the published `tail` is `tail`:
    /// `Some(bytes)` when the figure is known, `None` when the record carries none.
    fn corrupt_report(cursor: u64, tail: u64, garbage_header: bool) -> Vec<Option<u32>> {
        const CAP: usize = 4096;
        // SAFETY: all-zero bytes are a valid RingHeader.
        let hdr: Box<RingHeader> = Box::new(unsafe { std::mem::zeroed() });
        let mut data = vec![0u8; CAP];
        // SAFETY: `hdr` and `data` outlive `ring`.
        let ring = unsafe { Ring::new(&*hdr, data.as_mut_ptr(), CAP as u64) };
        for _ in 0..4 {
            assert!(ring
                .write_message(kind::BYTES, &[1; 100], &mut Outgoing::default(), CAP / 4 - 16, true)
                .unwrap());
        }
        if garbage_header {
            data[(cursor % CAP as u64) as usize..][..16].fill(0xff);
        }
        hdr.writer.tail.store(tail, Ordering::Release);
        let mut reader = RingReader::new(cursor);
        let mut batch = Batch::default();
        reader.drain(0, &ring, &mut batch, Budget::BATCH);
        batch
            .iter()
            .filter(|(_, k, _)| *k == event::CORRUPT)
            .map(|(_, _, p)| (p.len() == 4).then(|| u32::from_le_bytes(p.try_into().unwrap())))
            .collect()
    }

    #[test]
    fn corrupt_reports_the_bytes_it_dropped_when_they_are_known() {
        // An invalid frame header at the cursor, the tail 4 frames of 128 bytes further: 512 bytes.
        assert_eq!(corrupt_report(0, 512, true), vec![Some(512)]);
    }

    #[test]
    fn corrupt_reports_no_figure_when_the_tail_is_behind_or_too_far() {
        // A tail moved before the reader's cursor, or beyond a ring's length: no sentinel count.
        assert_eq!(corrupt_report(256, 128, false), vec![None]);
        assert_eq!(corrupt_report(0, 1 << 20, false), vec![None]);
    }
}
