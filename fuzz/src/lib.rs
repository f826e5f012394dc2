//! The oracles behind vhca's fuzz targets (docs/fuzzing.md), one module per kind of untrusted
//! input. Each `check` takes the fuzzer's bytes, runs them through the project's own decoders
//! and panics when a property fails; the targets in `fuzz_targets/` are one line each.

pub mod commands;
pub mod hostile;
pub mod rings;
pub mod state;
pub mod tools;
pub mod wire;

/// The RoCEv2 packet oracle shared with the stable proptest `wire/tests/wire_fuzz.rs`.
#[path = "../../wire/tests/common/roce_oracle.rs"]
pub mod roce_oracle;
