#!/usr/bin/env bash
# Memory windows (type 1 and 2) and fast-register MRs between vhca and Linux rxe, both roles:
# a peer guest on Debian's default kernel (6.1: rxe has had windows since 5.13) runs
# windows_target (tools/rxe-peer/src/windows_target.c, a verbs server `vhca windows` drives
# over TCP, as no stock tool binds windows), and
#   - rxe as responder: rxe binds a type 1 window (ibv_bind_mw) and type 2 windows
#     (IBV_WR_BIND_MW); vhca WRITEs and READs through them, SEND_WITH_INVs one (rxe's receive
#     must report the key), and rxe must refuse the invalidated window, a
#     range past the MR, a type 2 window from another QP and a type 1 key from before a rebind
#     (and rxe's differences from IBTA must still show, see the findings below);
#   - rxe as requester: vhca binds windows and registers a fast-register MR (REG_MR with a page
#     list); rxe WRITEs and READs through them, SEND_WITH_INVs one (vhca's receive must report
#     the key), and every access after an invalidation (SEND_WITH_INV, LOCAL_INV of a window and
#     of the MR), leaving a window, or from another QP than a type 2 window's must end
#     IBV_WC_REM_ACCESS_ERR, and a SEND_WITH_INV on another QP than the window's is refused;
# without loss and with 5% and 20% loss on the guest's egress (RC retransmits: every data check holds).
# Data is checked on both sides; rxe must count no ICRC error.
#
#   sudo tools/rxe-peer/windows.sh [--vhca PATH] [--loss 'PERCENT...'] [--roles 'ROLE...']
#
# Needs root, the host packages of build.sh (with gcc and libibverbs-dev), qemu-system-x86,
# iproute2. Exits 77 (with the reason) on a machine that cannot run it. The guest image is built
# in $RXE_PEER_DIR (default target/rxe-peer).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

vhca=$repo/target/release/vhca
losses="5 20"
roles="responder requester"
while [ $# -gt 0 ]; do
    case $1 in
        --vhca) vhca=$2; shift 2 ;;
        # For a closer look (with RXE_PEER_CAPTURE=FILE): e.g. --loss "20 20 20" --roles responder.
        --loss) losses=$2; shift 2 ;;
        --roles) roles=$2; shift 2 ;;
        *) echo "usage: $0 [--vhca PATH] [--loss 'PERCENT...'] [--roles 'responder requester']" >&2; exit 2 ;;
    esac
done
cannot() { echo "windows.sh: cannot run here: $*" >&2; exit 77; }
[ "$(id -u)" -eq 0 ] || cannot "must run as root (network namespace, TAP device)"
command -v qemu-system-x86_64 >/dev/null || cannot "no qemu-system-x86_64 (apt-get install qemu-system-x86)"
command -v ip >/dev/null || cannot "no ip (apt-get install iproute2)"
command -v gcc >/dev/null && [ -f /usr/include/infiniband/verbs.h ] ||
    cannot "no gcc or libibverbs-dev to build windows_target"
[ -c /dev/net/tun ] || cannot "no /dev/net/tun"
[ -x "$vhca" ] || { echo "windows.sh: no vhca binary at $vhca (cargo build --release -p vhca)" >&2; exit 2; }

port=18516
ns=vhca-rxe-windows-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/rxe-windows.XXXXXX")
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

say() { printf 'windows: %s\n' "$*"; }
fail() {
    say "FAIL: $*"
    # The guest prints rxe's counters when its command ends: wait for them (bounded).
    [ "${n:-0}" -gt 0 ] && rxe_peer_wait "$log" '^VHCA-WAIT-CMD' $((n + 1)) 30 || true
    [ -f "$work/g/console.log" ] && { echo "--- guest console (tail)"; tr -d '\r' <"$work/g/console.log" | tail -n 60; }
    for f in "$work"/vhca-*.out; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done
    exit 1
}

"$here/build.sh"

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
"$here/run.sh" --netns "$ns" --tap tap2 --bridge br0 --ip 10.77.0.2/24 --ctl loop --listen "$port" \
    --rundir "$work/g" --timeout 900 >"$work/g/run.out" 2>&1 &
pids+=($!)
log=$work/g/console.log
touch "$log"
rxe_peer_wait "$log" '^VHCA-WAIT-CMD' 1 240 || fail "rxe guest did not come up"
kernel=$(tr -d '\r' <"$log" | grep -m1 -o 'kernel [^ ,]*' || true)
say "guest up: $(tr -d '\r' <"$log" | grep '^VHCA-PEER-READY') ($kernel)"

n=0
listens=0

