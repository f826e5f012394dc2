#!/usr/bin/env bash
# Stock RDMA tools in a Linux guest on a vhca VF (issue 13), step 1 of the kernel driver
# (docs/guest-stack.md, "Built so far"): builds vhca_rdma.ko (guest-driver-tests/linux) against
# the headers of the guest image's kernel, boots the rxe peer's image (tools/rxe-peer: Debian's
# kernel, rdma-core's ibverbs-utils and ibverbs-providers) with the module and this directory's
# init added, under stock QEMU 11.1 (TCG, the chroot of tools/qemu-test/chroot.sh) with two VFs
# of one `vhca serve`:
#
#   VF 0  -device vhost-user-test-device-pci,virtio-id=38   (vhca_rdma attach_id=38)
#   VF 1  -device vhost-user-fs-pci, the carrier             (vhca_rdma carrier=1)
#
# and checks, for each VF, against the identity `vhca ctl vfs` reports on the host:
#   1. the driver binds it and its netdev carries the VF's MAC; the VF's IPv4 (from its GID)
#      on that netdev gives GID index 1 = ::ffff:IP;
#   2. `ibv_devices` lists the device (Debian's rxe provider bound it: driver id RXE, ABI 2);
#   3. `ibv_devinfo -v -d vhcaN` opens it: PORT_ACTIVE, link layer Ethernet, GID[1] ::ffff:IP
#      RoCE v2, the VF's node GUID;
#   4. rdma_rxe cannot load beside vhca_rdma and vhca_rdma cannot load beside rdma_rxe; after
#      rmmod (a device reset) vhca_rdma binds both VFs again.
#
#   tools/guest-stack/run.sh [--rundir DIR] [--kernel 6.1|6.12]
#
# Exit status: 0 passed (last line starts with PASS); 1 failed; 77 cannot run on this machine
# (the reason on stderr); 2 bad arguments. Environment: VHCA_BIN, QEMU_TEST_CHROOT, RXE_PEER_DIR,
# GUEST_STACK_DIR (default target/guest-stack[-6.12]).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${QEMU_TEST_CHROOT:-$repo/target/qemu-chroot}
# shellcheck source=../rxe-peer/lib.sh
. "$repo/tools/rxe-peer/lib.sh"
# shellcheck source=../qemu-test/lib.sh
. "$repo/tools/qemu-test/lib.sh"

rundir="" kernel=6.1
while [ $# -gt 0 ]; do
    case $1 in
        --rundir) rundir=$2; shift 2 ;;
        --kernel) kernel=$2; shift 2 ;;
        -h | --help) sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "guest-stack: unknown argument $1" >&2; exit 2 ;;
    esac
done
case $kernel in
    6.1) rxe_dir=${RXE_PEER_DIR:-$repo/target/rxe-peer} out=${GUEST_STACK_DIR:-$repo/target/guest-stack}; kernel_env="" ;;
    6.12) rxe_dir=${RXE_PEER_DIR:-$repo/target/rxe-peer-6.12} out=${GUEST_STACK_DIR:-$repo/target/guest-stack-6.12}; kernel_env=6.12 ;;
    *) echo "guest-stack: --kernel 6.1 or 6.12" >&2; exit 2 ;;
esac

say() { printf 'guest-stack: %s\n' "$*"; }
skip() {
    printf 'guest-stack: CANNOT RUN HERE: %s\n' "$*" >&2
    exit 77
}
[ "$(id -u)" -eq 0 ] || skip "needs root (chroot, network namespaces)"
for t in unshare chroot cpio gzip timeout ip make python3; do
    command -v "$t" >/dev/null || skip "$t not found"
done
command -v gcc-12 >/dev/null || skip "gcc-12 not found (apt-get install gcc-12): the guest kernel was built with it"

# QEMU (exit 77 passes through), the vhca binary, the rxe peer's image.
set +e
QEMU_TEST_CHROOT=$root "$repo/tools/qemu-test/chroot.sh"
rc=$?
set -e
[ "$rc" -eq 0 ] || exit "$rc"
if [ -n "${VHCA_BIN:-}" ]; then
    vhca=$VHCA_BIN
else
    (cd "$repo" && cargo build --release -q -p vhca)
    vhca=${CARGO_TARGET_DIR:-$repo/target}/release/vhca
fi
RXE_PEER_DIR=$rxe_dir RXE_PEER_KERNEL=$kernel_env "$repo/tools/rxe-peer/build.sh"
kver=$(ls "$rxe_dir/pkgroot/lib/modules" | head -n1)
kdir=/usr/src/linux-headers-$kver
case $kernel in
    6.1) hdr_pkg=linux-headers-amd64 ;;
    6.12) hdr_pkg=linux-headers-$kver ;;
esac
[ -f "$kdir/Makefile" ] || skip "no headers for the guest kernel $kver in $kdir (apt-get install $hdr_pkg)"

