//! Sample packets of every opcode the device implements, for tests here and in other crates
//! (fabric's TAP bridge): compiled into `cargo test` of this crate and, for others, behind the
//! `test-support` feature, which only dev-dependencies turn on.

use vhca_device::packet::{
    Aeth, AtomicAckEth, AtomicEth, Bth, Deth, ExtHeaders, Feth, Opcode, Payload, Reth, Syndrome,
};
use vhca_device::{Gid, MemKey, Msn, Packet, Psn, Qpn};

/// Every opcode the device implements.
pub const ALL_OPCODES: [Opcode; 39] = [
    Opcode::RC_SEND_FIRST,
    Opcode::RC_SEND_MIDDLE,
    Opcode::RC_SEND_LAST,
    Opcode::RC_SEND_LAST_IMM,
    Opcode::RC_SEND_ONLY,
    Opcode::RC_SEND_ONLY_IMM,
    Opcode::RC_WRITE_FIRST,
    Opcode::RC_WRITE_MIDDLE,
    Opcode::RC_WRITE_LAST,
    Opcode::RC_WRITE_LAST_IMM,
    Opcode::RC_WRITE_ONLY,
    Opcode::RC_WRITE_ONLY_IMM,
    Opcode::RC_READ_REQUEST,
    Opcode::RC_READ_RESP_FIRST,
    Opcode::RC_READ_RESP_MIDDLE,
    Opcode::RC_READ_RESP_LAST,
    Opcode::RC_READ_RESP_ONLY,
    Opcode::RC_ACK,
    Opcode::RC_ATOMIC_ACK,
    Opcode::RC_CMP_SWAP,
    Opcode::RC_FETCH_ADD,
    Opcode::RC_SEND_LAST_INV,
    Opcode::RC_SEND_ONLY_INV,
    Opcode::RC_FLUSH,
    Opcode::RC_ATOMIC_WRITE,
    Opcode::UC_SEND_FIRST,
    Opcode::UC_SEND_MIDDLE,
    Opcode::UC_SEND_LAST,
    Opcode::UC_SEND_LAST_IMM,
    Opcode::UC_SEND_ONLY,
    Opcode::UC_SEND_ONLY_IMM,
    Opcode::UC_WRITE_FIRST,
    Opcode::UC_WRITE_MIDDLE,
    Opcode::UC_WRITE_LAST,
    Opcode::UC_WRITE_LAST_IMM,
    Opcode::UC_WRITE_ONLY,
    Opcode::UC_WRITE_ONLY_IMM,
    Opcode::UD_SEND_ONLY,
    Opcode::UD_SEND_ONLY_IMM,
];

/// The IPv4-mapped GID of 10.77.0.`last`.
pub fn v4_gid(last: u8) -> Gid {
    Gid::from_ipv4([10, 77, 0, last])
}

/// The IPv6 GID fd00:4d00::`last` (a unique-local address).
pub fn v6_gid(last: u8) -> Gid {
    let mut g = [0u8; 16];
    g[0] = 0xfd;
    g[3] = 0x4d;
    g[15] = last;
    Gid(g)
}