runs=0
checks_total=0
windows() { # NAME ROLE VHCA-OPTIONS...
    local name=$1 role=$2 out got
    shift 2
    runs=$((runs + 1))
    out=$work/vhca-$runs.out
    guest_cmd "windows_target -d rxe0 -g 1 -p $port"
    listens=$((listens + 1))
    rxe_peer_wait "$log" '^VHCA-CMD-LISTENING' "$listens" 120 '^VHCA-CMD-EXIT' "$n" ||
        fail "$name: windows_target did not listen"
    ip netns exec "$ns" "$vhca" windows 10.77.0.2 --ip 10.77.0.1 -p "$port" --role "$role" --json "$@" \
        >"$out" 2>&1 || fail "$name: vhca windows failed"
    guest_done "$name"
    # vhca exits 0 only with every check passed; the report must be the role's and complete.
    grep -q "\"role\":\"$role\"" "$out" || fail "$name: no report for role $role"
    got=$(grep -o '"checks_passed":[0-9]*' "$out" | cut -d: -f2)
    local want=22
    [ "$role" = requester ] && want=29
    [ "$got" = "$want" ] || fail "$name: $got checks reported, $want expected"
    if [ "$role" = responder ]; then
        # What rxe 6.1 does differently (docs/transport.md, "Memory windows"): both must still hold.
        grep -q '"findings":\["rxe flags a receive that invalidated a key with wc_flags 0x5: ' "$out" ||
            fail "$name: the IBV_WC_WITH_INV finding no longer holds (update docs/transport.md)"
        grep -q '"rxe accepts a WRITE through a window that leaves the window' "$out" ||
            fail "$name: the out-of-window finding no longer holds (update docs/transport.md)"
        grep -q '"rxe invalidates a type 2 window named by a SEND_WITH_INV that arrives on another QP' "$out" ||
            fail "$name: the SEND_WITH_INV-from-another-QP finding no longer holds (update docs/transport.md)"
    fi
    if [ "$role" = responder ]; then
        say "$name: $(grep -o "rxe's receive: [^\"]*" "$out")"
    fi
    checks_total=$((checks_total + got))
    # Retransmissions on both sides: vhca's (rxe's answers lost) and rxe's completer timeouts
    # (its requests lost), from the counters the guest prints after each command.
    local vre rre
    vre=$(grep -o '"retransmits":[0-9]*' "$out" | cut -d: -f2)
    rre=$(rxe_peer_field "$log" 'VHCA-COUNTER completer_retry_err' "$n")
    resent=$((resent + vre + rre - rxe_resent_before))
    rxe_resent_before=$rre
    say "$name: ok ($got checks, $(grep -o '"refusals_by_timeout":[0-9]*' "$out" | cut -d: -f2) refusals seen as a retry timeout, retransmissions: vhca $vre, rxe $rre so far)"
}
resent=0
rxe_resent_before=0
icrc_errors() {
    rxe_peer_wait "$log" '^VHCA-ICRC-ERRORS' "$n" 60 || fail "no ICRC count after command $n"
    tr -d '\r' <"$log" | sed -n 's/^VHCA-ICRC-ERRORS \([0-9]*\).*/\1/p' | tail -n1
}

for r in $roles; do windows "rxe $r, no loss" "$r"; done
for p in $losses; do
    # Loss on the guest's egress (rxe -> vhca), by netem in its kernel as interop.sh does.
    guest_cmd "/sbin/tc qdisc replace dev eth0 root netem loss ${p}%"
    guest_done "netem ${p}%"
    rre=$(rxe_peer_field "$log" 'VHCA-COUNTER completer_retry_err' "$n")
    rxe_resent_before=${rre:-0}
    resent=0
    for r in $roles; do windows "rxe $r, loss ${p}%" "$r" --lossy; done
    # At 20% over the two runs' ~100 packets of rxe's, no loss at all would mean netem was
    # not in the path: the loss runs would have proven nothing.
    [ "$p" -lt 20 ] || [ "$resent" -gt 0 ] || fail "no retransmission at ${p}% loss: was the loss applied?"
done
guest_cmd "/sbin/tc qdisc del dev eth0 root"
guest_done "netem off"
icrc=$(icrc_errors)
[ "$icrc" = 0 ] || fail "rxe counted ICRC errors: $icrc"

say "PASS: $runs runs against rxe on $kernel, $checks_total checks: rxe's type 1 and type 2 windows under vhca's WRITE, READ and SEND_WITH_INV; vhca's windows and fast-register MR under rxe's WRITE, READ and SEND_WITH_INV; every refusal; without loss and at loss ${losses// /%, }%"
