#!/usr/bin/env bash
# Live migration of a VF on the UDP fabric between two `vhca serve` processes in two network
# namespaces, mid-traffic, with its RC peer a VF of a third process (needs root, iproute2 and
# python3). docs/migration.md, "UDP fabrics", explains the sequence.
#
#   namespace BR    bridge br0 with one veth port per namespace below
#   namespace SRC   vf0: the VF's network port (its MAC, its address 10.77.0.11/24), up;
#                   `vhca serve --pf-index 1 --udp-ip 10.77.0.11`: VF 0 is the one that moves
#   namespace DST   vf0: the same MAC, down and without an address until the VF arrives;
#                   `vhca serve --pf-index 2 --udp-ip 10.78.0.12 --accept-identity` (an
#                   address of its own, on lo: the slot's socket follows the VF of PF 1 that
#                   migrates into it, which --accept-identity lets it take in)
#   namespace PEER  eth0 10.77.0.13/24; `vhca serve --pf-index 3 --udp-ip 10.77.0.13`
#
# 1. `vhca migrate-attached` plays the guest on SRC's VF and on PEER's VF, connects an RC QP
#    pair, migrates the VF from SRC to DST with WRs of every RC opcode in flight in both
#    directions; its hook (between the source's save and the destination's load) takes
#    10.77.0.11 off SRC's vf0 and brings that port down, brings DST's vf0 up with the address
#    and sends a gratuitous ARP from it (`vhca announce`), so the bridge learns the MAC's new
#    port: the VF's MAC and address move together, as an SR-IOV VF's do between two hosts.
#    Every WR must complete once and successfully, data compared.
# 2. The same VF back from DST to SRC (A -> B -> A) with 1,024 QP pairs.
# 3. The TAP fabric (below).
# After each run the counters must show the traffic on the new side's socket and no errors.
#
# Usage: tools/netns-migrate.sh [path/to/vhca]   (default: target/release/vhca)
# Namespace names start with $VHCA_NETNS_PREFIX (default vhca-m-). Waits on log lines, never on
# a sleep; the namespaces are always deleted.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VHCA=$(realpath "${1:-target/release/vhca}")
[ -x "$VHCA" ] || { echo "netns-migrate: $VHCA not found (cargo build --release -p vhca)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "netns-migrate: needs root" >&2; exit 1; }

P=${VHCA_NETNS_PREFIX:-vhca-m-}
NS_BR=${P}br NS_SRC=${P}src NS_DST=${P}dst NS_PEER=${P}peer
VF_IP=10.77.0.11
# The migrating VF is VF 0 of PF 1: MAC 02:56:48:43:<pf>:<vf> (Pf::default_identity), checked
# against `vhca ctl vfs` below.
VF_MAC=02:56:48:43:01:00
WORK=$(mktemp -d)
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    for ns in "$NS_SRC" "$NS_DST" "$NS_PEER" "$NS_BR" "${P}tap"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "netns-migrate: FAILED: $*" >&2
    for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 40 "$f" >&2; }; done
    exit 1
}

# Waits (up to 30 s) until FILE contains PATTERN.
wait_for() {
    local file=$1 pattern=$2
    timeout 30 grep -q -m1 "$pattern" <(tail -n +1 -F "$file" 2>/dev/null) ||
        fail "no '$pattern' in $file"
}

echo "== namespaces: $NS_SRC, $NS_DST and $NS_PEER on bridge br0 in $NS_BR"
for ns in "$NS_BR" "$NS_SRC" "$NS_DST" "$NS_PEER"; do
    ip netns add "$ns"
    # No IPv6: a second port with the VF's MAC must stay silent (no router solicitations or
    # duplicate address detection) until the VF arrives, or the bridge would learn it early.
    ip netns exec "$ns" sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
        echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6'
    ip -n "$ns" link set lo up
done
ip -n "$NS_BR" link add br0 type bridge
ip -n "$NS_BR" link set br0 up
ip link add vf0 netns "$NS_SRC" type veth peer name p-src netns "$NS_BR"
ip link add vf0 netns "$NS_DST" type veth peer name p-dst netns "$NS_BR"
ip link add eth0 netns "$NS_PEER" type veth peer name p-peer netns "$NS_BR"
for port in p-src p-dst p-peer; do
    ip -n "$NS_BR" link set "$port" mtu 9000 master br0 up
done
ip -n "$NS_SRC" link set vf0 address "$VF_MAC" mtu 9000
ip -n "$NS_DST" link set vf0 address "$VF_MAC" mtu 9000
ip -n "$NS_SRC" addr add "$VF_IP/24" dev vf0
ip -n "$NS_SRC" link set vf0 up
ip -n "$NS_DST" addr add 10.78.0.12/32 dev lo
ip -n "$NS_PEER" addr add 10.77.0.13/24 dev eth0
ip -n "$NS_PEER" link set eth0 mtu 9000 up

