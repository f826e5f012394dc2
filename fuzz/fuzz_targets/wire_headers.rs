//! Fuzz target `wire_headers`: see `vhca_fuzz::wire` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vhca_fuzz::wire::check(data);
});
