#!/usr/bin/env python3
"""A small QMP client for the QEMU tests (no third-party modules).

    qmp.py SOCKET cmd NAME [JSON-ARGS]      run one command, print its return value as JSON
    qmp.py SOCKET wait-status STATUS [SECS] wait until query-status says STATUS (events, no
                                            polling: STOP/RESUME, or already there)
    qmp.py SOCKET migrate URI [--on-complete CMD] [--timeout SECS] [--max-bandwidth BYTES]
        turn on migration events, start `migrate` to URI and follow the MIGRATION events; when
        the status becomes "completed", run CMD (sh -c) at once, then print query-migrate's
        answer as one JSON line (status, total-time, downtime, setup-time, ram) plus the time
        from the request to completion as "wall-ms". Exit 1 if it failed or timed out.
"""
import json
import socket
import subprocess
import sys
import time


class Qmp:
    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        greeting = self.read()
        if "QMP" not in greeting:
            raise RuntimeError(f"not a QMP greeting: {greeting}")
        self.execute("qmp_capabilities")

    def read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("QMP socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, name, args=None):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            m = self.read()
            if "event" in m:
                self.events.append(m)
                continue
            if "error" in m:
                raise RuntimeError(f"{name}: {m['error'].get('desc', m['error'])}")
            return m.get("return")

    def event(self, deadline):
        if self.events:
            return self.events.pop(0)
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        while True:
            m = self.read()
            if "event" in m:
                return m


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, what, rest = argv[1], argv[2], argv[3:]
    if what == "cmd":
        q = Qmp(path, 30)
        args = json.loads(rest[1]) if len(rest) > 1 else None
        print(json.dumps(q.execute(rest[0], args)))
        return 0
    if what == "wait-status":
        want = rest[0]
        secs = float(rest[1]) if len(rest) > 1 else 60
        q = Qmp(path, secs)
        deadline = time.monotonic() + secs
        while q.execute("query-status")["status"] != want:
            try:
                q.event(deadline)
            except (socket.timeout, TimeoutError):
                print(f"qmp: status is not {want} after {secs}s", file=sys.stderr)
                return 1
        return 0
    if what == "migrate":
        uri = rest[0]
        on_complete, secs, bw = None, 300.0, None
        i = 1
        while i < len(rest):
            if rest[i] == "--on-complete":
                on_complete = rest[i + 1]
            elif rest[i] == "--timeout":
                secs = float(rest[i + 1])
            elif rest[i] == "--max-bandwidth":
                bw = int(rest[i + 1])
            else:
                print(f"qmp: unknown option {rest[i]}", file=sys.stderr)
                return 2
            i += 2
        q = Qmp(path, secs)
        q.execute("migrate-set-capabilities",
                  {"capabilities": [{"capability": "events", "state": True}]})
        if bw is not None:
            q.execute("migrate-set-parameters", {"max-bandwidth": bw})
        deadline = time.monotonic() + secs
        t0 = time.monotonic()
        q.execute("migrate", {"uri": uri})
        hook_rc = None
        while True:
            try:
                ev = q.event(deadline)
            except (socket.timeout, TimeoutError):
                print(f"qmp: migration not complete after {secs}s", file=sys.stderr)
                return 1
            if ev.get("event") != "MIGRATION":
                continue
            status = ev["data"]["status"]
            if status == "completed":
                wall = (time.monotonic() - t0) * 1000
                if on_complete:
                    t1 = time.monotonic()
                    hook_rc = subprocess.call(["sh", "-c", on_complete])
                    hook_ms = (time.monotonic() - t1) * 1000
                break
            if status in ("failed", "cancelled"):
                info = q.execute("query-migrate")
                print(json.dumps(info))
                print(f"qmp: migration {status}: {info.get('error-desc', '')}", file=sys.stderr)
                return 1
        info = q.execute("query-migrate")
        info["wall-ms"] = round(wall, 1)
        if hook_rc is not None:
            info["on-complete-rc"] = hook_rc
            info["on-complete-ms"] = round(hook_ms, 1)
        print(json.dumps(info))
        return 0 if hook_rc in (None, 0) else 1
    print(f"qmp: unknown action {what}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
