#!/usr/bin/env bash
# Live migration of a vhca VF while an unmodified Linux rxe peer (Debian's rdma_rxe in a
# QEMU/TCG guest, tools/rxe-peer) runs ibv_rc_pingpong and ib_write_bw against it.
#
#   sudo tools/rxe-peer/migrate.sh [--vhca PATH] [--pp-iters N] [--bw-iters N] [--bw-ticks T]
#
#   namespace BR    bridge br0 (10.77.0.1/24: the tools' TCP side channel), the guest's TAP
#                   (guest 10.77.0.2) and one veth port per namespace below
#   namespace SRC   vf0: the VF's port (MAC 02:56:48:43:01:00, 10.77.0.11/24), up;
#                   `vhca serve --pf-index 1 --udp-ip 10.77.0.11`: its VF 0 is the one that moves
#   namespace DST   vf0: the same MAC, down and without an address until the VF arrives;
#                   `vhca serve --pf-index 2 --udp-ip 10.78.0.12 --accept-identity` (on lo;
#                   the option lets its slot take in the VF of PF 1, docs/migration.md)
#
# Four runs, each with fresh serve processes and the VF starting in SRC; the vhca tool runs in
# BR on SRC's VF (`--vf`) and migrates it to DST's slot mid-run (`--migrate-to --migrate-at`),
# its --migrate-hook moving the VF's address and MAC from SRC's vf0 to DST's (as
# tools/netns-migrate.sh) between the source's save and the destination's load:
#   pp:    ibv_rc_pingpong server (guest)  <- vhca pingpong --vf client, migrating mid-run
#   bw:    ib_write_bw server (guest)      <- vhca perf write_bw --vf client, migrating mid-run
#   pp-r:  ibv_rc_pingpong client (guest)  -> vhca pingpong --vf server, migrating mid-run
#   bw-r:  ib_write_bw client (guest)      -> vhca perf write_bw --vf server, migrating at its
#          T-th 10 ms tick of the client's data phase (--bw-ticks)
# Checked: both sides exit 0 (the rdma-core tools and perftest exit non-zero on any error
# completion; ibv_rc_pingpong's data is not compared by either side, ib_write_bw's neither);
# vhca's report shows the iterations and bytes asked for and a migration that happened; the
# guest printed its result line/row; the VF's address ends in DST only and DST bound it; the
# gratuitous ARPs went out without error; rxe counts no ICRC drop. Printed per run (and as a
# summary table): the blackout; the stall vhca's side saw (longest gap between consecutive
# completions from 5 before the switch-over to 20 after it; not on a write_bw server, which has
# no completions of its own); from a capture on the guest's TAP, the longest gap between
# consecutive new request packets (either direction) ending after the stop, which is the stall
# rxe's traffic saw on the wire, and rxe's retransmissions within 200 ms of the stop (one before
# the resume's NAK could reach it means its 67 ms retransmit timer fired inside the blackout);
# rxe's counters over the run. The figures are reported, not judged (docs/benchmarks.md).
# Needs root, the host packages of build.sh, qemu-system-x86, iproute2, tshark (dumpcap).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

vhca=$repo/target/release/vhca
pp_iters=2000
bw_iters=4000
bw_ticks=15
while [ $# -gt 0 ]; do
    case $1 in
        --vhca) vhca=$2; shift 2 ;;
        --pp-iters) pp_iters=$2; shift 2 ;;
        --bw-iters) bw_iters=$2; shift 2 ;;
        --bw-ticks) bw_ticks=$2; shift 2 ;;
        *) echo "usage: $0 [--vhca PATH] [--pp-iters N] [--bw-iters N] [--bw-ticks T]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "migrate.sh: must run as root" >&2; exit 2; }
vhca=$(realpath "$vhca")
[ -x "$vhca" ] || { echo "migrate.sh: no vhca binary at $vhca (cargo build --release -p vhca)" >&2; exit 2; }
if ! command -v dumpcap >/dev/null || ! command -v tshark >/dev/null; then
    echo "migrate.sh: dumpcap and tshark needed (apt-get install tshark)" >&2
    exit 2
fi

