#!/usr/bin/env bash
# fuzz/run.sh TARGET SECONDS [libFuzzer options…]: replays the target's committed crash
# reproducers (fuzz/crashes-found/TARGET-*), then fuzzes it for SECONDS from its seeds
# (fuzz/seeds/TARGET, read only) into a scratch corpus (fuzz/corpus/TARGET, kept between runs,
# not committed). Exits non-zero on any crash, panic, leak of time (a single input over 10 s)
# or memory (over 2 GiB); the input that did it is written to fuzz/artifacts/TARGET/.
# Build first with fuzz/build.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
[ $# -ge 2 ] || { echo "usage: $0 TARGET SECONDS [libFuzzer options...]" >&2; exit 2; }
t=$1
secs=$2
shift 2
host=$(rustc -vV | sed -n 's/^host: //p')
bin=target/$host/release/$t
[ -x "$bin" ] || { echo "$bin not built: run fuzz/build.sh" >&2; exit 2; }
[ -d "seeds/$t" ] || { echo "no seeds/$t" >&2; exit 2; }
mkdir -p "corpus/$t" "artifacts/$t"
shopt -s nullglob
repro=(crashes-found/"$t"-*)
if [ ${#repro[@]} -gt 0 ]; then
    echo "$t: replaying ${#repro[@]} committed reproducer(s)"
    "$bin" -runs=1 "${repro[@]}" 2>&1 | tail -n 3
fi
set +e
"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" "$@" "corpus/$t" "seeds/$t" >"artifacts/$t/log" 2>&1
rc=$?
set -e
grep -E '^#[0-9]+ *DONE|^stat::(number_of_executed_units|peak_rss_mb)' "artifacts/$t/log" || true
if [ $rc -ne 0 ]; then
    # The finding: the fuzzer's report with the panic message and backtrace.
    grep -v -e '^#[0-9]' -e 'NEW_FUNC' "artifacts/$t/log" | tail -n 60 >&2
    echo "$t: FAILED (exit $rc); reproducer in fuzz/artifacts/$t/ (replay: $bin FILE)" >&2
    exit "$rc"
fi
echo "$t: ok"
