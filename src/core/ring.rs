//! One single-producer single-consumer ring of frames in shared memory.
//!
//! `tail` and `head` count bytes ever written and consumed (u64, never wrap in practice, but a
//! hostile peer can put any value there, so all position arithmetic is wrapping); the byte at
//! position `p` lives at `p % capacity`. A frame is a [`FrameHeader`] plus payload,
//! padded to 16 bytes, and never straddles the end of the ring: when it does not fit, the writer
//! puts a wrap marker and starts again at offset 0.
//!
//! Crash safety comes from the publication order: the writer copies the frame, then stores
//! `tail` (Release); the reader copies the frame out, and only once it was delivered stores
//! `head`. A writer killed mid-frame published nothing; a reader killed mid-drain leaves `head`
//! where the next reader must resume.
//!
//! Everything read from the segment is untrusted: `head`, `tail` and every header are checked
//! against the capacity before a byte is touched; a violation is [`RingError::Corrupt`], never
//! an out-of-bounds access.

use std::ptr;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::layout::{flags, frame_size, kind, FrameHeader, RingHeader, FRAME_ALIGN, FRAME_HEADER};

/// The ring's shared state is inconsistent (a bug, memory corruption or a hostile peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingError {
    /// `what` says which check failed.
    Corrupt(&'static str),
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingError::Corrupt(what) => write!(f, "corrupt ring: {what}"),
        }
    }
}

/// A view of one ring inside a mapped segment. Cheap to copy; valid while the mapping lives.
#[derive(Clone, Copy)]
pub struct Ring {
    hdr: *const RingHeader,
    data: *mut u8,
    cap: u64,
}

// SAFETY: a Ring is two pointers into a shared mapping that all users access through atomics and
// validated raw copies; the owner of the mapping keeps it alive for as long as Rings exist.
unsafe impl Send for Ring {}
// SAFETY: see Send.
unsafe impl Sync for Ring {}

/// A ring's fill and counters, copied out by [`Ring::counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingCounters {
    /// Bytes published and not yet released by the reader (frame headers and padding included).
    pub fill: u64,
    /// Whole messages published, and their payload bytes.
    pub written: u64,
    pub written_bytes: u64,
    /// Writes that found no room.
    pub full: u64,
    /// Messages taken out by readers, and their payload bytes.
    pub read: u64,
    pub read_bytes: u64,
    /// Messages reported lost, and corruption resets, by readers.
    pub lost: u64,
    pub corrupt: u64,
}

/// Adds to a counter that only one process writes: a plain load and store (no locked
/// instruction), on a line the caller writes anyway.
fn bump(c: &AtomicU64, by: u64) {
    if by != 0 {
        c.store(c.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
    }
}

/// A frame found by [`Ring::next_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    pub header: FrameHeader,
    /// Ring position of the first payload byte.
    pub payload_pos: u64,
    /// Position of the frame after this one.
    pub next: u64,
}

/// Progress of one message through [`Ring::write_message`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Outgoing {
    /// Message bytes already published.
    pub written: usize,
    /// Sequence number, fixed when the first frame goes out.
    pub seq: u32,
    /// Message bytes not in the `payload` passed to `write_message` (published before the rest
    /// was copied for later): `payload` holds the message from this offset on.
    pub skipped: usize,
}

impl Ring {
    /// # Safety
    /// `hdr` must point to a `RingHeader` and `data` to `cap` bytes, both inside one live shared
    /// mapping that outlives every use of the returned Ring; `cap` must be a power of two ≥ 64.
    pub unsafe fn new(hdr: *const RingHeader, data: *mut u8, cap: u64) -> Ring {
        debug_assert!(cap.is_power_of_two() && cap >= 64);
        Ring { hdr, data, cap }
    }

    fn hdr(&self) -> &RingHeader {
        // SAFETY: guaranteed by `new`'s contract; RingHeader holds only atomics.
        unsafe { &*self.hdr }
    }

    pub fn capacity(&self) -> u64 {
        self.cap
    }

    // ---- writer side -------------------------------------------------------------------------

    /// Where the frames of `sizes` would end if written from `tail`, wrap padding included.
    fn plan(&self, mut pos: u64, sizes: impl Iterator<Item = u64>) -> u64 {
        for size in sizes {
            let room = self.cap - pos % self.cap;
            if room < size {
                pos = pos.wrapping_add(room);
            }
            pos = pos.wrapping_add(size);
        }
        pos
    }

