//! The RoCEv2 invariant CRC (IBTA annex A17, as rdma_rxe computes it; facts file B.1).
//!
//! CRC-32 of IEEE 802.3 (what `crc32fast::hash` computes) over, in order:
//! 1. eight 0xFF bytes, standing for the IB LRH that RoCEv2 does not carry;
//! 2. the IP header with the fields routers may change set to ones — IPv4: TOS, TTL and header
//!    checksum; IPv6: traffic class, flow label and hop limit;
//! 3. the UDP header with the checksum set to 0xFFFF;
//! 4. the BTH with byte 4 (FECN, BECN, reserved) set to 0xFF;
//! 5. everything after the BTH up to the ICRC: extension headers, payload, pad.
//!
//! The IPv4 identification and flags are *not* masked: the ICRC depends on what the sending IP
//! stack wrote there (see `docs/wire.md` for what that means on kernel UDP sockets).
//!
//! The CRC is stored little-endian after the pad, like an Ethernet FCS.

use super::{bth, check_len, ipv4, ipv6, udp, Result, WireError};

/// Length of the ICRC trailer.
pub const ICRC_LEN: usize = 4;

/// Computes the ICRC of a RoCEv2 packet given its IP header (20 bytes IPv4 without options,
/// or 40 bytes IPv6), its UDP header (8 bytes) and the transport bytes from the BTH to the end
/// of the pad (the ICRC itself excluded).
pub fn compute(ip_header: &[u8], udp_header: &[u8], transport: &[u8]) -> Result<u32> {
    let mut h = crc32fast::Hasher::new();
    h.update(&[0xff; 8]);
    match ip_header.first().map(|b| b >> 4) {
        Some(4) => {
            if ip_header.len() != ipv4::HEADER_LEN || ip_header[0] != 0x45 {
                return Err(WireError::Unsupported {
                    what: "IPv4 header for the ICRC (options)",
                    value: ip_header.len() as u32,
                });
            }
            let mut m = [0u8; ipv4::HEADER_LEN];
            m.copy_from_slice(ip_header);
            m[1] = 0xff; // TOS
            m[8] = 0xff; // TTL
            m[10] = 0xff; // header checksum
            m[11] = 0xff;
            h.update(&m);
        }
        Some(6) => {
            if ip_header.len() != ipv6::HEADER_LEN {
                return Err(WireError::BadLength {
                    what: "IPv6 header for the ICRC",
                    detail: "not 40 bytes",
                });
            }
            let mut m = [0u8; ipv6::HEADER_LEN];
            m.copy_from_slice(ip_header);
            // Traffic class and flow label: everything in the first word but the version.
            m[0] |= 0x0f;
            m[1] = 0xff;
            m[2] = 0xff;
            m[3] = 0xff;
            m[7] = 0xff; // hop limit
            h.update(&m);
        }
        _ => {
            return Err(WireError::Unsupported {
                what: "IP version for the ICRC",
                value: ip_header.first().map_or(0, |b| u32::from(b >> 4)),
            })
        }
    }
    if udp_header.len() != udp::HEADER_LEN {
        return Err(WireError::BadLength {
            what: "UDP header for the ICRC",
            detail: "not 8 bytes",
        });
    }
    let mut u = [0u8; udp::HEADER_LEN];
    u.copy_from_slice(udp_header);
    u[6] = 0xff;
    u[7] = 0xff;
    h.update(&u);
    check_len("BTH", transport, bth::HEADER_LEN)?;
    let mut b = [0u8; bth::HEADER_LEN];
    b.copy_from_slice(&transport[..bth::HEADER_LEN]);
    b[bth::ICRC_MASKED_BYTE] = 0xff;
    h.update(&b);
    h.update(&transport[bth::HEADER_LEN..]);
    Ok(h.finalize())
}

/// Which ICRC a FLUSH (RC opcode 0x1C) carries.
///
/// Linux rxe (from 6.2, still in Debian's 6.12) has no payload offset for FLUSH in its opcode
/// table, so its ICRC runs over the BTH, FETH and RETH once as headers and then a second time
/// as the "payload" that starts at offset 0 (BTH unmasked). rxe drops a FLUSH whose ICRC IBTA
/// computes, and sends its own; see docs/transport.md.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlushIcrc {
    /// IBTA's ICRC, like every other opcode.
    #[default]
    Ibta,
    /// rxe's: the headers a second time.
    Rxe,
}

/// The FLUSH opcode (a BTH's first byte) whose ICRC rxe computes its own way.
const FLUSH: u8 = 0x1c;

