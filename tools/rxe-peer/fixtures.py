#!/usr/bin/env python3
"""Turns a capture from `RXE_PEER_CAPTURE=FILE tools/rxe-peer/interop.sh` into hex fixtures:
the first frame rxe (10.77.0.2) sent of every opcode, plus its NAKs, for fabric's wire tests.

    tools/rxe-peer/fixtures.py CAPTURE.pcap wire/tests/fixtures/rxe
"""
import struct
import sys

NAMES = {0: "send_first", 1: "send_middle", 2: "send_last", 4: "send_only", 6: "write_first",
         7: "write_middle", 8: "write_last", 10: "write_only", 12: "read_request",
         13: "read_resp_first", 14: "read_resp_middle", 15: "read_resp_last", 16: "read_resp_only",
         17: "ack", 100: "ud_send_only"}


def frames(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0x0A0D0D0A:
        yield from pcapng(data)
        return
    endian = "<" if magic == 0xA1B2C3D4 else ">"
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        yield data[off + 16:off + 16 + incl]
        off += 16 + incl


def pcapng(data):
    off = 0
    while off + 12 <= len(data):
        btype, blen = struct.unpack("<II", data[off:off + 8])
        if btype == 6:  # enhanced packet block
            caplen = struct.unpack("<I", data[off + 20:off + 24])[0]
            yield data[off + 28:off + 28 + caplen]
        off += blen


def main(cap, outdir):
    seen = {}
    for fr in frames(cap):
        if len(fr) < 14 + 20 + 8 + 12 or fr[12:14] != b"\x08\x00":
            continue
        if fr[26:30] != bytes([10, 77, 0, 2]):
            continue
        bth = fr[42:54]
        op = bth[0]
        name = NAMES.get(op)
        if name is None:
            continue
        if op == 17:
            syn = fr[54]
            if syn >> 5 == 1:
                name = "rnr_nak"
            elif syn >> 5 == 3:
                name = "nak_%02x" % syn
        if name not in seen:
            seen[name] = (op, fr)
    for name, (op, fr) in sorted(seen.items()):
        lines = ["# CAPTURED from Debian rdma_rxe (bookworm kernel 6.1) by tools/rxe-peer/interop.sh:",
                 "# a frame the rxe guest 10.77.0.2 sent to vhca 10.77.0.1, %s, %d bytes." % (name, len(fr)),
                 "# Regenerate: RXE_PEER_CAPTURE=cap.pcap tools/rxe-peer/interop.sh; tools/rxe-peer/fixtures.py cap.pcap DIR"]
        for i in range(0, len(fr), 16):
            lines.append(" ".join("%02x" % b for b in fr[i:i + 16]))
        path = "%s/captured_%s%s.hex" % (outdir, "" if op == 100 else "rc_", name)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
    print("wrote", ", ".join(sorted(seen)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
