#!/usr/bin/env bash
# vhca against an unmodified Linux rxe (Soft-RoCE) peer: Debian's rdma_rxe in a QEMU/TCG guest
# (10.77.0.2) on a bridge in a private network namespace, vhca on the bridge's address
# (10.77.0.1) speaking RoCEv2 over a kernel UDP socket.
#
#   sudo tools/rxe-peer/interop.sh [--vhca PATH] [--iters N]
#                                  [--perf-only | --cm-only | --perf-loss-only]
#
# Runs, with no loss (RC and UD) and then with 1% and 5% loss on the link (RC):
#   vhca client  -> ibv_rc_pingpong server      ibv_rc_pingpong client -> vhca server
#   vhca client  -> ibv_ud_pingpong server      ibv_ud_pingpong client -> vhca server
#   vhca client  -> ibv_uc_pingpong server      ibv_uc_pingpong client -> vhca server (no loss:
#                                               a lost UC message stalls both tools for good)
#   vhca client  -> ibv_srq_pingpong server     ibv_srq_pingpong client -> vhca server
# and perftest (v4.5-0.17) both ways for each of ib_send_bw, ib_write_bw, ib_read_bw
# (-s 4096 -n 200), ib_atomic_bw (-n 200), ib_send_lat, ib_write_lat, ib_read_lat (-s 64 -n 200)
# and ib_atomic_lat (-n 200):
#   vhca perf client -> ib_*  server            ib_* client -> vhca perf server
# and options, with no loss and at 5% loss: -q 2 (write_bw, send_bw, atomic_bw), -A CMP_AND_SWAP
# (atomic_bw, atomic_lat), --report_gbits (read_bw), -b (write_bw, send_bw, atomic_bw), -I 64
# (send_lat), -e (send_bw, atomic_lat); with no loss only: -D 4 (write_bw, send_lat) and -a -n 5
# (send_bw, write_bw, write_lat, read_lat).
# and rping (rdmacm-utils; connected by the IB CM on QP1 with rdma_cm's IP header), 0%, 1% and
# 5% loss, -C 50 -S 64 and -C 20 -S 4000, data checked (-V), and all eight perftest tests with
# -R (rdma_cm: no TCP side channel), 0%, 1% and 5% loss:
#   vhca rping -c -> rping -s                   rping -c -> vhca rping -s
#   vhca perf -R client -> ib_* -R server       ib_* -R client -> vhca perf -R server
# (--cm-only runs just the rping and -R part; --perf-only just the perftest part with no loss;
# --perf-loss-only the perftest tests and options at 5% loss; VHCA_PERF_SIZE / VHCA_PERF_ITERS override the
# bandwidth tests' -s / -n.) Every run must exit 0 on both sides (the rdma-core
# tools and perftest exit non-zero on any error completion), vhca's JSON report must show the
# size, iteration count and byte count it was asked for, the guest tool must print its result
# row for that size and count, rxe must count no ICRC drop, and both sides must have received
# packets.
# Needs root, the host packages of build.sh, qemu-system-x86, iproute2 and iptables.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

vhca=$repo/target/release/vhca
iters=200
perf_only=""
cm_only=""
perf_loss_only=""
while [ $# -gt 0 ]; do
    case $1 in
        --vhca) vhca=$2; shift 2 ;;
        --iters) iters=$2; shift 2 ;;
        --perf-only) perf_only=1; shift ;;
        --cm-only) cm_only=1; shift ;;
        --perf-loss-only) perf_loss_only=1; shift ;;
        *) echo "usage: $0 [--vhca PATH] [--iters N] [--perf-only | --cm-only | --perf-loss-only]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "interop.sh: must run as root" >&2; exit 2; }
[ -x "$vhca" ] || { echo "interop.sh: no vhca binary at $vhca (cargo build --release -p vhca)" >&2; exit 2; }

