//! Fuzz target `ring_entries`: see `vhca_fuzz::rings` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vhca_fuzz::rings::check(data);
});