/// The extended headers of each opcode, written out by hand from IBTA's table of
/// opcodes (not derived from `Opcode::layout`), with distinct field values; and whether
/// the opcode carries a payload.
pub fn hand_ext(op: Opcode) -> (ExtHeaders, bool) {
    let reth = Some(Reth {
        va: 0x7f10_985c_3000,
        rkey: MemKey(0x442),
        len: 65536,
    });
    let aeth = Some(Aeth {
        syndrome: Syndrome::ACK_UNLIMITED,
        msn: Msn(3),
    });
    let atomic = Some(AtomicEth {
        va: 0x1000,
        rkey: MemKey(0x1234_56ab),
        swap_add: 0x0102_0304_0506_0708,
        compare: 0xfffe_fdfc_fbfa_f9f8,
    });
    let atomic_ack = Some(AtomicAckEth {
        orig: 0xdead_beef_0000_0001,
    });
    let imm = Some(0x1234_5678u32.to_be());
    let ieth = Some(MemKey(0x0000_0301));
    let deth = Some(Deth {
        qkey: 0x1111_1111,
        src_qp: Qpn(0x12),
    });
    let feth = Some(Feth {
        placement: Feth::GLOBAL | Feth::PERSISTENT,
        selectivity: Feth::MR,
    });
    let none = ExtHeaders::default();
    match op.base() {
        Opcode::RC_SEND_FIRST | Opcode::RC_SEND_MIDDLE => (none, true),
        Opcode::RC_SEND_LAST | Opcode::RC_SEND_ONLY => (none, true),
        Opcode::RC_SEND_LAST_IMM | Opcode::RC_SEND_ONLY_IMM => (ExtHeaders { imm, ..none }, true),
        Opcode::RC_WRITE_FIRST | Opcode::RC_WRITE_ONLY => (ExtHeaders { reth, ..none }, true),
        Opcode::RC_WRITE_MIDDLE | Opcode::RC_WRITE_LAST => (none, true),
        Opcode::RC_WRITE_LAST_IMM => (ExtHeaders { imm, ..none }, true),
        Opcode::RC_WRITE_ONLY_IMM => (ExtHeaders { reth, imm, ..none }, true),
        Opcode::RC_READ_REQUEST => (ExtHeaders { reth, ..none }, false),
        Opcode::RC_READ_RESP_FIRST | Opcode::RC_READ_RESP_LAST => {
            (ExtHeaders { aeth, ..none }, true)
        }
        Opcode::RC_READ_RESP_ONLY => (ExtHeaders { aeth, ..none }, true),
        Opcode::RC_READ_RESP_MIDDLE => (none, true),
        Opcode::RC_ACK => (ExtHeaders { aeth, ..none }, false),
        Opcode::RC_ATOMIC_ACK => (
            ExtHeaders {
                aeth,
                atomic_ack,
                ..none
            },
            false,
        ),
        Opcode::RC_CMP_SWAP | Opcode::RC_FETCH_ADD => (ExtHeaders { atomic, ..none }, false),
        Opcode::RC_SEND_LAST_INV | Opcode::RC_SEND_ONLY_INV => (ExtHeaders { ieth, ..none }, true),
        Opcode::RC_FLUSH => (ExtHeaders { feth, reth, ..none }, false),
        Opcode::RC_ATOMIC_WRITE => (ExtHeaders { reth, ..none }, true),
        Opcode::UD_SEND_ONLY => (ExtHeaders { deth, ..none }, true),
        Opcode::UD_SEND_ONLY_IMM => (ExtHeaders { deth, imm, ..none }, true),
        other => panic!("no hand-written headers for {other:?}"),
    }
}

/// A packet of `op` with the headers of [`hand_ext`] and `payload_len` payload bytes (when
/// the opcode has a payload).
pub fn sample(op: Opcode, payload_len: usize, ipv6: bool) -> Packet {
    let (ext, has_payload) = hand_ext(op);
    let mut bth = Bth::new(op, Qpn(0x11), Psn(0xd97ec5));
    bth.ack_req = op.is_last() || op == Opcode::RC_READ_REQUEST || op.is_atomic();
    bth.se = op == Opcode::RC_SEND_ONLY_IMM;
    let payload: Vec<u8> = if has_payload {
        (0..payload_len).map(|i| (i * 7 + 3) as u8).collect()
    } else {
        Vec::new()
    };
    bth.pad = ((4 - payload.len() % 4) % 4) as u8;
    let (s, d) = if ipv6 {
        (v6_gid(3), v6_gid(1))
    } else {
        (v4_gid(3), v4_gid(1))
    };
    Packet {
        src_gid: s,
        dst_gid: d,
        src_port: 49441,
        bth,
        ext,
        payload: Payload::Bytes(payload),
    }
}