ns=vhca-rxe-interop-$$
vhca_loss_opts=""  # extra vhca options for the runs under loss (set below)
work=$(mktemp -d "${TMPDIR:-/tmp}/rxe-interop.XXXXXX")
pids=()
cleanup() {
    local p
    # Whatever still runs inside the namespace (a capture, a stuck tool) goes with it.
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { printf 'interop: %s\n' "$*"; }
fail() {
    say "FAIL: $*"
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
"$here/run.sh" --netns "$ns" --tap tap2 --bridge br0 --ip 10.77.0.2/24 --ctl loop --listen 18515 \
    --rundir "$work/g" --timeout 1800 >"$work/g/run.out" 2>&1 &
pids+=($!)
guest_pid=$!
log=$work/g/console.log
touch "$log"
rxe_peer_wait "$log" '^VHCA-WAIT-CMD' 1 240 || fail "rxe guest did not come up"
say "guest up: $(tr -d '\r' <"$log" | grep '^VHCA-PEER-READY')"

n=0        # guest commands run so far
listens=0  # guest commands that listened (servers)
runs=0
unacked_last=0  # runs where vhca's last SEND went un-ACKed (see vhca_status)
rping_teardown_races=0  # rping clients that hit their own teardown race (guest_done_rping_client)
vx() { ip netns exec "$ns" "$vhca" "$@"; }


# guest_output: the console lines of the last guest command (between its BEGIN and EXIT).
guest_output() {
    tr -d '\r' <"$log" | awk -v n="$n" '$1 == "VHCA-CMD-BEGIN" { p = ($2 == n); next }
        p && $1 == "VHCA-CMD-EXIT" { p = 0 } p'
}

# guest_done_rping_client NAME: guest_done for `rping -c`, which also passes one failure that
# is rping's own: its cm thread reads the event channel in a loop and exits 255 ("rdma_get_cm_event:
# Bad file descriptor") when the main thread has closed that channel after the run; rdma-core
# 44's rping has this race (later ones stop the thread through a pipe first). It passes only
# when the disconnect came after the last ping (the caller then checks that vhca's server
# counted every ping) and rping reported nothing else.
guest_done_rping_client() {
    rxe_peer_wait "$log" '^VHCA-CMD-EXIT' "$n" 600 || fail "$1: guest command did not finish"
    local rc out
    rc=$(rxe_peer_field "$log" VHCA-CMD-EXIT "$n")
    rxe_peer_wait "$log" '^VHCA-WAIT-CMD' $((n + 1)) 60 || fail "guest ended"
    [ "$rc" = 0 ] && return 0
    out=$(guest_output)
    if [ "$rc" = 255 ] && [ "$(printf '%s\n' "$out" | grep -cv '^$')" = 2 ] &&
        printf '%s\n' "$out" | grep -qx 'client DISCONNECT EVENT...' &&
        printf '%s\n' "$out" | grep -qx 'rdma_get_cm_event: Bad file descriptor'; then
        rping_teardown_races=$((rping_teardown_races + 1))
        say "$1: rping exited 255 in its teardown race (its cm thread read a closed channel)"
        return 0
    fi
    fail "$1: guest tool exited $rc"
}

# vhca_status NAME RC OUT: the exit status RC of vhca pingpong, rping or perf (write_lat), called
# once the guest's tool has exited 0. Status 3 is vhca's last message never ACKed although
# every message arrived: the pingpongs, rping and ib_write_lat have no closing handshake, so a peer
# whose run is complete destroys its QP while the ACK it sent may be lost (1 in 20 at 5% loss).
# The guest's tool exiting 0 proves it received it (it counts every message), so 3 passes here
# and nowhere else.
vhca_status() {
    local name=$1 rc=$2 out=$3
    case $rc in
        0) ;;
        3)
            unacked_last=$((unacked_last + 1))
            say "$name: its last message was never ACKed; the guest's tool received it (it exited 0)"
            ;;
        *) fail "$name failed (exit $rc)" ;;
    esac
}

