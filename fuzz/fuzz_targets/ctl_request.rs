//! Fuzz target `ctl_request`: see `vhca_fuzz::tools` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vhca_fuzz::tools::check_ctl(data);
});
