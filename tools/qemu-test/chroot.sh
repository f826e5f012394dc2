#!/usr/bin/env bash
# Builds (once) a Debian trixie chroot holding QEMU 11.x from trixie-backports: the first
# Debian QEMU whose `vhost-user-test-device-pci` is user-creatable. The host's own QEMU (7.2 on
# bookworm) cannot attach a generic vhost-user device. It also holds trixie's tshark (4.4), the
# first whose InfiniBand dissector knows IBTA 1.5's FLUSH and ATOMIC WRITE (bookworm's 4.0 does
# not); guest-driver-tests/tests/capture_tshark.rs reads captures with it.
#
#   QEMU_TEST_CHROOT=target/qemu-chroot tools/qemu-test/chroot.sh
#
# Idempotent: a finished chroot carries .vhca-qemu-ready (the QEMU version it holds); then this
# does nothing. A half-built one (interrupted) is thrown away and built again.
# The mirror is the host's Debian mirror (its apt sources), or QEMU_TEST_MIRROR.
#
# Exit status: 0 ready; 77 this machine cannot build it (no debootstrap, the mirror has no trixie
# or no qemu-system-x86 in trixie-backports, or that QEMU lacks the device); 1 other errors.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${QEMU_TEST_CHROOT:-$repo/target/qemu-chroot}
suite=trixie

say() { printf 'qemu-test chroot: %s\n' "$*"; }
skip() {
    printf 'qemu-test chroot: CANNOT RUN HERE: %s\n' "$*" >&2
    exit 77
}
die() {
    printf 'qemu-test chroot: error: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, chroot)"

# The chroot's QEMU must have the generic vhost-user device with a virtio-id property.
has_device() { # root
    unshare --mount --propagation private -- chroot "$1" \
        qemu-system-x86_64 -device vhost-user-test-device-pci,help 2>/dev/null | grep -q 'virtio-id'
}

# The chroot's tshark must know FLUSH (IBTA 1.5).
has_tshark() { # root
    unshare --mount --propagation private -- chroot "$1" \
        tshark -G fields 2>/dev/null | grep -q 'infiniband\.feth'
}

if [ -f "$root/.vhca-qemu-ready" ] && has_device "$root"; then
    if ! has_tshark "$root"; then
        # A chroot built before tshark was part of it: add it rather than build it again.
        say "adding tshark to $root"
        unshare --mount --propagation private -- sh -c '
            root=$1
            mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" &&
                exec chroot "$root" env DEBIAN_FRONTEND=noninteractive sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends tshark && apt-get clean"' \
            sh "$root" >>"$root.log" 2>&1 || { tail -n 20 "$root.log" >&2; die "installing tshark into $root failed"; }
        has_tshark "$root" || die "the chroot's tshark does not know FLUSH"
    fi
    say "ready in $root ($(cat "$root/.vhca-qemu-ready"), $(unshare --mount --propagation private -- chroot "$root" tshark --version 2>/dev/null | head -n1))"
    exit 0
fi

command -v debootstrap >/dev/null || skip "debootstrap is not installed (apt-get install debootstrap)"
[ -f "/usr/share/debootstrap/scripts/$suite" ] || skip "this debootstrap does not know $suite"

# The host's Debian mirror: the first URI of a source that serves Debian's main archive.
mirror=${QEMU_TEST_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(
        {
            sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
            sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]*\).*/\2/p' \
                /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
        } | grep -E '^https?://.*/debian/?$' | head -n1
    ) || true
fi
[ -n "$mirror" ] || skip "no Debian mirror in the host's apt sources (set QEMU_TEST_MIRROR)"

t0=$(date +%s)
tmp=$root.tmp
# A previous attempt's leftovers. Mounts only ever happen in private mount namespaces (unshare
# below), so nothing of the host can be bound inside.
rm -rf "$tmp" "$root"
mkdir -p "$(dirname "$root")"
say "debootstrap --variant=minbase $suite from $mirror (a few minutes)"
if ! debootstrap --variant=minbase "$suite" "$tmp" "$mirror" >"$tmp.log" 2>&1; then
    tail -n 20 "$tmp.log" >&2
    rm -rf "$tmp"
    skip "debootstrap $suite failed (log above)"
fi
printf 'deb %s %s-backports main\n' "$mirror" "$suite" >"$tmp/etc/apt/sources.list.d/backports.list"
printf 'APT::Install-Recommends "false";\n' >"$tmp/etc/apt/apt.conf.d/99vhca-no-recommends"

in_root() {
    unshare --mount --propagation private -- sh -c '
        root=$1; shift
        mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" &&
            mount --rbind /sys "$root/sys" && exec chroot "$root" "$@"' sh "$tmp" "$@"
}
say "apt-get install -t $suite-backports qemu-system-x86 tshark"
if ! in_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$tmp.log" 2>&1; then
    tail -n 20 "$tmp.log" >&2
    skip "apt-get update inside the chroot failed"
fi
if ! in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -t "$suite-backports" qemu-system-x86 tshark >>"$tmp.log" 2>&1; then
    tail -n 20 "$tmp.log" >&2
    skip "qemu-system-x86 from $suite-backports (or tshark) is not installable here"
fi
in_root apt-get clean >/dev/null 2>&1 || true
version=$(in_root qemu-system-x86_64 --version | head -n1)
has_device "$tmp" || skip "$version has no user-creatable vhost-user-test-device-pci with virtio-id"
has_tshark "$tmp" || die "the chroot's tshark does not know FLUSH"
printf '%s\n' "$version" >"$tmp/.vhca-qemu-ready"
mv "$tmp" "$root"
mv "$tmp.log" "$root.log"
say "ready in $root ($version) after $(($(date +%s) - t0))s"
