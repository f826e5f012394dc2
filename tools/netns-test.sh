#!/usr/bin/env bash
# Two vhca processes in network namespaces exchanging RC traffic (needs root and iproute2).
#
#   1. UDP bridge: namespaces vhca-a and vhca-b joined by a veth pair (10.88.0.1/24 and
#      10.88.0.2/24, MTU 9000); `vhca pingpong` server in A, client in B: 4 KiB at MTU 1024,
#      then 64 KiB at MTU 4096. Then `vhca bench udp` across the same pair. Then two
#      `vhca serve --udp-ip` processes, one per namespace, with `vhca guest-pair` attached to
#      a VF of each over vhost-user: RC ping-pong and every RC opcode across the veth.
#   2. TAP bridge: namespace vhca-t with a Linux bridge vbr0 and two TAPs, one per vhca
#      process, each VF with its own MAC and IP (10.99.0.2, 10.99.0.3) that the kernel does
#      not hold; the TCP exchange goes over the namespace's loopback. Each side checks that no
#      frame had a bad ICRC; a capture of the server's TAP must show ARP and RoCEv2. Then two
#      `vhca serve --tap` processes on the same TAPs with `vhca guest-pair`.
#
# Usage: tools/netns-test.sh [path/to/vhca]   (default: target/release/vhca)
# Waits on the server's "listening" line, never on a sleep; namespaces are always deleted.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VHCA=$(realpath "${1:-target/release/vhca}")
[ -x "$VHCA" ] || { echo "netns-test: $VHCA not found (cargo build --release -p vhca)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "netns-test: needs root" >&2; exit 1; }

NS_A=vhca-a NS_B=vhca-b NS_T=vhca-t
WORK=$(mktemp -d)
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for ns in "$NS_A" "$NS_B" "$NS_T"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "netns-test: FAILED: $*" >&2
    for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; cat "$f" >&2; }; done
    exit 1
}

# Waits (up to 30 s) until FILE contains PATTERN: tail follows the file, grep stops at the
# first match.
wait_for() {
    local file=$1 pattern=$2
    timeout 30 grep -q -m1 "$pattern" <(tail -n +1 -F "$file" 2>/dev/null) ||
        fail "no '$pattern' in $file"
}

# A server in namespace $1 and a client in $2 with the given options; checks both reports.
pingpong() {
    local name=$1 ns_srv=$2 ns_cli=$3 srv_opts=$4 cli_opts=$5
    local slog="$WORK/$name-server.log" clog="$WORK/$name-client.log"
    : >"$slog"
    # shellcheck disable=SC2086
    ip netns exec "$ns_srv" timeout 120 "$VHCA" pingpong $srv_opts --json >"$slog.json" 2>"$slog" &
    local spid=$!
    PIDS+=("$spid")
    wait_for "$slog" "listening on TCP port"
    # shellcheck disable=SC2086
    ip netns exec "$ns_cli" timeout 120 "$VHCA" pingpong $cli_opts --json >"$clog.json" 2>"$clog" ||
        fail "$name: client"
    wait "$spid" || fail "$name: server"
    for f in "$slog.json" "$clog.json"; do
        grep -q '"rx_bad_icrc":0' "$f" || fail "$name: bad ICRCs in $f"
        grep -q '"rx_malformed":0' "$f" || fail "$name: malformed packets in $f"
    done
    echo "$name: client: $(cat "$clog.json")"
}

echo "== UDP bridge across a veth pair (10.88.0.1 <-> 10.88.0.2)"
ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add vhca-va netns "$NS_A" type veth peer name vhca-vb netns "$NS_B"
ip -n "$NS_A" addr add 10.88.0.1/24 dev vhca-va
ip -n "$NS_B" addr add 10.88.0.2/24 dev vhca-vb
for ns in "$NS_A" "$NS_B"; do
    ip -n "$ns" link set lo up
done
ip -n "$NS_A" link set vhca-va mtu 9000 up
ip -n "$NS_B" link set vhca-vb mtu 9000 up

pingpong udp-4k "$NS_A" "$NS_B" "--ip 10.88.0.1 -n 500 -u 16" "10.88.0.1 --ip 10.88.0.2 -n 500 -u 16"
pingpong udp-64k "$NS_A" "$NS_B" "--ip 10.88.0.1 -s 65536 -m 4096 -n 200 -u 16" \
    "10.88.0.1 --ip 10.88.0.2 -s 65536 -m 4096 -n 200 -u 16"

echo "== vhca bench udp across the veth pair"
timeout 120 "$VHCA" bench udp --ips 10.88.0.1,10.88.0.2 --netns "$NS_A,$NS_B" --millis 1500 ||
    fail "bench udp"