# Moves the VF's port (address and MAC) from namespace $1 to $2 and announces it there: run
# by `vhca migrate-attached` between the source's save and the destination's load.
cat >"$WORK/move.sh" <<EOF
#!/bin/sh
set -e
[ "\$VHCA_IP" = "$VF_IP" ] && [ "\$VHCA_MAC" = "$VF_MAC" ]
ip -n "\$1" addr del "\$VHCA_IP/24" dev vf0
# Down: the old side sends nothing more from the VF's MAC (no ARP probes, no ICMP), and the
# bridge forgets the port's entries.
ip -n "\$1" link set vf0 down
ip -n "\$2" link set vf0 up
ip -n "\$2" addr add "\$VHCA_IP/24" dev vf0
# A gratuitous ARP: the bridge learns the MAC's new port before the VF sends anything; peers
# keep their entry (same MAC) either way.
ip netns exec "\$2" "$VHCA" announce --dev vf0 --ip "\$VHCA_IP" --mac "\$VHCA_MAC"
EOF
chmod +x "$WORK/move.sh"

echo "== three vhca serve processes"
# The destination takes in a VF of another PF (docs/migration.md, "Identity policy"); the
# source takes only its own VF back.
for side in src:1:$VF_IP: dst:2:10.78.0.12:--accept-identity peer:3:10.77.0.13:; do
    IFS=: read -r name pf ip accept <<<"$side"
    : >"$WORK/serve-$name.log"
    # shellcheck disable=SC2086 # $accept is empty or one option
    ip netns exec "${P}$name" timeout 600 env RUST_LOG=info "$VHCA" serve --pf-index "$pf" \
        --udp-ip "$ip" $accept --socket-dir "$WORK/$name" >"$WORK/serve-$name.log" \
        2>"$WORK/serve-$name.err.log" &
    PIDS+=("$!")
    wait_for "$WORK/serve-$name.log" "ready"
done
mac=$("$VHCA" ctl --json --socket-dir "$WORK/src" vfs |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["mac"])')
[ "$mac" = "$VF_MAC" ] || fail "the source VF's MAC is $mac, the script assumed $VF_MAC"

# The counters of a serve process's VF 0 socket: "rx tx tx_errors dropped_suspended" (a VF's
# own counters start again when its guest disconnects; the tool checks every completion).
counters() {
    "$VHCA" ctl --json --socket-dir "$WORK/$1" counters | python3 -c '
import json, sys
c = json.load(sys.stdin)
link = c["switch"]["udp"][0].get("link", {})
print(link.get("rx_packets", 0), link.get("tx_packets", 0), link.get("tx_errors", 0),
      c["dropped_suspended"])'
}

# UDP datagrams the kernel dropped for want of receive-buffer room in namespace $1.
rcvbuf_errors() {
    # shellcheck disable=SC2016 # awk's own variables
    ip netns exec "$1" awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}

# migrate NAME FROM TO ARGS...: one migration of the VF from side FROM to side TO.
migrate() {
    local name=$1 from=$2 to=$3
    shift 3
    local before_rx
    read -r before_rx _ <<<"$(counters "$to")"
    echo "== $name: VF $VF_IP from ${P}$from to ${P}$to, peer in $NS_PEER"
    timeout 300 "$VHCA" migrate-attached --src "$WORK/$from/vf0.sock" --dst "$WORK/$to/vf0.sock" \
        --peer "$WORK/peer/vf0.sock" --hook "$WORK/move.sh ${P}$from ${P}$to" "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.log" || { cat "$WORK/$name.out"; fail "$name"; }
    cat "$WORK/$name.out"
    grep -q "every WR completed once" "$WORK/$name.out" || fail "$name: no traffic check"
    grep -q "$VF_IP/" <<<"$(ip -n "${P}$from" -4 addr show dev vf0)" &&
        fail "$name: $VF_IP still in ${P}$from"
    grep -q "$VF_IP/" <<<"$(ip -n "${P}$to" -4 addr show dev vf0)" ||
        fail "$name: $VF_IP not in ${P}$to"
    local rx txerr drop
    read -r rx _ txerr _ <<<"$(counters "$to")"
    read -r _ _ _ drop <<<"$(counters "$from")"
    echo "$name: ${P}$to's VF socket received $((rx - before_rx)) packets during the run," \
        "tx errors $txerr; ${P}$from dropped $drop packets for the suspended VF (all runs)"
    [ $((rx - before_rx)) -gt 0 ] || fail "$name: nothing reached ${P}$to's socket"
    [ "$txerr" -eq 0 ] || fail "$name: ${P}$to had $txerr tx errors"
    read -r _ _ txerr _ <<<"$(counters peer)"
    [ "$txerr" -eq 0 ] || fail "$name: the peer had $txerr tx errors"
    echo "$name: UDP receive-buffer drops (whole script so far): ${P}src $(rcvbuf_errors "$NS_SRC")," \
        "${P}dst $(rcvbuf_errors "$NS_DST"), ${P}peer $(rcvbuf_errors "$NS_PEER")"
    # The resumed VF told the peer where it stands (a NAK with its expected PSN per QP), through
    # its new location; requests of the peer that met the stopped VF are sent again from there.
    grep -Eq "the peer received [1-9][0-9]* sequence NAKs" "$WORK/$name.out" ||
        fail "$name: no NAK of the resumed VF reached the peer"
    grep -q "UDP link bound to the VF's address.*$VF_IP" "$WORK/serve-$to.err.log" ||
        fail "$name: ${P}$to never bound $VF_IP"
    # The bridge forwards the VF's MAC to the new side's port.
    # (The table is read whole first: with pipefail, `grep -q` closing the pipe early would
    # fail the pipeline.)
    local fdb
    fdb=$(bridge -n "$NS_BR" fdb show br br0)
    grep -qi "^$VF_MAC dev p-$to " <<<"$fdb" ||
        fail "$name: the bridge does not send $VF_MAC to p-$to: $fdb"
    # WRs were in flight when the source stopped: of every opcode with a few QPs (the device
    # cannot finish 1.5 MiB per QP before the stop); with 1,024 QPs of 1 KiB each, how much of
    # the burst the source got done first varies from run to run: some (reported above).
    python3 - "$WORK/$name.out" "$IN_FLIGHT" <<'EOF' || fail "$name: not enough in flight at the stop"
import re, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("in flight at the stop"))
counts = dict((n, int(c)) for n, c in re.findall(r"([A-Z_()]+) (\d+)", line.split(": ", 1)[1].split(" (", 1)[0]))
idle = [n for n, c in counts.items() if c == 0]
if len(counts) != 10 or (idle if sys.argv[2] == "every-opcode" else not sum(counts.values())):
    sys.exit(f"nothing in flight: {idle} ({line.strip()})")