# The module, built out of tree in target/ (the source directory stays clean).
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=$out/build
rm -rf "$build"
mkdir -p "$build"
cp "$repo"/guest-driver-tests/linux/{Kbuild,*.c,*.h} "$build/"
say "building vhca_rdma.ko against $kdir"
make -s -C "$kdir" M="$build" CC=gcc-12 modules >"$out/build.log" 2>&1 || {
    cat "$out/build.log" >&2
    say "FAILED: the module does not build against $kver"
    exit 1
}
if grep -q 'warning:' "$out/build.log"; then
    cat "$out/build.log" >&2
    say "FAILED: the module builds with warnings"
    exit 1
fi
vermagic=$(modinfo -F vermagic "$build/vhca_rdma.ko" 2>/dev/null || strings "$build/vhca_rdma.ko" | sed -n 's/^vermagic=//p')
say "built: vermagic $vermagic"

# The image: the rxe peer's initrd plus a cpio with the module and the init.
stage=$out/stage
rm -rf "$stage"
mkdir -p "$stage/usr/lib/guest-stack"
cp "$here/init" "$stage/guest-stack-init"
chmod 0755 "$stage/guest-stack-init"
cp "$build/vhca_rdma.ko" "$stage/usr/lib/guest-stack/"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --owner=0:0 --quiet) |
    gzip -n -6 >"$out/extra.cpio.gz"
cat "$rxe_dir/initrd.img" "$out/extra.cpio.gz" >"$out/initrd.img"
cp "$rxe_dir/vmlinuz" "$out/vmlinuz"
rm -rf "$stage" "$out/extra.cpio.gz"

own_rundir=""
[ -n "$rundir" ] || { rundir=$(mktemp -d /tmp/vhca-guest-stack.XXXXXX); own_rundir=1; }
mkdir -p "$rundir"
rundir=$(cd "$rundir" && pwd)
sock=$rundir/sock
rm -rf "$sock"
mkdir -p "$sock"
console=$rundir/console.log
: >"$console"
ns=vhca-gs-$$