    fn writer_cursors(&self) -> Result<(u64, u64), RingError> {
        let h = self.hdr();
        let tail = h.writer.tail.load(Ordering::Relaxed);
        let head = h.reader.head.load(Ordering::Acquire);
        if tail.wrapping_sub(head) > self.cap || !tail.is_multiple_of(FRAME_ALIGN) {
            // Re-base on the reader's position (aligned up): unread frames, if any, are dropped
            // and the reader, finding its cursor beyond the new tail, resets too. Both sides then
            // agree again; this write reports the corruption once.
            let rebased = head.wrapping_add(FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1);
            h.writer.tail.store(rebased, Ordering::Release);
            return Err(RingError::Corrupt("writer sees head/tail out of range"));
        }
        Ok((tail, head))
    }

    /// Writes as much of the message as fits now, frame by frame (each at most `max_frame`
    /// payload bytes). With `all_or_nothing`, writes either every remaining frame or none.
    /// Returns true once the whole message is published.
    pub fn write_message(
        &self,
        kind_: u8,
        payload: &[u8],
        out: &mut Outgoing,
        max_frame: usize,
        all_or_nothing: bool,
    ) -> Result<bool, RingError> {
        debug_assert!(max_frame > 0 && frame_size(max_frame) <= self.cap);
        let total = out.skipped + payload.len();
        let msg_len = u32::try_from(total).map_err(|_| RingError::Corrupt("message longer than u32"))?;
        let (mut tail, head) = self.writer_cursors()?;
        let remaining = total - out.written;
        let before = out.written;
        if all_or_nothing {
            let full = remaining / max_frame;
            let rest = remaining % max_frame;
            let sizes = std::iter::repeat_n(frame_size(max_frame), full)
                .chain((rest > 0 || remaining == 0).then(|| frame_size(rest)));
            if self.plan(tail, sizes).wrapping_sub(head) > self.cap {
                bump(&self.hdr().writer.full, 1);
                return Ok(false);
            }
        }
        let h = self.hdr();
        let first = out.written == 0;
        if first {
            out.seq = h.writer.next_seq.load(Ordering::Relaxed);
        }
        let mut wrote_any = false;
        loop {
            let len = (total - out.written).min(max_frame);
            let size = frame_size(len);
            let end = self.plan(tail, std::iter::once(size));
            if end.wrapping_sub(head) > self.cap {
                break;
            }
            tail = self.skip_to_fit(tail, size);
            let mut fl = 0;
            if out.written == 0 {
                fl |= flags::FIRST;
            }
            if out.written + len == total {
                fl |= flags::LAST;
            }
            self.put_header(
                tail,
                FrameHeader {
                    len: len as u32,
                    kind: kind_,
                    flags: fl,
                    _reserved: 0,
                    msg_len,
                    seq: out.seq,
                },
            );
            let off = (tail % self.cap) as usize + FRAME_HEADER;
            // SAFETY: `plan` placed the frame inside [0, cap) without straddling the end, and the
            // bytes in [tail, head + cap) belong to the writer until it publishes them.
            unsafe {
                ptr::copy_nonoverlapping(payload.as_ptr().add(out.written - out.skipped), self.data.add(off), len)
            };
            tail = tail.wrapping_add(size);
            out.written += len;
            wrote_any = true;
            if out.written == total {
                break;
            }
        }
        if wrote_any {
            if first {
                h.writer.next_seq.store(out.seq.wrapping_add(1), Ordering::Relaxed);
            }
            bump(&h.writer.bytes, (out.written - before) as u64);
            bump(&h.writer.messages, u64::from(out.written == total));
            h.writer.tail.store(tail, Ordering::Release);
        } else {
            bump(&h.writer.full, 1);
        }
        Ok(out.written == total && wrote_any)
    }

