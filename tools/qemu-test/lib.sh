# shellcheck shell=bash
# Helpers for the tests that boot the vhca guest (tools/vhca-guest) under QEMU 11.1 from the
# trixie chroot (chroot.sh). Source after tools/rxe-peer/lib.sh (rxe_peer_wait, rxe_peer_field).

# check DESCRIPTION COMMAND...: runs COMMAND as one check of the test: counts it in `checks`
# and, when it fails, in `fails` (the caller sets both to 0), and prints "ok: ..." or
# "FAILED: ..." through the caller's `say`.
check() {
    local what=$1
    shift
    checks=$((checks + 1))
    if "$@"; then
        say "ok: $what"
    else
        say "FAILED: $what"
        fails=$((fails + 1))
    fi
}

# qt_prepare_guest: what the guest tests need first, built once and reused from target/: the
# QEMU 11 chroot (chroot.sh; its exit 77, "cannot run here", ends the caller with 77), the vhca
# binary (or VHCA_BIN) and the guest image (tools/vhca-guest). Uses the caller's `root`, `here`
# and `repo`; sets `vhca` and `gdir`.
qt_prepare_guest() {
    local rc
    set +e
    QEMU_TEST_CHROOT=$root "$here/chroot.sh"
    rc=$?
    set -e
    [ "$rc" -eq 0 ] || exit "$rc"
    if [ -n "${VHCA_BIN:-}" ]; then
        vhca=$VHCA_BIN
    else
        (cd "$repo" && cargo build --release -q -p vhca)
        vhca=$repo/target/release/vhca
    fi
    gdir=${VHCA_GUEST_DIR:-$repo/target/vhca-guest}
    VHCA_GUEST_DIR=$gdir "$repo/tools/vhca-guest/build.sh" --vhca "$vhca"
}

# qt_qemu_start ROOT RUNDIR NETNS LOG ARGS... : starts QEMU from the chroot ROOT in the
# background (in network namespace NETNS unless it is empty), stdout/stderr to LOG; sets
# QT_PID. A private mount namespace shows /dev, /proc, /sys and RUNDIR inside the chroot only
# to this QEMU; sh and chroot exec into QEMU, so QT_PID is QEMU itself once it runs (or, with
# QT_TIMEOUT=SECONDS, the `timeout` that ends it then, which passes a SIGTERM on to it).
qt_qemu_start() {
    local root=$1 dir=$2 ns=$3 log=$4
    shift 4
    local pre=()
    [ -z "${QT_TIMEOUT:-}" ] || pre=(timeout -k 10 "$QT_TIMEOUT")
    [ -z "$ns" ] || pre+=(ip netns exec "$ns")
    "${pre[@]}" unshare --mount --propagation private -- sh -c '
        root=$1 dir=$2; shift 2
        mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" &&
            mount --rbind /sys "$root/sys" && mkdir -p "$root$dir" && mount --bind "$dir" "$root$dir" &&
            exec chroot "$root" "$@"' sh "$root" "$dir" qemu-system-x86_64 "$@" \
        </dev/null >"$log" 2>&1 &
    QT_PID=$!
}

# vg_ctl_args RUNDIR NAME : QEMU arguments for a guest control port (ttyS1) through the fifos
# RUNDIR/NAME.in and RUNDIR/NAME.out (made here).
vg_ctl_args() {
    rm -f "$1/$2.in" "$1/$2.out"
    mkfifo "$1/$2.in" "$1/$2.out"
    printf '%s\n' -chardev "pipe,id=ctl,path=$1/$2" -serial chardev:ctl
}

# vg_send RUNDIR NAME LINE : one control line to the guest (run BASE64, poweroff). The fifo's
# reader is QEMU; the guest reads the line from its ttyS1.
vg_send() {
    printf '%s\n' "$3" >"$1/$2.in"
}

# vg_run RUNDIR NAME CMD : starts CMD in the guest (the guest numbers commands 1, 2, ... in
# the order they arrive); the control line is the rxe peer's (rxe_peer_run_line).
vg_run() {
    vg_send "$1" "$2" "$(rxe_peer_run_line "$3")"
}

# vg_wait_exit LOG N TIMEOUT : waits for command N's VHCA-CMD-EXIT and prints its exit code;
# returns 1 if it did not end in time or the guest failed.
vg_wait_exit() {
    rxe_peer_wait "$1" "^VHCA-CMD-EXIT $2 " 1 "$3" '^VHCA-GUEST-FAILED' || return 1
    rxe_peer_field "$1" "VHCA-CMD-EXIT $2" 1 | cut -d' ' -f1
}

# vg_output N LOG... : command N's output lines, from every console log given (a command that
# ran across a migration printed into two).
vg_output() {
    local n=$1
    shift
    awk -v m="VHCA-OUT $n: " '{ sub(/\r$/, "") } index($0, m) == 1 { print substr($0, length(m) + 1) }' "$@"
}
