//! Fuzz target `device_state`: see `vhca_fuzz::state` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vhca_fuzz::state::check_device_state(data);
});
