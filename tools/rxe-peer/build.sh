#!/usr/bin/env bash
# Builds the rxe peer guest: a Debian kernel image and a busybox initramfs holding rdma-core's
# tools (ibverbs-utils, perftest, rdmacm-utils' rping, the rxe provider, iproute2's `rdma`) and the kernel modules
# rdma_rxe needs. Everything comes from Debian packages fetched with `apt-get download` (the
# host's apt sources; run `apt-get update` first on a fresh machine) and unpacked with dpkg-deb.
#
#   RXE_PEER_DIR=target/rxe-peer tools/rxe-peer/build.sh
#
# Outputs in $RXE_PEER_DIR: vmlinuz, initrd.img, manifest.txt (package versions + script hashes).
# Idempotent: when manifest.txt matches what would be built and both images exist, it does nothing.
# Host tools used: apt-get, apt-cache, dpkg-deb, cpio, gzip, xz, zstd (only if modules are .zst),
# readelf (binutils).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${RXE_PEER_DIR:-$repo/target/rxe-peer}
mkdir -p "$out"
out=$(cd "$out" && pwd)

say() { printf 'rxe-peer build: %s\n' "$*"; }
die() {
    printf 'rxe-peer build: error: %s\n' "$*" >&2
    exit 1
}

for t in apt-get apt-cache dpkg-deb cpio gzip xz readelf objcopy; do
    command -v "$t" >/dev/null || die "$t not found (host packages: apt, dpkg, cpio, gzip, xz-utils, binutils)"
done

# ---- What goes in --------------------------------------------------------------------------------
# Root packages. The kernel is the one Debian's linux-image-amd64 metapackage currently points to.
# RXE_PEER_KERNEL=6.12 picks the newest linux-image-6.12.*-amd64-unsigned instead (bookworm
# carries Debian's 6.12 too; its rxe has IBTA 1.5's ATOMIC WRITE and FLUSH, 6.1's does not).
if [ -n "${RXE_PEER_KERNEL:-}" ]; then
    kernel_re="^linux-image-${RXE_PEER_KERNEL//./\\.}\\.[0-9]+\\+deb[0-9]+-amd64-unsigned\$"
    kernel_pkg=$(apt-cache search --names-only "$kernel_re" 2>/dev/null |
        cut -d' ' -f1 | sort -V | tail -n1)
    [ -n "$kernel_pkg" ] || die "no linux-image-$RXE_PEER_KERNEL.*-amd64-unsigned package (run apt-get update?)"
else
    kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1)
    [ -n "$kernel_pkg" ] || die "cannot resolve linux-image-amd64 (run apt-get update?)"
fi
roots=(busybox-static libibverbs1 ibverbs-providers ibverbs-utils perftest iproute2 librdmacm1
    rdmacm-utils "$kernel_pkg")

# Binaries copied into the guest (paths inside the unpacked packages).
binaries=(
    usr/bin/ibv_devinfo usr/bin/ibv_devices usr/bin/ibv_rc_pingpong usr/bin/ibv_ud_pingpong
    usr/bin/ibv_uc_pingpong usr/bin/ibv_srq_pingpong usr/bin/ibv_xsrq_pingpong usr/bin/ibv_asyncwatch
    usr/bin/ib_send_bw usr/bin/ib_send_lat usr/bin/ib_write_bw usr/bin/ib_write_lat
    usr/bin/ib_read_bw usr/bin/ib_read_lat usr/bin/ib_atomic_bw usr/bin/ib_atomic_lat
    usr/bin/rdma bin/ip sbin/tc usr/bin/rping
)

# Kernel modules to load, in this order after their dependencies (from modules.dep). Missing
# optional ones (marked ?) are skipped; built-in ones are skipped.
# ib_cm, iw_cm, rdma_cm and rdma_ucm: the connection manager rping and perftest's -R use
# (/dev/infiniband/rdma_cm).
modules=(virtio_pci virtio_net e1000 crc32_generic ib_core ib_uverbs udp_tunnel ip6_udp_tunnel
    rdma_rxe ib_cm iw_cm rdma_cm rdma_ucm "?sch_netem")

