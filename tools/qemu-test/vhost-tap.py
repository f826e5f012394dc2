#!/usr/bin/env python3
"""A transparent vhost-user tap: listens on LISTEN, and for the one frontend that connects,
opens BACKEND and forwards every message both ways unchanged (file descriptors included),
printing one line per message to stdout:

    FRONTEND NAME size=N fds=K flags=0xF    (frontend -> backend: requests)
    BACKEND  NAME size=N fds=K flags=0xF    (backend -> frontend: replies)

so a test can see the order in which QEMU drives a backend that itself logs nothing of it.

    vhost-tap.py LISTEN BACKEND

It prints "TAP-LISTENING" once it listens and "TAP-CLOSED WHO" when one side closed; then it
closes the other side and exits.
"""

import array
import os
import socket
import struct
import sys
import threading

NAMES = {
    1: "GET_FEATURES", 2: "SET_FEATURES", 3: "SET_OWNER", 4: "RESET_OWNER",
    5: "SET_MEM_TABLE", 6: "SET_LOG_BASE", 7: "SET_LOG_FD", 8: "SET_VRING_NUM",
    9: "SET_VRING_ADDR", 10: "SET_VRING_BASE", 11: "GET_VRING_BASE", 12: "SET_VRING_KICK",
    13: "SET_VRING_CALL", 14: "SET_VRING_ERR", 15: "GET_PROTOCOL_FEATURES",
    16: "SET_PROTOCOL_FEATURES", 17: "GET_QUEUE_NUM", 18: "SET_VRING_ENABLE",
    19: "SEND_RARP", 20: "NET_SET_MTU", 21: "SET_BACKEND_REQ_FD", 22: "IOTLB_MSG",
    23: "SET_VRING_ENDIAN", 24: "GET_CONFIG", 25: "SET_CONFIG",
    26: "CREATE_CRYPTO_SESSION", 27: "CLOSE_CRYPTO_SESSION", 28: "POSTCOPY_ADVISE",
    29: "POSTCOPY_LISTEN", 30: "POSTCOPY_END", 31: "GET_INFLIGHT_FD", 32: "SET_INFLIGHT_FD",
    33: "GPU_SET_SOCKET", 34: "RESET_DEVICE", 35: "VRING_KICK", 36: "GET_MAX_MEM_SLOTS",
    37: "ADD_MEM_REG", 38: "REM_MEM_REG", 39: "SET_STATUS", 40: "GET_STATUS",
    41: "GET_SHARED_OBJECT", 42: "SET_DEVICE_STATE_FD", 43: "CHECK_DEVICE_STATE",
}
HDR = 12
MAX_FDS = 32
out_lock = threading.Lock()


def say(line):
    with out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def recv_exact(sock, n, want_fds):
    """n bytes from a stream socket; the fds that came with them (only asked on the first read)."""
    data = b""
    fds = []
    while len(data) < n:
        if want_fds and not data:
            anc_size = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
            chunk, anc, _flags, _addr = sock.recvmsg(n - len(data), anc_size)
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(payload[: len(payload) - len(payload) % a.itemsize])
                    fds.extend(a)
        else:
            chunk = sock.recv(n - len(data))
        if not chunk:
            for fd in fds:
                os.close(fd)
            return None, []
        data += chunk
    return data, fds


def pump(src, dst, who, other, done):
    try:
        while True:
            hdr, fds = recv_exact(src, HDR, True)
            if hdr is None:
                break
            req, flags, size = struct.unpack("<III", hdr)
            body, more = recv_exact(src, size, True) if size else (b"", [])
            if body is None:
                break
            fds += more
            name = NAMES.get(req, f"REQ_{req}")
            say(f"{who:<8} {name} size={size} fds={len(fds)} flags=0x{flags:x}")
            anc = []
            if fds:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
            dst.sendmsg([hdr + body], anc)
            for fd in fds:
                os.close(fd)
    except OSError as e:
        say(f"TAP-ERROR {who} {e}")
    finally:
        if not done.is_set():
            done.set()
            say(f"TAP-CLOSED {who}")
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    listen_path, backend_path = sys.argv[1], sys.argv[2]
    try:
        os.unlink(listen_path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(listen_path)
    srv.listen(1)
    say("TAP-LISTENING")
    front, _ = srv.accept()
    srv.close()
    os.unlink(listen_path)
    back = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    back.connect(backend_path)
    say("TAP-CONNECTED")
    done = threading.Event()
    t = threading.Thread(target=pump, args=(back, front, "BACKEND", "FRONTEND", done))
    t.start()
    pump(front, back, "FRONTEND", "BACKEND", done)
    t.join()
    front.close()
    back.close()


if __name__ == "__main__":
    main()