# vhca as client against the guest's server.
vhca_client() {
    local name=$1 gargs=$2 vargs=$3
    runs=$((runs + 1))
    guest_cmd "$gargs"
    listens=$((listens + 1))
    rxe_peer_wait "$log" '^VHCA-CMD-LISTENING' "$listens" 120 '^VHCA-CMD-EXIT' "$n" || fail "$name: guest server did not listen"
    local rc=0
    vx pingpong 10.77.0.2 --ip 10.77.0.1 $vargs >"$work/vhca-$runs.out" 2>&1 || rc=$?
    guest_done "$name"
    vhca_status "$name: vhca client" "$rc" "$work/vhca-$runs.out"
    say "$name: ok ($(grep -m1 'usec/iter' "$work/vhca-$runs.out"))"
}

# vhca as server, the guest's tool as client.
vhca_server() {
    local name=$1 gargs=$2 vargs=$3
    runs=$((runs + 1))
    local out=$work/vhca-$runs.out
    : >"$out"
    vx pingpong --ip 10.77.0.1 $vargs >"$out" 2>&1 &
    local vp=$!
    pids+=("$vp")
    rxe_peer_wait "$out" 'listening on TCP port' 1 30 || fail "$name: vhca server did not listen"
    guest_cmd "$gargs"
    guest_done "$name"
    local rc=0
    wait "$vp" || rc=$?
    vhca_status "$name: vhca server" "$rc" "$out"
    say "$name: ok ($(grep -m1 'usec/iter' "$out"))"
}

# rping (rdmacm-utils), connected by the IB CM on QP1 with rdma_cm's IP header: vhca client ->
# rping -s in the guest, then rping -c in the guest -> vhca server; -V checks every ping's data
# on the client (the guest's rping exits non-zero on a mismatch, vhca likewise).
# An rdma_cm listener has no TCP socket to watch, so the vhca client retries while the guest's
# CM still refuses the service (REJ reason 8: nobody listens yet).
rping_pair() {
    local tag=$1 count=$2 size=$3 name out i
    runs=$((runs + 1))
    name="$tag rping: vhca -> rping -s"
    out=$work/vhca-$runs.out
    guest_cmd "rping -s -a 10.77.0.2 -p 7174 -S $size -C $count"
    for i in $(seq 1 60); do
        if vx rping -c -a 10.77.0.2 -p 7174 --ip 10.77.0.1 -C "$count" -S "$size" -V $vhca_loss_opts \
            >"$out" 2>&1; then
            i=ok
            break
        fi
        grep -q 'rejected the connection (reason 8)' "$out" || fail "$name: vhca client failed"
        sleep 0.5
    done
    [ "$i" = ok ] || fail "$name: the guest's rping never listened"
    guest_done "$name"
    say "$name: ok ($(grep -m1 'rping client' "$out"))"

    runs=$((runs + 1))
    name="$tag rping: rping -c -> vhca"
    out=$work/vhca-$runs.out
    : >"$out"
    vx rping -s --ip 10.77.0.1 -p 7174 -S "$size" $vhca_loss_opts >"$out" 2>&1 &
    local vp=$!
    pids+=("$vp")
    rxe_peer_wait "$out" 'listening on port' 1 30 || fail "$name: vhca server did not listen"
    guest_cmd "rping -c -a 10.77.0.1 -p 7174 -S $size -C $count -V"
    guest_done_rping_client "$name"
    # Status 3: the last go-ahead lost its ACK and the client's DREQ was lost too; the client
    # exiting 0 above proves it got it (the counterpart of vhca_status for pingpong).
    local rc=0
    wait "$vp" || rc=$?
    vhca_status "$name: vhca server" "$rc" "$out"
    grep -q "rping server: $count pings" "$out" || fail "$name: vhca server did not count $count pings"
    say "$name: ok ($(grep -m1 'rping server: [0-9]' "$out"))"
}

# perftest's -R: the side channel and every data QP connected by rdma_cm (vhca perf -R),
# each of the eight tests both ways.
perf_cm_suite() {
    perf_pair ib_send_bw send_bw "$pt_size" "$pt_iters" "-R"
    perf_pair ib_write_bw write_bw "$pt_size" "$pt_iters" "-R -q 2" 2
    perf_pair ib_read_bw read_bw "$pt_size" "$pt_iters" "-R"
    perf_pair ib_atomic_bw atomic_bw 8 "$pt_iters" "-R"
    perf_pair ib_send_lat send_lat "$lat_size" "$lat_iters" "-R"
    perf_pair ib_write_lat write_lat "$lat_size" "$lat_iters" "-R"
    perf_pair ib_read_lat read_lat "$lat_size" "$lat_iters" "-R"
    perf_pair ib_atomic_lat atomic_lat 8 "$lat_iters" "-R"
}

