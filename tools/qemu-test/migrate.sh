#!/usr/bin/env bash
# Live migration of a running VM with vhca VFs, by stock QEMU 11.1, three hops (A -> B -> A ->
# B), while the guest runs RDMA traffic against an unmodified Linux rxe peer and a vhca peer.
#
#   namespace BR    bridge br0 (the network between the hosts); the rxe peer guest
#                   (tools/rxe-peer, 10.77.0.21, rdma_rxe on its virtio-net)
#   namespace SRC   host A (10.77.0.1): QEMU A and `vhca serve --pf-index 1 --vfs 3 --udp-ip
#                   10.77.0.11`; ports vf0..vf2 (veths into br0) with the VFs' MACs and addresses
#                   10.77.0.11-13; a host bridge with QEMU's TAP (the guest's own NIC, 10.77.0.31,
#                   for the programs' TCP side channels) and an uplink into br0
#   namespace DST   host B (10.77.0.2): QEMU B (-incoming) and `vhca serve --pf-index 2 --vfs 3
#                   --udp-ip 10.78.0.12 --accept-identity`; ports vf0..vf2 with the same MACs, down
#                   until the VFs come; the same host bridge, TAP and uplink
#   namespace PEER  `vhca serve --pf-index 3 --udp-ip 10.77.0.41`: the vhca peer
#
# The VM (the vhca guest, tools/vhca-guest) has the three VFs of the serve process of the host
# it runs on, each as QEMU's migratable carrier `-device vhost-user-fs-pci` (docs/qemu.md), and
# drives them from user space over virtio-pci. Each hop:
#   1. the destination QEMU starts with -incoming (its VFs: the destination serve's sockets);
#   2. the peers' servers start: on the rxe guest `ibv_rc_pingpong` and `ib_write_bw`, in PEER
#      `vhca opcodes --vf` (every RC opcode and UD, data verified on both sides);
#   3. the guest runs the clients, one per VF: `vhca pingpong --chk --vf pci:00:04.0` (every reply
#      checked byte for byte: ibv_rc_pingpong echoes what it receives) against
#      ibv_rc_pingpong, `vhca perf write_bw --vf pci:00:05.0` against ib_write_bw, and
#      `vhca opcodes --vf pci:00:06.0` against the vhca peer;
#   4. once all three are in their data phase, QMP `migrate`; when QEMU reports "completed"
#      the VFs' addresses and MACs move to the destination's ports (and a gratuitous ARP);
#   5. every program finishes on the destination, exit 0 on both sides, data verified; rxe's
#      counters show no retry-exceeded (no broken connection); the destination serve shows the
#      VFs with their identities (PF 1's MACs and GIDs) and bound their addresses.
# Then a VM without VFs (same image, memory and QEMU) migrates once in the same run, for the
# downtime comparison. Prints per hop: QEMU's downtime and total time, vhca's blackout per VF
# (source suspend to destination resume, from the serve logs), each program's stall.
#
#   tools/qemu-test/migrate.sh [--rundir DIR] [--hops N] [--pp-iters N] [--bw-iters N]
#                              [--op-iters N]
#
# Exit status: 0 passed (the last line starts with PASS); 1 failed; 77 cannot run on this
# machine (reason printed); 2 bad arguments. Environment: VHCA_BIN, QEMU_TEST_CHROOT,
# RXE_PEER_DIR, VHCA_GUEST_DIR, VHCA_NETNS_PREFIX (default vhca-q-).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${QEMU_TEST_CHROOT:-$repo/target/qemu-chroot}
# shellcheck source=../rxe-peer/lib.sh
. "$repo/tools/rxe-peer/lib.sh"
# shellcheck source=lib.sh
. "$here/lib.sh"

# Iterations: each run lasts 15-20 s under TCG on two cores, so every program is still in its
# data phase when QEMU stops the VM (checked: each VF resumes on the destination).
rundir="" hops=3 pp_iters=6000 bw_iters=20000 op_iters=4000
while [ $# -gt 0 ]; do
    case $1 in
        --rundir) rundir=$2 ;;
        --hops) hops=$2 ;;
        --pp-iters) pp_iters=$2 ;;
        --bw-iters) bw_iters=$2 ;;
        --op-iters) op_iters=$2 ;;
        -h | --help) sed -n '2,38p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "migrate.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2 || { echo "migrate.sh: $1 needs a value" >&2; exit 2; }
done

say() { printf 'qemu-migrate: %s\n' "$*"; }
skip() {
    printf 'qemu-migrate: CANNOT RUN HERE: %s\n' "$*" >&2
    exit 77
}
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, TAP devices, chroot)"
for t in unshare chroot ip python3 base64 mkfifo qemu-system-x86_64; do
    command -v "$t" >/dev/null || skip "$t not found"
done
[ -e /dev/net/tun ] || skip "no /dev/net/tun"

qt_prepare_guest

