#!/usr/bin/env bash
# vhca as the requester of IBTA 1.5's ATOMIC WRITE and FLUSH against Linux rxe: a peer guest on
# Debian's 6.12 kernel (bookworm's own 6.1 rxe has neither) runs placement_target
# (tools/rxe-peer/src/placement_target.c: an RC QP and a buffer registered with REMOTE_WRITE and
# FLUSH_GLOBAL, as no stock tool serves these opcodes), and `vhca placement` WRITEs a block,
# FLUSHes its range, ATOMIC WRITEs a value and FLUSHes the whole MR, with and without loss on
# the link; the target's buffer must then hold the block and the value, its QP must still be in
# RTS, and rxe must count no ICRC error.
#
#   sudo tools/rxe-peer/placement.sh [--vhca PATH]
#
# Needs root, the host packages of build.sh (with gcc and libibverbs-dev), qemu-system-x86,
# iproute2 and iptables. The guest image is built in target/rxe-peer-6.12.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

vhca=$repo/target/release/vhca
while [ $# -gt 0 ]; do
    case $1 in
        --vhca) vhca=$2; shift 2 ;;
        *) echo "usage: $0 [--vhca PATH]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "placement.sh: must run as root" >&2; exit 2; }
[ -x "$vhca" ] || { echo "placement.sh: no vhca binary at $vhca (cargo build --release -p vhca)" >&2; exit 2; }

