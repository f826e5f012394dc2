# shellcheck shell=bash
# Helpers for tests that drive rxe peer guests (source it from bash).
#
# rxe_peer_wait LOG REGEX [COUNT [TIMEOUT [ABORT_REGEX [ABORT_COUNT]]]]
#   Follows the serial log LOG until the COUNT-th line matching REGEX (a bash ERE) appears: 0.
#   Returns 1 on TIMEOUT seconds (default 120), 3 when the guest ends first (VHCA-PEER-FAILED
#   or VHCA-POWEROFF) or ABORT_REGEX matched ABORT_COUNT times (default 1).
#   It reads the log as it grows (tail -F); no polling with sleeps.
rxe_peer_wait() {
    local log=$1 re=$2 n=${3:-1} t=${4:-120} are=${5:-} an=${6:-1} fd tp line c=0 a=0 rc=1
    # A bash read loop: it sees each line as soon as tail writes it (mawk would buffer).
    exec {fd}< <(exec timeout "$t" tail -n +1 -F "$log" 2>/dev/null)
    tp=$!
    while IFS= read -r line <&"$fd"; do
        line=${line%$'\r'}
        if [[ $line =~ $re ]]; then
            c=$((c + 1))
            if [ "$c" -ge "$n" ]; then rc=0; break; fi
        fi
        if [ -n "$are" ] && [[ $line =~ $are ]]; then
            a=$((a + 1))
            if [ "$a" -ge "$an" ]; then rc=3; break; fi
        fi
        if [[ $line =~ ^VHCA-(PEER-FAILED|POWEROFF) ]]; then rc=3; break; fi
    done
    kill "$tp" 2>/dev/null
    exec {fd}<&-
    return "$rc"
}

# rxe_peer_field LOG MARKER N : the text after the N-th "MARKER " line of LOG (e.g. an exit code).
# (awk reads the file itself: an early exit must not leave a writer in a pipe to die of SIGPIPE,
# which pipefail would turn into a failure once the log outgrows the pipe's buffer.)
rxe_peer_field() {
    awk -v m="$2 " -v n="$3" '{ sub(/\r$/, "") } index($0, m) == 1 { if (++c == n) { print substr($0, length(m) + 1); exit } }' "$1"
}

# rxe_peer_send RUNDIR LINE : writes one control line ("go", "run BASE64", "poweroff") to a
# guest started with run.sh --ctl; wait for VHCA-WAIT-CMD first.
rxe_peer_send() {
    printf '%s\n' "$2" >"$1/ctl.in"
}

# rxe_peer_run_line CMD : the control line that runs CMD in the guest.
rxe_peer_run_line() {
    printf 'run %s' "$(printf '%s' "$1" | base64 -w0)"
}

# The host side of a guest in control mode (run.sh --ctl), for scripts that keep its console
# log in $log and its run directory in $work/g, count its commands in $n and define `fail`.

# guest_cmd CMD : starts CMD in the guest (once the previous one finished).
guest_cmd() {
    n=$((n + 1))
    rxe_peer_send "$work/g" "$(rxe_peer_run_line "$1")"
}

# guest_done NAME : waits up to 10 minutes for the last command to end and for the guest to
# take the next one; fails (with NAME) unless the command exited 0.
guest_done() {
    rxe_peer_wait "$log" '^VHCA-CMD-EXIT' "$n" 600 || fail "$1: guest command did not finish"
    local rc
    rc=$(rxe_peer_field "$log" VHCA-CMD-EXIT "$n")
    rxe_peer_wait "$log" '^VHCA-WAIT-CMD' $((n + 1)) 60 || fail "guest ended"
    [ "$rc" = 0 ] || fail "$1: guest command exited $rc"
}
