//! Every RoCEv2 header decoder on its own, and the ICRC check.
//!
//! Properties: no input panics a decoder; a header that parses re-emits into bytes that parse
//! to the same value; an ICRC computed over any headers and transport verifies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use vhca_wire::{
    aeth, arp, atomic_ack_eth, atomic_eth, bth, deth, ethernet, icrc, ieth, immdt, ipv4, ipv6,
    reth, udp,
};

/// Parses, re-emits into a buffer of the header's length and parses again.
macro_rules! round_trip {
    ($m:ident, $data:expr) => {{
        if let Ok(p) = $m::Packet::new_checked($data) {
            if let Ok(r) = $m::Repr::parse(&p) {
                let mut buf = vec![0u8; r.buffer_len()];
                r.emit(&mut $m::Packet::new_unchecked(&mut buf[..]));
                let p2 =
                    $m::Packet::new_checked(&buf[..]).expect("an emitted header is long enough");
                let r2 = $m::Repr::parse(&p2).expect("an emitted header parses");
                assert_eq!(r, r2, concat!(stringify!($m), " round trip"));
            }
        }
    }};
}

pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 15 {
        0 => round_trip!(bth, rest),
        1 => round_trip!(aeth, rest),
        2 => round_trip!(reth, rest),
        3 => round_trip!(deth, rest),
        4 => round_trip!(immdt, rest),
        5 => round_trip!(ieth, rest),
        6 => round_trip!(atomic_eth, rest),
        7 => round_trip!(atomic_ack_eth, rest),
        8 => round_trip!(arp, rest),
        9 => check_ethernet(rest),
        10 => check_ipv4(rest),
        11 => check_ipv6(rest),
        12 => check_udp(rest),
        13 => check_icrc_verify(rest),
        _ => check_icrc_compute(rest),
    }
}

fn check_ethernet(d: &[u8]) {
    let Ok(f) = ethernet::Frame::new_checked(d) else {
        return;
    };
    let Ok(r) = ethernet::Repr::parse(&f) else {
        return;
    };
    let _ = f.payload();
    let mut buf = vec![0u8; r.buffer_len()];
    r.emit(&mut ethernet::Frame::new_unchecked(&mut buf[..]));
    let f2 = ethernet::Frame::new_checked(&buf[..]).expect("emitted Ethernet header");
    assert_eq!(ethernet::Repr::parse(&f2).expect("re-parse"), r);
}

fn check_ipv4(d: &[u8]) {
    let Ok(p) = ipv4::Packet::new_checked(d) else {
        return;
    };
    let _ = (p.verify_checksum(), p.payload().len(), p.header().len());
    let Ok(r) = ipv4::Repr::parse(&p) else {
        return;
    };
    // The header as the encoder writes it, followed by the same payload, parses to the same.
    let Ok(h) = r.to_bytes() else {
        return;
    };
    let mut again = h.to_vec();
    again.extend_from_slice(p.payload());
    let p2 = ipv4::Packet::new_checked(&again[..]).expect("an emitted IPv4 packet is checked");
    assert!(
        p2.verify_checksum(),
        "an emitted IPv4 header has a right checksum"
    );
    assert_eq!(ipv4::Repr::parse(&p2).expect("re-parse"), r);
}

fn check_ipv6(d: &[u8]) {
    let Ok(p) = ipv6::Packet::new_checked(d) else {
        return;
    };
    let Ok(r) = ipv6::Repr::parse(&p) else {
        return;
    };
    let Ok(h) = r.to_bytes() else {
        return;
    };
    let mut again = h.to_vec();
    again.extend_from_slice(p.payload());
    let p2 = ipv6::Packet::new_checked(&again[..]).expect("an emitted IPv6 packet is checked");
    assert_eq!(ipv6::Repr::parse(&p2).expect("re-parse"), r);
}

fn check_udp(d: &[u8]) {
    let Some((&sel, d)) = d.split_first() else {
        return;
    };
    let (src, dst): (IpAddr, IpAddr) = if sel & 1 == 0 {
        (
            Ipv4Addr::new(10, 0, 0, 1).into(),
            Ipv4Addr::new(10, 0, 0, 2).into(),
        )
    } else {
        (
            Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into(),
            Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).into(),
        )
    };
    let Ok(p) = udp::Packet::new_checked(d) else {
        return;
    };
    let _ = p.verify_checksum(src, dst);
    if let Ok(r) = udp::Repr::parse(&p, src, dst, sel & 2 != 0) {
        let h = r.to_bytes().expect("a parsed UDP length re-encodes");
        let mut again = h.to_vec();
        again.extend_from_slice(&d[udp::HEADER_LEN..udp::HEADER_LEN + r.payload_len]);
        let p2 = udp::Packet::new_checked(&again[..]).expect("an emitted UDP datagram is checked");
        // Checksum 0 means none: the emitted header always verifies.
        assert_eq!(udp::Repr::parse(&p2, src, dst, true).expect("re-parse"), r);
    }
}

/// `[ip header len selector][ip header][8-byte UDP header][transport…ICRC]`.
fn split_icrc(d: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (&sel, d) = d.split_first()?;
    let ip_len = match sel % 3 {
        0 => ipv4::HEADER_LEN,
        1 => ipv6::HEADER_LEN,
        _ => usize::from(sel >> 2),
    };
    if d.len() < ip_len + udp::HEADER_LEN {
        return None;
    }
    let (ip, rest) = d.split_at(ip_len);
    let (u, t) = rest.split_at(udp::HEADER_LEN);
    Some((ip, u, t))
}

fn check_icrc_verify(d: &[u8]) {
    if let Some((ip, u, t)) = split_icrc(d) {
        let _ = icrc::verify(ip, u, t);
    }
}

fn check_icrc_compute(d: &[u8]) {
    let Some((ip, u, t)) = split_icrc(d) else {
        return;
    };
    let Ok(c) = icrc::compute(ip, u, t) else {
        return;
    };
    let mut with = t.to_vec();
    with.extend_from_slice(&c.to_le_bytes());
    if with.len() >= bth::HEADER_LEN + icrc::ICRC_LEN {
        icrc::verify(ip, u, &with).expect("a computed ICRC verifies");
    }
}