# ---- Dependency closure --------------------------------------------------------------------------
# Depends/Pre-Depends of the candidate version, first alternative only, following only packages
# of Debian's "libs" section: the tools need shared libraries, not their maintainer-script
# helpers (debconf, adduser, ...). The ELF walk below checks that the result is complete.
declare -A stanza=()
# The candidate versions' control stanzas, cached; one apt-cache call per batch (it is slow to start).
load_stanzas() { # names...
    local want=() n rec name
    for n in "$@"; do [ -n "${stanza[$n]+x}" ] || want+=("$n"); done
    [ "${#want[@]}" -gt 0 ] || return 0
    for n in "${want[@]}"; do stanza[$n]=""; done
    while IFS= read -r -d $'\x1e' rec; do
        name=$(sed -n 's/^Package: //p' <<<"$rec" | head -n1)
        [ -n "$name" ] && stanza[$name]=$rec
    done < <(apt-cache show --no-all-versions "${want[@]}" 2>/dev/null |
        awk 'BEGIN { RS = ""; ORS = "\036" } { print }')
}
load_stanza() { load_stanzas "$1"; }
cand_field() { load_stanza "$1"; sed -n "s/^$2: //p" <<<"${stanza[$1]}" | head -n1; }
declare -A seen=()
wave=("${roots[@]}")
load_stanzas "${wave[@]}"
while [ "${#wave[@]}" -gt 0 ]; do
    ds=()
    for p in "${wave[@]}"; do
        seen[$p]=1
        [ -n "${stanza[$p]}" ] || die "no candidate for $p (run apt-get update?)"
        mapfile -t -O "${#ds[@]}" ds < <({ cand_field "$p" Depends; echo ,; cand_field "$p" Pre-Depends; } |
            tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/:any//; s/[[:space:]]//g' | grep . || true)
    done
    load_stanzas "${ds[@]}"
    declare -A next=()
    for d in "${ds[@]}"; do
        [ "$(cand_field "$d" Section)" = libs ] && [ -z "${seen[$d]:-}" ] && next[$d]=1
    done
    wave=("${!next[@]}")
    unset next
done
mapfile -t pkgs < <(printf '%s\n' "${!seen[@]}" | LC_ALL=C sort)

manifest_new=$(
    for p in "${pkgs[@]}"; do
        v=$(cand_field "$p" Version)
        [ -n "$v" ] || die "no candidate version for $p"
        printf 'pkg %s %s\n' "$p" "$v"
    done
    printf 'script %s %s\n' build.sh "$(sha256sum <"$here/build.sh" | cut -d' ' -f1)"
    printf 'script %s %s\n' init "$(sha256sum <"$here/init" | cut -d' ' -f1)"
    for c in "$here"/src/*.c; do
        printf 'source %s %s\n' "$(basename "$c")" "$(sha256sum <"$c" | cut -d' ' -f1)"
    done
)

if [ -f "$out/manifest.txt" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] &&
    [ "$(cat "$out/manifest.txt")" = "$manifest_new" ]; then
    say "up to date in $out ($(grep -c '^pkg' "$out/manifest.txt") packages, kernel $kernel_pkg)"
    exit 0
fi

say "building into $out (kernel $kernel_pkg, ${#pkgs[@]} packages)"

# ---- Download and unpack -------------------------------------------------------------------------
# pkgroot (the unpacked packages) is kept as a cache, keyed by the list of .deb files.
mkdir -p "$out/debs"
rm -rf "$out/rootfs"
debs=()
while read -r kind p v; do
    [ "$kind" = pkg ] || continue
    deb=""
    for f in "$out/debs/${p}_"*.deb; do
        [ -e "$f" ] || continue
        if [ "$(dpkg-deb -f "$f" Version)" = "$v" ]; then deb=$f; else rm -f "$f"; fi
    done
    if [ -z "$deb" ]; then
        say "download $p=$v"
        (cd "$out/debs" && apt-get download -q "$p=$v" >/dev/null 2>&1) ||
            (cd "$out/debs" && apt-get download "$p=$v") || die "apt-get download $p=$v failed"
        deb=$(ls "$out/debs/${p}_"*.deb | head -n1)
    fi
    debs+=("$deb")
done <<<"$manifest_new"
deblist=$(printf '%s\n' "${debs[@]##*/}")
if [ -f "$out/pkgroot/.vhca-debs" ] && [ "$(cat "$out/pkgroot/.vhca-debs")" = "$deblist" ]; then
    say "packages already unpacked"
else
    rm -rf "$out/pkgroot"
    mkdir -p "$out/pkgroot"
    for deb in "${debs[@]}"; do
        dpkg-deb -x "$deb" "$out/pkgroot"
    done
    printf '%s\n' "$deblist" >"$out/pkgroot/.vhca-debs"
    say "unpacked ${#debs[@]} packages"
fi

pr=$out/pkgroot
rootfs=$out/rootfs
kver=$(ls "$pr/lib/modules" 2>/dev/null | head -n1)
[ -n "$kver" ] || die "no /lib/modules in $kernel_pkg"
cp "$pr/boot/vmlinuz-$kver" "$out/vmlinuz.new"

# ---- Root filesystem -----------------------------------------------------------------------------
# Merged /usr as on Debian: /lib and /lib64 point into /usr.
mkdir -p "$rootfs"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,usr/bin,usr/sbin,usr/lib64}
mkdir -p "$rootfs/usr/lib/x86_64-linux-gnu" "$rootfs/usr/lib/modules/$kver"
ln -s usr/lib "$rootfs/lib"
ln -s usr/lib64 "$rootfs/lib64"

