//! Fuzz target `device_commands`: see `vhca_fuzz::commands` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vhca_fuzz::commands::check(data);
});
