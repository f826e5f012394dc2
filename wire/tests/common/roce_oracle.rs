//! The decoder's fuzz oracle, shared by the libFuzzer target (`fuzz/`) and the stable
//! proptest (`wire/tests/wire_fuzz.rs`).
//!
//! Properties: no input makes decoding panic; whatever decodes re-encodes without error, and
//! the re-encoding decodes to an equal packet with a valid ICRC.
//!
//! The first input byte picks a mode, the next ones addresses and ports, the rest is the
//! frame or UDP payload. Two modes repair checksums first, so that the fuzzer reaches the
//! transport decoder behind them instead of spending itself on the IP checksum and the ICRC.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use vhca_wire::roce::{self, Ipv4Ident, ROCE_V2_PORT};
use vhca_wire::{ethernet, icrc, ipv4, ipv6, udp};

/// Runs one input through the decoders; panics when a property fails.
pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => check_frame(rest),
        1 => {
            let mut f = rest.to_vec();
            fix_frame(&mut f);
            check_frame(&f);
        }
        m => {
            // Control bytes: [v6?][addr byte][port hi][port lo][ident hi][ident lo][df]
            let (ctl, body) = rest.split_at(rest.len().min(7));
            let mut c = [0u8; 7];
            c[..ctl.len()].copy_from_slice(ctl);
            let v6 = c[0] & 1 == 1;
            let (src, dst) = addrs(v6, c[1], u16::from_be_bytes([c[2], c[3]]));
            let id = Ipv4Ident {
                ident: u16::from_be_bytes([c[4], c[5]]),
                dont_frag: c[6] & 1 == 1,
            };
            match m {
                2 => check_udp(body, src, dst, None),
                3 => check_udp(body, src, dst, Some(id)),
                _ => {
                    let mut b = body.to_vec();
                    fix_udp_payload(&mut b, src, dst, id);
                    check_udp(&b, src, dst, Some(id));
                }
            }
        }
    }
}

fn addrs(v6: bool, a: u8, sport: u16) -> (SocketAddr, SocketAddr) {
    let (s, d) = if v6 {
        (
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x4d, 0, 0, 0, 0, 0, u16::from(a))),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x4d, 0, 0, 0, 0, 0, 1)),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(10, 77, 0, a)),
            IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)),
        )
    };
    (SocketAddr::new(s, sport), SocketAddr::new(d, ROCE_V2_PORT))
}

fn check_frame(f: &[u8]) {
    let Ok(r) = roce::parse_frame(f) else {
        return;
    };
    assert!(
        r.packet.is_well_formed(),
        "decoded packet is not well formed"
    );
    let params = r.params();
    let again = roce::emit_frame(&r.packet, &params).expect("a decoded frame re-encodes");
    let r2 = roce::parse_frame(&again).expect("a re-encoded frame decodes");
    assert_eq!(r2.packet, r.packet);
    assert_eq!(r2.params(), params);
}

fn check_udp(b: &[u8], src: SocketAddr, dst: SocketAddr, id: Option<Ipv4Ident>) {
    let Ok(r) = roce::parse_udp_payload(b, src, dst, id) else {
        return;
    };
    assert!(
        r.packet.is_well_formed(),
        "decoded packet is not well formed"
    );
    let id = id.unwrap_or(Ipv4Ident::KERNEL_UNCONNECTED_UDP);
    let mut out = Vec::new();
    roce::emit_udp_payload_into(&r.packet, id, dst.port(), &mut out)
        .expect("a decoded payload re-encodes");
    assert_eq!(out.len(), r.packet.transport_len());
    let r2 =
        roce::parse_udp_payload(&out, src, dst, Some(id)).expect("a re-encoded payload decodes");
    assert_eq!(r2.icrc, roce::IcrcStatus::Verified);
    assert_eq!(r2.packet, r.packet);
}

/// Makes the IPv4 header checksum and the ICRC right where the frame's shape allows it.
fn fix_frame(f: &mut [u8]) {
    let Ok(eth) = ethernet::Frame::new_checked(&*f) else {
        return;
    };
    let et = eth.ethertype();
    let (ip_start, ip_hlen, ip_total) = match et {
        ethernet::EtherType::Ipv4 => {
            let Ok(mut p) = ipv4::Packet::new_checked(&mut f[ethernet::HEADER_LEN..]) else {
                return;
            };
            p.fill_checksum();
            (
                ethernet::HEADER_LEN,
                p.header_len(),
                usize::from(p.total_len()),
            )
        }
        ethernet::EtherType::Ipv6 => {
            let Ok(p) = ipv6::Packet::new_checked(&f[ethernet::HEADER_LEN..]) else {
                return;
            };
            (
                ethernet::HEADER_LEN,
                ipv6::HEADER_LEN,
                ipv6::HEADER_LEN + usize::from(p.payload_len()),
            )
        }
        _ => return,
    };
    let ip_end = ip_start + ip_total;
    let udp_start = ip_start + ip_hlen;
    let Ok(u) = udp::Packet::new_checked(&f[udp_start..ip_end]) else {
        return;
    };
    let udp_end = udp_start + usize::from(u.len());
    let n = udp_end.saturating_sub(icrc::ICRC_LEN);
    if n < udp_start + udp::HEADER_LEN {
        return;
    }
    let body_start = udp_start + udp::HEADER_LEN;
    if let Ok(c) = icrc::compute(
        &f[ip_start..udp_start],
        &f[udp_start..body_start],
        &f[body_start..n],
    ) {
        f[n..udp_end].copy_from_slice(&c.to_le_bytes());
    }
}

/// Makes the ICRC right for the headers a kernel would write around this payload.
fn fix_udp_payload(b: &mut [u8], src: SocketAddr, dst: SocketAddr, id: Ipv4Ident) {
    let n = b.len();
    if n < 16 {
        return;
    }
    let Ok(u) = (udp::Repr {
        src_port: src.port(),
        dst_port: dst.port(),
        payload_len: n,
    })
    .to_bytes() else {
        return;
    };
    let ip: Vec<u8> = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => match (ipv4::Repr {
            src_addr: s,
            dst_addr: d,
            protocol: ipv4::PROTOCOL_UDP,
            payload_len: udp::HEADER_LEN + n,
            ttl: 64,
            tos: 0,
            ident: id.ident,
            dont_frag: id.dont_frag,
        })
        .to_bytes()
        {
            Ok(h) => h.to_vec(),
            Err(_) => return,
        },
        (IpAddr::V6(s), IpAddr::V6(d)) => match (ipv6::Repr {
            src_addr: s,
            dst_addr: d,
            next_header: ipv4::PROTOCOL_UDP,
            payload_len: udp::HEADER_LEN + n,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        })
        .to_bytes()
        {
            Ok(h) => h.to_vec(),
            Err(_) => return,
        },
        _ => return,
    };
    if let Ok(c) = icrc::compute(&ip, &u, &b[..n - 4]) {
        b[n - 4..].copy_from_slice(&c.to_le_bytes());
    }
}
