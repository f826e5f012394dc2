#!/usr/bin/env bash
# Builds the vhca guest: the image a QEMU/TCG guest boots to drive a vhca VF from guest user
# space (`vhca pingpong|perf|guest-pair --vf pci:ADDR`, docs/qemu.md).
#
#   tools/vhca-guest/build.sh [--vhca PATH]
#
# It is the rxe peer's image (tools/rxe-peer/build.sh: Debian's kernel, busybox, iproute2 and
# the virtio-net modules, all from Debian packages) plus a second cpio archive (the kernel
# unpacks concatenated archives in order) holding:
#   /vhca-guest-init            this directory's init (boot with rdinit=/vhca-guest-init)
#   /usr/local/bin/vhca         the vhca binary (built on this host: Debian's glibc)
#   the shared libraries it needs that the rxe image lacks (in /usr/lib: /lib is a symlink), unpacked from the Debian packages
#   that ship them on this host (dpkg -S, apt-get download)
#   /usr/lib/vhca-guest-modules/    uio.ko and uio_pci_generic.ko from the same Debian kernel
#
# Outputs in $VHCA_GUEST_DIR (default target/vhca-guest): vmlinuz, initrd.img, manifest.txt.
# Idempotent: nothing is rebuilt while the manifest (rxe image, vhca binary, init, script
# hashes) is unchanged. Environment: RXE_PEER_DIR (default target/rxe-peer).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${VHCA_GUEST_DIR:-$repo/target/vhca-guest}
rxe=${RXE_PEER_DIR:-$repo/target/rxe-peer}
vhca=$repo/target/release/vhca
while [ $# -gt 0 ]; do
    case $1 in
        --vhca) vhca=$2; shift 2 ;;
        -h | --help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "vhca-guest build: unknown argument $1" >&2; exit 2 ;;
    esac
done

say() { printf 'vhca-guest build: %s\n' "$*"; }
die() {
    printf 'vhca-guest build: error: %s\n' "$*" >&2
    exit 1
}
for t in cpio gzip ldd dpkg dpkg-deb apt-get sha256sum; do
    command -v "$t" >/dev/null || die "$t not found"
done
[ -x "$vhca" ] || die "no vhca binary at $vhca (cargo build --release -p vhca)"

RXE_PEER_DIR=$rxe "$repo/tools/rxe-peer/build.sh"
[ -d "$rxe/pkgroot/lib/modules" ] || die "no unpacked kernel in $rxe/pkgroot"

mkdir -p "$out"
out=$(cd "$out" && pwd)
manifest_new=$(
    printf 'rxe %s\n' "$(sha256sum <"$rxe/manifest.txt" | cut -d' ' -f1)"
    printf 'vhca %s\n' "$(sha256sum <"$vhca" | cut -d' ' -f1)"
    printf 'script build.sh %s\n' "$(sha256sum <"$here/build.sh" | cut -d' ' -f1)"
    printf 'script init %s\n' "$(sha256sum <"$here/init" | cut -d' ' -f1)"
)
if [ -f "$out/manifest.txt" ] && [ -s "$out/initrd.img" ] && [ -s "$out/vmlinuz" ] &&
    [ "$(cat "$out/manifest.txt")" = "$manifest_new" ]; then
    say "up to date in $out"
    exit 0
fi

stage=$out/extra
rm -rf "$stage"
mkdir -p "$stage/usr/local/bin" "$stage/usr/lib/vhca-guest-modules" "$stage/etc"
cp "$here/init" "$stage/vhca-guest-init"
chmod 0755 "$stage/vhca-guest-init"
cp "$vhca" "$stage/usr/local/bin/vhca"
strip --strip-debug "$stage/usr/local/bin/vhca" 2>/dev/null || true

# Shared libraries: those the rxe image already has stay; the others come from their Debian
# package (the version installed here, which the binary was linked against).
mkdir -p "$out/debs"
while read -r lib; do
    [ -n "$lib" ] || continue
    base=${lib##*/}
    if [ -e "$rxe/rootfs/lib/x86_64-linux-gnu/$base" ] || [ -e "$rxe/rootfs/usr/lib/x86_64-linux-gnu/$base" ] ||
        [ -e "$rxe/rootfs$lib" ]; then
        continue
    fi
    real=$(readlink -f "$lib")
    pkg=$(dpkg -S "$real" 2>/dev/null | head -n1 | cut -d: -f1) || true
    [ -n "$pkg" ] || pkg=$(dpkg -S "$lib" 2>/dev/null | head -n1 | cut -d: -f1) || true
    [ -n "$pkg" ] || die "no Debian package ships $lib"
    ver=$(dpkg-query -W -f='${Version}' "$pkg")
    deb=$(ls "$out/debs/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ] || [ "$(dpkg-deb -f "$deb" Version)" != "$ver" ]; then
        rm -f "$out/debs/${pkg}_"*.deb
        (cd "$out/debs" && apt-get download -q "$pkg=$ver" >/dev/null) || die "apt-get download $pkg=$ver failed"
        deb=$(ls "$out/debs/${pkg}_"*.deb | head -n1)
    fi
    rm -rf "$out/unpack"
    dpkg-deb -x "$deb" "$out/unpack"
    found=$(find "$out/unpack" -name "$base" | head -n1)
    [ -n "$found" ] || die "$deb has no $base"
    mkdir -p "$stage/usr/lib/x86_64-linux-gnu"
    cp -L "$found" "$stage/usr/lib/x86_64-linux-gnu/$base"
    say "library $base from $pkg $ver"
done < <(ldd "$vhca" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }')
rm -rf "$out/unpack"

kver=$(ls "$rxe/pkgroot/lib/modules" | head -n1)
for m in uio uio_pci_generic; do
    f=$(find "$rxe/pkgroot/lib/modules/$kver" -name "$m.ko*" | head -n1)
    [ -n "$f" ] || die "no $m module in kernel $kver"
    case $f in
        *.ko) cp "$f" "$stage/usr/lib/vhca-guest-modules/$m.ko" ;;
        *.ko.xz) xz -dc "$f" >"$stage/usr/lib/vhca-guest-modules/$m.ko" ;;
        *.ko.zst) zstd -dqc "$f" >"$stage/usr/lib/vhca-guest-modules/$m.ko" ;;
        *) die "unknown module compression: $f" ;;
    esac
done
printf '%s\n' "$manifest_new" >"$stage/etc/vhca-guest-manifest"

(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --owner=0:0 --quiet) |
    gzip -n -6 >"$out/extra.cpio.gz"
cat "$rxe/initrd.img" "$out/extra.cpio.gz" >"$out/initrd.img.new"
mv "$out/initrd.img.new" "$out/initrd.img"
cp "$rxe/vmlinuz" "$out/vmlinuz"
rm -rf "$stage" "$out/extra.cpio.gz"
printf '%s\n' "$manifest_new" >"$out/manifest.txt"
say "done: $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1)), kernel $kver"