    /// Writes whole single-frame messages `(kind, payload)` back to back, in order, until one
    /// does not fit, and publishes them with one store of `tail` (the reader's cache line moves
    /// once per batch, not once per message). Every payload must be at most `max_frame` bytes.
    /// Returns how many were written.
    pub fn write_single_frames<'a>(
        &self,
        messages: impl Iterator<Item = (u8, &'a [u8])>,
        max_frame: usize,
    ) -> Result<usize, RingError> {
        let (mut tail, head) = self.writer_cursors()?;
        let h = self.hdr();
        let mut seq = h.writer.next_seq.load(Ordering::Relaxed);
        let mut written = 0;
        let mut bytes = 0;
        for (kind_, payload) in messages {
            let len = payload.len();
            if len > max_frame {
                break;
            }
            let size = frame_size(len);
            if self.plan(tail, std::iter::once(size)).wrapping_sub(head) > self.cap {
                bump(&h.writer.full, 1);
                break;
            }
            tail = self.skip_to_fit(tail, size);
            self.put_header(
                tail,
                FrameHeader {
                    len: len as u32,
                    kind: kind_,
                    flags: flags::FIRST | flags::LAST,
                    _reserved: 0,
                    msg_len: len as u32,
                    seq,
                },
            );
            let off = (tail % self.cap) as usize + FRAME_HEADER;
            // SAFETY: `plan` placed the frame inside [0, cap) without straddling the end, and the
            // bytes in [tail, head + cap) belong to the writer until it publishes them.
            unsafe { ptr::copy_nonoverlapping(payload.as_ptr(), self.data.add(off), len) };
            tail = tail.wrapping_add(size);
            seq = seq.wrapping_add(1);
            written += 1;
            bytes += len as u64;
        }
        if written > 0 {
            bump(&h.writer.messages, written as u64);
            bump(&h.writer.bytes, bytes);
            h.writer.next_seq.store(seq, Ordering::Relaxed);
            h.writer.tail.store(tail, Ordering::Release);
        }
        Ok(written)
    }

    /// Where a frame of `size` bytes goes at `tail`: at `tail`, or at the ring's start after a WRAP
    /// marker when it would straddle the end.
    fn skip_to_fit(&self, tail: u64, size: u64) -> u64 {
        let room = self.cap - tail % self.cap;
        if room >= size {
            return tail;
        }
        self.put_header(
            tail,
            FrameHeader {
                kind: kind::WRAP,
                ..Default::default()
            },
        );
        tail.wrapping_add(room)
    }

    fn put_header(&self, pos: u64, header: FrameHeader) {
        let off = (pos % self.cap) as usize;
        debug_assert!(off + FRAME_HEADER <= self.cap as usize);
        // SAFETY: pos is 16-aligned and the caller checked the header fits before the ring's end.
        unsafe { ptr::copy_nonoverlapping(header.to_bytes().as_ptr(), self.data.add(off), FRAME_HEADER) };
    }

