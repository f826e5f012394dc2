#!/usr/bin/env bash
# A real guest drives vhca VFs: stock QEMU 11.1 (trixie-backports, from the chroot of
# chroot.sh) boots the vhca guest (tools/vhca-guest: Debian kernel, busybox, the vhca binary)
# with two VFs of one `vhca serve` attached, and the guest runs vhca's programs on them from
# user space over virtio-pci (uio_pci_generic, hugepage DMA memory, polling):
#
#   VF 0  -device vhost-user-test-device-pci,virtio-id=38   (attach-only model; 0000:00:04.0)
#   VF 1  -device vhost-user-fs-pci (the carrier QEMU migrates) (0000:00:05.0)
#   VF 2  stays on the host: `vhca pingpong|perf --vf vf2.sock` plays the remote peer
#
# Checks, each with its data verified by the programs themselves:
#   1. `vhca guest-pair pci:00:04.0 pci:00:05.0` in the guest: RC ping-pong and every RC opcode
#      between the two VFs (one of each device model);
#   2. RC, UD, UC and SRQ ping-pong between the guest's VF 1 and the host's VF 2 (`vhca pingpong`;
#      the side channel is TCP over QEMU's user network, the RoCE traffic the serve's switch);
#   3. `vhca perf` write_bw, read_bw, send_bw and send_lat, guest client against host server;
#   4. the VFs show the guest's QPs (vhca ctl), the guest resets the devices at exit
#      (RESET_DEVICE: the VFs are fresh again), and QEMU and vhca serve stop cleanly.
#
#   tools/qemu-test/guest.sh [--rundir DIR] [--timeout SECONDS]
#
# Exit status: 0 passed (last line starts with PASS); 1 failed; 77 cannot run on this machine;
# 2 bad arguments. Environment: VHCA_BIN, QEMU_TEST_CHROOT, RXE_PEER_DIR, VHCA_GUEST_DIR.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${QEMU_TEST_CHROOT:-$repo/target/qemu-chroot}
# shellcheck source=../rxe-peer/lib.sh
. "$repo/tools/rxe-peer/lib.sh"
# shellcheck source=lib.sh
. "$here/lib.sh"

rundir="" timeout_s=600
while [ $# -gt 0 ]; do
    case $1 in
        --rundir) rundir=$2; shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        -h | --help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "guest.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

say() { printf 'qemu-guest: %s\n' "$*"; }
skip() {
    printf 'qemu-guest: CANNOT RUN HERE: %s\n' "$*" >&2
    exit 77
}
[ "$(id -u)" -eq 0 ] || skip "needs root (chroot, network namespaces)"
for t in unshare chroot cpio gzip timeout ip base64 mkfifo; do
    command -v "$t" >/dev/null || skip "$t not found"
done

qt_prepare_guest

own_rundir=""
[ -n "$rundir" ] || { rundir=$(mktemp -d /tmp/vhca-qemu-guest.XXXXXX); own_rundir=1; }
mkdir -p "$rundir"
rundir=$(cd "$rundir" && pwd)
sock=$rundir/sock
rm -rf "$sock"
mkdir -p "$sock"
console=$rundir/console.log
: >"$console"
ns=vhca-qg-$$