/// [`compute`], with a FLUSH's ICRC in the chosen flavour.
pub fn compute_with(
    ip_header: &[u8],
    udp_header: &[u8],
    transport: &[u8],
    flush: FlushIcrc,
) -> Result<u32> {
    let crc = compute(ip_header, udp_header, transport)?;
    if flush == FlushIcrc::Rxe && transport.first() == Some(&FLUSH) {
        // rxe's "payload" of a FLUSH: every byte from the BTH to the pad, unmasked.
        let mut h = crc32fast::Hasher::new_with_initial(crc);
        h.update(transport);
        return Ok(h.finalize());
    }
    Ok(crc)
}

/// Checks the ICRC at the end of `transport_with_icrc` (BTH … pad, ICRC). A FLUSH passes with
/// either flavour of [`FlushIcrc`]: vhca accepts what rxe sends as well as what IBTA says.
pub fn verify(ip_header: &[u8], udp_header: &[u8], transport_with_icrc: &[u8]) -> Result<()> {
    check_len(
        "RoCEv2 transport with ICRC",
        transport_with_icrc,
        bth::HEADER_LEN + ICRC_LEN,
    )?;
    let (body, tail) = transport_with_icrc.split_at(transport_with_icrc.len() - ICRC_LEN);
    let carried = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = compute(ip_header, udp_header, body)?;
    if computed == carried
        || (body.first() == Some(&FLUSH)
            && compute_with(ip_header, udp_header, body, FlushIcrc::Rxe)? == carried)
    {
        Ok(())
    } else {
        Err(WireError::BadIcrc { computed, carried })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_flush_verifies_with_either_icrc_and_nothing_else_does() {
        // FLUSH: BTH (opcode 0x1c) + FETH + RETH, no payload.
        let mut t = TRANSPORT.to_vec();
        t.truncate(12);
        t[0] = 0x1c;
        t.extend_from_slice(&[0, 0, 0, 1]);
        t.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 2, 0x45, 0, 0, 1, 0]);
        let ibta = compute(&IP, &UDP, &t).unwrap();
        let rxe = compute_with(&IP, &UDP, &t, FlushIcrc::Rxe).unwrap();
        assert_ne!(ibta, rxe);
        assert_eq!(compute_with(&IP, &UDP, &t, FlushIcrc::Ibta).unwrap(), ibta);
        // rxe's is one CRC over the IBTA input followed by the transport bytes again.
        let mut h = crc32fast::Hasher::new_with_initial(ibta);
        h.update(&t);
        assert_eq!(rxe, h.finalize());
        for crc in [ibta, rxe] {
            let mut w = t.clone();
            w.extend_from_slice(&crc.to_le_bytes());
            assert!(verify(&IP, &UDP, &w).is_ok());
        }
        let mut w = t.clone();
        w.extend_from_slice(&(rxe ^ 1).to_le_bytes());
        assert!(verify(&IP, &UDP, &w).is_err());
        // Any other opcode: the rxe flavour changes nothing and is not accepted instead.
        let mut send = TRANSPORT.to_vec();
        let std = compute(&IP, &UDP, &send).unwrap();
        assert_eq!(compute_with(&IP, &UDP, &send, FlushIcrc::Rxe).unwrap(), std);
        let mut h = crc32fast::Hasher::new_with_initial(std);
        h.update(&send);
        send.extend_from_slice(&h.finalize().to_le_bytes());
        assert!(verify(&IP, &UDP, &send).is_err());
    }

    // The SEND_ONLY of the hand-written vector: 10.77.0.3:49441 → 10.77.0.1:4791, QP 0x11,
    // PSN 0xd97ec5, AckReq, payload "ping" (no pad). IP header as a kernel UDP socket writes it
    // for an unconnected DF socket: ID 0, DF; TOS/TTL/checksum as rxe would (0, 64, valid).
    #[rustfmt::skip]
    const IP: [u8; 20] = [
        0x45, 0x00, 0x00, 0x30, 0x00, 0x00, 0x40, 0x00,
        0x40, 0x11, 0x26, 0x20, 10, 77, 0, 3, 10, 77, 0, 1,
    ];
    const UDP: [u8; 8] = [0xc1, 0x21, 0x12, 0xb7, 0x00, 0x1c, 0x00, 0x00];
    #[rustfmt::skip]
    const TRANSPORT: [u8; 16] = [
        0x04, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x11, 0x80, 0xd9, 0x7e, 0xc5,
        b'p', b'i', b'n', b'g',
    ];

    /// The masked byte string written out by hand from the rules above, independent of
    /// `compute`'s masking code.
    fn masked_by_hand() -> Vec<u8> {
        let mut v = vec![0xff; 8];
        v.extend_from_slice(&[
            0x45, 0xff, 0x00, 0x30, 0x00, 0x00, 0x40, 0x00, // TOS masked
            0xff, 0x11, 0xff, 0xff, 10, 77, 0, 3, 10, 77, 0, 1, // TTL, checksum masked
        ]);
        v.extend_from_slice(&[0xc1, 0x21, 0x12, 0xb7, 0x00, 0x1c, 0xff, 0xff]);
        v.extend_from_slice(&[
            0x04, 0x00, 0xff, 0xff, 0xff, 0x00, 0x00, 0x11, 0x80, 0xd9, 0x7e, 0xc5,
        ]);
        v.extend_from_slice(b"ping");
        v
    }

    #[test]
    fn seed_is_eight_ff_bytes() {
        // rxe seeds its running CRC with 0xdebb20e3, the register after eight 0xFF bytes.
        assert_eq!(crc32fast::hash(&[0xff; 8]), !0xdebb_20e3);
    }

    #[test]
    fn ipv4_vector() {
        let c = compute(&IP, &UDP, &TRANSPORT).unwrap();
        assert_eq!(c, crc32fast::hash(&masked_by_hand()));
        // The value itself, from an independent CRC-32 (Python's zlib.crc32 of the same
        // masked bytes), so that a change of crate or masking cannot go unnoticed.
        assert_eq!(c, 0x6393_0dc3);
        let mut t = TRANSPORT.to_vec();
        t.extend_from_slice(&c.to_le_bytes());
        verify(&IP, &UDP, &t).unwrap();
    }

    #[test]
    fn masked_fields_do_not_matter() {
        let base = compute(&IP, &UDP, &TRANSPORT).unwrap();
        let mut ip = IP;
        ip[1] = 0x28; // DSCP/ECN
        ip[8] = 1; // TTL
        ip[10] = 0x12; // checksum
        let mut udp = UDP;
        udp[6] = 0xab;
        udp[7] = 0xcd;
        let mut t = TRANSPORT;
        t[4] = 0xc0; // FECN, BECN
        assert_eq!(compute(&ip, &udp, &t).unwrap(), base);
        // The IPv4 ID is covered: a kernel's random ID changes the ICRC.
        let mut ip = IP;
        ip[5] = 1;
        assert_ne!(compute(&ip, &UDP, &TRANSPORT).unwrap(), base);
    }

    #[test]
    fn ipv6_masks_tc_flow_and_hop_limit() {
        let mut ip6 = [0u8; 40];
        ip6[0] = 0x60;
        ip6[5] = 0x1c;
        ip6[6] = 17;
        ip6[7] = 64;
        ip6[8] = 0xfd;
        ip6[23] = 3;
        ip6[24] = 0xfd;
        ip6[39] = 1;
        let base = compute(&ip6, &UDP, &TRANSPORT).unwrap();
        let mut by_hand = vec![0xff; 8];
        let mut m = ip6;
        m[..4].copy_from_slice(&[0x6f, 0xff, 0xff, 0xff]);
        m[7] = 0xff;
        by_hand.extend_from_slice(&m);
        by_hand.extend_from_slice(&masked_by_hand()[28..]);
        assert_eq!(base, crc32fast::hash(&by_hand));
        let mut other = ip6;
        other[0] = 0x6a;
        other[2] = 0x12;
        other[7] = 1;
        assert_eq!(compute(&other, &UDP, &TRANSPORT).unwrap(), base);
    }

    #[test]
    fn rejects_malformed_inputs() {
        assert!(compute(&IP[..19], &UDP, &TRANSPORT).is_err());
        assert!(compute(&[0x46; 24], &UDP, &TRANSPORT).is_err());
        assert!(compute(&[0x60; 39], &UDP, &TRANSPORT).is_err());
        assert!(compute(&[], &UDP, &TRANSPORT).is_err());
        assert!(compute(&IP, &UDP[..7], &TRANSPORT).is_err());
        assert!(compute(&IP, &UDP, &TRANSPORT[..11]).is_err());
        assert!(verify(&IP, &UDP, &TRANSPORT[..15]).is_err());
        assert!(matches!(
            verify(&IP, &UDP, &TRANSPORT),
            Err(WireError::BadIcrc { .. })
        ));
    }

    /// Whether byte `i` of the concatenation IP(20) ‖ UDP(8) ‖ transport is masked.
    fn masked(i: usize) -> bool {
        matches!(i, 1 | 8 | 10 | 11 | 26 | 27 | 32)
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_changes_the_icrc(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            pick in any::<usize>(),
            bit in 0u8..8,
        ) {
            let mut t = TRANSPORT[..12].to_vec();
            t.extend_from_slice(&payload);
            let mut all = IP.to_vec();
            all.extend_from_slice(&UDP);
            all.extend_from_slice(&t);
            let base = compute(&all[..20], &all[20..28], &all[28..]).unwrap();
            // Flip a bit anywhere but in the version nibble (that changes the IP family).
            let i = 1 + pick % (all.len() - 1);
            all[i] ^= 1 << bit;
            let c = compute(&all[..20], &all[20..28], &all[28..]).unwrap();
            if masked(i) {
                prop_assert_eq!(c, base);
            } else {
                prop_assert_ne!(c, base);
            }
        }
    }
}