cp "$pr/bin/busybox" "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done

# Libraries are looked up where Debian's loader looks (multiarch dirs), inside the unpacked tree.
libdirs=(lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu lib64 usr/lib64 lib usr/lib)
# Resolves symlinks inside the unpacked tree (absolute targets point into the tree, not the host).
resolve_in() { # relpath -> relpath of the final file
    local rel=$1 t n=0
    while [ -L "$pr/$rel" ]; do
        t=$(readlink "$pr/$rel")
        case $t in
            /*) rel=${t#/} ;;
            *) rel=$(dirname "$rel")/$t ;;
        esac
        rel=$(realpath -m -s --relative-to=/ "/$rel")
        n=$((n + 1))
        [ "$n" -lt 20 ] || die "symlink loop at $1"
    done
    [ -e "$pr/$rel" ] || return 1
    printf '%s\n' "$rel"
}
# Copies a file from the unpacked tree to the same path in the guest, as a regular file.
copy_in() { # relpath
    local rel=$1 src
    [ -e "$rootfs/$rel" ] && return 0
    src=$(resolve_in "$rel") || die "$rel: dangling in the unpacked packages"
    mkdir -p "$(dirname "$rootfs/$rel")"
    cp "$pr/$src" "$rootfs/$rel"
}
declare -A walked=()
walk_elf() { # relpath (in the unpacked tree) of an ELF file; copies what it needs
    local rel=$1 need found d interp src
    [ -n "${walked[$rel]:-}" ] && return 0
    walked[$rel]=1
    src=$(resolve_in "$rel") || die "$rel missing"
    interp=$(readelf -lW "$pr/$src" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
    if [ -n "$interp" ]; then
        copy_in "${interp#/}"
    fi
    for need in $(readelf -dW "$pr/$src" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        found=""
        for d in "${libdirs[@]}"; do
            if [ -e "$pr/$d/$need" ] || [ -L "$pr/$d/$need" ]; then
                found="$d/$need"
                break
            fi
        done
        [ -n "$found" ] || die "$rel needs $need, which no unpacked package has"
        copy_in "$found"
        walk_elf "$found"
    done
}

for b in "${binaries[@]}"; do
    [ -e "$pr/$b" ] || die "missing binary $b"
    # Same path as in the package; replaces a busybox applet of the same name (ip).
    rm -f "$rootfs/$b"
    mkdir -p "$(dirname "$rootfs/$b")"
    cp "$pr/$(resolve_in "$b")" "$rootfs/$b"
    walk_elf "$b"
done

# The project's own guest programs (tools/rxe-peer/src/*.c: responders no stock tool provides),
# built here against Debian's libibverbs-dev; they need only libraries the tools above pulled in.
command -v gcc >/dev/null || die "gcc not found (apt-get install gcc)"
[ -f /usr/include/infiniband/verbs.h ] || die "infiniband/verbs.h not found (apt-get install libibverbs-dev)"
for c in "$here"/src/*.c; do
    bin=$rootfs/usr/bin/$(basename "$c" .c)
    gcc -O2 -Wall -Wextra -Werror -o "$bin" "$c" -libverbs || die "compiling $c failed"
done

# libibverbs loads its providers with dlopen from these places.
# glibc dlopen()s libgcc_s for pthread_exit/pthread_cancel (rping's threads end that way); no
# binary names it, so the ELF walk does not find it.
copy_in lib/x86_64-linux-gnu/libgcc_s.so.1

mkdir -p "$rootfs/etc/libibverbs.d"
cp "$pr"/etc/libibverbs.d/*.driver "$rootfs/etc/libibverbs.d/"
provdir=usr/lib/x86_64-linux-gnu/libibverbs
for f in "$pr/$provdir"/*.so; do
    rel=$provdir/$(basename "$f")
    copy_in "$rel"
    walk_elf "$rel"
done
compgen -G "$rootfs/$provdir/librxe-rdmav*.so" >/dev/null || die "rxe provider not found in ibverbs-providers"
# iproute2's rdma/ip read a few data files (optional); perftest none.
[ -d "$pr/etc/iproute2" ] && cp -a "$pr/etc/iproute2" "$rootfs/etc/" || true
[ -d "$pr/usr/share/iproute2" ] && mkdir -p "$rootfs/usr/share" && cp -a "$pr/usr/share/iproute2" "$rootfs/usr/share/" || true

printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
printf '127.0.0.1 localhost\n' >"$rootfs/etc/hosts"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

# ---- Kernel modules --------------------------------------------------------------------------------
# The package has no modules.dep (depmod runs in its postinst): dependencies come from each
# module's .modinfo "depends=" field, built-ins from modules.builtin.
mdir=$pr/lib/modules/$kver
declare -A modpath=() builtin=()
while IFS= read -r m; do
    name=$(basename "$m")
    name=${name%%.ko*}
    modpath[${name//-/_}]=${m#"$mdir"/}
done < <(find "$mdir/kernel" -name '*.ko*' | LC_ALL=C sort)
if [ -f "$mdir/modules.builtin" ]; then
    while IFS= read -r m; do
        name=$(basename "$m")
        name=${name%%.ko*}
        builtin[${name//-/_}]=1
    done <"$mdir/modules.builtin"
fi
modinfo_tmp=$(mktemp)
trap 'rm -f "$modinfo_tmp"' EXIT
mod_field() { # name field
    local src=$mdir/${modpath[$1]}
    case $src in
        *.ko.xz) xz -dc "$src" >"$modinfo_tmp.ko" ;;
        *.ko.zst) zstd -qdc "$src" >"$modinfo_tmp.ko" ;;
        *) cp "$src" "$modinfo_tmp.ko" ;;
    esac
    objcopy -O binary --only-section=.modinfo "$modinfo_tmp.ko" "$modinfo_tmp"
    rm -f "$modinfo_tmp.ko"
    tr '\0' '\n' <"$modinfo_tmp" | sed -n "s/^$2=//p" | head -n1
}
declare -A loaded=()
order=()
add_mod() { # name
    local n=$1 d
    [ -n "${loaded[$n]:-}" ] && return 0
    loaded[$n]=1
    [ -n "${builtin[$n]:-}" ] && return 0
    [ -n "${modpath[$n]:-}" ] || die "module $n (needed) not found in $kernel_pkg"
    for d in $(mod_field "$n" depends | tr ',' ' '); do
        add_mod "${d//-/_}"
    done
    order+=("$n")
}
for m in "${modules[@]}"; do
    opt=""
    case $m in "?"*) opt=1 m=${m#?} ;; esac
    if [ -n "${builtin[$m]:-}" ]; then
        say "module $m is built in"
        continue
    fi
    if [ -z "${modpath[$m]:-}" ]; then
        [ -n "$opt" ] && { say "optional module $m not in this kernel"; continue; }
        die "module $m not found in $kernel_pkg"
    fi
    add_mod "$m"
done
: >"$rootfs/etc/vhca-modules"
for n in "${order[@]}"; do
    src=$mdir/${modpath[$n]}
    dst=$rootfs/lib/modules/$kver/$n.ko
    case $src in
        *.ko.xz) xz -dc "$src" >"$dst" ;;
        *.ko.zst) zstd -qdc "$src" >"$dst" ;;
        *.ko.gz) gzip -dc "$src" >"$dst" ;;
        *.ko) cp "$src" "$dst" ;;
        *) die "unexpected module file $src" ;;
    esac
    echo "/lib/modules/$kver/$n.ko" >>"$rootfs/etc/vhca-modules"
done
say "modules: ${order[*]}"

# ---- /init and the image -----------------------------------------------------------------------------
cp "$here/init" "$rootfs/init"
chmod 0755 "$rootfs/init"
{
    echo "kernel $kver"
    grep '^pkg' <<<"$manifest_new"
} >"$rootfs/etc/vhca-peer-manifest"
[ -e "$rootfs/dev/console" ] || mknod -m 600 "$rootfs/dev/console" c 5 1
[ -e "$rootfs/dev/null" ] || mknod -m 666 "$rootfs/dev/null" c 1 3

# Deterministic archive: sorted names, fixed mtimes.
find "$rootfs" -exec touch -h -d @0 {} +
(cd "$rootfs" && find . -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc --owner=0:0 --quiet --reproducible) |
    gzip -n -6 >"$out/initrd.img.new"
mv "$out/vmlinuz.new" "$out/vmlinuz"
mv "$out/initrd.img.new" "$out/initrd.img"
printf '%s\n' "$manifest_new" >"$out/manifest.txt"
say "done: $out/vmlinuz ($(du -h "$out/vmlinuz" | cut -f1)), $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1)), kernel $kver"