spid="" qpid="" hpid=""
cleanup() {
    # QEMU before its back-end (QEMU aborts when a back-end vanishes under a started device).
    if [ -n "$qpid" ]; then kill -TERM "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; fi
    if [ -n "$hpid" ]; then kill -TERM "$hpid" 2>/dev/null || true; wait "$hpid" 2>/dev/null || true; fi
    if [ -n "$spid" ]; then kill -TERM "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; fi
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fails=0 checks=0
show_logs() {
    echo "---- console (last 40 lines)" >&2
    tail -n 40 "$console" | tr -d '\r' >&2
    echo "---- qemu" >&2
    tail -n 20 "$rundir/qemu.log" >&2 2>/dev/null || true
    echo "---- vhca serve (last 30 lines)" >&2
    tail -n 30 "$rundir/serve.log" >&2 2>/dev/null || true
}
abort() {
    say "FAILED: $*"
    show_logs
    exit 1
}

# The host side: a namespace of its own, where QEMU's user network (slirp) reaches the host's
# servers at 10.0.2.2 (the namespace's loopback).
ip netns add "$ns"
ip -n "$ns" link set lo up
# (Background jobs run `ip netns exec` itself, not a shell function: a function in the
# background is a subshell, and its PID would not be the program's.)
hx() { ip netns exec "$ns" "$@"; }

NO_COLOR=1 RUST_LOG=info ip netns exec "$ns" "$vhca" serve --vfs 3 --socket-dir "$sock" </dev/null >"$rundir/serve.out" 2>"$rundir/serve.log" &
spid=$!
rxe_peer_wait "$rundir/serve.log" 'serving' 1 30 || abort "vhca serve did not start"

# The chroot sees only the run directory of the host's files.
cp "$gdir/vmlinuz" "$gdir/initrd.img" "$rundir/"
mapfile -t ctl < <(vg_ctl_args "$rundir" ctl)
vf0=0000:00:04.0 vf1=0000:00:05.0
append="console=ttyS0 quiet panic=-1 rdinit=/vhca-guest-init vhca.ip=10.0.2.15/24 vhca.gw=10.0.2.2 vhca.hugepages=192"
qemu_args=(
    -machine q35 -accel tcg -m 768M -smp 1
    -object memory-backend-memfd,id=mem,size=768M,share=on -numa node,memdev=mem
    -nodefaults -display none -no-reboot
    -kernel "$rundir/vmlinuz" -initrd "$rundir/initrd.img" -append "$append"
    -chardev "file,id=con,path=$console" -serial chardev:con "${ctl[@]}"
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0,addr=0x3,romfile=
    -chardev "socket,id=vf0,path=$sock/vf0.sock"
    -device vhost-user-test-device-pci,chardev=vf0,virtio-id=38,num_vqs=3,vq_size=256,config_size=128,addr=0x4
    -chardev "socket,id=vf1,path=$sock/vf1.sock"
    -device vhost-user-fs-pci,chardev=vf1,tag=vhca,num-request-queues=2,addr=0x5
)
say "boot: $(cat "$root/.vhca-qemu-ready"), console $console"
t0=$SECONDS
qt_qemu_start "$root" "$rundir" "$ns" "$rundir/qemu.log" "${qemu_args[@]}"
qpid=$QT_PID
rxe_peer_wait "$console" '^VHCA-GUEST-READY ' 1 180 '^VHCA-GUEST-FAILED' || abort "the guest did not come up"
say "guest up after $((SECONDS - t0)) s: $(grep -a '^VHCA-GUEST-READY' "$console" | tr -d '\r')"
check "the guest sees VF 0 as 1af4:1066 at $vf0" grep -aq "^VHCA-GUEST-VF $vf0 0x1066" "$console"
check "the guest sees VF 1 as 1af4:105a (the carrier) at $vf1" grep -aq "^VHCA-GUEST-VF $vf1 0x105a" "$console"

n=0
guest() { # timeout, then the command: runs it in the guest, prints its output, sets grc
    local t=$1
    shift
    n=$((n + 1))
    vg_run "$rundir" ctl "$*"
    grc=$(vg_wait_exit "$console" "$n" "$t") || abort "guest command $n ($*) did not end within ${t}s"
    vg_output "$n" "$console" | sed 's/^/  guest| /'
}

# 1. Two VFs in the guest, one of each device model.
guest 300 vhca guest-pair "pci:$vf0" "pci:$vf1" --iters 50 --size 4096
check "guest-pair pci:$vf0 <-> pci:$vf1: ping-pong and every RC opcode (exit $grc)" test "$grc" -eq 0
check "guest-pair reported every RC opcode ok" grep -aq "^VHCA-OUT $n: .*every RC opcode at 0, 1 and 4096 B: ok" "$console"

# 2 and 3. The guest's VF 1 against the host's VF 2, host side as the server.
host_server() { # what to wait for in its stderr, then the vhca arguments
    local ready=$1
    shift
    : >"$rundir/host.err"
    ip netns exec "$ns" "$vhca" "$@" --vf "$sock/vf2.sock" >"$rundir/host.out" 2>"$rundir/host.err" &
    hpid=$!
    echo "host: vhca $* --vf $sock/vf2.sock" >>"$rundir/host.log"
    hpid=$!
    rxe_peer_wait "$rundir/host.err" "$ready" 1 60 || abort "host server ($*) did not start: $(cat "$rundir/host.err")"
}
host_done() {
    local rc=0
    wait "$hpid" || rc=$?
    hpid=""
    sed 's/^/  host | /' "$rundir/host.out"
    cat "$rundir/host.out" "$rundir/host.err" >>"$rundir/host.log"
    [ "$rc" -eq 0 ] || sed 's/^/  host!| /' "$rundir/host.err"
    return "$rc"
}
for mode in rc ud uc srq; do
    # RC and UC: the guest checks every reply byte for byte (--chk); UD has no echo to check;
    # SRQ: ibv_srq_pingpong's shape, four QPs on one shared receive queue.
    case $mode in
        rc) flag=--chk ;;
        ud) flag=--ud ;;
        uc) flag="--uc --chk" ;;
        srq) flag="--srq -q 4" ;;
    esac
    host_server 'listening on TCP port' pingpong -n 200 -s 2048 ${flag/--chk/}
    guest 300 vhca pingpong --vf "pci:$vf1" 10.0.2.2 -n 200 -s 2048 $flag
    hrc=0
    host_done || hrc=$?
    check "$mode ping-pong, guest pci:$vf1 -> host vf2: guest exit $grc, host exit $hrc" test "$grc" -eq 0 -a "$hrc" -eq 0