export RXE_PEER_DIR=${RXE_PEER_DIR_612:-$repo/target/rxe-peer-6.12}
ns=vhca-rxe-placement-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/rxe-placement.XXXXXX")
pids=()
cleanup() {
    local p
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { printf 'placement: %s\n' "$*"; }
fail() {
    say "FAIL: $*"
    # The guest prints rxe's counters when its command ends: wait for them (bounded).
    [ "${n:-0}" -gt 0 ] && rxe_peer_wait "$log" '^VHCA-WAIT-CMD' $((n + 1)) 30 || true
    [ -f "$work/g/console.log" ] && { echo "--- guest console (tail)"; tr -d '\r' <"$work/g/console.log" | tail -n 40; }
    for f in "$work"/vhca-*.out; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done
    exit 1
}

RXE_PEER_KERNEL=6.12 "$here/build.sh"

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add br0 type bridge
ip -n "$ns" addr add 10.77.0.1/24 dev br0
ip -n "$ns" link set br0 up

# RXE_PEER_CAPTURE=FILE: capture every RoCEv2 frame on the bridge (both directions) to FILE.
if [ -n "${RXE_PEER_CAPTURE:-}" ]; then
    : >"$work/dumpcap.err"
    ip netns exec "$ns" dumpcap -q -i br0 -f 'udp port 4791' -w "$RXE_PEER_CAPTURE" 2>"$work/dumpcap.err" &
    pids+=($!)
    rxe_peer_wait "$work/dumpcap.err" 'Capturing on' 1 30 || fail "dumpcap did not start"
fi

mkdir -p "$work/g"
"$here/run.sh" --netns "$ns" --tap tap2 --bridge br0 --ip 10.77.0.2/24 --ctl loop --listen 18515 \
    --rundir "$work/g" --timeout 900 >"$work/g/run.out" 2>&1 &
pids+=($!)
log=$work/g/console.log
touch "$log"
rxe_peer_wait "$log" '^VHCA-WAIT-CMD' 1 240 || fail "rxe guest did not come up"
say "guest up: $(tr -d '\r' <"$log" | grep '^VHCA-PEER-READY') ($(tr -d '\r' <"$log" | grep -m1 -o 'kernel [^ ,]*'))"

n=0
listens=0

runs=0
placement() { # NAME VALUE VHCA-OPTIONS...
    local name=$1 value=$2
    shift 2
    runs=$((runs + 1))
    guest_cmd "placement_target -d rxe0 -g 1 -p 18515"
    listens=$((listens + 1))
    rxe_peer_wait "$log" '^VHCA-CMD-LISTENING' "$listens" 120 '^VHCA-CMD-EXIT' "$n" ||
        fail "$name: placement_target did not listen"
    ip netns exec "$ns" "$vhca" placement 10.77.0.2 --ip 10.77.0.1 --value "$value" --json "$@" \
        >"$work/vhca-$runs.out" 2>&1 || fail "$name: vhca placement failed"
    guest_done "$name"
    # vhca exits 0 only with the target's bytes checked; every operation must have completed.
    local want=4 got
    [ "$1" = "--ops" ] && [ "$2" = "no-flush" ] && want=2
    got=$(grep -o '"Success"' "$work/vhca-$runs.out" | wc -l)
    [ "$got" = "$want" ] || fail "$name: $got successful completions, $want expected"
    say "$name: ok ($got successful completions, target bytes checked)"
}
icrc_errors() {
    rxe_peer_wait "$log" '^VHCA-ICRC-ERRORS' "$n" 60 || fail "no ICRC count after command $n"
    tr -d '\r' <"$log" | sed -n 's/^VHCA-ICRC-ERRORS \([0-9]*\).*/\1/p' | tail -n1
}

# rxe (6.2 up to at least Debian's 6.12) computes a FLUSH's ICRC over its headers twice: with
# rxe's ICRC every operation completes and lands.
placement "no loss" 1234605616436508552 --ops all --rxe-icrc
for p in 5 20; do
    # Loss on the guest's egress (rxe -> vhca: the answers), by netem in its kernel as
    # interop.sh does. FLUSH is left out: rxe drops a resent FLUSH whose answer was lost (its
    # responder resource for a FLUSH records no PSN), so it could never complete.
    guest_cmd "/sbin/tc qdisc replace dev eth0 root netem loss ${p}%"
    guest_done "netem ${p}%"
    placement "loss ${p}%: WRITE, ATOMIC WRITE" $((p * 1000003)) --ops no-flush --rxe-icrc
done
guest_cmd "/sbin/tc qdisc del dev eth0 root"
guest_done "netem off"
icrc=$(icrc_errors)
[ "$icrc" = 0 ] || fail "rxe counted ICRC errors: $icrc"

# And the finding itself: a FLUSH with IBTA's ICRC is dropped by rxe for a bad ICRC, so the
# FLUSH never completes (vhca's retries run out) and rxe's ICRC error count grows.
runs=$((runs + 1))
guest_cmd "placement_target -d rxe0 -g 1 -p 18515"
listens=$((listens + 1))
rxe_peer_wait "$log" '^VHCA-CMD-LISTENING' "$listens" 120 '^VHCA-CMD-EXIT' "$n" ||
    fail "IBTA ICRC: placement_target did not listen"
if ip netns exec "$ns" "$vhca" placement 10.77.0.2 --ip 10.77.0.1 --ops all \
    >"$work/vhca-$runs.out" 2>&1; then
    fail "a FLUSH with IBTA's ICRC completed against rxe: the ICRC finding no longer holds"
fi
grep -q 'FLUSH (range): RetryExcErr' "$work/vhca-$runs.out" || fail "IBTA ICRC: unexpected failure"
rxe_peer_wait "$log" '^VHCA-CMD-EXIT' "$n" 120 || fail "IBTA ICRC: placement_target did not end"
rxe_peer_wait "$log" '^VHCA-WAIT-CMD' $((n + 1)) 60 || fail "guest ended"
after=$(icrc_errors)
[ "$after" -gt 0 ] || fail "rxe dropped the IBTA-ICRC FLUSH for some other reason (no ICRC error)"
say "IBTA ICRC on FLUSH: rxe dropped $after FLUSHes for a bad ICRC, as expected"

rsp=$(tr -d '\r' <"$log" | sed -n 's/^VHCA-COUNTER rcvd_pkts //p' | tail -n1)
say "PASS: $runs runs against rxe on $(tr -d '\r' <"$log" | grep -m1 -o 'kernel [^ ,]*'): WRITE, FLUSH (range), ATOMIC WRITE, FLUSH (MR) without loss; WRITE and ATOMIC WRITE at 5% and 20% loss; rxe received ${rsp:-?} packets; IBTA's FLUSH ICRC refused by rxe"
