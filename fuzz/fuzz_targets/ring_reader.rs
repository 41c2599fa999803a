//! `cargo +nightly fuzz run ring_reader`: arbitrary bytes as a ring's shared state (see
//! src/core/fuzz.rs for what must hold).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cluster_shm::core::fuzz::ring_reader(data);
});
