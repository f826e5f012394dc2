#!/usr/bin/env bash
# A real QEMU as the vhost-user frontend of a vhca VF (root).
#
#   tools/qemu-test/run.sh [--rundir DIR] [--timeout SECONDS] [--no-start] [--direct]
#
# 1. builds (once) a Debian trixie chroot with QEMU 11.x from trixie-backports (chroot.sh) in
#    target/qemu-chroot, and the guest images of tools/rxe-peer/build.sh (Debian kernel + busybox);
# 2. builds vhca (cargo build --release -p vhca) and starts `vhca serve --vfs 1 --socket-dir DIR`;
# 3. boots the guest under QEMU/TCG from the chroot with shared memfd memory and
#    -device vhost-user-test-device-pci,chardev=vf0,virtio-id=38,num_vqs=3,vq_size=256,config_size=128
#    (38: an ID stock QEMU names and no Linux driver claims; 42 aborts stock QEMU, see
#    docs/device-protocol.md);
# 4. the guest (tools/qemu-test/init) finds 1af4:1066, reads the virtio-pci capabilities, the
#    common config and the device config window from user space, prints them on the serial
#    console, then starts the device (features, 3 queues, DRIVER_OK) unless --no-start;
# 5. checks here: the VF saw a frontend (vhca ctl vfs: connected), holds the guest's memory
#    (the memfd is mapped in `vhca serve`, /proc/PID/maps), QEMU's messages reached it
#    (GET_CONFIG; after the start SET_FEATURES, ADD_MEM_REG and the vrings: vhost-tap.py, a
#    transparent logging proxy between QEMU and vf0.sock, prints each message; --direct
#    connects QEMU straight to vf0.sock and skips those checks), and the config bytes the guest
#    read equal the VF's identity (version 1, GID ::ffff:10.200.0.1 at 24, MAC
#    02:56:48:43:00:00 at 40, ...);
# 6. stops QEMU first (QEMU aborts when its backend goes away under it), then SIGTERMs vhca
#    serve and checks it exits 0.
#
# Exit status: 0 passed; 1 failed; 77 cannot run on this machine (not root, no debootstrap, no
# trixie-backports QEMU with the device); 2 bad arguments.
# Environment: VHCA_BIN (use this vhca binary, skip the cargo build), QEMU_TEST_CHROOT,
# RXE_PEER_DIR, QEMU_TEST_MIRROR (see chroot.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${QEMU_TEST_CHROOT:-$repo/target/qemu-chroot}
guest=${RXE_PEER_DIR:-$repo/target/rxe-peer}
# shellcheck source=../rxe-peer/lib.sh
. "$repo/tools/rxe-peer/lib.sh"
# shellcheck source=lib.sh
. "$here/lib.sh"

rundir="" timeout_s=300 start=1 direct=""
while [ $# -gt 0 ]; do
    case $1 in
        --rundir) rundir=$2; shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --no-start) start=""; shift ;;
        --direct) direct=1; shift ;;
        -h | --help) sed -n '2,33p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "qemu-test: unknown argument $1" >&2; exit 2 ;;
    esac
done

say() { printf 'qemu-test: %s\n' "$*"; }
skip() {
    printf 'qemu-test: CANNOT RUN HERE: %s\n' "$*" >&2
    exit 77
}
T0=$(date +%s.%N)
now() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
timings=()
lap_t=$T0
lap() { # name
    local t
    t=$(date +%s.%N)
    timings+=("$(awk -v n="$1" -v a="$lap_t" -v b="$t" 'BEGIN { printf "%-34s %6.1fs", n, b - a }')")
    lap_t=$t
}

[ "$(id -u)" -eq 0 ] || skip "needs root (chroot, mount namespaces, /dev/mem in the guest is fine)"
for t in unshare chroot cpio gzip timeout tail awk; do
    command -v "$t" >/dev/null || skip "$t not found"
done
[ -n "$direct" ] || command -v python3 >/dev/null || skip "python3 not found (for vhost-tap.py; or use --direct)"