cm_suite() {
    local tag=$1
    rping_pair "$tag" 50 64
    rping_pair "$tag" 20 4000
    say "$tag: perftest -R, both directions"
    perf_cm_suite
}

suite() {
    local tag=$1
    vhca_client "$tag rc: vhca -> ibv_rc_pingpong" "ibv_rc_pingpong -g 1 -d rxe0 -n $iters" "-n $iters"
    vhca_server "$tag rc: ibv_rc_pingpong -> vhca" "ibv_rc_pingpong -g 1 -d rxe0 -n $iters 10.77.0.1" "-n $iters"
    vhca_client "$tag ud: vhca -> ibv_ud_pingpong" "ibv_ud_pingpong -g 1 -d rxe0 -s 1024 -n $iters" "--ud -s 1024 -n $iters"
    vhca_server "$tag ud: ibv_ud_pingpong -> vhca" "ibv_ud_pingpong -g 1 -d rxe0 -s 1024 -n $iters 10.77.0.1" "--ud -s 1024 -n $iters"
    vhca_client "$tag uc: vhca -> ibv_uc_pingpong" "ibv_uc_pingpong -g 1 -d rxe0 -n $iters" "--uc -n $iters"
    vhca_server "$tag uc: ibv_uc_pingpong -> vhca" "ibv_uc_pingpong -g 1 -d rxe0 -n $iters 10.77.0.1" "--uc -n $iters"
    vhca_client "$tag srq: vhca -> ibv_srq_pingpong" "ibv_srq_pingpong -g 1 -d rxe0 -n $iters" "--srq -q 16 -n $iters"
    vhca_server "$tag srq: ibv_srq_pingpong -> vhca" "ibv_srq_pingpong -g 1 -d rxe0 -n $iters 10.77.0.1" "--srq -q 16 -n $iters"
}

# perftest. Sizes and iteration counts are not exchanged, so both sides get the same ones.
pt_size=${VHCA_PERF_SIZE:-4096}
pt_iters=${VHCA_PERF_ITERS:-200}
lat_size=64
lat_iters=200

# json_field FILE KEY: a number from vhca's one-line JSON report in FILE.
json_field() {
    grep -m1 '^{' "$1" | sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p"
}

# perf_check NAME FILE SIZE ITERS: vhca's report shows SIZE x ITERS, and the bytes it counted
# itself (a write/read/atomic bw server cannot see them and prints the client's report instead;
# a read_lat/atomic_lat server, like perftest's, reports nothing).
perf_check() {
    local name=$1 f=$2 size=$3 it=$4 b i t src
    b=$(json_field "$f" bytes)
    i=$(json_field "$f" iterations)
    t=$(json_field "$f" bytes_transferred)
    src=$(grep -m1 '^{' "$f" | sed -n 's/.*"source":"\([a-z]*\)".*/\1/p')
    [ "$src" = none ] && return 0
    if [ "$b" != "$size" ] || [ "$i" != "$it" ]; then
        fail "$name: vhca reported ${b:-?} B x ${i:-?}, expected $size x $it"
    fi
    if [ "$src" = peer ]; then
        [ "$t" = 0 ] || fail "$name: a write/read server counted ${t} bytes"
    else
        [ "$t" = $((size * it)) ] || fail "$name: vhca moved ${t:-?} bytes, expected $((size * it))"
    fi
}

