#!/usr/bin/env bash
# Builds every fuzz target with libFuzzer's coverage instrumentation on the STABLE toolchain
# (docs/fuzzing.md): no cargo-fuzz, no nightly. `-Cpasses=sancov-module` and the
# `-Cllvm-args=-sanitizer-coverage-*` options are stable rustc flags; they are what
# `cargo fuzz build --sanitizer none` passes. libfuzzer-sys compiles libFuzzer itself (C++).
#
# The flags go through RUSTFLAGS with an explicit --target, so cargo applies them to the
# targets' code only and not to build scripts and proc macros (which would not link
# without libFuzzer). Artifacts: fuzz/target/<host>/release/<target>.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing"
exec cargo build --locked --release --target "$host" --bins "$@"