own_rundir=""
[ -n "$rundir" ] || { rundir=$(mktemp -d /tmp/vhca-qemu-migrate.XXXXXX); own_rundir=1; }
mkdir -p "$rundir"
rundir=$(cd "$rundir" && pwd)
cp "$gdir/vmlinuz" "$gdir/initrd.img" "$rundir/"

P=${VHCA_NETNS_PREFIX:-vhca-q-}
BR=${P}br SRC=${P}src DST=${P}dst PEER=${P}peer
NVF=3
GUEST_IP=10.77.0.31 RXE_IP=10.77.0.21 PEER_IP=10.77.0.41
# The vhca peer's program, and the line of its client that says the data phase began.
PEER_PROG=${VHCA_PEER_PROG:-opcodes} PEER_READY=${VHCA_PEER_READY:-vhca opcodes: data phase}
vf_ip() { echo "10.77.0.$((11 + $1))"; }
# PF 1's VF i (Pf::default_identity): checked against `vhca ctl vfs` below.
vf_mac() { printf '02:56:48:43:01:%02x' "$1"; }
vf_pci() { printf '0000:00:%02x.0' $((4 + $1)); }

pids=()
qemu_pids=()
cleanup() {
    # QEMUs before their back-ends.
    for p in "${qemu_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${qemu_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    for ns in "$SRC" "$DST" "$PEER" "$BR"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fails=0 checks=0
fail() {
    say "FAILED: $*"
    for f in "$rundir"/console-*.log; do
        [ -f "$f" ] && { echo "---- $f (last 25 lines)" >&2; tr -d '\r' <"$f" | tail -n 25 >&2; }
    done
    for f in "$rundir"/qemu-*.log "$rundir"/serve-*.log "$rundir"/peer-*.err; do
        [ -s "$f" ] && { echo "---- $f (last 15 lines)" >&2; tail -n 15 "$f" >&2; }
    done
    [ -f "$rundir/rxe/console.log" ] && { echo "---- rxe guest (last 20 lines)" >&2; tr -d '\r' <"$rundir/rxe/console.log" | tail -n 20 >&2; }
    exit 1
}

# parts NAME: what the last migration's downtime of QEMU NAME (the source) was made of, as
# "VF share X ms (ring stops A, device state B), RAM C ms" from downtime.py.
parts() {
    python3 "$here/downtime.py" "$rundir/trace-$1.log" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("%s ms stopped; the VFs %s ms (ring stops %s, device state %s), final RAM pass %s ms" % (
    d.get("stopped_to_end_ms"), d.get("vf_ms"), d.get("vhost_stop_ms"), d.get("vhost_state_ms"), d.get("ram_ms")))'
}

# ---- Network ----------------------------------------------------------------------------------
for ns in "$BR" "$SRC" "$DST" "$PEER"; do
    ip netns del "$ns" 2>/dev/null || true
    ip netns add "$ns"
    # No IPv6: a port with a VF's MAC must stay silent until the VF arrives (no router
    # solicitations or duplicate address detection), or the bridge would learn it early.
    ip netns exec "$ns" sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
        echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6'
    ip -n "$ns" link set lo up
done
ip -n "$BR" link add br0 type bridge
ip -n "$BR" link set br0 up
for pair in "$SRC:s" "$DST:d"; do
    ns=${pair%%:*} tag=${pair#*:}
    # Three ports on one subnet: each answers ARP only for its own address, and a packet from
    # a VF's address leaves through that VF's port (policy routing, one table per VF).
    ip netns exec "$ns" sh -c 'for k in all default; do
        echo 1 >/proc/sys/net/ipv4/conf/$k/arp_ignore; echo 2 >/proc/sys/net/ipv4/conf/$k/arp_announce; done'
    for i in $(seq 0 $((NVF - 1))); do
        ip link add "vf$i" netns "$ns" type veth peer name "p$tag$i" netns "$BR"
        ip -n "$BR" link set "p$tag$i" master br0 up
        ip -n "$ns" link set "vf$i" address "$(vf_mac "$i")"
        ip -n "$ns" rule add from "$(vf_ip "$i")" table $((100 + i))
    done
done
# The destination's own VF addresses (each slot's until a VF migrates into it).
for i in $(seq 0 "$NVF"); do ip -n "$DST" addr add "10.78.0.$((12 + i))/32" dev lo; done
ip link add eth0 netns "$PEER" type veth peer name pp netns "$BR"
ip -n "$BR" link set pp master br0 up
ip -n "$PEER" addr add "$PEER_IP/24" dev eth0
ip -n "$PEER" link set eth0 up
# Each host: a bridge with the TAP of its QEMU (the guest's NIC) and an uplink into br0; the
# host's own address (the migration stream between the QEMUs) on that bridge.
for pair in "$SRC:A:1" "$DST:B:2"; do
    IFS=: read -r ns h n <<<"$pair"
    ip -n "$ns" link add brh type bridge
    ip link add up0 netns "$ns" type veth peer name "pu$h" netns "$BR"
    ip -n "$BR" link set "pu$h" master br0 up
    ip -n "$ns" tuntap add dev "qt$h" mode tap
    ip -n "$ns" link set "qt$h" master brh up
    ip -n "$ns" link set up0 master brh up
    ip -n "$ns" addr add "10.77.0.$n/24" dev brh
    ip -n "$ns" link set brh up
done
host_ip() { [ "$1" = "$SRC" ] && echo 10.77.0.1 || echo 10.77.0.2; }

# vf_up NS I / vf_down NS I: VF i's port with its address (and its policy route), or without.
vf_up() {
    ip -n "$1" link set "vf$2" up
    ip -n "$1" addr add "$(vf_ip "$2")/24" dev "vf$2"
    ip -n "$1" route replace 10.77.0.0/24 dev "vf$2" src "$(vf_ip "$2")" table $((100 + $2))
}
vf_down() {
    ip -n "$1" addr del "$(vf_ip "$2")/24" dev "vf$2"
    # Down: the old side sends nothing more from the VF's MAC, and the bridge forgets it.
    ip -n "$1" link set "vf$2" down
}
for i in $(seq 0 $((NVF - 1))); do vf_up "$SRC" "$i"; done
# The address of the spare VF $NVF (the never-started one), on lo: it never sends.
ip -n "$SRC" addr add "$(vf_ip "$NVF")/32" dev lo

# What runs when QEMU says the migration completed: the VFs' ports move (as SR-IOV VFs' MACs
# and addresses do between hosts), each announced with a gratuitous ARP. One `ip -batch` per
# namespace and the announcements in parallel: every millisecond here is stall for the peers.
cat >"$rundir/move.sh" <<EOF
#!/bin/sh
# move.sh FROM-NS TO-NS
set -e
$(declare -f vf_ip)
for i in $(seq -s ' ' 0 $((NVF - 1))); do
    echo "addr del \$(vf_ip \$i)/24 dev vf\$i"
    echo "link set vf\$i down"
done | ip -n "\$1" -batch -
for i in $(seq -s ' ' 0 $((NVF - 1))); do
    echo "link set vf\$i up"
    echo "addr add \$(vf_ip \$i)/24 dev vf\$i"
    echo "route replace 10.77.0.0/24 dev vf\$i src \$(vf_ip \$i) table \$((100 + i))"
done | ip -n "\$2" -batch -
for i in $(seq -s ' ' 0 $((NVF - 1))); do
    ip netns exec "\$2" "$vhca" announce --dev "vf\$i" --ip "\$(vf_ip \$i)" --mac "02:56:48:43:01:0\$i" &
done
wait
EOF
chmod +x "$rundir/move.sh"

# ---- vhca serve processes --------------------------------------------------------------------------
start_serve() { # name ns pf ip vfs extra...
    local name=$1 ns=$2 pf=$3 ip=$4 n=$5
    shift 5
    rm -rf "${rundir:?}/$name"
    mkdir -p "$rundir/$name"
    : >"$rundir/serve-$name.log"
    NO_COLOR=1 RUST_LOG=info ip netns exec "$ns" "$vhca" serve --pf-index "$pf" --vfs "$n" \
        --udp-ip "$ip" --socket-dir "$rundir/$name" "$@" </dev/null \
        >"$rundir/serve-$name.out" 2>"$rundir/serve-$name.log" &
    pids+=("$!")
    rxe_peer_wait "$rundir/serve-$name.out" 'ready' 1 30 || fail "vhca serve $name did not start"
}
# One VF more than the VM uses: the never-started VM below takes VF $NVF.
start_serve a "$SRC" 1 "$(vf_ip 0)" $((NVF + 1))
start_serve b "$DST" 2 10.78.0.12 $((NVF + 1)) --accept-identity
start_serve c "$PEER" 3 "$PEER_IP" 1
for i in $(seq 0 $((NVF - 1))); do
    mac=$("$vhca" ctl --json --socket-dir "$rundir/a" vfs |
        python3 -c "import json,sys; print(json.load(sys.stdin)[$i]['mac'])")
    [ "$mac" = "$(vf_mac "$i")" ] || fail "serve a's VF $i has MAC $mac, the script assumed $(vf_mac "$i")"
done

# ---- The rxe peer --------------------------------------------------------------------------------
mkdir -p "$rundir/rxe"
"$repo/tools/rxe-peer/run.sh" --netns "$BR" --tap rxt --bridge br0 --ip "$RXE_IP/24" --ctl loop \
    --listen 18515,18516 --rundir "$rundir/rxe" --timeout 3600 >"$rundir/rxe/run.out" 2>&1 &
pids+=("$!")
rxlog=$rundir/rxe/console.log
touch "$rxlog"
rx_n=0
rx_run() {
    rx_n=$((rx_n + 1))
    rxe_peer_send "$rundir/rxe" "$(rxe_peer_run_line "$1")"
}
rx_counter() { # NAME K: rxe's counter after its command K (0 before the first)
    [ "$2" -gt 0 ] || { echo 0; return; }
    rxe_peer_field "$rxlog" "VHCA-COUNTER $1" "$2"
}

# ---- The VM --------------------------------------------------------------------------------------
# qemu_vm NAME SERVE TAP INCOMING-PORT: starts the VM's QEMU (with -incoming when the port is
# not empty), its console in console-NAME.log, control port ctl-NAME, QMP qmp-NAME.sock.
qemu_vm() {
    local name=$1 serve=$2 tap=$3 port=$4 i
    local -a args ctl
    mapfile -t ctl < <(vg_ctl_args "$rundir" "ctl-$name")
    : >"$rundir/console-$name.log"
    args=(
        -machine q35 -accel tcg -m 512M -smp 1
        -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem
        -nodefaults -display none -no-reboot
        -kernel "$rundir/vmlinuz" -initrd "$rundir/initrd.img"
        -append "console=ttyS0 quiet panic=-1 rdinit=/vhca-guest-init vhca.ip=$GUEST_IP/24 vhca.hugepages=96"
        -chardev "file,id=con,path=$rundir/console-$name.log" -serial chardev:con "${ctl[@]}"
        -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no"
        -device virtio-net-pci,netdev=n0,mac=52:54:00:4d:00:31,addr=0x3,romfile=
        -qmp "unix:$rundir/qmp-$name.sock,server=on,wait=off"
        # What the downtime is made of (downtime.py): QEMU's own per-device downtime counters.
        -msg timestamp=on -D "$rundir/trace-$name.log"
        -trace vmstate_downtime_checkpoint -trace vmstate_downtime_save
        -trace vhost_dev_stop_in -trace vhost_dev_stop_out
    )
    if [ -n "$serve" ]; then
        local which
        which=$(seq 0 $((NVF - 1)))
        case $serve in *:*) which=${serve#*:} serve=${serve%%:*} ;; esac
        for i in $which; do
            args+=(-chardev "socket,id=vf$i,path=$rundir/$serve/vf$i.sock"
                -device "vhost-user-fs-pci,chardev=vf$i,tag=vhca$i,num-request-queues=2,addr=$(printf '0x%x' $((4 + i)))")
        done
    fi
    local ns=$SRC
    [ "$tap" = qtB ] && ns=$DST
    [ -z "$port" ] || args+=(-incoming "tcp:$(host_ip "$ns"):$port")
    qt_qemu_start "$root" "$rundir" "$ns" "$rundir/qemu-$name.log" "${args[@]}"
    qemu_pids+=("$QT_PID")
    eval "qpid_$name=$QT_PID"
    # QMP answers once QEMU has set up every device (and connected its back-ends).
    local n=0
    until [ -S "$rundir/qmp-$name.sock" ] && python3 "$here/qmp.py" "$rundir/qmp-$name.sock" cmd query-status >/dev/null 2>&1; do
        kill -0 "$QT_PID" 2>/dev/null || fail "QEMU $name exited: $(tail -n 5 "$rundir/qemu-$name.log")"
        n=$((n + 1))
        [ "$n" -le 600 ] || fail "QEMU $name: no QMP"
        sleep 0.1
    done
}
qmp() { python3 "$here/qmp.py" "$rundir/qmp-$1.sock" "${@:2}"; }
# quit_vm NAME: ends a QEMU through QMP and waits for it.
quit_vm() {
    local pid
    pid=$(eval echo "\$qpid_$1")
    qmp "$1" cmd quit >/dev/null 2>&1 || true
    wait "$pid" 2>/dev/null || true
}

say "boot the VM on host A ($SRC's vhca serve): $(cat "$root/.vhca-qemu-ready")"
t_boot=$SECONDS
qemu_vm A1 a qtA ""
cur=A1 cur_ctl=ctl-A1
rxe_peer_wait "$rundir/console-A1.log" '^VHCA-GUEST-READY ' 1 240 '^VHCA-GUEST-FAILED' || fail "the VM did not come up"
say "VM up after $((SECONDS - t_boot)) s: $(tr -d '\r' <"$rundir/console-A1.log" | grep '^VHCA-GUEST-READY')"
for i in $(seq 0 $((NVF - 1))); do
    grep -aq "^VHCA-GUEST-VF $(vf_pci "$i") 0x105a" "$rundir/console-A1.log" || fail "the guest lacks VF $i at $(vf_pci "$i")"
done
rxe_peer_wait "$rxlog" '^VHCA-WAIT-CMD' 1 240 || fail "the rxe peer did not come up"
say "rxe peer up: $(tr -d '\r' <"$rxlog" | grep '^VHCA-PEER-READY')"

g_n=0
g_run() { # CMD: starts CMD in the guest (through the current QEMU's control port)
    g_n=$((g_n + 1))
    vg_run "$rundir" "$cur_ctl" "$1"
}
# g_out N: guest command N's output, whichever QEMU printed it.
g_out() { vg_output "$1" "$rundir"/console-*.log; }
json_num() { # JSON-TEXT KEY: a number anywhere in a one-line JSON object
    sed -n "s/.*\"$2\": *\([0-9.e+-]*\).*/\1/p" <<<"$1" | head -n1
}

summary=()
run_hop() { # hop from-serve to-serve from-ns to-ns dst-name dst-tap
    local hop=$1 fs=$2 ts=$3 fns=$4 tns=$5 dname=$6 dtap=$7
    local port=$((4700 + hop)) i
    say "== hop $hop: the VM from $fns to $tns (QEMU $cur -> $dname)"
    qemu_vm "$dname" "$ts" "$dtap" "$port"

    # The peers' servers.
    rx_run "ib_write_bw -d rxe0 -x 1 -F -s 4096 -n $bw_iters -p 18516 & bw=\$!; ibv_rc_pingpong -g 1 -d rxe0 -s 4096 -n $pp_iters; pp=\$?; wait \$bw; w=\$?; echo \"rxe: ibv_rc_pingpong exit \$pp, ib_write_bw exit \$w\"; [ \$pp -eq 0 ] && [ \$w -eq 0 ]"
    rxe_peer_wait "$rxlog" '^VHCA-CMD-LISTENING' "$rx_n" 120 '^VHCA-CMD-EXIT' "$rx_n" || fail "hop $hop: rxe servers did not listen"
    : >"$rundir/peer-$hop.err"
    ip netns exec "$PEER" "$vhca" $PEER_PROG --vf "$rundir/c/vf0.sock" ${VHCA_PEER_SERVER_ARGS:-} --json \
        >"$rundir/peer-$hop.out" 2>"$rundir/peer-$hop.err" &
    local ppid=$!
    pids+=("$ppid")
    rxe_peer_wait "$rundir/peer-$hop.err" 'listening' 1 60 || fail "hop $hop: vhca opcodes server did not start: $(cat "$rundir/peer-$hop.err")"

    # The guest's clients, one per VF.
    local first=$((g_n + 1))
    # -u 16: a 268 ms ACK timeout, 2.1 s before retry-exceeded (opcodes' default). With
    # ibv_rc_pingpong's 14 (67 ms, 0.5 s) a switch-over on this loaded two-core machine (three
    # TCG guests, QEMU's downtime, the port move) sometimes outlasts the budget; rxe itself
    # retries forever (docs/interop.md, "ACK timeout under loss").
    g_run "vhca pingpong --vf pci:$(vf_pci 0) $RXE_IP -s 4096 -n $pp_iters -u 16 --chk --json"
    g_run "vhca perf write_bw --vf pci:$(vf_pci 1) $RXE_IP -p 18516 -s 4096 -n $bw_iters -u 16 --json"
    g_run "vhca $PEER_PROG --vf pci:$(vf_pci 2) $PEER_IP -n $op_iters --json"
    local clog=$rundir/console-$cur.log
    local ended="^VHCA-CMD-EXIT ($first|$((first + 1))|$((first + 2))) "
    rxe_peer_wait "$clog" "^VHCA-OUT $first: vhca pingpong: data phase" 1 120 "$ended" || fail "hop $hop: pingpong did not start"
    rxe_peer_wait "$clog" "^VHCA-OUT $((first + 1)): vhca perf: remote address" 1 120 "$ended" || fail "hop $hop: perf did not start"
    rxe_peer_wait "$clog" "^VHCA-OUT $((first + 2)): $PEER_READY" 1 120 "$ended" || fail "hop $hop: the vhca-peer client did not start"
    tr -d '\r' <"$clog" | grep -Eq "$ended" && fail "hop $hop: a program ended before the migration began"

    # The migration, with every program in its data phase.
    local resumed_before=()
    for i in $(seq 0 $((NVF - 1))); do
        resumed_before+=("$(grep -ac "VF resumed vf=$i\$" "$rundir/serve-$ts.log" || true)")
    done
    local mig
    mig=$(qmp "$cur" migrate "tcp:$(host_ip "$tns"):$port" --on-complete "$rundir/move.sh $fns $tns" --timeout 600) ||
        fail "hop $hop: migration failed: $mig"
    qmp "$dname" wait-status running 60 || fail "hop $hop: the destination did not run"
    local down total
    down=$(json_num "$mig" downtime) total=$(json_num "$mig" total-time)
    say "hop $hop: QEMU: downtime $down ms, total $total ms (setup $(json_num "$mig" setup-time) ms); moving the VF ports took $(json_num "$mig" on-complete-ms) ms"
    echo "$mig" >"$rundir/migration-$hop.json"
    local made
    made=$(parts "$cur")
    say "hop $hop: downtime on the source: $made"
    local old=$cur
    cur=$dname cur_ctl=ctl-$dname

    # Every VF was running when QEMU stopped the VM: the destination resumed each (a VF whose
    # program had already ended would have been reset, and is only loaded).
    for i in $(seq 0 $((NVF - 1))); do
        local now_resumed
        now_resumed=$(grep -ac "VF resumed vf=$i\$" "$rundir/serve-$ts.log" || true)
        check "hop $hop: VF $i was running across the switch-over ($ts resumed it)" test "$now_resumed" -gt "${resumed_before[$i]}"
    done
    # Everything finishes on the destination.
    local dlog=$rundir/console-$dname.log g rc
    for g in $first $((first + 1)) $((first + 2)); do
        if tr -d '\r' <"$rundir/console-$old.log" | grep -q "^VHCA-CMD-EXIT $g "; then
            fail "hop $hop: guest program $g ended before the switch-over (raise its iterations)"
        fi
        rxe_peer_wait "$dlog" "^VHCA-CMD-EXIT $g " 1 900 '^VHCA-GUEST-FAILED' || fail "hop $hop: guest command $g did not end on $dname"
        rc=$(rxe_peer_field "$dlog" "VHCA-CMD-EXIT $g" 1 | cut -d' ' -f1)
        check "hop $hop: guest program $g finished on the destination, exit $rc" test "$rc" -eq 0
        [ "$rc" -eq 0 ] || g_out "$g" | sed 's/^/  guest| /'
    done
    rxe_peer_wait "$rxlog" '^VHCA-CMD-EXIT' "$rx_n" 300 || fail "hop $hop: rxe servers did not end"
    rc=$(rxe_peer_field "$rxlog" VHCA-CMD-EXIT "$rx_n")
    check "hop $hop: ibv_rc_pingpong and ib_write_bw (rxe) exit 0 ($rc)" test "$rc" = 0
    local prc=0
    wait "$ppid" || prc=$?
    check "hop $hop: vhca opcodes server (vhca peer) exit 0 ($prc)" test "$prc" -eq 0
    [ "$prc" -eq 0 ] || sed 's/^/  peer| /' "$rundir/peer-$hop.err"
    local k bad=""
    for k in retry_exceeded_err completer_retry_err; do
        d=$(($(rx_counter "$k" "$rx_n") - $(rx_counter "$k" $((rx_n - 1)))))
        [ "$k" = retry_exceeded_err ] && [ "$d" -ne 0 ] && bad=1
        say "hop $hop: rxe $k +$d"
    done
    check "hop $hop: rxe saw no broken connection (retry_exceeded_err unchanged)" test -z "$bad"

    # Where the VFs are now.
    for i in $(seq 0 $((NVF - 1))); do
        check "hop $hop: $(vf_ip "$i") left $fns and is on $tns's vf$i" \
            sh -c "! ip -n $fns -4 addr show dev vf$i | grep -q '$(vf_ip "$i")/' && ip -n $tns -4 addr show dev vf$i | grep -q '$(vf_ip "$i")/'"
    done
    local vfs
    vfs=$("$vhca" ctl --json --socket-dir "$rundir/$ts" vfs)
    check "hop $hop: $ts's VFs carry PF 1's identities (MACs, GIDs of 10.77.0.11-13)" python3 - "$vfs" "$NVF" <<'EOF'
import json, sys
vfs = json.loads(sys.argv[1])
for i in range(int(sys.argv[2])):
    v = vfs[i]
    want_mac, want_gid = "02:56:48:43:01:%02x" % i, "::ffff:10.77.0.%d" % (11 + i)
    if v["mac"] != want_mac or v["gid"] != want_gid:
        sys.exit(f"VF {i}: {v['mac']} {v['gid']}, want {want_mac} {want_gid}")
EOF

    # Figures: vhca's blackout per VF (the source suspended it, the destination resumed it),
    # the programs' stalls.
    local blackout
    blackout=$(python3 - "$rundir/serve-$fs.log" "$rundir/serve-$ts.log" "$NVF" <<'EOF'
import re, sys
from datetime import datetime
def times(path, what):
    out = {}
    for line in open(path, errors="replace"):
        if what in line:
            m = re.search(r"vf=(\d+)", line)
            t = datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
            if m:
                out.setdefault(int(m.group(1)), []).append(t)
    return out
sus = times(sys.argv[1], "VF suspended")
res = times(sys.argv[2], "VF resumed")
parts = []
for i in range(int(sys.argv[3])):
    s, r = sus.get(i, []), res.get(i, [])
    if s and r:
        parts.append("%.1f" % ((r[-1] - s[-1]).total_seconds() * 1000))
    else:
        parts.append("?")
print(" ".join(parts))
EOF
    )
    local pp_gap op_gap
    pp_gap=$(json_num "$(g_out "$first" | grep '^{' | tail -n1)" longest_gap_ms)
    op_gap=$(json_num "$(g_out $((first + 2)) | grep '^{' | tail -n1)" longest_gap_us)
    [ -z "$op_gap" ] || op_gap=$(awk -v u="$op_gap" 'BEGIN { printf "%.1f", u / 1000 }')
    [ -z "$pp_gap" ] || pp_gap=$(awk -v m="$pp_gap" 'BEGIN { printf "%.1f", m }')
    say "hop $hop: vhca blackout per VF (ms): $blackout; longest gap: pingpong ${pp_gap:-?} ms, opcodes ${op_gap:-?} ms"
    summary+=("$(printf 'hop %d %s->%s  QEMU downtime %5s ms  total %6s ms  vhca blackout %s ms  stall pingpong %s ms, opcodes %s ms' \
        "$hop" "$fns" "$tns" "$down" "$total" "$blackout" "${pp_gap:-?}" "${op_gap:-?}")")
    summary+=("      downtime: $made")

    quit_vm "$old"
}

# ---- The guest against the rxe peer, no migration: perf write_bw and send_lat figures -----------
# Both rxe servers at once (the peer's marker waits for both ports), the guest's clients one
# after the other.
rx_run "ib_write_bw -d rxe0 -x 1 -F -s 65536 -n 1000 -p 18515 & w=\$!; ib_send_lat -d rxe0 -x 1 -F -s 2 -n 1000 -p 18516; l=\$?; wait \$w; b=\$?; echo \"rxe: ib_send_lat exit \$l, ib_write_bw exit \$b\"; [ \$l -eq 0 ] && [ \$b -eq 0 ]"
rxe_peer_wait "$rxlog" '^VHCA-CMD-LISTENING' "$rx_n" 120 '^VHCA-CMD-EXIT' "$rx_n" || fail "ib_write_bw and ib_send_lat did not listen"
for t in write_bw:ib_write_bw:18515 send_lat:ib_send_lat:18516; do
    IFS=: read -r ours theirs port <<<"$t"
    g_run "vhca perf $ours --vf pci:$(vf_pci 0) $RXE_IP -p $port -n 1000"
    rxe_peer_wait "$rundir/console-$cur.log" "^VHCA-CMD-EXIT $g_n " 1 600 || fail "vhca perf $ours did not end"
    rc=$(rxe_peer_field "$rundir/console-$cur.log" "VHCA-CMD-EXIT $g_n" 1 | cut -d' ' -f1)
    check "the guest's vhca perf $ours against rxe's $theirs: exit $rc" test "$rc" = 0
    # The result line (perftest's layout): the figures this run reports.
    res=$(g_out "$g_n" | awk '/^ *[0-9]+ +[0-9]+ / { l = $0 } END { print l }')
    say "vhca perf $ours (guest, pci:$(vf_pci 0)) <-> $theirs (rxe): $res"
    summary+=("$(printf 'perf %-9s guest <-> rxe %-11s %s' "$ours" "$theirs" "$(tr -s ' \t' ' ' <<<"$res")")")
done
rxe_peer_wait "$rxlog" '^VHCA-CMD-EXIT' "$rx_n" 120 || fail "ib_write_bw and ib_send_lat did not end"
rrc=$(rxe_peer_field "$rxlog" VHCA-CMD-EXIT "$rx_n")
check "rxe's ib_write_bw and ib_send_lat exit 0 ($rrc)" test "$rrc" = 0

sides=("a:$SRC:qtA" "b:$DST:qtB")
for hop in $(seq 1 "$hops"); do
    from=${sides[$(((hop - 1) % 2))]} to=${sides[$((hop % 2))]}
    IFS=: read -r fs fns _ <<<"$from"
    IFS=: read -r ts tns ttap <<<"$to"
    run_hop "$hop" "$fs" "$ts" "$fns" "$tns" "$(tr 'ab' 'AB' <<<"$ts")$((hop + 1))" "$ttap"
done

# ---- Downtime with idle VFs, a VF never started, no VF -------------------------------------------
# The hops above migrate a guest busy with three programs: QEMU's downtime there is mostly the
# RAM the busy guest keeps dirtying. For what the VFs themselves cost, the same VM migrates
# once more with its VFs started but idle (one program per VF waiting for its peer), and a VM
# of the same configuration without VFs migrates once.
idle=$((hops + 1))
from=${sides[$(((idle - 1) % 2))]} to=${sides[$((idle % 2))]}
IFS=: read -r fs fns _ <<<"$from"
IFS=: read -r ts tns ttap <<<"$to"
dname=$(tr 'ab' 'AB' <<<"$ts")$((idle + 1))
say "== idle VFs: the VM from $fns to $tns (QEMU $cur -> $dname)"
qemu_vm "$dname" "$ts" "$ttap" $((4700 + idle))
first=$((g_n + 1))
for i in $(seq 0 $((NVF - 1))); do
    g_run "vhca pingpong --vf pci:$(vf_pci "$i") -p $((18600 + i))"
done
for i in $(seq 0 $((NVF - 1))); do
    rxe_peer_wait "$rundir/console-$cur.log" "^VHCA-OUT $((first + i)): vhca pingpong: listening" 1 120 ||
        fail "idle: pingpong server on VF $i did not start"
done
mig=$(qmp "$cur" migrate "tcp:$(host_ip "$tns"):$((4700 + idle))" --on-complete "$rundir/move.sh $fns $tns" --timeout 600) ||
    fail "idle: migration failed: $mig"
qmp "$dname" wait-status running 60 || fail "idle: the destination did not run"
down_idle=$(json_num "$mig" downtime) total_idle=$(json_num "$mig" total-time)
made=$(parts "$cur")
say "idle VFs: QEMU downtime $down_idle ms, total $total_idle ms; $made"
summary+=("$(printf 'idle VFs    QEMU downtime %5s ms  total %6s ms' "$down_idle" "$total_idle")" "      downtime: $made")
quit_vm "$cur"
cur=$dname cur_ctl=ctl-$dname
vg_send "$rundir" "$cur_ctl" poweroff
quit_vm "$cur"

# A VM whose guest never starts its VF (the guest's virtio-pci sees a virtio-fs device and no
# driver takes it): QEMU still saves the back-end's state, the destination loads it.
say "== a VF the guest never started: VF $NVF of a (in $SRC) to b (in $DST)"
qemu_vm N1 "a:$NVF" qtA ""
rxe_peer_wait "$rundir/console-N1.log" '^VHCA-GUEST-READY ' 1 240 '^VHCA-GUEST-FAILED' || fail "the never-started VM did not come up"
qemu_vm N2 "b:$NVF" qtB 4798
mig=$(qmp N1 migrate "tcp:$(host_ip "$DST"):4798" --timeout 600) || fail "a VM with a never-started VF did not migrate: $mig"
qmp N2 wait-status running 60 || fail "the never-started VM did not run on the destination"
say "a VM whose guest never started its VF migrated (downtime $(json_num "$mig" downtime) ms)"
check "the source saved VF $NVF without a GET_VRING_BASE (the guest never started it)" \
    grep -q "VF suspended for SAVE without GET_VRING_BASE.*vf=$NVF " "$rundir/serve-a.log"
check "the destination loaded VF $NVF's state" \
    grep -q "device state loaded; VF waits for its rings vf=$NVF " "$rundir/serve-b.log"
vfs=$("$vhca" ctl --json --socket-dir "$rundir/b" vfs)
check "b's VF $NVF took the never-started VF's identity ($(vf_mac "$NVF"))" python3 - "$vfs" "$NVF" <<'EOF'
import json, sys
v = json.loads(sys.argv[1])[int(sys.argv[2])]
want = "02:56:48:43:01:%02x" % int(sys.argv[2])
if v["mac"] != want:
    sys.exit(f"VF {sys.argv[2]}: {v['mac']}, want {want}")
EOF
quit_vm N1
vg_send "$rundir" ctl-N2 poweroff
quit_vm N2

say "== the same VM without VFs: boot, migrate once"
qemu_vm N3 "" qtA ""
rxe_peer_wait "$rundir/console-N3.log" '^VHCA-GUEST-READY ' 1 240 '^VHCA-GUEST-FAILED' || fail "the VM without VFs did not come up"
qemu_vm N4 "" qtB 4799
mig=$(qmp N3 migrate "tcp:$(host_ip "$DST"):4799" --timeout 600) || fail "the VM without VFs did not migrate: $mig"
qmp N4 wait-status running 60 || fail "the VM without VFs did not run on the destination"
down0=$(json_num "$mig" downtime) total0=$(json_num "$mig" total-time)
made=$(parts N3)
summary+=("$(printf 'no VF       QEMU downtime %5s ms  total %6s ms' "$down0" "$total0")" "      downtime: $made")
say "no VF: QEMU downtime $down0 ms, total $total0 ms; with three idle VFs: $down_idle ms"
quit_vm N3
vg_send "$rundir" ctl-N4 poweroff
quit_vm N4

rxe_peer_send "$rundir/rxe" poweroff
say "summary:"
printf '  %s\n' "${summary[@]}"
if [ "$fails" -ne 0 ]; then
    fail "$fails of $checks checks"
fi
[ -z "$own_rundir" ] || rm -rf "$rundir"
say "PASS: all $checks checks: $hops hops of a running VM with 3 VFs (pingpong vs ibv_rc_pingpong, write_bw vs ib_write_bw, every RC opcode and UD vs a vhca peer), nothing lost"