# perf_summary FILE: the main numbers of vhca's report.
perf_summary() {
    local f=$1
    if grep -q '"t_typical_usec"' "$f"; then
        printf 't_typical %.2f usec, t_avg %.2f usec' "$(json_field "$f" t_typical_usec)" "$(json_field "$f" t_avg_usec)"
    else
        local unit
        unit=$(grep -m1 '^{' "$f" | sed -n 's/.*"unit":"\([A-Za-z/]*\)".*/\1/p')
        printf 'BW average %.2f %s, MsgRate %.6f Mpps, %s bytes' "$(json_field "$f" bw_average_mb_per_sec)" "${unit:-MB/sec}" \
            "$(json_field "$f" msg_rate_mpps)" "$(json_field "$f" bytes_transferred)"
    fi
}

# vhca_summary OUT RC: perf_summary of a run that exited 0; what status 3 means otherwise.
vhca_summary() {
    if [ "$2" = 0 ]; then
        perf_summary "$1"
    else
        printf 'its last WRITE was never ACKed (exit 3)'
    fi
}

# guest_row SIZE ITERS: the guest tool's result row for SIZE x ITERS (the last one printed).
guest_row() {
    tr -d '\r' <"$log" | grep -E "^ $1 +$2 " | tail -n1 | tr -s ' \t' ' '
}

# perf_pair BINARY VTEST SIZE ITERS [OPTS [QPS]]: vhca client -> guest server, then guest client
# -> vhca server, both with OPTS (perftest's spelling); with -q QPS the reports count ITERS x QPS.
# A read_lat/atomic_lat server prints no result row (perftest's does not either).
# With -R (rdma_cm: no TCP socket) the guest's server announces nothing: vhca's client retries
# while the guest's CM refuses the service (REJ reason 8), as perftest's own client does.
perf_pair() {
    local bin=$1 vt=$2 size=$3 it=$4 opts=${5:-} qps=${6:-1} name out rows srv_row=1 cm=""
    case " $opts " in *" -R "*) cm=1 ;; esac
    local gargs="$bin -d rxe0 -x 1 -F -s $size -n $it $opts"
    local vargs="perf $vt --json -s $size -n $it $opts $vhca_loss_opts"
    local tot=$((it * qps))
    case $vt in read_lat | atomic_lat) srv_row="" ;; esac
    rows=$(tr -d '\r' <"$log" | grep -cE "^ $size +$tot " || true)

    name="perf: vhca -> $bin${opts:+ $opts}"
    runs=$((runs + 1))
    out=$work/vhca-$runs.out
    guest_cmd "$gargs"
    if [ -z "$cm" ]; then
        listens=$((listens + 1))
        rxe_peer_wait "$log" '^VHCA-CMD-LISTENING' "$listens" 120 '^VHCA-CMD-EXIT' "$n" || fail "$name: guest server did not listen"
    fi
    local rc=0
    # shellcheck disable=SC2086
    vx $vargs 10.77.0.2 --ip 10.77.0.1 >"$out" 2>&1 || rc=$?
    guest_done "$name"
    vhca_status "$name: vhca client" "$rc" "$out"
    # Status 3 leaves no report to check; the guest's row is still checked below.
    [ "$rc" = 0 ] && perf_check "$name" "$out" "$size" "$tot"
    if [ -n "$srv_row" ]; then
        rows=$((rows + 1))
        [ "$(tr -d '\r' <"$log" | grep -cE "^ $size +$tot ")" -ge "$rows" ] || fail "$name: the guest printed no result row for $size x $tot"
        say "$name: ok (vhca: $(vhca_summary "$out" "$rc"); guest:$(guest_row "$size" "$tot"))"
    else
        say "$name: ok (vhca: $(vhca_summary "$out" "$rc"); guest: no row, as perftest's $bin server)"
    fi

    name="perf: $bin${opts:+ $opts} -> vhca"
    runs=$((runs + 1))
    out=$work/vhca-$runs.out
    : >"$out"
    # shellcheck disable=SC2086
    vx $vargs --ip 10.77.0.1 >"$out" 2>&1 &
    local vp=$!
    pids+=("$vp")
    rxe_peer_wait "$out" 'server listening on' 1 30 || fail "$name: vhca server did not listen"
    guest_cmd "$gargs 10.77.0.1"
    guest_done "$name"
    rc=0
    wait "$vp" || rc=$?
    vhca_status "$name: vhca server" "$rc" "$out"
    [ "$rc" = 0 ] && perf_check "$name" "$out" "$size" "$tot"
    rows=$((rows + 1))
    [ "$(tr -d '\r' <"$log" | grep -cE "^ $size +$tot ")" -ge "$rows" ] || fail "$name: the guest printed no result row for $size x $tot"
    say "$name: ok (vhca: $(vhca_summary "$out" "$rc"); guest:$(guest_row "$size" "$tot"))"
}