    /// Announces that the writer will sleep until the reader frees space. The caller re-checks
    /// for space after this and before sleeping (the reader checks the flag after committing).
    pub fn announce_writer_waiting(&self) {
        self.hdr().writer.writer_waiting.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Ring bytes that surely take whole messages now, however the frames fall: the free space
    /// less one maximal frame (the most a wrap can waste).
    pub fn credit(&self, max_frame: usize) -> u64 {
        let Ok((tail, head)) = self.writer_cursors() else {
            return 0;
        };
        (self.cap - tail.wrapping_sub(head)).saturating_sub(frame_size(max_frame))
    }

    /// Whether a message of `len` bytes could be written whole now.
    pub fn has_room_for(&self, len: usize, max_frame: usize) -> bool {
        let Ok((tail, head)) = self.writer_cursors() else {
            return true;
        }; // let the write report it
        let sizes = std::iter::repeat_n(frame_size(max_frame), len / max_frame)
            .chain(std::iter::once(frame_size(len % max_frame)));
        self.plan(tail, sizes).wrapping_sub(head) <= self.cap
    }

    /// Whether at least one more frame (of up to `max_frame` bytes) fits now.
    pub fn has_room_for_frame(&self, max_frame: usize) -> bool {
        let Ok((tail, head)) = self.writer_cursors() else {
            return true;
        };
        self.plan(tail, std::iter::once(frame_size(max_frame)))
            .wrapping_sub(head)
            <= self.cap
    }

    // ---- reader side -------------------------------------------------------------------------

    /// The committed read position (where a new reader starts).
    pub fn head(&self) -> u64 {
        self.hdr().reader.head.load(Ordering::Acquire)
    }

    /// True when frames beyond `cursor` have been published.
    pub fn has_data_after(&self, cursor: u64) -> bool {
        self.hdr().writer.tail.load(Ordering::Acquire) != cursor
    }

    /// The frame at `cursor`, or `None` when the reader has caught up with the writer. Wrap
    /// markers are skipped.
    pub fn next_frame(&self, mut cursor: u64) -> Result<Option<FrameRef>, RingError> {
        let tail = self.hdr().writer.tail.load(Ordering::Acquire);
        for _ in 0..2 {
            if cursor == tail {
                return Ok(None);
            }
            if tail.wrapping_sub(cursor) > self.cap
                || !cursor.is_multiple_of(FRAME_ALIGN)
                || !tail.is_multiple_of(FRAME_ALIGN)
            {
                return Err(RingError::Corrupt("reader sees head/tail out of range"));
            }
            let off = (cursor % self.cap) as usize;
            let room = self.cap - off as u64;
            let mut raw = [0u8; FRAME_HEADER];
            // SAFETY: off is 16-aligned and < cap, and cap is a multiple of 16, so the 16 header
            // bytes are inside the data area; they were published (cursor < tail).
            unsafe { ptr::copy_nonoverlapping(self.data.add(off), raw.as_mut_ptr(), FRAME_HEADER) };
            let header = FrameHeader::from_bytes(&raw);
            if header.kind == kind::WRAP {
                if tail.wrapping_sub(cursor) < room {
                    return Err(RingError::Corrupt("wrap marker beyond tail"));
                }
                cursor = cursor.wrapping_add(room);
                continue;
            }
            let size = frame_size(header.len as usize);
            let valid = header.kind <= kind::MAX
                && size <= room
                && size <= tail.wrapping_sub(cursor)
                && header.len <= header.msg_len.max(header.len)
                && header.flags & !(flags::FIRST | flags::LAST) == 0
                && (header.flags & flags::LAST == 0
                    || header.flags & flags::FIRST == 0
                    || header.len == header.msg_len);
            if !valid {
                return Err(RingError::Corrupt("invalid frame header"));
            }
            return Ok(Some(FrameRef {
                header,
                payload_pos: cursor.wrapping_add(FRAME_HEADER as u64),
                next: cursor.wrapping_add(size),
            }));
        }
        Err(RingError::Corrupt("two wrap markers in a row"))
    }

    /// Appends the payload of `frame` to `dst`.
    pub fn copy_payload(&self, frame: &FrameRef, dst: &mut Vec<u8>) {
        let len = frame.header.len as usize;
        let off = (frame.payload_pos % self.cap) as usize;
        debug_assert!(off + len <= self.cap as usize);
        dst.reserve(len);
        // SAFETY: `next_frame` checked that the frame (header + payload) lies inside the data area
        // without straddling its end, and the reserve above made room in `dst`; the regions are
        // distinct (process memory vs shared mapping).
        unsafe {
            ptr::copy_nonoverlapping(self.data.add(off), dst.as_mut_ptr().add(dst.len()), len);
            dst.set_len(dst.len() + len);
        }
    }

    /// Releases everything before `pos` to the writer. Returns true when the writer was waiting
    /// for space (the caller rings the writer's space bell). Never moves `head` backwards.
    pub fn commit(&self, pos: u64) -> bool {
        let h = self.hdr();
        h.reader.head.fetch_max(pos, Ordering::AcqRel);
        fence(Ordering::SeqCst);
        h.writer.writer_waiting.load(Ordering::Relaxed) != 0 && h.writer.writer_waiting.swap(0, Ordering::AcqRel) != 0
    }

    /// Adds to the reader's counters (see `ReaderLine`); the reader alone calls it.
    pub fn count_read(&self, messages: u64, bytes: u64, lost: u64, corrupt: u64) {
        let r = &self.hdr().reader;
        bump(&r.messages, messages);
        bump(&r.bytes, bytes);
        bump(&r.lost, lost);
        bump(&r.corrupt, corrupt);
    }

    /// The ring's cursors and counters as they stand (loads only: works on a read-only mapping).
    pub fn counters(&self) -> RingCounters {
        let h = self.hdr();
        let (tail, head) = (
            h.writer.tail.load(Ordering::Acquire),
            h.reader.head.load(Ordering::Acquire),
        );
        RingCounters {
            // Clamped: a hostile peer can put anything in the cursors.
            fill: tail.wrapping_sub(head).min(self.cap),
            written: h.writer.messages.load(Ordering::Relaxed),
            written_bytes: h.writer.bytes.load(Ordering::Relaxed),
            full: h.writer.full.load(Ordering::Relaxed),
            read: h.reader.messages.load(Ordering::Relaxed),
            read_bytes: h.reader.bytes.load(Ordering::Relaxed),
            lost: h.reader.lost.load(Ordering::Relaxed),
            corrupt: h.reader.corrupt.load(Ordering::Relaxed),
        }
    }

    /// Drops everything unread (after corruption): `head` jumps to the published `tail`, exactly,
    /// so the reader has nothing to read until the writer publishes again (a writer that finds
    /// the cursors inconsistent re-bases its tail on `head`). Returns the new position.
    pub fn reset(&self) -> u64 {
        let h = self.hdr();
        let tail = h.writer.tail.load(Ordering::Acquire);
        h.reader.head.store(tail, Ordering::Release);
        tail
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::layout::{RingHeader, FRAME_ALIGN};

    /// A ring in process memory for unit tests (the cross-process tests use real segments). The
    /// header is held as a raw pointer: moving a `Box` would re-assert its uniqueness and
    /// invalidate the pointer the Ring holds (Miri's Stacked Borrows caught exactly that).
    pub struct HeapRing {
        hdr: *mut RingHeader,
        _data: Vec<u64>,
        pub ring: Ring,
    }

    impl Drop for HeapRing {
        fn drop(&mut self) {
            // SAFETY: `hdr` came from Box::into_raw in `heap_ring` and is freed only here.
            drop(unsafe { Box::from_raw(self.hdr) });
        }
    }

    pub fn heap_ring(cap: usize) -> HeapRing {
        // SAFETY: all-zero bytes are a valid RingHeader (atomics at 0).
        let hdr = Box::into_raw(Box::new(unsafe { std::mem::zeroed::<RingHeader>() }));
        let mut data = vec![0u64; cap / 8];
        // SAFETY: both allocations live as long as HeapRing, which owns them with the Ring; the
        // Vec's heap buffer does not move when the Vec does.
        let ring = unsafe { Ring::new(hdr, data.as_mut_ptr() as *mut u8, cap as u64) };
        HeapRing { hdr, _data: data, ring }
    }

    fn read_all(r: &Ring, cursor: &mut u64) -> Vec<(FrameHeader, Vec<u8>)> {
        let mut out = vec![];
        while let Some(f) = r.next_frame(*cursor).unwrap() {
            let mut v = vec![];
            r.copy_payload(&f, &mut v);
            out.push((f.header, v));
            *cursor = f.next;
        }
        out
    }

    #[test]
    fn single_frames_round_trip_and_wrap() {
        let h = heap_ring(1024);
        let r = h.ring;
        let mut cursor = 0;
        for i in 0..200u32 {
            let payload = vec![i as u8; (i as usize * 7) % 200];
            assert!(r
                .write_message(kind::BYTES, &payload, &mut Outgoing::default(), 240, true)
                .unwrap());
            let got = read_all(&r, &mut cursor);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].1, payload);
            assert_eq!(got[0].0.seq, i);
            assert_eq!(got[0].0.flags, flags::FIRST | flags::LAST);
            r.commit(cursor);
        }
        assert_eq!(cursor % FRAME_ALIGN, 0);
        assert!(cursor > 1024 * 10, "the ring wrapped many times");
    }