done
for t in write_bw read_bw send_bw send_lat; do
    host_server 'server listening on TCP port' perf "$t" -n 200
    guest 300 vhca perf "$t" --vf "pci:$vf1" 10.0.2.2 -n 200
    hrc=0
    host_done || hrc=$?
    check "perf $t, guest pci:$vf1 -> host vf2: guest exit $grc, host exit $hrc" test "$grc" -eq 0 -a "$hrc" -eq 0
done

# 4. What the VFs saw; the guest's device resets.
ctl=$(hx "$vhca" ctl --json --socket-dir "$sock" counters 2>&1 || true)
say "vhca ctl counters: $(tr -d ' \n' <<<"$ctl" | cut -c1-400)"
# Every program reset its device when it ended (a virtio reset, which QEMU forwards as
# RESET_DEVICE): VF 1 ran 9 programs, VF 0 one.
resets1=$(grep -c 'RESET_DEVICE.*vf=1\|vf=1.*RESET_DEVICE' "$rundir/serve.log" || true)
check "QEMU forwarded the guest's device resets to VF 1 (RESET_DEVICE: $resets1, at least 9)" test "$resets1" -ge 9
qps=$(hx "$vhca" ctl --json --socket-dir "$sock" qps)
count_qps() { python3 -c 'import json,sys; print(sum(1 for q in json.loads(sys.argv[1]) if q["vf"] == int(sys.argv[2])))' "$qps" "$1"; }
left1=$(count_qps 1)
check "after the guest's programs ended the carrier's VF 1 holds no QPs ($left1 left)" test "$left1" -eq 0
# QEMU's vhost-user-test-device (vhost-user-base) does not forward a guest's reset to its
# back-end: VF 0 keeps the last program's objects until QEMU disconnects (docs/qemu.md).
say "VF 0 (vhost-user-test-device-pci) holds $(count_qps 0) QP(s) of its last program: that device model forwards no reset"

vg_send "$rundir" ctl poweroff
set +e
wait "$qpid"
qrc=$?
set -e
qpid=""
check "the guest powered off and QEMU exited 0 (exit $qrc)" test "$qrc" -eq 0
set +e
kill -TERM "$spid"
wait "$spid"
src=$?
set -e
spid=""
check "vhca serve exited 0 on SIGTERM (exit $src)" test "$src" -eq 0

say "total $((SECONDS - t0)) s; run directory $rundir"
if [ "$fails" -ne 0 ]; then
    show_logs
    say "FAILED: $fails of $checks checks"
    exit 1
fi
[ -z "$own_rundir" ] || rm -rf "$rundir"
say "PASS: all $checks checks (a real guest drove two VFs over virtio-pci: guest-pair, RC/UD/UC/SRQ ping-pong, perf)"