# perf_all BINARY VTEST: -a -n 5 both ways; both exit 0, vhca's report has every size from 2 B
# to 8 MiB (write/read bw server: the client's last), the guest printed its 8 MiB row (where
# perftest prints one). vhca runs with -u 17 (537 ms): the TCG guest's rxe streams an 8 MiB READ
# response with gaps longer than the default 67 ms ACK timeout, eight in a row once, and vhca
# (as the IBTA says, unlike rxe) gives up after retry_cnt 7.
perf_all() {
    local bin=$1 vt=$2 name out dir sizes
    for dir in to from; do
        runs=$((runs + 1))
        out=$work/vhca-$runs.out
        if [ $dir = to ]; then
            name="perf: vhca -> $bin -a"
            guest_cmd "$bin -d rxe0 -x 1 -F -a -n 5"
            listens=$((listens + 1))
            rxe_peer_wait "$log" '^VHCA-CMD-LISTENING' "$listens" 120 '^VHCA-CMD-EXIT' "$n" || fail "$name: guest server did not listen"
            vx perf "$vt" --json -a -n 5 -u 17 10.77.0.2 --ip 10.77.0.1 >"$out" 2>&1 || fail "$name: vhca client failed"
            guest_done "$name"
        else
            name="perf: $bin -a -> vhca"
            : >"$out"
            vx perf "$vt" --json -a -n 5 -u 17 --ip 10.77.0.1 >"$out" 2>&1 &
            local vp=$!
            pids+=("$vp")
            rxe_peer_wait "$out" 'listening on TCP port' 1 30 || fail "$name: vhca server did not listen"
            guest_cmd "$bin -d rxe0 -x 1 -F -a -n 5 10.77.0.1"
            guest_done "$name"
            wait "$vp" || fail "$name: vhca server failed"
        fi
        sizes=$(grep -o '"bytes":[0-9]*' "$out" | wc -l)
        grep -q '"bytes":8388608' "$out" || fail "$name: vhca reported no 8 MiB row"
        if [ $dir = to ] && [ "$vt" = read_lat ]; then
            say "$name: ok (vhca: $sizes sizes reported; guest: no row, as perftest's $bin server)"
        else
            say "$name: ok (vhca: $sizes sizes reported; guest:$(guest_row 8388608 5))"
        fi
    done
}

# perf_dur BINARY VTEST SIZE: -D 4 both ways (one second of warm-up, two measured, one to cool
# down); both exit 0 and vhca's report counts iterations (how many is not known in advance).
perf_dur() {
    local bin=$1 vt=$2 size=$3 name out dir i
    for dir in to from; do
        runs=$((runs + 1))
        out=$work/vhca-$runs.out
        if [ $dir = to ]; then
            name="perf: vhca -> $bin -D 4"
            guest_cmd "$bin -d rxe0 -x 1 -F -s $size -D 4"
            listens=$((listens + 1))
            rxe_peer_wait "$log" '^VHCA-CMD-LISTENING' "$listens" 120 '^VHCA-CMD-EXIT' "$n" || fail "$name: guest server did not listen"
            vx perf "$vt" --json -s "$size" -D 4 10.77.0.2 --ip 10.77.0.1 >"$out" 2>&1 || fail "$name: vhca client failed"
            guest_done "$name"
        else
            name="perf: $bin -D 4 -> vhca"
            : >"$out"
            vx perf "$vt" --json -s "$size" -D 4 --ip 10.77.0.1 >"$out" 2>&1 &
            local vp=$!
            pids+=("$vp")
            rxe_peer_wait "$out" 'listening on TCP port' 1 30 || fail "$name: vhca server did not listen"
            guest_cmd "$bin -d rxe0 -x 1 -F -s $size -D 4 10.77.0.1"
            guest_done "$name"
            wait "$vp" || fail "$name: vhca server failed"
        fi
        i=$(json_field "$out" iterations)
        [ "${i:-0}" -gt 0 ] || fail "$name: vhca counted no iterations"
        say "$name: ok (vhca: $i iterations, $(perf_summary "$out"))"
    done
}

