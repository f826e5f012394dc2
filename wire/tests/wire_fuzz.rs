//! Stable-toolchain fuzzing of the RoCEv2 decoder: random bytes and random mutations of valid
//! frames and UDP payloads, through the same oracle as the libFuzzer target in `fuzz/`.
//!
//! `VHCA_FUZZ_CASES` sets the number of cases per property (default 512, quick enough for
//! every `cargo test`); for a long run: `VHCA_FUZZ_CASES=2000000 cargo test --release -p
//! vhca-wire --test wire_fuzz`.

#[path = "common/roce_oracle.rs"]
mod roce_oracle;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::net::SocketAddr;
use vhca_device::packet::{
    Aeth, AtomicAckEth, AtomicEth, Bth, Deth, ExtHeaders, Feth, Opcode, Payload, Reth, Syndrome,
};
use vhca_device::{Gid, Mac, MemKey, Msn, Packet, Psn, Qpn};
use vhca_wire::roce::{self, FrameParams, Ipv4Ident};

fn cases() -> u32 {
    std::env::var("VHCA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// Every opcode the device implements: the ones with a layout.
fn opcodes() -> Vec<Opcode> {
    (0..=255u8)
        .map(Opcode)
        .filter(|o| o.layout().is_some())
        .collect()
}

/// A random well-formed packet.
fn random_packet(rng: &mut ChaCha8Rng) -> Packet {
    let ops = opcodes();
    let op = ops[rng.gen_range(0..ops.len())];
    let l = op.layout().unwrap_or_else(|| unreachable!());
    let plen = if l.payload {
        match rng.gen_range(0..4) {
            0 => 0,
            1 => rng.gen_range(1..8),
            2 => rng.gen_range(8..300),
            _ => rng.gen_range(300..4200),
        }
    } else {
        0
    };
    let payload: Vec<u8> = (0..plen).map(|_| rng.gen()).collect();
    let mut bth = Bth::new(op, Qpn::new(rng.gen()), Psn::new(rng.gen()));
    bth.se = rng.gen();
    bth.mig = rng.gen();
    bth.pkey = rng.gen();
    bth.fecn = rng.gen();
    bth.becn = rng.gen();
    bth.ack_req = rng.gen();
    bth.pad = ((4 - plen % 4) % 4) as u8;
    let ext = ExtHeaders {
        // Only the FETH's field bits travel (reserved bits are zero on the wire).
        feth: l.feth.then(|| Feth {
            placement: rng.gen::<u8>() & 0x0f,
            selectivity: rng.gen::<u8>() & 0x03,
        }),
        reth: l.reth.then(|| Reth {
            va: rng.gen(),
            rkey: MemKey(rng.gen()),
            len: rng.gen(),
        }),
        aeth: l.aeth.then(|| Aeth {
            syndrome: Syndrome::from_byte(rng.gen()),
            msn: Msn(rng.gen::<u32>() & 0xff_ffff),
        }),
        atomic: l.atomic.then(|| AtomicEth {
            va: rng.gen(),
            rkey: MemKey(rng.gen()),
            swap_add: rng.gen(),
            compare: rng.gen(),
        }),
        atomic_ack: l.atomic_ack.then(|| AtomicAckEth { orig: rng.gen() }),
        imm: l.imm.then(|| rng.gen()),
        ieth: l.ieth.then(|| MemKey(rng.gen())),
        deth: l.deth.then(|| Deth {
            qkey: rng.gen(),
            src_qp: Qpn::new(rng.gen()),
        }),
    };
    let (src_gid, dst_gid) = if rng.gen() {
        (
            Gid::from_ipv4([10, 77, 0, rng.gen()]),
            Gid::from_ipv4([10, 77, 0, 1]),
        )
    } else {
        let mut a = [0u8; 16];
        rng.fill(&mut a[..]);
        a[0] = 0xfd; // never IPv4-mapped
        let mut b = a;
        b[15] ^= 1;
        (Gid(a), Gid(b))
    };
    Packet {
        src_gid,
        dst_gid,
        src_port: rng.gen(),
        bth,
        ext,
        payload: Payload::Bytes(payload),
    }
}

/// A few random byte-level edits: flips, overwrites, truncation, insertion, deletion.
fn mutate(rng: &mut ChaCha8Rng, b: &mut Vec<u8>) {
    for _ in 0..rng.gen_range(1..5) {
        if b.is_empty() {
            b.push(rng.gen());
            continue;
        }
        let i = rng.gen_range(0..b.len());
        match rng.gen_range(0..6) {
            0 => b[i] ^= 1 << rng.gen_range(0..8),
            1 => b[i] = rng.gen(),
            2 => b.truncate(i),
            3 => b.insert(i, rng.gen()),
            4 => {
                b.remove(i);
            }
            _ => {
                // Interesting values in length-like places.
                b[i] = [0, 1, 3, 4, 0x7f, 0x80, 0xff][rng.gen_range(0..7)];
            }
        }
    }
}

/// Runs a valid packet's frame and UDP payload, plain and mutated, through every oracle mode.
fn run_seed(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let p = random_packet(&mut rng);
    let params = FrameParams {
        udp_checksum: rng.gen(),
        ipv4: Ipv4Ident {
            ident: rng.gen(),
            dont_frag: rng.gen(),
        },
        ..FrameParams::new(Mac([2, 0, 0, 0, 0, 3]), Mac([2, 0, 0, 0, 0, 1]))
    };
    let frame = roce::emit_frame(&p, &params).expect("valid packets encode");
    let parsed = roce::parse_frame(&frame).expect("valid frames decode");
    assert_eq!(parsed.packet, p);
    for mode in [0u8, 1] {
        let mut f = frame.clone();
        mutate(&mut rng, &mut f);
        let mut input = vec![mode];
        input.extend_from_slice(&f);
        roce_oracle::check(&input);
    }
    // The UDP-payload modes pick their own addresses from control bytes: re-address the
    // packet the way mode 2-4 will see it so that unmutated payloads decode.
    let v6 = p.src_gid.to_ipv4().is_none();
    let a: u8 = rng.gen();
    let sport = p.src_port;
    let (src, dst) = oracle_addrs(v6, a, sport);
    let mut q = p.clone();
    q.src_gid = roce::ip_to_gid(src.ip());
    q.dst_gid = roce::ip_to_gid(dst.ip());
    let id = params.ipv4;
    let payload = roce::emit_udp_payload(&q, id).expect("valid packets encode");
    let ctl = [
        u8::from(v6),
        a,
        (sport >> 8) as u8,
        sport as u8,
        (id.ident >> 8) as u8,
        id.ident as u8,
        u8::from(id.dont_frag),
    ];
    for mode in [2u8, 3, 4] {
        for mutated in [false, true] {
            let mut b = payload.clone();
            if mutated {
                mutate(&mut rng, &mut b);
            }
            let mut input = vec![mode];
            input.extend_from_slice(&ctl);
            input.extend_from_slice(&b);
            roce_oracle::check(&input);
        }
    }
    // Unmutated, it must decode in every UDP mode.
    let r = roce::parse_udp_payload(&payload, src, dst, Some(id)).expect("decodes");
    assert_eq!(r.packet, q);
}

/// The oracle's address choice, repeated here to build matching packets.
fn oracle_addrs(v6: bool, a: u8, sport: u16) -> (SocketAddr, SocketAddr) {
    if v6 {
        (
            SocketAddr::new(format!("fd00:4d::{a:x}").parse().unwrap(), sport),
            "[fd00:4d::1]:4791".parse().unwrap(),
        )
    } else {
        (
            SocketAddr::new([10, 77, 0, a].into(), sport),
            "10.77.0.1:4791".parse().unwrap(),
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
        roce_oracle::check(&data);
    }

    #[test]
    fn mutated_valid_packets_never_panic_and_round_trip(seed in any::<u64>()) {
        run_seed(seed);
    }
}

#[test]
fn opcode_list_is_the_devices() {
    assert_eq!(opcodes().len(), 39);
}