spid="" qpid=""
cleanup() {
    # QEMU before its back-end (QEMU aborts when a back-end vanishes under a started device).
    if [ -n "$qpid" ]; then kill -TERM "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; fi
    if [ -n "$spid" ]; then kill -TERM "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; fi
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fails=0 checks=0
show_logs() {
    echo "---- console (last 60 lines)" >&2
    tail -n 60 "$console" | tr -d '\r' >&2
    echo "---- qemu" >&2
    tail -n 20 "$rundir/qemu.log" >&2 2>/dev/null || true
    echo "---- vhca serve (last 20 lines)" >&2
    tail -n 20 "$rundir/serve.log" >&2 2>/dev/null || true
}
abort() {
    say "FAILED: $*"
    show_logs
    exit 1
}

ip netns add "$ns"
ip -n "$ns" link set lo up
NO_COLOR=1 RUST_LOG=info ip netns exec "$ns" "$vhca" serve --vfs 2 --socket-dir "$sock" </dev/null >"$rundir/serve.out" 2>"$rundir/serve.log" &
spid=$!
rxe_peer_wait "$rundir/serve.log" 'serving' 1 30 || abort "vhca serve did not start"
ip netns exec "$ns" "$vhca" ctl --json --socket-dir "$sock" vfs >"$rundir/vfs.json" || abort "vhca ctl vfs failed"

cp "$out/vmlinuz" "$out/initrd.img" "$rundir/"
append="console=ttyS0 quiet panic=-1 rdinit=/guest-stack-init gs.modargs=attach_id=38,carrier=1 gs.ndev=2"
qemu_args=(
    -machine q35 -accel tcg -m 768M -smp 1
    -object memory-backend-memfd,id=mem,size=768M,share=on -numa node,memdev=mem
    -nodefaults -display none -no-reboot
    -kernel "$rundir/vmlinuz" -initrd "$rundir/initrd.img" -append "$append"
    -chardev "file,id=con,path=$console" -serial chardev:con
    -chardev "socket,id=vf0,path=$sock/vf0.sock"
    -device vhost-user-test-device-pci,chardev=vf0,virtio-id=38,num_vqs=3,vq_size=256,config_size=128,addr=0x4
    -chardev "socket,id=vf1,path=$sock/vf1.sock"
    -device vhost-user-fs-pci,chardev=vf1,tag=vhca,num-request-queues=2,addr=0x5
)
say "boot: kernel $kver, $(cat "$root/.vhca-qemu-ready"), console $console"
t0=$SECONDS
qt_qemu_start "$root" "$rundir" "$ns" "$rundir/qemu.log" "${qemu_args[@]}"
qpid=$QT_PID
rxe_peer_wait "$console" '^(GS-DONE|GS-FAILED)' 1 300 || abort "the guest did not finish (no GS-DONE)"
grep -aq '^GS-DONE' "$console" || abort "the guest failed: $(grep -a '^GS-FAILED' "$console" | tr -d '\r')"
say "guest done after $((SECONDS - t0)) s"
grep -a '^GS-UNBIND' "$console" | tr -d '\r' | sed 's/^GS-UNBIND /guest-stack: the init took back /' || true
wait "$qpid" 2>/dev/null || true
qpid=""

con=$rundir/console.txt
tr -d '\r' <"$console" >"$con"
gsout() { awk -v m="GS-OUT $1: " 'index($0, m) == 1 { print substr($0, length(m) + 1) }' "$con"; }
step_rc() { sed -n "s/^GS-STEP $1 rc=\\([0-9]*\\).*/\\1/p" "$con" | head -n1; }
gsout devices | sed 's/^/  ibv_devices| /'

# Each VF of the serve, found in the guest by its MAC.
for vf in 0 1; do
    read -r mac gid guid < <(python3 -c 'import json,sys
v = json.load(open(sys.argv[1]))[int(sys.argv[2])]
print(v["mac"], v["gid"], v["node_guid"])' "$rundir/vfs.json" "$vf")
    ip4=${gid#::ffff:}
    line=$(grep "^GS-DEV .* mac=$mac " "$con" || true)
    check "VF $vf (mac $mac, gid $gid): bound, its netdev carries its MAC" test -n "$line"
    [ -n "$line" ] || continue
    name=$(cut -d' ' -f2 <<<"$line")
    say "VF $vf is $name: $line"
    check "VF $vf: $name's IP is the VF's ($ip4)" grep -q "^GS-DEV $name ip=$ip4 " <<<"$line"
    check "VF $vf: ibv_devices lists $name" grep -Eq "^[[:space:]]+$name[[:space:]]" <(gsout devices)
    gsout "devinfo-$name" >"$rundir/devinfo-$name.txt"
    sed 's/^/  ibv_devinfo| /' "$rundir/devinfo-$name.txt" | head -n 12
    check "VF $vf: ibv_devinfo -v: hca_id $name" grep -Eq "^hca_id:[[:space:]]+$name\$" "$rundir/devinfo-$name.txt"
    check "VF $vf: ibv_devinfo -v: port PORT_ACTIVE" grep -Eq "state:[[:space:]]+PORT_ACTIVE" "$rundir/devinfo-$name.txt"
    check "VF $vf: ibv_devinfo -v: link layer Ethernet" grep -Eq "link_layer:[[:space:]]+Ethernet" "$rundir/devinfo-$name.txt"
    check "VF $vf: ibv_devinfo -v: GID[1] ::ffff:$ip4, RoCE v2" grep -Eq "GID\\[ *1\\]:[[:space:]]+::ffff:${ip4//./\\.}, RoCE v2" "$rundir/devinfo-$name.txt"
    dguid=$(sed -E 's/^(....)(....)(....)(....)$/\1:\2:\3:\4/' <<<"$guid")
    check "VF $vf: ibv_devinfo -v: node_guid $dguid" grep -Eq "node_guid:[[:space:]]+$dguid\$" "$rundir/devinfo-$name.txt"
done

check "rdma_rxe refused while vhca_rdma is loaded (insmod rc $(step_rc rxe-beside-vhca))" test "$(step_rc rxe-beside-vhca)" != 0
check "the kernel log says why" grep -q 'refusing rdma_rxe' <(gsout dmesg)
check "rmmod vhca_rdma (resets the VFs) removes both devices" grep -q '^GS-STEP rmmod-vhca rc=0 left=0$' "$con"
check "rdma_rxe loads alone" test "$(step_rc rxe-alone)" = 0
check "vhca_rdma refused while rdma_rxe is loaded (insmod rc $(step_rc vhca-beside-rxe))" test "$(step_rc vhca-beside-rxe)" != 0
check "the kernel log says why" grep -q 'rdma_rxe is loaded' <(gsout dmesg)
check "after rmmod rdma_rxe, vhca_rdma binds both VFs again" grep -q '^GS-STEP vhca-again rc=0 devices=2$' "$con"
check "ibv_devices lists them again" test "$(gsout devices-again | grep -Ec '^[[:space:]]+vhca[0-9]')" -eq 2
check "no kernel warning or oops in dmesg" bash -c '! grep -Eq "WARNING:|BUG:|Oops|Call Trace" "$1"' _ "$con"

if [ "$fails" -ne 0 ]; then
    show_logs
    say "FAILED: $fails of $checks checks"
    exit 1
fi
[ -z "$own_rundir" ] || rm -rf "$rundir"
echo "PASS: guest-stack step 1 on kernel $kver: vhca_rdma binds a VF (ID 38) and a carrier VF (ID 26), ibv_devices/ibv_devinfo -v show them ACTIVE with GID 1 = ::ffff:IP and the VF's MAC, node GUID ($checks checks)"
