//! Fuzz target `hostile_guest`: see `vhca_fuzz::hostile` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vhca_fuzz::hostile::check(data);
});
