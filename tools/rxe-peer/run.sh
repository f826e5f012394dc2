#!/usr/bin/env bash
# Boots one rxe peer guest (built by build.sh) under QEMU/TCG on a TAP in a network namespace
# and exits with the exit code of the command it ran in the guest.
#
#   tools/rxe-peer/run.sh --netns NS --tap TAP [--bridge BR] --ip 10.77.0.2/24 [--mtu 1500]
#       [--gw IP] [--cmd 'ibv_rc_pingpong -g 1 -d rxe0'] [--listen 18515] [--ctl once|loop]
#       [--log FILE] [--rundir DIR] [--timeout 300] [--nic virtio|e1000] [--mac MAC] [--mem 512]
#
# The namespace NS must exist (the test makes it). The TAP is created in NS (and attached to BR
# when given) unless it exists already; a TAP this script created is deleted when it exits.
# The serial console goes to --log (default RUNDIR/console.log); a test may follow it while the
# guest runs and wait for the markers that tools/rxe-peer/init prints (VHCA-PEER-READY,
# VHCA-CMD-LISTENING, VHCA-WAIT-CMD, VHCA-CMD-EXIT ...). With --ctl, the control port's input is
# the FIFO RUNDIR/ctl.in: write "go", "run BASE64" or "poweroff" lines to it after the guest
# printed VHCA-WAIT-CMD.
#
# Exit status: the guest command's exit code (the last VHCA-CMD-EXIT), 124 on timeout, 125 if
# the guest failed or ran no command, 2 on bad arguments.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=${RXE_PEER_DIR:-$repo/target/rxe-peer}

usage() {
    sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
say() { printf 'rxe-peer run[%s]: %s\n' "${ip:-?}" "$*"; }

netns="" tap="" bridge="" ip="" mtu=1500 gw="" cmd="" listen="" ctl="" log="" rundir=""
timeout_s=300 nic=virtio mac="" mem=512
while [ $# -gt 0 ]; do
    case $1 in
        --netns) netns=$2 ;;
        --tap) tap=$2 ;;
        --bridge) bridge=$2 ;;
        --ip) ip=$2 ;;
        --mtu) mtu=$2 ;;
        --gw) gw=$2 ;;
        --cmd) cmd=$2 ;;
        --listen) listen=$2 ;;
        --ctl) ctl=$2 ;;
        --log) log=$2 ;;
        --rundir) rundir=$2 ;;
        --timeout) timeout_s=$2 ;;
        --nic) nic=$2 ;;
        --mac) mac=$2 ;;
        --mem) mem=$2 ;;
        -h | --help) usage ;;
        *) echo "run.sh: unknown argument $1" >&2; usage ;;
    esac
    shift 2 || usage
done
[ -n "$netns" ] && [ -n "$tap" ] && [ -n "$ip" ] || usage
case $ip in */*) ;; *) ip=$ip/24 ;; esac
case $ctl in "" | once | loop) ;; *) usage ;; esac
case $nic in virtio) nicdev=virtio-net-pci ;; e1000) nicdev=e1000 ;; *) usage ;; esac
[ -s "$dir/vmlinuz" ] && [ -s "$dir/initrd.img" ] || {
    echo "run.sh: no guest images in $dir; run tools/rxe-peer/build.sh first" >&2
    exit 2
}
[ -e "/run/netns/$netns" ] || { echo "run.sh: no network namespace $netns" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "run.sh: qemu-system-x86_64 not found (apt-get install qemu-system-x86)" >&2; exit 2; }

addr=${ip%/*}
if [ -z "$mac" ]; then
    IFS=. read -r o1 o2 o3 o4 <<<"$addr"
    mac=$(printf '52:54:00:%02x:%02x:%02x' "$o2" "$o3" "$o4")
    : "$o1"
fi
[ -n "$rundir" ] || rundir=$(mktemp -d "${TMPDIR:-/tmp}/rxe-peer.XXXXXX")
mkdir -p "$rundir"
[ -n "$log" ] || log=$rundir/console.log
: >"$log"

created_tap=""
qpid=""
cleanup() {
    if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
        kill "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
    fi
    if [ -n "$created_tap" ]; then
        ip -n "$netns" link del "$tap" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! ip -n "$netns" link show "$tap" >/dev/null 2>&1; then
    ip -n "$netns" tuntap add dev "$tap" mode tap
    created_tap=1
fi
# The TAP carries the guest's frames: its MTU must not be below the guest's.
ip -n "$netns" link set "$tap" mtu "$mtu"
[ -n "$bridge" ] && ip -n "$netns" link set "$tap" master "$bridge"
ip -n "$netns" link set "$tap" up

append="console=ttyS0 quiet panic=-1 vhca.ip=$ip vhca.mtu=$mtu"
[ -n "$gw" ] && append+=" vhca.gw=$gw"
[ -n "$cmd" ] && append+=" vhca.cmd=$(printf '%s' "$cmd" | base64 -w0)"
[ -n "$listen" ] && append+=" vhca.listen=$listen"
[ -n "$ctl" ] && append+=" vhca.ctl=$ctl"

ctlargs=(-serial null)
if [ -n "$ctl" ]; then
    rm -f "$rundir/ctl.in" "$rundir/ctl.out"
    mkfifo "$rundir/ctl.in" "$rundir/ctl.out"
    ctlargs=(-chardev "pipe,id=ctl,path=$rundir/ctl" -serial chardev:ctl)
fi

say "boot: netns $netns tap $tap${bridge:+ (bridge $bridge)} mac $mac mtu $mtu log $log"
t0=$(date +%s.%N)
timeout -k 5 "$timeout_s" ip netns exec "$netns" qemu-system-x86_64 \
    -machine q35 -accel tcg -m "$mem" -smp 1 \
    -nodefaults -display none -no-reboot \
    -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" -append "$append" \
    -chardev "file,id=con,path=$log" -serial chardev:con "${ctlargs[@]}" \
    -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" \
    -device "$nicdev,netdev=n0,mac=$mac,romfile=" \
    -pidfile "$rundir/qemu.pid" &
qpid=$!
set +e
wait "$qpid"
qrc=$?
set -e
qpid=""
t1=$(date +%s.%N)
wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')

clean_log=$(tr -d '\r' <"$log")
ready=$(sed -n 's/^VHCA-PEER-READY .*uptime=\([0-9.]*\).*/\1/p' <<<"$clean_log" | head -n1)
failed=$(sed -n 's/^VHCA-PEER-FAILED //p' <<<"$clean_log" | head -n1)
exitcode=$(sed -n 's/^VHCA-CMD-EXIT \([0-9]*\).*/\1/p' <<<"$clean_log" | tail -n1)
say "qemu exited ($qrc) after ${wall}s wall; guest ready at ${ready:-never}s guest uptime"
if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
    say "timeout after ${timeout_s}s; last console lines:"
    tail -n 20 "$log" | tr -d '\r' >&2
    exit 124
fi
if [ -n "$failed" ]; then
    say "guest setup failed: $failed"
    exit 125
fi
if [ -z "$exitcode" ]; then
    say "no command exit marker in $log"
    tail -n 20 "$log" | tr -d '\r' >&2
    exit 125
fi
say "guest command exit code $exitcode"
exit "$exitcode"