P=${VHCA_NETNS_PREFIX:-vhca-rxm-}
NS_BR=${P}br NS_SRC=${P}src NS_DST=${P}dst
VF_IP=10.77.0.11
VF_MAC=02:56:48:43:01:00
GUEST=10.77.0.2
work=$(mktemp -d "${TMPDIR:-/tmp}/rxe-migrate.XXXXXX")
pids=()
serve_pids=()
cap_pid=""
cleanup() {
    local p
    for p in "${serve_pids[@]}" "${pids[@]}" $cap_pid; do kill "$p" 2>/dev/null || true; done
    for p in "${serve_pids[@]}" "${pids[@]}" $cap_pid; do wait "$p" 2>/dev/null || true; done
    for ns in "$NS_SRC" "$NS_DST" "$NS_BR"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { printf 'rxe-migrate: %s\n' "$*"; }
fail() {
    say "FAIL: $*"
    [ -f "$work/g/console.log" ] && { echo "--- guest console (tail)"; tr -d '\r' <"$work/g/console.log" | tail -n 60; }
    for f in "$work"/*.out "$work"/*.err; do [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }; done
    exit 1
}

"$here/build.sh"

# ---- Namespaces -----------------------------------------------------------------------------
for ns in "$NS_BR" "$NS_SRC" "$NS_DST"; do
    ip netns add "$ns"
    # No IPv6: a port with the VF's MAC must stay silent until the VF arrives (no router
    # solicitations or duplicate address detection), or the bridge would learn it early.
    ip netns exec "$ns" sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
        echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6'
    ip -n "$ns" link set lo up
done
ip -n "$NS_BR" link add br0 type bridge
ip -n "$NS_BR" addr add 10.77.0.1/24 dev br0
ip -n "$NS_BR" link set br0 up
ip link add vf0 netns "$NS_SRC" type veth peer name p-src netns "$NS_BR"
ip link add vf0 netns "$NS_DST" type veth peer name p-dst netns "$NS_BR"
for port in p-src p-dst; do ip -n "$NS_BR" link set "$port" master br0 up; done
ip -n "$NS_SRC" link set vf0 address "$VF_MAC"
ip -n "$NS_DST" link set vf0 address "$VF_MAC"
ip -n "$NS_DST" addr add 10.78.0.12/32 dev lo

# The hook run between the source's save and the destination's load: the VF's address and MAC
# move from namespace $1 to $2 (docs/migration.md, "UDP fabrics").
cat >"$work/move.sh" <<EOF
#!/bin/sh
set -e
[ "\$VHCA_IP" = "$VF_IP" ] && [ "\$VHCA_MAC" = "$VF_MAC" ]
# The hook runs inside the blackout: one ip process per namespace, and the gratuitous ARP
# goes out while the destination loads (the bridge floods frames for the MAC once the source's
# port is down, and learns the new port from the announcement or the VF's first frames).
printf 'addr del %s/24 dev vf0\nlink set vf0 down\n' "\$VHCA_IP" | ip -n "\$1" -b -
printf 'link set vf0 up\naddr add %s/24 dev vf0\n' "\$VHCA_IP" | ip -n "\$2" -b -
ip netns exec "\$2" "$vhca" announce --dev vf0 --ip "\$VHCA_IP" --mac "\$VHCA_MAC" \
    >>"$work/announce.log" 2>&1 </dev/null &
EOF
chmod +x "$work/move.sh"

# fresh_sides TAG: new serve processes in SRC and DST, the VF's port up in SRC only.
fresh_sides() {
    local tag=$1 p side name pf ip
    for p in "${serve_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${serve_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    serve_pids=()
    ip -n "$NS_DST" addr flush dev vf0
    ip -n "$NS_DST" link set vf0 down
    ip -n "$NS_SRC" addr flush dev vf0
    ip -n "$NS_SRC" addr add "$VF_IP/24" dev vf0
    ip -n "$NS_SRC" link set vf0 up
    for side in src:1:$VF_IP: dst:2:10.78.0.12:--accept-identity; do
        IFS=: read -r name pf ip accept <<<"$side"
        rm -rf "${work:?}/$name"
        : >"$work/serve-$tag-$name.err"
        # shellcheck disable=SC2086 # $accept is empty or one option
        ip netns exec "${P}$name" env RUST_LOG=info "$vhca" serve --pf-index "$pf" \
            --udp-ip "$ip" $accept --socket-dir "$work/$name" >"$work/serve-$tag-$name.out" \
            2>"$work/serve-$tag-$name.err" &
        serve_pids+=("$!")
        rxe_peer_wait "$work/serve-$tag-$name.out" 'ready' 1 30 || fail "$tag: vhca serve in ${P}$name did not start"
    done
    local mac
    mac=$("$vhca" ctl --json --socket-dir "$work/src" vfs | sed -n 's/.*"mac": *"\([0-9a-f:]*\)".*/\1/p' | head -n1)
    [ "$mac" = "$VF_MAC" ] || fail "the source VF's MAC is ${mac:-?}, the script assumed $VF_MAC"
}

# ---- The guest --------------------------------------------------------------------------------
mkdir -p "$work/g"
"$here/run.sh" --netns "$NS_BR" --tap tap2 --bridge br0 --ip "$GUEST/24" --ctl loop --listen 18515 \
    --rundir "$work/g" --timeout 1800 >"$work/g/run.out" 2>&1 &
pids+=($!)
guest_pid=$!
log=$work/g/console.log
touch "$log"
rxe_peer_wait "$log" '^VHCA-WAIT-CMD' 1 240 || fail "rxe guest did not come up"
say "guest up: $(tr -d '\r' <"$log" | grep '^VHCA-PEER-READY')"

n=0
listens=0
# counter NAME K: rxe's counter NAME after guest command K (0 before the first).
counter() {
    [ "$2" -gt 0 ] || { echo 0; return; }
    rxe_peer_field "$log" "VHCA-COUNTER $1" "$2"
}
# json_field FILE KEY: a number from vhca's one-line JSON report in FILE.
json_field() {
    grep -m1 '^{' "$1" | sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p"
}
vx() { ip netns exec "$NS_BR" "$vhca" "$@"; }

capture_start() {
    : >"$work/$1.dumpcap.err"
    ip netns exec "$NS_BR" dumpcap -q -i tap2 -f 'udp port 4791' -w "$work/$1.pcapng" 2>"$work/$1.dumpcap.err" &
    cap_pid=$!
    rxe_peer_wait "$work/$1.dumpcap.err" 'Capturing on' 1 30 || fail "$1: dumpcap did not start"
}
capture_stop() {
    kill -INT "$cap_pid" 2>/dev/null || true
    wait "$cap_pid" 2>/dev/null || true
    cap_pid=""
}

# wire TAG STOP_MS: from the capture on the guest's TAP, what the traffic between the VF and
# rxe looked like across the switch-over (STOP_MS: Unix ms of the stop). Request packets
# (everything but ACK/NAK) with a PSN above the highest its sender sent before are "new";
# the others are retransmissions. Prints "GAP FIRST COUNT": the longest gap between
# consecutive new request packets (either direction) that ends after the stop (the stall the
# traffic saw on the wire), when rxe's first retransmission came (ms after the stop; "none"),
# and how many packets rxe retransmitted within 200 ms of the stop (three timer periods).
wire() {
    tshark -r "$work/$1.pcapng" -T fields -e frame.time_epoch -e ip.src -e infiniband.bth.opcode \
        -e infiniband.bth.psn 2>/dev/null |
        awk -v stop="$2" -v g="$GUEST" '
            $3 == "" || $3 == 17 { next }  # not RoCEv2 / an ACK or NAK
            {
                t = $1 * 1000; psn = $4 + 0
                if (!($2 in top)) { fresh = 1 }
                else { d = (psn - top[$2] + 16777216) % 16777216; fresh = d > 0 && d < 8388608 }
                if (fresh) {
                    top[$2] = psn
                    if (last && t > stop && last < stop + 1000 && t - last > gap) gap = t - last
                    last = t
                } else if ($2 == g && t > stop && t < stop + 200) {
                    if (!nre) first = t - stop
                    nre++
                }
            }
            END { printf "%.1f %s %d\n", gap, nre ? sprintf("%.1f", first) : "none", nre }'
}

runs=0
summary=()
# check_run TAG NAME: after a run, the checks and figures common to all runs (vhca's output in
# $work/TAG.out, its stderr in $work/TAG.err).
check_run() {
    local tag=$1 name=$2 out=$work/$1.out
    grep -q '"migration":{' "$out" || fail "$name: vhca's report has no migration"
    local blackout stall hook stop gap first nre
    blackout=$(json_field "$out" blackout_ms)
    stall=$(json_field "$out" stall_ms)
    hook=$(json_field "$out" hook_ms)
    stop=$(json_field "$out" stop_unix_ms)
    read -r gap first nre <<<"$(wire "$tag" "$stop")"
    grep -q "$VF_IP/" <<<"$(ip -n "$NS_SRC" -4 addr show dev vf0)" && fail "$name: $VF_IP still in $NS_SRC"
    grep -q "$VF_IP/" <<<"$(ip -n "$NS_DST" -4 addr show dev vf0)" || fail "$name: $VF_IP not in $NS_DST"
    grep -q "UDP link bound to the VF's address.*$VF_IP" "$work/serve-$tag-dst.err" ||
        fail "$name: $NS_DST never bound $VF_IP"
    local k
    local -a d=()
    for k in rcvd_seq_err completer_retry_err duplicate_request out_of_seq_request retry_exceeded_err; do
        d+=("$k +$(($(counter "$k" "$n") - $(counter "$k" $((n - 1)))))")
    done
    say "$name: ok"
    grep '^migration' "$work/$tag.err" | sed 's/^/rxe-migrate:   /'
    printf -v blackout '%.1f' "$blackout"
    printf -v hook '%.1f' "${hook:-0}"
    [ -n "$stall" ] && printf -v stall '%.1f' "$stall"
    say "  blackout $blackout ms (hook $hook ms); stall vhca saw ${stall:-n/a} ms; on the wire:" \
        "longest gap between new requests $gap ms; rxe retransmitted $nre packets (first at +$first ms)"
    say "  rxe counters over the run: ${d[*]}"
    summary+=("$(printf '%-6s blackout %6s ms  stall (vhca) %6s ms  wire gap %6s ms  rxe retransmissions %3s (first +%s ms)' \
        "$tag" "$blackout" "${stall:-n/a}" "$gap" "$nre" "$first")")
}

at_pp=$((pp_iters / 2))
at_bw=$((bw_iters / 2))

# (a) vhca pingpong client on the VF -> ibv_rc_pingpong server in the guest.
tag=pp name="vhca pingpong --vf -> ibv_rc_pingpong (-n $pp_iters, migrating at $at_pp)"
runs=$((runs + 1))
fresh_sides "$tag"
capture_start "$tag"
guest_cmd "ibv_rc_pingpong -g 1 -d rxe0 -n $pp_iters"
listens=$((listens + 1))
rxe_peer_wait "$log" '^VHCA-CMD-LISTENING' "$listens" 120 '^VHCA-CMD-EXIT' "$n" || fail "$name: guest server did not listen"
vx pingpong --vf "$work/src/vf0.sock" "$GUEST" -n "$pp_iters" --json \
    --migrate-to "$work/dst/vf0.sock" --migrate-at "$at_pp" \
    --migrate-hook "$work/move.sh $NS_SRC $NS_DST" >"$work/$tag.out" 2>"$work/$tag.err" ||
    fail "$name: vhca client failed"
guest_done "$name"
capture_stop
[ "$(json_field "$work/$tag.out" iters)" = "$pp_iters" ] || fail "$name: vhca reported other iterations"
tr -d '\r' <"$log" | grep -q "^$pp_iters iters in" || fail "$name: the guest printed no result line"
check_run "$tag" "$name"

# (b) vhca perf write_bw client on the VF -> ib_write_bw server in the guest. -Q 1: every
# WRITE signaled, so vhca sees each completion (finer stall figures; the server does not care).
tag=bw name="vhca perf write_bw --vf -> ib_write_bw (-s 4096 -n $bw_iters, migrating at $at_bw)"
runs=$((runs + 1))
fresh_sides "$tag"
capture_start "$tag"
rows=$(tr -d '\r' <"$log" | grep -cE "^ 4096 +$bw_iters " || true)
guest_cmd "ib_write_bw -d rxe0 -x 1 -F -s 4096 -n $bw_iters"
listens=$((listens + 1))
rxe_peer_wait "$log" '^VHCA-CMD-LISTENING' "$listens" 120 '^VHCA-CMD-EXIT' "$n" || fail "$name: guest server did not listen"
vx perf write_bw --vf "$work/src/vf0.sock" "$GUEST" -s 4096 -n "$bw_iters" -Q 1 --json \
    --migrate-to "$work/dst/vf0.sock" --migrate-at "$at_bw" \
    --migrate-hook "$work/move.sh $NS_SRC $NS_DST" >"$work/$tag.out" 2>"$work/$tag.err" ||
    fail "$name: vhca client failed"
guest_done "$name"
capture_stop
[ "$(json_field "$work/$tag.out" iterations)" = "$bw_iters" ] || fail "$name: vhca reported other iterations"
[ "$(json_field "$work/$tag.out" bytes_transferred)" = $((4096 * bw_iters)) ] || fail "$name: vhca moved other bytes"
[ "$(tr -d '\r' <"$log" | grep -cE "^ 4096 +$bw_iters ")" -gt "$rows" ] || fail "$name: the guest printed no result row"
check_run "$tag" "$name"

# (c) ibv_rc_pingpong client in the guest -> vhca pingpong server on the VF.
tag=pp-r name="ibv_rc_pingpong -> vhca pingpong --vf (-n $pp_iters, migrating at $at_pp)"
runs=$((runs + 1))
fresh_sides "$tag"
capture_start "$tag"
: >"$work/$tag.err"
vx pingpong --vf "$work/src/vf0.sock" -n "$pp_iters" --json \
    --migrate-to "$work/dst/vf0.sock" --migrate-at "$at_pp" \
    --migrate-hook "$work/move.sh $NS_SRC $NS_DST" >"$work/$tag.out" 2>"$work/$tag.err" &
vp=$!
pids+=("$vp")
rxe_peer_wait "$work/$tag.err" 'listening on TCP port' 1 30 || fail "$name: vhca server did not listen"
lines=$(tr -d '\r' <"$log" | grep -c "^$pp_iters iters in" || true)
guest_cmd "ibv_rc_pingpong -g 1 -d rxe0 -n $pp_iters 10.77.0.1"
guest_done "$name"
wait "$vp" || fail "$name: vhca server failed"
capture_stop
[ "$(json_field "$work/$tag.out" iters)" = "$pp_iters" ] || fail "$name: vhca reported other iterations"
[ "$(tr -d '\r' <"$log" | grep -c "^$pp_iters iters in")" -gt "$lines" ] || fail "$name: the guest printed no result line"
check_run "$tag" "$name"

# (d) ib_write_bw client in the guest -> vhca perf write_bw server on the VF, which has no
# iterations of its own: it migrates at its --bw-ticks-th 10 ms tick of the client's data phase.
tag=bw-r name="ib_write_bw -> vhca perf write_bw --vf (-s 4096 -n $bw_iters, migrating at tick $bw_ticks)"
runs=$((runs + 1))
fresh_sides "$tag"
capture_start "$tag"
: >"$work/$tag.err"
vx perf write_bw --vf "$work/src/vf0.sock" -s 4096 -n "$bw_iters" --json \
    --migrate-to "$work/dst/vf0.sock" --migrate-at "$bw_ticks" \
    --migrate-hook "$work/move.sh $NS_SRC $NS_DST" >"$work/$tag.out" 2>"$work/$tag.err" &
vp=$!
pids+=("$vp")
rxe_peer_wait "$work/$tag.err" 'listening on TCP port' 1 30 || fail "$name: vhca server did not listen"
rows=$(tr -d '\r' <"$log" | grep -cE "^ 4096 +$bw_iters " || true)
guest_cmd "ib_write_bw -d rxe0 -x 1 -F -s 4096 -n $bw_iters 10.77.0.1"
guest_done "$name"
wait "$vp" || fail "$name: vhca server failed"
capture_stop
[ "$(json_field "$work/$tag.out" iterations)" = "$bw_iters" ] || fail "$name: vhca reported other iterations"
[ "$(tr -d '\r' <"$log" | grep -cE "^ 4096 +$bw_iters ")" -gt "$rows" ] || fail "$name: the guest printed no result row"
check_run "$tag" "$name"

# ---- The end: rxe's ICRC count --------------------------------------------------------------
rxe_peer_send "$work/g" poweroff
set +e
wait "$guest_pid"
grc=$?
set -e
pids=()
[ "$grc" = 0 ] || fail "guest run.sh exit $grc"
[ ! -s "$work/announce.log" ] || fail "vhca announce: $(cat "$work/announce.log")"
icrc=$(tr -d '\r' <"$log" | sed -n 's/^VHCA-ICRC-ERRORS \([0-9]*\).*/\1/p' | tail -n1)
tr -d '\r' <"$log" | grep -E '^VHCA-(ICRC-ERRORS|RXE-DROPS)' | tail -n2
[ "$icrc" = 0 ] || fail "rxe counted ICRC errors: ${icrc:-none printed}"
say "summary (rxe's retransmit timer: 4.096 us x 2^14 = 67 ms):"
for s in "${summary[@]}"; do say "  $s"; done
say "PASS: $runs runs, each migrating the VF between two vhca serve processes mid-run; both sides exit 0, no ICRC errors"
rm -rf "$work"