    #[test]
    fn batches_of_single_frames_wrap_stop_when_full_and_keep_the_sequence() {
        let h = heap_ring(1024);
        let r = h.ring;
        let mut cursor = 0;
        let mut next = 0u32;
        for round in 0..60usize {
            let payloads: Vec<Vec<u8>> = (0..1 + round % 9)
                .map(|i| vec![(round + i) as u8; (round * 13 + i * 29) % 120])
                .collect();
            // One message that is a frame too long ends the batch without being written.
            let too_long = [0u8; 241];
            let msgs = payloads
                .iter()
                .map(|p| (kind::BYTES, &p[..]))
                .chain(std::iter::once((kind::UTF8, &too_long[..])));
            let n = r.write_single_frames(msgs, 240).unwrap();
            assert!(n <= payloads.len());
            // The ring takes what fits (at most 1024 bytes), in order, whole, with consecutive seqs.
            let got = read_all(&r, &mut cursor);
            assert_eq!(got.len(), n);
            for (k, (header, payload)) in got.iter().enumerate() {
                assert_eq!(payload, &payloads[k]);
                assert_eq!(header.seq, next);
                assert_eq!(header.flags, flags::FIRST | flags::LAST);
                next += 1;
            }
            r.commit(cursor);
            if n < payloads.len() {
                assert!(payloads.iter().map(|p| frame_size(p.len())).sum::<u64>() > 1024 - 240);
            }
        }
        assert!(next > 60);
    }

