#!/usr/bin/env bash
# Proof that the rxe peer works, with no vhca involved: two guests (10.77.0.2 server,
# 10.77.0.3 client) on a Linux bridge in a private network namespace run rdma-core's and
# perftest's tools against each other over Debian's rdma_rxe.
#
#   sudo tools/rxe-peer/selftest.sh          # ibv_rc_pingpong only (the default)
#   sudo tools/rxe-peer/selftest.sh --all    # also UD pingpong and perftest send/write/read/lat
#
# Checks: every command exits 0 in both guests, neither guest's rxe dropped a packet for a bad
# ICRC (kprobe on rxe_icrc_check, see init), and
# both rxe0 devices received packets. Logs are removed on success (kept on failure, or always
# with RXE_PEER_KEEP_LOGS=1).
# Both guests stay up across the tests (run.sh --ctl loop); each step waits on serial-console
# markers with a timeout. Needs root, qemu-system-x86, iproute2, and build.sh's host tools.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

mode=${1:-}
case $mode in "" | --all) ;; *) echo "usage: $0 [--all]" >&2; exit 2 ;; esac
[ "$(id -u)" -eq 0 ] || { echo "selftest.sh: must run as root (network namespaces, TAPs)" >&2; exit 2; }

iters=50
tests=("rc_pingpong|ibv_rc_pingpong -g 1 -d rxe0 -n $iters|ibv_rc_pingpong -g 1 -d rxe0 -n $iters 10.77.0.2")
if [ "$mode" = --all ]; then
    pt="-d rxe0 -x 1 -F -s 4096 -n 200"
    tests+=(
        "ud_pingpong|ibv_ud_pingpong -g 1 -d rxe0 -n $iters -s 1024|ibv_ud_pingpong -g 1 -d rxe0 -n $iters -s 1024 10.77.0.2"
        "ib_send_bw|ib_send_bw $pt|ib_send_bw $pt 10.77.0.2"
        "ib_write_bw|ib_write_bw $pt|ib_write_bw $pt 10.77.0.2"
        "ib_read_bw|ib_read_bw $pt|ib_read_bw $pt 10.77.0.2"
        "ib_send_lat|ib_send_lat -d rxe0 -x 1 -F -s 64 -n 200|ib_send_lat -d rxe0 -x 1 -F -s 64 -n 200 10.77.0.2"
    )
fi

ns=vhca-rxe-self-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/rxe-selftest.XXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
say() { printf 'selftest: %s\n' "$*"; }
fail() {
    say "FAIL: $*"
    for g in srv cli; do
        [ -f "$work/$g/console.log" ] && { echo "--- $g console (tail)"; tr -d '\r' <"$work/$g/console.log" | tail -n 40; }
    done
    exit 1
}

t_all=$(now)
"$here/build.sh"

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add br0 type bridge
ip -n "$ns" addr add 10.77.0.1/24 dev br0
ip -n "$ns" link set br0 up

mkdir -p "$work/srv" "$work/cli"
t_boot=$(now)
"$here/run.sh" --netns "$ns" --tap tap2 --bridge br0 --ip 10.77.0.2/24 --ctl loop --listen 18515 \
    --rundir "$work/srv" --timeout 900 >"$work/srv/run.out" 2>&1 &
pids+=($!)
srv_pid=$!
"$here/run.sh" --netns "$ns" --tap tap3 --bridge br0 --ip 10.77.0.3/24 --ctl loop \
    --rundir "$work/cli" --timeout 900 >"$work/cli/run.out" 2>&1 &
pids+=($!)
cli_pid=$!
srv=$work/srv/console.log
cli=$work/cli/console.log
# run.sh truncates the log itself; make sure it exists before following it.
touch "$srv" "$cli"

rxe_peer_wait "$srv" '^VHCA-WAIT-CMD' 1 180 || fail "server guest did not come up"
say "server guest ready after $(since "$t_boot")s: $(tr -d '\r' <"$srv" | grep '^VHCA-PEER-READY')"
rxe_peer_wait "$cli" '^VHCA-WAIT-CMD' 1 180 || fail "client guest did not come up"
say "client guest ready after $(since "$t_boot")s: $(tr -d '\r' <"$cli" | grep '^VHCA-PEER-READY')"

i=0
for t in "${tests[@]}"; do
    IFS='|' read -r name scmd ccmd <<<"$t"
    i=$((i + 1))
    t0=$(now)
    rxe_peer_send "$work/srv" "$(rxe_peer_run_line "$scmd")"
    rxe_peer_wait "$srv" '^VHCA-CMD-LISTENING' "$i" 120 '^VHCA-CMD-EXIT' "$i" ||
        fail "$name: server did not listen"
    rxe_peer_send "$work/cli" "$(rxe_peer_run_line "$ccmd")"
    rxe_peer_wait "$cli" '^VHCA-CMD-EXIT' "$i" 600 || fail "$name: client did not finish"
    rxe_peer_wait "$srv" '^VHCA-CMD-EXIT' "$i" 120 || fail "$name: server did not finish"
    src=$(rxe_peer_field "$srv" VHCA-CMD-EXIT "$i")
    crc=$(rxe_peer_field "$cli" VHCA-CMD-EXIT "$i")
    say "$name: server exit $src, client exit $crc, $(since "$t0")s wall"
    [ "$src" = 0 ] && [ "$crc" = 0 ] || fail "$name: exit codes server $src client $crc"
    rxe_peer_wait "$srv" '^VHCA-WAIT-CMD' $((i + 1)) 60 || fail "server guest ended"
    rxe_peer_wait "$cli" '^VHCA-WAIT-CMD' $((i + 1)) 60 || fail "client guest ended"
done

rxe_peer_send "$work/srv" poweroff
rxe_peer_send "$work/cli" poweroff
set +e
wait "$srv_pid"
src=$?
wait "$cli_pid"
crc=$?
set -e
pids=()
[ "$src" = 0 ] && [ "$crc" = 0 ] || fail "run.sh exit codes: server $src client $crc"

# What the tools printed (throughput / latency lines), and rxe's view of it.
for g in srv cli; do
    log=$work/$g/console.log
    echo "--- $g: tool results"
    tr -d '\r' <"$log" | grep -E 'bytes in .* seconds|iters in .* seconds|^ *[0-9]+ +[0-9]+ +[0-9.]+ +[0-9.]+' || true
    echo "--- $g: rxe0 counters after the last command"
    tr -d '\r' <"$log" | awk '/^VHCA-CMD-END/ { delete c; n = 0 } /^VHCA-COUNTER/ { c[++n] = $2 "=" $3 } END { for (k = 1; k <= n; k++) printf "%s ", c[k]; print "" }'
    icrc=$(tr -d '\r' <"$log" | sed -n 's/^VHCA-ICRC-ERRORS \([0-9]*\).*/\1/p' | tail -n1)
    tr -d '\r' <"$log" | grep -E '^VHCA-(ICRC-ERRORS|RXE-DROPS)' | tail -n2
    [ "$icrc" = 0 ] || fail "$g: ICRC errors reported: ${icrc:-none printed}"
    rcvd=$(tr -d '\r' <"$log" | sed -n 's/^VHCA-COUNTER rcvd_pkts //p' | tail -n1)
    [ "${rcvd:-0}" -gt 0 ] || fail "$g: rxe0 received no packets"
done
say "PASS: ${#tests[@]} test(s), no ICRC errors, $(since "$t_all")s in all"
if [ -n "${RXE_PEER_KEEP_LOGS:-}" ]; then
    say "logs in $work"
else
    rm -rf "$work"
fi
