#!/usr/bin/env python3
"""What a VM's migration downtime was made of, from a source QEMU's trace log.

    downtime.py TRACE-LOG

QEMU runs with `-msg timestamp=on -D LOG -trace vmstate_downtime_checkpoint -trace
vmstate_downtime_save -trace vhost_dev_stop_in -trace vhost_dev_stop_out`. Prints one JSON
line for the last migration in the log:
  stopped_to_end_ms   source VM stopped -> source downtime end (QEMU's own checkpoints)
  vhost_stop_ms       the vhost devices' stops inside that window (GET_VRING_BASE and friends)
  vhost_state_ms      the vhost-user back-ends' device-state saves (SET_DEVICE_STATE_FD,
                      the transfer, CHECK_DEVICE_STATE), by QEMU's per-device downtime counter
  vf_ms               vhost_stop_ms + vhost_state_ms: the part of the downtime the VFs cost
  ram_ms              the final RAM pass
"""
import json
import re
import sys
from datetime import datetime


def ts(line):
    return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))


def main(path):
    lines = open(path, errors="replace").read().splitlines()
    # The last migration: from the last "src-vm-stopped" on.
    start = max((i for i, l in enumerate(lines) if "src-vm-stopped" in l), default=None)
    if start is None:
        print(json.dumps({"error": "no src-vm-stopped checkpoint in the trace"}))
        return 1
    # The vhost devices stop inside vm_stop, just before the stopped checkpoint: the stops that
    # began within the second before it.
    t0 = ts(lines[start])
    first = start
    while first > 0 and (t0 - ts(lines[first - 1])).total_seconds() < 1:
        first -= 1
    end = next((ts(l) for l in lines[start:] if "src-downtime-end" in l), None)
    stop_ms, state_us, ram_us, open_at = 0.0, 0, 0, {}
    for l in lines[first:]:
        if "vhost_dev_start" in l:
            open_at.clear()
            stop_ms = 0.0
            continue
        m = re.search(r"vhost_dev_stop_(in|out) (\S+)", l)
        if m:
            if m.group(1) == "in":
                open_at[m.group(2)] = ts(l)
            elif m.group(2) in open_at:
                stop_ms += (ts(l) - open_at.pop(m.group(2))).total_seconds() * 1000
            continue
        m = re.search(r"vmstate_downtime_save type=(\S+) idstr=(\S+) .*downtime=(\d+)", l)
        if m:
            if "vhost-user" in m.group(2):
                state_us += int(m.group(3))
            elif m.group(2) == "ram":
                ram_us += int(m.group(3))
    out = {
        "stopped_to_end_ms": round((end - t0).total_seconds() * 1000, 2) if end else None,
        "vhost_stop_ms": round(stop_ms, 2),
        "vhost_state_ms": round(state_us / 1000, 2),
        "vf_ms": round(stop_ms + state_us / 1000, 2),
        "ram_ms": round(ram_us / 1000, 2),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]) if len(sys.argv) == 2 else 2)