# ---- 1. QEMU 11 chroot and guest images ---------------------------------------------------------
set +e
QEMU_TEST_CHROOT=$root "$here/chroot.sh"
rc=$?
set -e
[ "$rc" -eq 0 ] || exit "$rc"
lap "chroot (QEMU 11)"
RXE_PEER_DIR=$guest "$repo/tools/rxe-peer/build.sh"
lap "guest images (rxe-peer build)"

# ---- 2. vhca serve ---------------------------------------------------------------------------------
if [ -n "${VHCA_BIN:-}" ]; then
    vhca=$VHCA_BIN
else
    (cd "$repo" && cargo build --release -q -p vhca)
    vhca=$repo/target/release/vhca
fi
[ -x "$vhca" ] || { echo "qemu-test: no vhca binary at $vhca" >&2; exit 1; }
lap "cargo build --release -p vhca"

own_rundir=""
[ -n "$rundir" ] || { rundir=$(mktemp -d /tmp/vhca-qemu-test.XXXXXX); own_rundir=1; }
mkdir -p "$rundir"
rundir=$(cd "$rundir" && pwd)
sock=$rundir/sock
rm -rf "$sock"
mkdir -p "$sock"
console=$rundir/console.log
: >"$console"

# The guest initramfs: the rxe peer's, plus a second cpio archive holding /qemu-test-init (the
# kernel unpacks concatenated archives in order).
mkdir -p "$rundir/extra"
cp "$here/init" "$rundir/extra/qemu-test-init"
chmod 0755 "$rundir/extra/qemu-test-init"
(cd "$rundir/extra" && echo qemu-test-init | cpio -o -H newc --owner=0:0 --quiet) | gzip -n >"$rundir/extra.cpio.gz"
cat "$guest/initrd.img" "$rundir/extra.cpio.gz" >"$rundir/initrd.img"
cp "$guest/vmlinuz" "$rundir/vmlinuz"

spid="" qpid="" tpid=""
stop_qemu() {
    if [ -n "$qpid" ]; then
        kill -TERM "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
        qpid=""
    fi
}
cleanup() {
    # QEMU first, then its backend.
    stop_qemu
    if [ -n "$tpid" ]; then
        kill -TERM "$tpid" 2>/dev/null || true
        wait "$tpid" 2>/dev/null || true
    fi
    if [ -n "$spid" ]; then
        kill -TERM "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fails=0 checks=0
show_logs() {
    echo "---- console (last 30 lines)" >&2
    tail -n 30 "$console" | tr -d '\r' >&2
    echo "---- qemu" >&2
    tail -n 20 "$rundir/qemu.log" >&2 2>/dev/null || true
    if [ -z "$direct" ]; then
        echo "---- vhost-user messages (last 30)" >&2
        tail -n 30 "$rundir/tap.log" >&2 2>/dev/null || true
    fi
    echo "---- vhca serve (last 30 lines)" >&2
    tail -n 30 "$rundir/serve.log" >&2 2>/dev/null || true
}
abort() {
    say "FAILED: $*"
    show_logs
    exit 1
}

NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} "$vhca" serve --vfs 1 --socket-dir "$sock" </dev/null >"$rundir/serve.out" 2>"$rundir/serve.log" &
spid=$!
rxe_peer_wait "$rundir/serve.log" 'serving' 1 30 || abort "vhca serve did not start"
say "vhca serve (pid $spid) on $sock"
lap "vhca serve up"
chardev_path=$sock/vf0.sock
if [ -z "$direct" ]; then
    python3 -u "$here/vhost-tap.py" "$sock/tap0.sock" "$sock/vf0.sock" >"$rundir/tap.log" 2>&1 &
    tpid=$!
    rxe_peer_wait "$rundir/tap.log" '^TAP-LISTENING' 1 30 || abort "vhost-tap.py did not start"
    chardev_path=$sock/tap0.sock
    say "vhost-user messages logged by vhost-tap.py between QEMU and vf0.sock: $rundir/tap.log"
fi