EOF
}

# Six QPs, each posting the opcodes in another order (so each opcode is last on one of them),
# 256 KiB messages: there is more to send than the source finishes before it stops.
IN_FLIGHT=every-opcode migrate six-qps src dst --qps 6 --size 262144 --mtu 1024
IN_FLIGHT=some migrate back-1024-qps dst src --qps 1024 --size 1024 --mtu 1024

# 3. The TAP fabric: three `vhca serve --tap` processes in one namespace, each VF on its own
#    TAP on bridge tbr0 with its own MAC and address, which the kernel does not hold. The VF of
#    the first moves to the second: at load the destination's TAP takes the VF's MAC and
#    address and sends a gratuitous ARP (no hook: nothing to move in the kernel), the source's
#    TAP goes silent. The bridge must then send the VF's MAC to the destination's TAP.
NS_TAP=${P}tap
echo "== TAP fabric: three vhca serve --tap in $NS_TAP on bridge tbr0"
ip netns add "$NS_TAP"
ip -n "$NS_TAP" link set lo up
ip -n "$NS_TAP" link add tbr0 type bridge
ip -n "$NS_TAP" link set tbr0 up
for name in src dst peer; do
    ip -n "$NS_TAP" tuntap add dev "t-$name" mode tap
    ip -n "$NS_TAP" link set "t-$name" mtu 9000 master tbr0 up
done
for side in src:4:10.79.0.11: dst:5:10.79.0.12:--accept-identity peer:6:10.79.0.13:; do
    IFS=: read -r name pf ip accept <<<"$side"
    : >"$WORK/tserve-$name.log"
    # shellcheck disable=SC2086 # $accept is empty or one option
    ip netns exec "$NS_TAP" timeout 600 env RUST_LOG=info "$VHCA" serve --pf-index "$pf" \
        --tap "t-$name" --tap-ip "$ip" $accept --socket-dir "$WORK/t$name" \
        >"$WORK/tserve-$name.log" 2>"$WORK/tserve-$name.err.log" &
    PIDS+=("$!")
    wait_for "$WORK/tserve-$name.log" "ready"
done
TAP_MAC=$("$VHCA" ctl --json --socket-dir "$WORK/tsrc" vfs |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["mac"])')
timeout 300 "$VHCA" migrate-attached --src "$WORK/tsrc/vf0.sock" --dst "$WORK/tdst/vf0.sock" \
    --peer "$WORK/tpeer/vf0.sock" --qps 6 --size 262144 --mtu 1024 \
    >"$WORK/tap.out" 2>"$WORK/tap.log" || { cat "$WORK/tap.out"; fail "tap migration"; }
cat "$WORK/tap.out"
grep -q "every WR completed once" "$WORK/tap.out" || fail "tap: no traffic check"
grep -q "TAP link took the VF's MAC and address" "$WORK/tserve-dst.err.log" ||
    fail "tap: the destination's TAP did not take the VF's identity"
grep -q "TAP link silent" "$WORK/tserve-src.err.log" || fail "tap: the source's TAP kept talking"
fdb=$(bridge -n "$NS_TAP" fdb show br tbr0)
grep -qi "^$TAP_MAC dev t-dst " <<<"$fdb" || fail "tap: the bridge does not send $TAP_MAC to t-dst: $fdb"
echo "tap: the bridge sends the VF's MAC $TAP_MAC to t-dst"

echo "netns-migrate: all passed"
