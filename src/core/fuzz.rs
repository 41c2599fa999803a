//! Fuzzing entry point: the reader and writer of a ring driven over arbitrary bytes standing in
//! for the ring's shared state, as a hostile or broken peer could leave it. Used by the property
//! tests below (`cargo test`) and by the libFuzzer target in `fuzz/` (`cargo +nightly fuzz run
//! ring_reader`).
//!
//! What must hold for every input: no panic, no read or write outside the ring (checked by the
//! sanitizers these tests run under, see README), every drain terminates, the reader's cursor
//! never passes the published tail, and every record it hands out is well-formed.

use super::inbox::{Batch, Budget, RingReader, RECORD_HEADER};
use super::layout::{kind, RingHeader};
use super::ring::{Outgoing, Ring};

const CAP: usize = 4096;

/// Interprets `input` as `[tail u64][head u64][writer_waiting u32][ring data...]` and runs the
/// reader to exhaustion, then a writer, over it.
pub fn ring_reader(input: &[u8]) {
    let word = |at: usize| -> u64 {
        let mut b = [0u8; 8];
        for (i, x) in b.iter_mut().enumerate() {
            *x = input.get(at + i).copied().unwrap_or(0);
        }
        u64::from_le_bytes(b)
    };
    // SAFETY: all-zero bytes are a valid RingHeader (atomics at 0).
    let hdr: Box<RingHeader> = Box::new(unsafe { std::mem::zeroed() });
    hdr.writer.tail.store(word(0), std::sync::atomic::Ordering::Relaxed);
    hdr.reader.head.store(word(8), std::sync::atomic::Ordering::Relaxed);
    hdr.writer
        .writer_waiting
        .store(word(16) as u32, std::sync::atomic::Ordering::Relaxed);
    let mut data = vec![0u64; CAP / 8];
    let bytes = input.get(20..).unwrap_or(&[]);
    for (i, b) in bytes.iter().take(CAP).enumerate() {
        data[i / 8] |= (*b as u64) << (8 * (i % 8));
    }
    // SAFETY: `hdr` and `data` (CAP bytes) live until the end of this function, longer than `ring`.
    let ring = unsafe { Ring::new(&*hdr, data.as_mut_ptr() as *mut u8, CAP as u64) };
    drive(&ring);
}

/// Drains `ring` to the end and checks what came out; then writes into it.
pub fn drive(ring: &Ring) {
    let mut reader = RingReader::new(ring.head());
    let mut batch = Batch::default();
    // Each drain reads at most 16 records and always advances, so 4096 rounds are far more than
    // a 4 KiB ring can hold: running out of rounds means the reader stopped making progress.
    let mut rounds = 0;
    loop {
        let before = (reader.cursor(), batch.records);
        let budget = Budget {
            max_records: batch.records + 16,
            max_bytes: usize::MAX,
        };
        reader.drain(0, ring, &mut batch, budget);
        if (reader.cursor(), batch.records) == before {
            break;
        }
        rounds += 1;
        assert!(rounds < 4096, "reader does not terminate");
    }
    // Every record is well-formed: its header and payload lie inside the batch, back to back.
    let mut at = 0;
    let mut n = 0;
    while at < batch.bytes.len() {
        assert!(at + RECORD_HEADER <= batch.bytes.len(), "truncated record header");
        let len = u32::from_le_bytes(batch.bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += RECORD_HEADER + len;
        n += 1;
    }
    assert_eq!(at, batch.bytes.len(), "record overruns the batch");
    assert_eq!(n, batch.records);
    // A writer facing the same state either writes or reports corruption; it never panics.
    let _ = ring.write_message(kind::BYTES, &[7; 300], &mut Outgoing::default(), CAP / 4 - 16, true);
    let _ = ring.write_message(kind::UTF8, &[8; 5000], &mut Outgoing::default(), CAP / 4 - 16, false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Entirely arbitrary shared state.
        #[test]
        fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..CAP + 64)) {
            ring_reader(&input);
        }

        /// A ring a real writer filled (with wraps and chunked messages), then damaged at
        /// random places: the hardest inputs are nearly valid ones.
        #[test]
        fn valid_ring_with_damage(
            sizes in proptest::collection::vec(0usize..3000, 1..40),
            start in 0u64..100_000,
            damage in proptest::collection::vec((0usize..CAP + 20, any::<u8>()), 0..8),
        ) {
            // A first pass writes valid frames into a clean ring, starting at an arbitrary
            // (aligned) position so that wraps land anywhere.
            let start = start * 16;
            let mut input = vec![0u8; 20 + CAP];
            input[0..8].copy_from_slice(&start.to_le_bytes());
            input[8..16].copy_from_slice(&start.to_le_bytes());
            // SAFETY: zeroed RingHeader is valid; `data` outlives `ring`.
            let hdr: Box<RingHeader> = Box::new(unsafe { std::mem::zeroed() });
            hdr.writer.tail.store(start, std::sync::atomic::Ordering::Relaxed);
            hdr.reader.head.store(start, std::sync::atomic::Ordering::Relaxed);
            let mut data = vec![0u8; CAP];
            // SAFETY: as above.
            let ring = unsafe { Ring::new(&*hdr, data.as_mut_ptr(), CAP as u64) };
            for (i, size) in sizes.iter().enumerate() {
                let payload = vec![i as u8; *size];
                let mut out = Outgoing::default();
                if !ring.write_message(kind::BYTES, &payload, &mut out, CAP / 4 - 16, false).unwrap() {
                    break;
                }
            }
            let tail = hdr.writer.tail.load(std::sync::atomic::Ordering::Relaxed);
            input[0..8].copy_from_slice(&tail.to_le_bytes());
            input[20..].copy_from_slice(&data);
            for (at, byte) in damage {
                input[at] = byte;
            }
            ring_reader(&input);
        }
    }

    /// Found by libFuzzer (`cargo fuzz run ring_reader`): a tail near u64::MAX overflowed the
    /// writer's position arithmetic (a panic with overflow checks on); positions now wrap.
    #[test]
    fn libfuzzer_crash_positions_near_u64_max() {
        ring_reader(&[0xb0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x54, 0x87]);
        let mut tail_at_max = vec![0u8; 24];
        tail_at_max[0..8].copy_from_slice(&(u64::MAX - 15).to_le_bytes());
        tail_at_max[8..16].copy_from_slice(&(u64::MAX - 15).to_le_bytes());
        ring_reader(&tail_at_max);
    }

    #[test]
    fn an_undamaged_ring_reads_back_whole() {
        // The damage-free case of the property above, checked for content.
        // SAFETY: all-zero bytes are a valid RingHeader.
        let hdr: Box<RingHeader> = Box::new(unsafe { std::mem::zeroed() });
        let mut data = vec![0u8; CAP];
        // SAFETY: `hdr` and `data` outlive `ring`.
        let ring = unsafe { Ring::new(&*hdr, data.as_mut_ptr(), CAP as u64) };
        let msgs: Vec<Vec<u8>> = (0..5).map(|i| vec![i as u8; 300 * i]).collect();
        for m in &msgs {
            assert!(ring
                .write_message(kind::BYTES, m, &mut Outgoing::default(), CAP / 4 - 16, true)
                .unwrap());
        }
        let mut reader = RingReader::new(0);
        let mut batch = Batch::default();
        reader.drain(0, &ring, &mut batch, Budget::BATCH);
        let got: Vec<Vec<u8>> = batch.iter().map(|(_, _, p)| p.to_vec()).collect();
        assert_eq!(got, msgs);
    }
}
