//! Arbitrary bytes into `parse_frame` and `parse_udp_payload`; whatever decodes is re-encoded
//! and decoded again. The oracle lives beside the stable-toolchain twin of this target,
//! `fabric/tests/wire_fuzz.rs`, so both check the same properties.
#![no_main]

#[path = "../../fabric/tests/common/roce_oracle.rs"]
mod roce_oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    roce_oracle::check(data);
});