perf_suite() {
    perf_pair ib_send_bw send_bw "$pt_size" "$pt_iters"
    perf_pair ib_write_bw write_bw "$pt_size" "$pt_iters"
    perf_pair ib_read_bw read_bw "$pt_size" "$pt_iters"
    perf_pair ib_atomic_bw atomic_bw 8 "$pt_iters"
    perf_pair ib_send_lat send_lat "$lat_size" "$lat_iters"
    perf_pair ib_write_lat write_lat "$lat_size" "$lat_iters"
    perf_pair ib_read_lat read_lat "$lat_size" "$lat_iters"
    perf_pair ib_atomic_lat atomic_lat 8 "$lat_iters"
}

# Options: perf_options_lossy's with and without loss, -D and -a with no loss.
# The options of perf_options that also run under 5% loss: all but -D and -a (an 8 MiB message
# at 5% loss takes the TCG guest's rxe minutes of go-back-N).
perf_options_lossy() {
    perf_pair ib_write_bw write_bw "$pt_size" "$pt_iters" "-q 2" 2
    perf_pair ib_send_bw send_bw "$pt_size" "$pt_iters" "-q 2" 2
    perf_pair ib_atomic_bw atomic_bw 8 "$pt_iters" "-q 2 -A CMP_AND_SWAP" 2
    perf_pair ib_atomic_lat atomic_lat 8 "$lat_iters" "-A CMP_AND_SWAP"
    perf_pair ib_read_bw read_bw "$pt_size" "$pt_iters" "--report_gbits"
    perf_pair ib_write_bw write_bw "$pt_size" "$pt_iters" "-b"
    perf_pair ib_send_bw send_bw "$pt_size" "$pt_iters" "-b"
    perf_pair ib_atomic_bw atomic_bw 8 "$pt_iters" "-b"
    perf_pair ib_send_lat send_lat "$lat_size" "$lat_iters" "-I 64"
    perf_pair ib_send_bw send_bw "$pt_size" "$pt_iters" "-e"
    perf_pair ib_atomic_lat atomic_lat 8 "$lat_iters" "-e"
}

perf_options() {
    perf_options_lossy
    perf_dur ib_write_bw write_bw 4096
    perf_dur ib_send_lat send_lat 64
    perf_all ib_send_bw send_bw
    perf_all ib_write_bw write_bw
    perf_all ib_write_lat write_lat
    perf_all ib_read_lat read_lat
}

# loss_on P: P% loss both ways (see the loss runs below).
loss_on() {
    guest_cmd "/sbin/tc qdisc replace dev eth0 root netem loss ${1}%"
    guest_done "netem ${1}% in the guest"
    ip netns exec "$ns" iptables-legacy -F OUTPUT
    ip netns exec "$ns" iptables-legacy -A OUTPUT -p udp --dport 4791 -m statistic --mode random \
        --probability "0.0$1" -j DROP
}

if [ -n "$cm_only" ]; then
    cm_suite "no loss"
    vhca_loss_opts="--qp-timeout 17"
    for p in 1 5; do
        loss_on "$p"
        cm_suite "loss ${p}%"
    done
elif [ -n "$perf_only" ]; then
    perf_suite
    perf_options
elif [ -n "$perf_loss_only" ]; then
    vhca_loss_opts="--qp-timeout 17"
    loss_on 5
    perf_suite
    perf_options_lossy