    #[test]
    fn full_ring_refuses_all_or_nothing_and_accepts_after_commit() {
        let h = heap_ring(1024);
        let r = h.ring;
        let mut n = 0;
        while r
            .write_message(kind::BYTES, &[1; 100], &mut Outgoing::default(), 240, true)
            .unwrap()
        {
            n += 1;
        }
        assert_eq!(n, 1024 / 128);
        // a two-frame message never half-written
        let mut o = Outgoing::default();
        assert!(!r.write_message(kind::BYTES, &[2; 400], &mut o, 240, true).unwrap());
        assert_eq!(o.written, 0);
        let mut cursor = 0;
        assert_eq!(read_all(&r, &mut cursor).len(), n);
        r.commit(cursor);
        assert!(r.write_message(kind::BYTES, &[2; 400], &mut o, 240, true).unwrap());
        let got = read_all(&r, &mut cursor);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.flags, flags::FIRST);
        assert_eq!(got[1].0.flags, flags::LAST);
        assert_eq!(got[0].0.msg_len, 400);
    }

    #[test]
    fn partial_writes_make_progress_chunk_by_chunk() {
        let h = heap_ring(1024);
        let r = h.ring;
        let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut o = Outgoing::default();
        let mut cursor = 0;
        let mut got = vec![];
        let mut rounds = 0;
        while !r.write_message(kind::BYTES, &payload, &mut o, 240, false).unwrap() {
            for (_, p) in read_all(&r, &mut cursor) {
                got.extend(p);
            }
            r.commit(cursor);
            rounds += 1;
            assert!(rounds < 100);
        }
        for (_, p) in read_all(&r, &mut cursor) {
            got.extend(p);
        }
        assert_eq!(got, payload);
    }

    #[test]
    fn empty_message_is_a_frame() {
        let h = heap_ring(1024);
        assert!(h
            .ring
            .write_message(kind::UTF8, &[], &mut Outgoing::default(), 240, true)
            .unwrap());
        let mut c = 0;
        let got = read_all(&h.ring, &mut c);
        assert_eq!(got.len(), 1);
        assert!(got[0].1.is_empty());
    }

    #[test]
    fn corrupt_state_is_reported_not_followed() {
        let h = heap_ring(1024);
        let r = h.ring;
        r.write_message(kind::BYTES, &[7; 10], &mut Outgoing::default(), 240, true)
            .unwrap();
        // a header claiming a payload longer than what was published
        let mut bad = FrameHeader {
            len: 5000,
            kind: kind::BYTES,
            flags: 3,
            _reserved: 0,
            msg_len: 5000,
            seq: 0,
        };
        r.put_header(0, bad);
        assert!(r.next_frame(0).is_err());
        bad.len = 10;
        bad.msg_len = 10;
        bad.kind = 200;
        r.put_header(0, bad);
        assert!(r.next_frame(0).is_err());
        // a tail that runs more than a capacity ahead: the reader refuses it; the writer reports
        // it once, re-bases its tail on the reader's head, and works again
        r.hdr().writer.tail.store(4096, Ordering::Relaxed);
        assert!(r.next_frame(0).is_err());
        assert!(r
            .write_message(kind::BYTES, &[1], &mut Outgoing::default(), 240, true)
            .is_err());
        assert!(r
            .write_message(kind::BYTES, &[9], &mut Outgoing::default(), 240, true)
            .unwrap());
        let f = r.next_frame(0).unwrap().unwrap();
        assert_eq!((f.header.len, f.header.flags), (1, flags::FIRST | flags::LAST));
        // an unaligned tail: the reader's reset jumps exactly to it and then reads nothing more
        r.hdr().writer.tail.store(f.next + 5, Ordering::Relaxed);
        assert!(r.next_frame(f.next).is_err());
        assert_eq!(r.reset(), f.next + 5);
        assert_eq!(r.next_frame(f.next + 5).unwrap(), None);
    }

    #[test]
    fn threads_stream_in_order() {
        let h = heap_ring(4096);
        let r = h.ring;
        const N: u32 = 100_000;
        let writer = std::thread::spawn(move || {
            for i in 0..N {
                let p = i.to_le_bytes().repeat((i % 13) as usize + 1);
                while !r
                    .write_message(kind::BYTES, &p, &mut Outgoing::default(), 1000, true)
                    .unwrap()
                {
                    std::hint::spin_loop();
                }
            }
        });
        let mut cursor = 0;
        let mut next = 0u32;
        while next < N {
            if let Some(f) = r.next_frame(cursor).unwrap() {
                let mut v = vec![];
                r.copy_payload(&f, &mut v);
                assert_eq!(v, next.to_le_bytes().repeat((next % 13) as usize + 1));
                assert_eq!(f.header.seq, next);
                next += 1;
                cursor = f.next;
                r.commit(cursor);
            }
        }
        writer.join().unwrap();
    }
}