# ---- 3. QEMU 11 in the chroot ------------------------------------------------------------------------
append="console=ttyS0 quiet panic=-1 rdinit=/qemu-test-init vhca.qt.dev=1066"
# The guest kernel keeps to the first 256 MiB, so the device's rings can live above it.
[ -n "$start" ] && append+=" mem=256M vhca.qt.start=0x10000000"
qemu_args=(
    -machine q35 -accel tcg -m 512M -smp 1
    -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem
    -nodefaults -display none -no-reboot
    -kernel "$rundir/vmlinuz" -initrd "$rundir/initrd.img" -append "$append"
    -chardev "file,id=con,path=$console" -serial chardev:con
    -chardev "socket,id=vf0,path=$chardev_path"
    -device vhost-user-test-device-pci,chardev=vf0,virtio-id=38,num_vqs=3,vq_size=256,config_size=128
    -pidfile "$rundir/qemu.pid"
)
qemu_version=$(cat "$root/.vhca-qemu-ready")
say "boot: $qemu_version, log $console"
QT_TIMEOUT=$timeout_s qt_qemu_start "$root" "$rundir" "" "$rundir/qemu.log" "${qemu_args[@]}"
qpid=$QT_PID

rxe_peer_wait "$rundir/serve.log" 'frontend connected' 1 60 || abort "QEMU did not connect to vf0.sock"
lap "QEMU connected to the VF"
rxe_peer_wait "$console" '^VHCA-QT-PCI ' 1 "$timeout_s" '^VHCA-QT-FAILED' ||
    abort "the guest did not find the device"
lap "guest booted, device found"
rxe_peer_wait "$console" '^VHCA-QT-DONE' 1 "$timeout_s" '^VHCA-QT-FAILED' || abort "the guest did not finish"
lap "guest read config${start:+, started device}"
kill -0 "$qpid" 2>/dev/null || abort "QEMU exited early"

# ---- 5. Checks -----------------------------------------------------------------------------------------
clog=$(tr -d '\r' <"$console")
field() { sed -n "s/^$1 //p" <<<"$clog" | head -n1; }
grep '^VHCA-QT-\(PCI\|CAP\|NUMQ\|FEATURES\|STARTED\)' <<<"$clog" | sed 's/^/  guest: /'
cfg_hex=$(field VHCA-QT-CONFIG)
say "guest read the device config: $cfg_hex"

ctl=$("$vhca" ctl --json --socket-dir "$sock" vfs)
say "vhca ctl vfs: $ctl"
# The VF's identity as the backend reports it.
ctl_flat=$(tr -d ' \n' <<<"$ctl")
ctl_field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$ctl_flat"; }
gid=$(ctl_field gid)
mac=$(ctl_field mac)

