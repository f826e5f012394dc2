//! Frames captured from Debian's rdma_rxe (tools/rxe-peer: a QEMU guest talking to vhca) decode
//! with their ICRC verified over the real IP header, and re-encode byte for byte.

use std::path::Path;
use vhca_device::packet::Opcode;
use vhca_device::Gid;
use vhca_wire::roce;

fn load(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| {
            l.split_whitespace()
                .map(|t| u8::from_str_radix(t, 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn expected_opcode(name: &str) -> Opcode {
    match name {
        "captured_rc_send_first" => Opcode::RC_SEND_FIRST,
        "captured_rc_send_middle" => Opcode::RC_SEND_MIDDLE,
        "captured_rc_send_last" => Opcode::RC_SEND_LAST,
        "captured_rc_send_only" => Opcode::RC_SEND_ONLY,
        "captured_rc_write_first" => Opcode::RC_WRITE_FIRST,
        "captured_rc_write_middle" => Opcode::RC_WRITE_MIDDLE,
        "captured_rc_write_last" => Opcode::RC_WRITE_LAST,
        "captured_rc_read_request" => Opcode::RC_READ_REQUEST,
        "captured_rc_read_resp_first" => Opcode::RC_READ_RESP_FIRST,
        "captured_rc_read_resp_middle" => Opcode::RC_READ_RESP_MIDDLE,
        "captured_rc_read_resp_last" => Opcode::RC_READ_RESP_LAST,
        "captured_rc_ack" | "captured_rc_nak_60" => Opcode::RC_ACK,
        "captured_ud_send_only" => Opcode::UD_SEND_ONLY,
        other => panic!("unknown fixture {other}"),
    }
}

#[test]
fn rxe_frames_decode_with_a_verified_icrc_and_re_encode_identically() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rxe");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let frame = load(&path);
        // parse_frame checks the IPv4 header checksum and the ICRC over the header rxe's
        // kernel wrote (its IP ID included): a decode is a verified ICRC.
        let got = roce::parse_frame(&frame).unwrap_or_else(|e| panic!("{name}: {e}"));
        let p = &got.packet;
        assert_eq!(p.bth.opcode, expected_opcode(&name), "{name}");
        assert_eq!(p.src_gid, Gid::from_ipv4([10, 77, 0, 2]), "{name}");
        assert_eq!(p.dst_gid, Gid::from_ipv4([10, 77, 0, 1]), "{name}");
        assert_eq!(p.bth.pkey, 0xffff, "{name}");
        assert!(p.is_well_formed(), "{name}");
        assert_eq!(
            roce::emit_frame(p, &got.params()).unwrap(),
            frame,
            "{name} re-encodes byte for byte"
        );
        if name == "captured_rc_nak_60" {
            let aeth = p.ext.aeth.unwrap();
            assert_eq!(
                aeth.syndrome,
                vhca_device::packet::Syndrome::Nak(vhca_device::packet::NakCode::PsnSequenceError)
            );
        }
        // A flipped payload or header bit breaks the ICRC.
        let mut bad = frame.clone();
        let last = bad.len() - 5;
        bad[last] ^= 0x10;
        assert!(
            roce::parse_frame(&bad).is_err(),
            "{name}: corruption must be caught"
        );
        n += 1;
    }
    assert!(n >= 12, "only {n} captured frames");
}
