//! Fuzz target `decode_roce`: arbitrary bytes into `parse_frame` and `parse_udp_payload` (the
//! full packet parse of the TAP and UDP bridges); whatever decodes is re-encoded and decoded
//! again. The oracle is shared with the stable proptest `wire/tests/wire_fuzz.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vhca_fuzz::roce_oracle::check(data);
});