# Expected config bytes from the identity: GID ::ffff:a.b.c.d -> 10 zero bytes, ff ff, a b c d.
gid_hex() {
    local ip=${1#::ffff:} a b c d
    IFS=. read -r a b c d <<<"$ip"
    printf '00000000000000000000ffff%02x%02x%02x%02x' "$a" "$b" "$c" "$d"
}
bytes() { printf '%s' "${cfg_hex:$((2 * $1)):$((2 * $2))}"; }

check "the guest sees 1af4:1066 (virtio ID 38)" grep -q '^VHCA-QT-PCI .* 0x1af4 0x1066' <<<"$clog"
check "the device has 3 queues (num_vqs=3)" test "$(field VHCA-QT-NUMQ)" = 3
check "device features offer VERSION_1 (bit 32)" \
    test $((0x$(field VHCA-QT-FEATURES) >> 32 & 1)) -eq 1
check "vhca ctl: vf0 connected once" grep -q '"connected":true,"connections":1' <<<"$ctl_flat"
check "the VF's identity is the default (GID ::ffff:10.200.0.1, MAC 02:56:48:43:00:00)" \
    test "$gid $mac" = "::ffff:10.200.0.1 02:56:48:43:00:00"
check "128 config bytes read" test "${#cfg_hex}" -eq 256
check "config version = 1 (offset 0)" test "$(bytes 0 4)" = 01000000
check "config phys_port_cnt = 1 (offset 4)" test "$(bytes 4 4)" = 01000000
check "config GID at 24 = $gid" test "$(bytes 24 16)" = "$(gid_hex "$gid")"
check "config MAC at 40 = $mac" test "$(bytes 40 6)" = "$(tr -d : <<<"$mac")"
check "config port_state ACTIVE (offset 46)" test "$(bytes 46 1)" = 04
check "config cqe_size 64 (offset 120)" test "$(bytes 120 4)" = 40000000
[ -n "$start" ] &&
    check "the guest started the device (DRIVER_OK)" grep -q '^VHCA-QT-STARTED status=15' <<<"$clog"
# The VF holds the guest's RAM: QEMU's memfd is mapped in vhca serve once memory was sent.
memfd_maps=$(grep -c 'memfd:mem' "/proc/$spid/maps" || true)
if [ -n "$start" ]; then
    check "vhca serve maps the guest memory (memfd:mem in /proc/$spid/maps: $memfd_maps)" test "$memfd_maps" -ge 1
fi
if [ -z "$direct" ]; then
    # What QEMU sent, as the tap saw it (the backend answered each: QEMU carried on).
    tlog=$(cat "$rundir/tap.log")
    count() { grep -c "^FRONTEND $1 " <<<"$tlog" || true; }
    say "vhost-user requests from QEMU: $(sed -n 's/^FRONTEND \([A-Z_0-9]*\) .*/\1/p' <<<"$tlog" | uniq -c | awk '{ printf "%s%s", sep, $2 ($1 > 1 ? "x" $1 : ""); sep = " " }')"
    check "QEMU negotiated (GET_FEATURES, SET_OWNER, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM)" \
        test "$(count GET_FEATURES)" -ge 1 -a "$(count SET_OWNER)" -eq 1 -a "$(count GET_PROTOCOL_FEATURES)" -ge 1 -a "$(count GET_QUEUE_NUM)" -ge 1
    check "each guest config read was a GET_CONFIG (32 reads: $(count GET_CONFIG))" test "$(count GET_CONFIG)" -ge 32
    if [ -n "$start" ]; then
        check "QEMU sent SET_FEATURES" test "$(count SET_FEATURES)" -ge 1
        check "QEMU sent the guest memory (ADD_MEM_REG: $(count ADD_MEM_REG), SET_MEM_TABLE: $(count SET_MEM_TABLE))" \
            test $(($(count ADD_MEM_REG) + $(count SET_MEM_TABLE))) -ge 1
        check "QEMU set up 3 vrings (SET_VRING_NUM/ADDR/BASE/KICK x3, SET_VRING_ENABLE)" \
            test "$(count SET_VRING_NUM)" -ge 3 -a "$(count SET_VRING_ADDR)" -ge 3 -a "$(count SET_VRING_BASE)" -ge 3 -a "$(count SET_VRING_KICK)" -ge 3 -a "$(count SET_VRING_ENABLE)" -ge 3
    fi
fi
lap "checks"

# ---- 6. Shutdown: QEMU first, then vhca serve --------------------------------------------------------
set +e
kill -TERM "$qpid"
wait "$qpid"
qrc=$?
set -e
qpid=""
check "QEMU stopped on SIGTERM without an abort (exit $qrc)" \
    bash -c '[ "$1" -eq 0 ] && ! grep -qi "assert\|abort" "$2"' _ "$qrc" "$rundir/qemu.log"
rxe_peer_wait "$rundir/serve.log" 'frontend disconnected' 1 30 || say "no 'frontend disconnected' in the VF log"
if [ -n "$tpid" ]; then
    wait "$tpid" || true
    tpid=""
fi
check "the VF saw QEMU go away (frontend disconnected)" grep -q 'frontend disconnected' "$rundir/serve.log"
lap "QEMU stopped"
set +e
kill -TERM "$spid"
wait "$spid"
src=$?
set -e
spid=""
check "vhca serve exited 0 on SIGTERM (exit $src)" test "$src" -eq 0
lap "vhca serve stopped"

say "timings:"
printf '  %s\n' "${timings[@]}"
say "total $(now)s; run directory $rundir"
if [ "$fails" -ne 0 ]; then
    show_logs
    say "FAILED: $fails of $checks checks"
    exit 1
fi
# A passing run leaves nothing behind unless --rundir was given.
[ -z "$own_rundir" ] || rm -rf "$rundir"
say "PASS: all $checks checks ($qemu_version, vhost-user-test-device-pci virtio-id=38)"