echo "== two vhca serve processes (--udp-ip) in the two namespaces, guests attached over vhost-user"
# The VF sockets are filesystem paths, so a guest in the root namespace reaches both
# processes; their packets cross the veth pair.
for side in a b; do
    ns=$NS_A ip=10.88.0.1
    [ "$side" = b ] && ns=$NS_B ip=10.88.0.2
    : >"$WORK/serve-$side.log"
    ip netns exec "$ns" timeout 300 "$VHCA" serve --udp-ip "$ip" --socket-dir "$WORK/serve-$side" \
        >"$WORK/serve-$side.log" 2>"$WORK/serve-$side.err.log" &
    PIDS+=("$!")
    wait_for "$WORK/serve-$side.log" "ready"
done
timeout 120 "$VHCA" guest-pair "$WORK/serve-a/vf0.sock" "$WORK/serve-b/vf0.sock" --mtu 4096 \
    --size 32768 --iters 200 || fail "guest-pair across the namespaces"
rx_b=$("$VHCA" ctl --json --socket-dir "$WORK/serve-b" counters |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["switch"]["udp"][0]["link"]["rx_packets"])')
echo "serve in $NS_B received $rx_b RoCEv2 packets over the veth pair"
[ "${rx_b:-0}" -ge 1600 ] || fail "serve in $NS_B received ${rx_b:-0} packets, expected >= 1600"

echo "== TAP bridge: two TAPs on vbr0 (VFs 10.99.0.2 and 10.99.0.3, own MACs)"
ip netns add "$NS_T"
ip -n "$NS_T" link set lo up
ip -n "$NS_T" link add vbr0 type bridge
for t in vhtap0 vhtap1; do
    ip -n "$NS_T" tuntap add dev "$t" mode tap
    ip -n "$NS_T" link set "$t" mtu 9000 master vbr0 up
done
ip -n "$NS_T" link set vbr0 mtu 9000 up

# -u 16: 7 retries of 268 ms. The CI machine has two cores that QEMU/TCG and builds may share
# with this test; rxe's (and ibv_rc_pingpong's) 67 ms would give up after half a second of a
# starved process.
pingpong tap-4k "$NS_T" "$NS_T" "--tap vhtap0 --ip 10.99.0.2 -n 500 -u 16 --pcap $WORK/tap.pcap" \
    "127.0.0.1 --tap vhtap1 --ip 10.99.0.3 -n 500 -u 16"
pingpong tap-64k "$NS_T" "$NS_T" "--tap vhtap0 --ip 10.99.0.2 -s 65536 -m 4096 -n 100 -u 16" \
    "127.0.0.1 --tap vhtap1 --ip 10.99.0.3 -s 65536 -m 4096 -n 100 -u 16"

echo "== two vhca serve processes (--tap) on vbr0, guests attached over vhost-user"
for side in c d; do
    tap=vhtap0 ip=10.99.0.12 pf=1
    [ "$side" = d ] && tap=vhtap1 ip=10.99.0.13 pf=2
    : >"$WORK/serve-$side.log"
    ip netns exec "$NS_T" timeout 300 "$VHCA" serve --pf-index "$pf" --tap "$tap" --tap-ip "$ip" \
        --socket-dir "$WORK/serve-$side" >"$WORK/serve-$side.log" 2>"$WORK/serve-$side.err.log" &
    PIDS+=("$!")
    wait_for "$WORK/serve-$side.log" "ready"
done
timeout 120 "$VHCA" guest-pair "$WORK/serve-c/vf0.sock" "$WORK/serve-d/vf0.sock" --mtu 4096 \
    --size 32768 --iters 200 || fail "guest-pair over the TAP fabric"
"$VHCA" ctl --json --socket-dir "$WORK/serve-d" counters | python3 -c '
import json, sys
link = json.load(sys.stdin)["switch"]["tap"][0]["link"]
print("serve on vhtap1:", link)
assert link["rx_packets"] >= 1600 and link["rx_bad_icrc"] == 0, link
' || fail "serve on vhtap1: too few packets or bad ICRCs"

# The server's capture: its announcement, the ARP exchange, and the RoCEv2 traffic.
[ -s "$WORK/tap.pcap" ] || fail "no TAP capture written"
if command -v tshark >/dev/null; then
    arps=$(tshark -r "$WORK/tap.pcap" -Y arp 2>/dev/null | wc -l)
    roce=$(tshark -r "$WORK/tap.pcap" -Y infiniband 2>/dev/null | wc -l)
    echo "tap capture: $arps ARP frames, $roce RoCEv2 frames"
    [ "$arps" -ge 2 ] && [ "$roce" -gt 1000 ] || fail "TAP capture lacks ARP or RoCEv2 frames"
fi

echo "netns-test: all passed"