else
    suite "no loss"
    cm_suite "no loss"
    perf_suite
    perf_options
    # Loss on the link. These hosts' kernels have no sch_netem (CONFIG_NET_SCH_NETEM is not set), so
    # tc netem runs inside the guest's Debian kernel on eth0 (rxe -> vhca), and the same rate is
    # dropped host-side with iptables' statistic match (vhca -> rxe). UD has no recovery by design
    # (a lost datagram stalls ibv_ud_pingpong for good; UC likewise), so only RC (pingpong, srq
    # pingpong and perftest) runs
    # with loss. vhca's side uses a 537 ms ACK timeout (--qp-timeout 17, 8x ibv_rc_pingpong's):
    # with retry_cnt 7 the IBTA allows 8 timeouts without progress (4.3 s), and a TCG guest on a busy
    # 2-core machine once stalled past 8 x 268 ms at 5% loss; rxe, the peer, retries forever.
    vhca_loss_opts="--qp-timeout 17"
    for p in 1 5; do
        loss_on "$p"
        cm_suite "loss ${p}%"
        vhca_client "loss ${p}% rc: vhca -> ibv_rc_pingpong" "ibv_rc_pingpong -g 1 -d rxe0 -n $iters" \
            "-n $iters $vhca_loss_opts"
        vhca_server "loss ${p}% rc: ibv_rc_pingpong -> vhca" \
            "ibv_rc_pingpong -g 1 -d rxe0 -n $iters 10.77.0.1" "-n $iters $vhca_loss_opts"
        vhca_client "loss ${p}% srq: vhca -> ibv_srq_pingpong" "ibv_srq_pingpong -g 1 -d rxe0 -n $iters" \
            "--srq -q 16 -n $iters $vhca_loss_opts"
        vhca_server "loss ${p}% srq: ibv_srq_pingpong -> vhca" \
            "ibv_srq_pingpong -g 1 -d rxe0 -n $iters 10.77.0.1" "--srq -q 16 -n $iters $vhca_loss_opts"
        say "loss ${p}%: perftest, both directions"
        perf_suite
        if [ "$p" = 5 ]; then
            say "loss 5%: perftest options, both directions"
            perf_options_lossy
        fi
    done
    dropped=$(ip netns exec "$ns" iptables-legacy -L OUTPUT -v -x -n | awk '/statistic/ { print $1 }')
    say "host side dropped ${dropped:-0} RoCEv2 packets on purpose in the last loss run"
    [ "${dropped:-0}" -gt 0 ] || fail "the loss rule dropped nothing"
    guest_cmd "/sbin/tc -s qdisc show dev eth0"
    guest_done "netem statistics"
    tr -d '\r' <"$log" | grep -A3 'qdisc netem' | tail -n4
fi

rxe_peer_send "$work/g" poweroff
set +e
wait "$guest_pid"
grc=$?
set -e
pids=()
[ "$grc" = 0 ] || fail "guest run.sh exit $grc"
icrc=$(tr -d '\r' <"$log" | sed -n 's/^VHCA-ICRC-ERRORS \([0-9]*\).*/\1/p' | tail -n1)
rcvd=$(tr -d '\r' <"$log" | sed -n 's/^VHCA-COUNTER rcvd_pkts //p' | tail -n1)
tr -d '\r' <"$log" | grep -E '^VHCA-(ICRC-ERRORS|RXE-DROPS)' | tail -n2
[ "$icrc" = 0 ] || fail "rxe counted ICRC errors: ${icrc:-none printed}"
[ "${rcvd:-0}" -gt 0 ] || fail "rxe received no packets"
if [ -n "$cm_only" ]; then
    say "PASS: $runs rping and perftest -R runs (both directions, 0%/1%/5% loss), no ICRC errors; $unacked_last with a lost last ACK, $rping_teardown_races rping teardown races"
elif [ -n "$perf_only" ] || [ -n "$perf_loss_only" ]; then
    say "PASS: $runs perftest runs (8 binaries and options, both directions${perf_loss_only:+, 5% loss}), no ICRC errors"
else
    say "PASS: $runs runs (RC, SRQ, UC and UD, both directions, 0%/1%/5% loss for RC and SRQ; perftest both ways), no ICRC errors; $unacked_last with a lost last ACK, $rping_teardown_races rping teardown races"
fi
rm -rf "$work"
