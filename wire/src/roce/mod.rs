//! RoCEv2: the device's [`Packet`] to and from bytes.
//!
//! Two shapes:
//! * the **UDP payload** (BTH, extended headers, payload, pad, ICRC) for kernel UDP sockets,
//!   where the kernel writes the IP and UDP headers: [`emit_udp_payload`], [`parse_udp_payload`];
//! * the whole **Ethernet frame** for TAP devices and captures: [`emit_frame`], [`parse_frame`].
//!
//! GIDs map to IP addresses as rxe does: an IPv4-mapped GID `::ffff:a.b.c.d` is the IPv4
//! address a.b.c.d, anything else is an IPv6 address. Both GIDs of a packet must be of the same
//! kind.
//!
//! Decoding never panics: every length is checked, and anything unexpected is a [`WireError`].

mod body;

use super::icrc::{self, ICRC_LEN};
use super::{bth, check_len, ethernet, ipv4, ipv6, udp, Result, WireError};
use body::{body_len, check_encodable, read_body, write_body};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use vhca_device::packet::Payload;
use vhca_device::{Gid, Mac, Packet};

/// The RoCEv2 UDP destination port (IANA).
pub const ROCE_V2_PORT: u16 = 4791;

/// The IPv4 header fields the ICRC covers that neither the packet nor the UDP socket API
/// determine: the identification and the DF flag. The sender's IP stack chooses them, and the
/// ICRC must be computed over what it will choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Ident {
    pub ident: u16,
    pub dont_frag: bool,
}

impl Ipv4Ident {
    /// What Linux writes for a DF datagram sent with `sendto` on an *unconnected* UDP socket
    /// (`IP_MTU_DISCOVER = IP_PMTUDISC_DO`): ID 0, DF set. A connected socket uses a random
    /// per-socket ID instead, which makes the ICRC unpredictable (facts file B.1).
    pub const KERNEL_UNCONNECTED_UDP: Ipv4Ident = Ipv4Ident {
        ident: 0,
        dont_frag: true,
    };
}

/// Whether the ICRC of a received packet was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcrcStatus {
    /// Recomputed and equal.
    Verified,
    /// Not checked: the IPv4 ID/flags it covers were unknown (a plain UDP socket does not
    /// report them).
    Skipped,
}

/// A packet decoded from a UDP payload.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedPacket {
    pub packet: Packet,
    pub icrc: IcrcStatus,
}

/// The IP header of a decoded frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpRepr {
    V4(ipv4::Repr),
    V6(ipv6::Repr),
}

/// A RoCEv2 frame decoded with all its headers. Its ICRC has been verified.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedFrame {
    pub eth: ethernet::Repr,
    pub ip: IpRepr,
    pub udp: udp::Repr,
    /// The UDP checksum was present (non-zero, and verified).
    pub udp_checksum: bool,
    pub packet: Packet,
}

impl ReceivedFrame {
    /// The parameters that re-emit this frame with the same link and IP header values.
    pub fn params(&self) -> FrameParams {
        let mut p = FrameParams::new(self.eth.src_addr, self.eth.dst_addr);
        p.dst_port = self.udp.dst_port;
        p.udp_checksum = self.udp_checksum;
        match self.ip {
            IpRepr::V4(r) => {
                p.hop_limit = r.ttl;
                p.traffic_class = r.tos;
                p.ipv4 = Ipv4Ident {
                    ident: r.ident,
                    dont_frag: r.dont_frag,
                };
            }
            IpRepr::V6(r) => {
                p.hop_limit = r.hop_limit;
                p.traffic_class = r.traffic_class;
                p.flow_label = r.flow_label;
            }
        }
        p
    }
}

/// Link and IP header values of an emitted frame that the device's packet does not carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameParams {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    /// IPv4 TTL or IPv6 hop limit (masked out of the ICRC).
    pub hop_limit: u8,
    /// IPv4 TOS or IPv6 traffic class (masked out of the ICRC).
    pub traffic_class: u8,
    /// IPv6 flow label (masked out of the ICRC).
    pub flow_label: u32,
    /// IPv4 identification and DF (inside the ICRC).
    pub ipv4: Ipv4Ident,
    /// Fill in the UDP checksum (rxe sends 0).
    pub udp_checksum: bool,
    /// UDP destination port (4791 unless a test runs several endpoints on one host).
    pub dst_port: u16,
}

impl FrameParams {
    /// What rxe sends (facts file B.3): TTL 64, TOS 0, DF, UDP checksum 0, port 4791; ID 0.
    pub fn new(src_mac: Mac, dst_mac: Mac) -> FrameParams {
        FrameParams {
            src_mac,
            dst_mac,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
            ipv4: Ipv4Ident::KERNEL_UNCONNECTED_UDP,
            udp_checksum: false,
            dst_port: ROCE_V2_PORT,
        }
    }
}

/// The IP address a GID stands for on RoCEv2.
pub fn gid_to_ip(gid: &Gid) -> IpAddr {
    match gid.to_ipv4() {
        Some(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
        None => IpAddr::V6(Ipv6Addr::from(gid.0)),
    }
}

/// The GID of an IP address (IPv4 → `::ffff:a.b.c.d`).
pub fn ip_to_gid(ip: IpAddr) -> Gid {
    match ip {
        IpAddr::V4(a) => Gid::from_ipv4(a.octets()),
        IpAddr::V6(a) => Gid(a.octets()),
    }
}

/// IPv4 peers of a dual-stack socket show up as `::ffff:a.b.c.d`; on the wire they are IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        },
        v4 => v4,
    }
}

/// Source and destination IP of a device packet; both GIDs must be of one family.
pub fn packet_ips(pkt: &Packet) -> Result<(IpAddr, IpAddr)> {
    let s = gid_to_ip(&pkt.src_gid);
    let d = gid_to_ip(&pkt.dst_gid);
    if s.is_ipv4() != d.is_ipv4() {
        return Err(WireError::Unencodable(
            "one GID is IPv4-mapped and the other is not",
        ));
    }
    Ok((s, d))
}

// ---------------------------------------------------------------------------------------------
// Transport (BTH onwards): body.rs

// ---------------------------------------------------------------------------------------------
// UDP payload (kernel UDP sockets)

/// Largest transport (BTH … ICRC) an IPv4 or IPv6 datagram can carry.
fn max_transport(v4: bool) -> usize {
    if v4 {
        usize::from(u16::MAX) - ipv4::HEADER_LEN - udp::HEADER_LEN
    } else {
        usize::from(u16::MAX) - udp::HEADER_LEN
    }
}

/// The IP and UDP headers a kernel will put in front of `transport_len` bytes, as the ICRC
/// sees them (TOS/TTL/checksums are masked, so their values here do not matter).
fn synth_headers(
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    transport_len: usize,
    v4: Ipv4Ident,
) -> Result<(IpHeaderBytes, [u8; udp::HEADER_LEN])> {
    let udp = udp::Repr {
        src_port,
        dst_port,
        payload_len: transport_len,
    }
    .to_bytes()?;
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => IpHeaderBytes::V4(
            ipv4::Repr {
                src_addr: s,
                dst_addr: d,
                protocol: ipv4::PROTOCOL_UDP,
                payload_len: udp::HEADER_LEN + transport_len,
                ttl: 64,
                tos: 0,
                ident: v4.ident,
                dont_frag: v4.dont_frag,
            }
            .to_bytes()?,
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaderBytes::V6(
            ipv6::Repr {
                src_addr: s,
                dst_addr: d,
                next_header: ipv4::PROTOCOL_UDP,
                payload_len: udp::HEADER_LEN + transport_len,
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
            }
            .to_bytes()?,
        ),
        _ => {
            return Err(WireError::Unsupported {
                what: "address families (one IPv4, one IPv6)",
                value: 0,
            })
        }
    };
    Ok((ip, udp))
}

enum IpHeaderBytes {
    V4([u8; ipv4::HEADER_LEN]),
    V6([u8; ipv6::HEADER_LEN]),
}

impl IpHeaderBytes {
    fn bytes(&self) -> &[u8] {
        match self {
            IpHeaderBytes::V4(b) => b,
            IpHeaderBytes::V6(b) => b,
        }
    }
}

/// Encodes `pkt` as the payload of a UDP datagram to port 4791: BTH, extended headers,
/// payload, zero pad and the ICRC, computed over the IP header a kernel UDP socket will write
/// (addresses from the GIDs, `v4` for an IPv4 ID and DF flag; see
/// [`Ipv4Ident::KERNEL_UNCONNECTED_UDP`]).
pub fn emit_udp_payload(pkt: &Packet, v4: Ipv4Ident) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    emit_udp_payload_into(pkt, v4, ROCE_V2_PORT, &mut out)?;
    Ok(out)
}

/// [`emit_udp_payload`] into a reused buffer (cleared first), to a chosen destination port.
pub fn emit_udp_payload_into(
    pkt: &Packet,
    v4: Ipv4Ident,
    dst_port: u16,
    out: &mut Vec<u8>,
) -> Result<()> {
    emit_udp_payload_into_with(pkt, v4, dst_port, icrc::FlushIcrc::Ibta, out)
}

/// [`emit_udp_payload_into`] with a FLUSH's ICRC in the chosen flavour (rxe's for an rxe peer).
pub fn emit_udp_payload_into_with(
    pkt: &Packet,
    v4: Ipv4Ident,
    dst_port: u16,
    flush: icrc::FlushIcrc,
    out: &mut Vec<u8>,
) -> Result<()> {
    let (src, dst) = packet_ips(pkt)?;
    let (layout, pad) = check_encodable(pkt)?;
    let body = body_len(&layout, pkt.payload.len(), pad);
    let total = body + ICRC_LEN;
    if total > max_transport(src.is_ipv4()) {
        return Err(WireError::Unencodable("packet larger than a UDP datagram"));
    }
    out.clear();
    out.resize(total, 0);
    write_body(pkt, &layout, pad, &mut out[..body])?;
    let (ip, udp) = synth_headers(src, dst, pkt.src_port, dst_port, total, v4)?;
    let crc = icrc::compute_with(ip.bytes(), &udp, &out[..body], flush)?;
    out[body..].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Decodes the payload of a UDP datagram received from `src` on `dst` (the local socket
/// address). With `v4` (the IPv4 ID and DF the sender's IP layer wrote) or over IPv6 — where
/// every covered field follows from the addresses and lengths — the ICRC is verified; for IPv4
/// without `v4` it cannot be, and the result says [`IcrcStatus::Skipped`].
pub fn parse_udp_payload(
    bytes: &[u8],
    src: SocketAddr,
    dst: SocketAddr,
    v4: Option<Ipv4Ident>,
) -> Result<ReceivedPacket> {
    let (sip, dip) = (canonical(src.ip()), canonical(dst.ip()));
    if sip.is_ipv4() != dip.is_ipv4() {
        return Err(WireError::Unsupported {
            what: "address families (one IPv4, one IPv6)",
            value: 0,
        });
    }
    check_len("RoCEv2 packet", bytes, bth::HEADER_LEN + ICRC_LEN)?;
    if bytes.len() > max_transport(sip.is_ipv4()) {
        return Err(WireError::BadLength {
            what: "RoCEv2 packet",
            detail: "larger than a UDP datagram",
        });
    }
    let icrc = match (sip, v4) {
        (IpAddr::V4(_), None) => IcrcStatus::Skipped,
        _ => {
            let id = v4.unwrap_or(Ipv4Ident::KERNEL_UNCONNECTED_UDP);
            let (ip, udp) = synth_headers(sip, dip, src.port(), dst.port(), bytes.len(), id)?;
            icrc::verify(ip.bytes(), &udp, bytes)?;
            IcrcStatus::Verified
        }
    };
    let (bth, ext, payload) = read_body(&bytes[..bytes.len() - ICRC_LEN])?;
    Ok(ReceivedPacket {
        packet: Packet {
            src_gid: ip_to_gid(sip),
            dst_gid: ip_to_gid(dip),
            src_port: src.port(),
            bth,
            ext,
            payload: Payload::Bytes(payload.to_vec()),
        },
        icrc,
    })
}

// ---------------------------------------------------------------------------------------------
// Ethernet frames (TAP, captures)

/// Encodes `pkt` as a complete Ethernet II frame: Ethernet, IPv4 or IPv6 (from the GIDs), UDP
/// from `pkt.src_port` to `params.dst_port`, transport and ICRC over the headers as emitted.
pub fn emit_frame(pkt: &Packet, params: &FrameParams) -> Result<Vec<u8>> {
    let (src, dst) = packet_ips(pkt)?;
    let (layout, pad) = check_encodable(pkt)?;
    let body = body_len(&layout, pkt.payload.len(), pad);
    let transport = body + ICRC_LEN;
    if transport > max_transport(src.is_ipv4()) {
        return Err(WireError::Unencodable("packet larger than a UDP datagram"));
    }
    let ip_len = if src.is_ipv4() {
        ipv4::HEADER_LEN
    } else {
        ipv6::HEADER_LEN
    };
    let eth_end = ethernet::HEADER_LEN;
    let ip_end = eth_end + ip_len;
    let udp_end = ip_end + udp::HEADER_LEN;
    let body_end = udp_end + body;
    let mut f = vec![0u8; body_end + ICRC_LEN];

    ethernet::Repr {
        src_addr: params.src_mac,
        dst_addr: params.dst_mac,
        ethertype: if src.is_ipv4() {
            ethernet::EtherType::Ipv4
        } else {
            ethernet::EtherType::Ipv6
        },
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut f[..eth_end]));
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4::Repr {
            src_addr: s,
            dst_addr: d,
            protocol: ipv4::PROTOCOL_UDP,
            payload_len: udp::HEADER_LEN + transport,
            ttl: params.hop_limit,
            tos: params.traffic_class,
            ident: params.ipv4.ident,
            dont_frag: params.ipv4.dont_frag,
        }
        .emit(&mut ipv4::Packet::new_unchecked(&mut f[eth_end..ip_end]))?,
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6::Repr {
            src_addr: s,
            dst_addr: d,
            next_header: ipv4::PROTOCOL_UDP,
            payload_len: udp::HEADER_LEN + transport,
            hop_limit: params.hop_limit,
            traffic_class: params.traffic_class,
            flow_label: params.flow_label,
        }
        .emit(&mut ipv6::Packet::new_unchecked(&mut f[eth_end..ip_end]))?,
        // packet_ips returned one family.
        _ => return Err(WireError::Unencodable("mixed address families")),
    }
    udp::Repr {
        src_port: pkt.src_port,
        dst_port: params.dst_port,
        payload_len: transport,
    }
    .emit(&mut udp::Packet::new_unchecked(&mut f[ip_end..]))?;
    write_body(pkt, &layout, pad, &mut f[udp_end..body_end])?;
    let crc = icrc::compute(
        &f[eth_end..ip_end],
        &f[ip_end..udp_end],
        &f[udp_end..body_end],
    )?;
    f[body_end..].copy_from_slice(&crc.to_le_bytes());
    // After the ICRC: the UDP checksum covers it (and the ICRC masks the checksum).
    if params.udp_checksum {
        udp::Packet::new_unchecked(&mut f[ip_end..]).fill_checksum(src, dst);
    }
    Ok(f)
}

/// Decodes a RoCEv2 Ethernet frame, verifying the IPv4 header checksum, a non-zero UDP
/// checksum and the ICRC. Frames that are valid but not RoCEv2 (ARP, other protocols or ports)
/// are [`WireError::NotRoce`].
pub fn parse_frame(frame: &[u8]) -> Result<ReceivedFrame> {
    let eth = ethernet::Frame::new_checked(frame)?;
    let eth_repr = ethernet::Repr::parse(&eth)?;
    match eth_repr.ethertype {
        ethernet::EtherType::Ipv4 => {
            let p = ipv4::Packet::new_checked(eth.payload())?;
            let r = ipv4::Repr::parse(&p)?;
            if r.protocol != ipv4::PROTOCOL_UDP {
                return Err(WireError::NotRoce("IPv4 protocol is not UDP"));
            }
            let (src, dst) = (IpAddr::V4(r.src_addr), IpAddr::V4(r.dst_addr));
            finish_frame(eth_repr, IpRepr::V4(r), p.header(), p.payload(), src, dst)
        }
        ethernet::EtherType::Ipv6 => {
            let p = ipv6::Packet::new_checked(eth.payload())?;
            let r = ipv6::Repr::parse(&p)?;
            if r.next_header != ipv4::PROTOCOL_UDP {
                return Err(WireError::NotRoce("IPv6 next header is not UDP"));
            }
            if r.src_addr.to_ipv4_mapped().is_some() || r.dst_addr.to_ipv4_mapped().is_some() {
                // Such a GID means IPv4 on RoCEv2; in an IPv6 header it is not a real address
                // (RFC 4291 2.5.5.2) and could not be sent back the same way.
                return Err(WireError::Unsupported {
                    what: "IPv4-mapped address in an IPv6 header",
                    value: 0,
                });
            }
            let (src, dst) = (IpAddr::V6(r.src_addr), IpAddr::V6(r.dst_addr));
            finish_frame(eth_repr, IpRepr::V6(r), p.header(), p.payload(), src, dst)
        }
        _ => Err(WireError::NotRoce("EtherType is neither IPv4 nor IPv6")),
    }
}

fn finish_frame(
    eth: ethernet::Repr,
    ip: IpRepr,
    ip_header: &[u8],
    ip_payload: &[u8],
    src: IpAddr,
    dst: IpAddr,
) -> Result<ReceivedFrame> {
    let u = udp::Packet::new_checked(ip_payload)?;
    if usize::from(u.len()) != ip_payload.len() {
        return Err(WireError::BadLength {
            what: "UDP header",
            detail: "UDP length differs from the IP payload length",
        });
    }
    // The ICRC covers everything the UDP checksum does; a non-zero one is still checked since
    // it costs little and a mismatch means the frame was damaged after the ICRC was made.
    let ur = udp::Repr::parse(&u, src, dst, true)?;
    if ur.dst_port != ROCE_V2_PORT {
        return Err(WireError::NotRoce("UDP destination port is not 4791"));
    }
    let transport = u.payload();
    check_len("RoCEv2 packet", transport, bth::HEADER_LEN + ICRC_LEN)?;
    icrc::verify(ip_header, u.header(), transport)?;
    let (bth, ext, payload) = read_body(&transport[..transport.len() - ICRC_LEN])?;
    Ok(ReceivedFrame {
        eth,
        ip,
        udp: ur,
        udp_checksum: u.checksum() != 0,
        packet: Packet {
            src_gid: ip_to_gid(src),
            dst_gid: ip_to_gid(dst),
            src_port: ur.src_port,
            bth,
            ext,
            payload: Payload::Bytes(payload.to_vec()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{hand_ext, sample, v6_gid, ALL_OPCODES};
    use std::sync::Arc;
    use vhca_device::packet::{Aeth, NakCode, Opcode, Reth, Segment, Segments, Syndrome};
    use vhca_device::{MemKey, Msn, VecMemory};

    #[test]
    fn hand_written_headers_agree_with_the_device() {
        // ALL_OPCODES is every opcode the device implements ...
        let implemented: Vec<Opcode> = (0..=255u8)
            .map(Opcode)
            .filter(|o| o.layout().is_some())
            .collect();
        assert_eq!(implemented, ALL_OPCODES.to_vec());
        // ... and the hand-written headers are the ones the device expects.
        for op in ALL_OPCODES {
            let p = sample(op, 8, false);
            assert!(p.is_well_formed(), "{op:?}");
            let (_, has_payload) = hand_ext(op);
            assert_eq!(op.layout().map(|l| l.payload), Some(has_payload), "{op:?}");
        }
    }

    fn addrs(p: &Packet) -> (SocketAddr, SocketAddr) {
        (
            SocketAddr::new(gid_to_ip(&p.src_gid), p.src_port),
            SocketAddr::new(gid_to_ip(&p.dst_gid), ROCE_V2_PORT),
        )
    }

    #[test]
    fn every_opcode_round_trips_through_a_udp_payload() {
        for op in ALL_OPCODES {
            for len in [0, 1, 2, 3, 4, 5, 1024] {
                for v6 in [false, true] {
                    let p = sample(op, len, v6);
                    let bytes = emit_udp_payload(&p, Ipv4Ident::KERNEL_UNCONNECTED_UDP).unwrap();
                    assert_eq!(bytes.len(), p.transport_len(), "{op:?}");
                    assert_eq!(bytes.len() % 4, 0);
                    let (s, d) = addrs(&p);
                    let r =
                        parse_udp_payload(&bytes, s, d, Some(Ipv4Ident::KERNEL_UNCONNECTED_UDP))
                            .unwrap();
                    assert_eq!(r.icrc, IcrcStatus::Verified);
                    assert_eq!(r.packet, p, "{op:?} len {len} v6 {v6}");
                    let r = parse_udp_payload(&bytes, s, d, None).unwrap();
                    let want = if v6 {
                        IcrcStatus::Verified
                    } else {
                        IcrcStatus::Skipped
                    };
                    assert_eq!(r.icrc, want);
                    assert_eq!(r.packet, p);
                }
            }
        }
    }

    #[test]
    fn every_opcode_round_trips_through_a_frame() {
        let params = FrameParams::new(Mac([2, 0, 0, 0, 0, 3]), Mac([2, 0, 0, 0, 0, 1]));
        for op in ALL_OPCODES {
            for v6 in [false, true] {
                for csum in [false, true] {
                    let p = sample(op, 37, v6);
                    let mut pp = params;
                    pp.udp_checksum = csum;
                    pp.ipv4.ident = 0xbeef;
                    let f = emit_frame(&p, &pp).unwrap();
                    let r = parse_frame(&f).unwrap();
                    assert_eq!(r.packet, p, "{op:?}");
                    if v6 {
                        // IPv6 has no ID: the parsed parameters keep the default.
                        let mut want = pp;
                        want.ipv4 = params.ipv4;
                        assert_eq!(r.params(), want);
                    } else {
                        assert_eq!(r.params(), pp);
                    }
                    // The frame's transport is the UDP payload with the same IP ID.
                    let off = 14 + if v6 { 40 } else { 20 } + 8;
                    let u = emit_udp_payload(
                        &p,
                        Ipv4Ident {
                            ident: 0xbeef,
                            dont_frag: true,
                        },
                    )
                    .unwrap();
                    assert_eq!(&f[off..], &u[..]);
                }
            }
        }
    }

    #[test]
    fn rxe_sized_frame() {
        // Facts B.4: a full 1024-byte packet is a 1082-byte frame.
        let p = sample(Opcode::RC_SEND_MIDDLE, 1024, false);
        let f = emit_frame(&p, &FrameParams::new(Mac([0; 6]), Mac([0; 6]))).unwrap();
        assert_eq!(f.len(), 1082);
    }

    #[test]
    fn gather_payload_is_read_from_guest_memory() {
        let mem = VecMemory::shared(4096);
        mem.write(100, b"hello ").unwrap();
        mem.write(2000, b"world").unwrap();
        let mut p = sample(Opcode::RC_SEND_ONLY, 0, false);
        let segs: Segments = [Segment { gpa: 100, len: 6 }, Segment { gpa: 2000, len: 5 }]
            .into_iter()
            .collect();
        p.payload = Payload::Gather {
            mem: Arc::clone(&mem),
            segs,
            len: 11,
        };
        p.bth.pad = 1;
        let bytes = emit_udp_payload(&p, Ipv4Ident::KERNEL_UNCONNECTED_UDP).unwrap();
        assert_eq!(&bytes[12..23], b"hello world");
        assert_eq!(bytes[23], 0, "pad is zero");
        let (s, d) = addrs(&p);
        let r = parse_udp_payload(&bytes, s, d, None).unwrap();
        assert_eq!(r.packet, p);

        // An unreadable segment is sent as zeros, like Payload::to_vec.
        if let Payload::Gather { segs, .. } = &mut p.payload {
            segs[1].gpa = 1 << 40;
        }
        let bytes = emit_udp_payload(&p, Ipv4Ident::KERNEL_UNCONNECTED_UDP).unwrap();
        assert_eq!(&bytes[12..23], b"hello \0\0\0\0\0");

        // Lengths that disagree are refused rather than read out of bounds.
        if let Payload::Gather { len, .. } = &mut p.payload {
            *len = 12;
        }
        assert!(matches!(
            emit_udp_payload(&p, Ipv4Ident::KERNEL_UNCONNECTED_UDP),
            Err(WireError::Unencodable(_))
        ));
    }

    #[test]
    fn unencodable_packets_are_errors() {
        let k = Ipv4Ident::KERNEL_UNCONNECTED_UDP;
        let mut p = sample(Opcode::RC_SEND_ONLY, 4, false);
        p.dst_gid = v6_gid(1);
        assert!(emit_udp_payload(&p, k).is_err());
        let mut p = sample(Opcode::RC_ACK, 0, false);
        p.ext.reth = Some(Reth {
            va: 0,
            rkey: MemKey(0),
            len: 0,
        });
        assert!(emit_udp_payload(&p, k).is_err());
        let mut p = sample(Opcode::RC_ACK, 0, false);
        p.payload = Payload::Bytes(vec![1]);
        assert!(emit_udp_payload(&p, k).is_err());
        let mut p = sample(Opcode::RC_SEND_ONLY, 4, false);
        p.bth.opcode = Opcode(0x40); // RD SEND_FIRST
        assert_eq!(
            emit_udp_payload(&p, k),
            Err(WireError::UnsupportedOpcode(0x40))
        );
        // 65507 bytes is the largest IPv4 UDP payload: 12 + 65488 + 4 fits, 4 more do not.
        let p = sample(Opcode::RC_SEND_ONLY, 65_488, false);
        assert_eq!(emit_udp_payload(&p, k).unwrap().len(), 65_504);
        let p = sample(Opcode::RC_SEND_ONLY, 65_492, false);
        assert!(emit_udp_payload(&p, k).is_err());
        assert!(emit_frame(&p, &FrameParams::new(Mac([0; 6]), Mac([0; 6]))).is_err());
        let p = sample(Opcode::RC_SEND_ONLY, 65_492, true);
        assert!(emit_udp_payload(&p, k).is_ok());
    }

    #[test]
    fn damaged_payloads_are_errors() {
        let k = Ipv4Ident::KERNEL_UNCONNECTED_UDP;
        let p = sample(Opcode::RC_ACK, 0, false);
        let good = emit_udp_payload(&p, k).unwrap();
        let (s, d) = addrs(&p);
        // Every truncation.
        for n in 0..good.len() {
            assert!(parse_udp_payload(&good[..n], s, d, Some(k)).is_err());
            assert!(parse_udp_payload(&good[..n], s, d, None).is_err());
        }
        // A flipped bit: caught by the ICRC.
        let mut b = good.clone();
        b[13] ^= 0x10;
        assert!(matches!(
            parse_udp_payload(&b, s, d, Some(k)),
            Err(WireError::BadIcrc { .. })
        ));
        // The wrong IP ID: the ICRC no longer matches.
        let other = Ipv4Ident {
            ident: 7,
            dont_frag: true,
        };
        assert!(parse_udp_payload(&good, s, d, Some(other)).is_err());
        // Another source port is another ICRC.
        let s2 = SocketAddr::new(s.ip(), 4791);
        assert!(parse_udp_payload(&good, s2, d, Some(k)).is_err());
        // Unsupported opcode, TVer, lengths (ICRC not checked to reach the decoder).
        let mut b = good.clone();
        b[0] = 0x40;
        assert_eq!(
            parse_udp_payload(&b, s, d, None),
            Err(WireError::UnsupportedOpcode(0x40))
        );
        let mut b = good.clone();
        b[1] = 0x01;
        assert!(parse_udp_payload(&b, s, d, None).is_err());
        let mut b = good.clone();
        b[1] = 0x30; // pad 3 on an ACK
        assert!(parse_udp_payload(&b, s, d, None).is_err());
        let mut b = good.clone();
        b.splice(16..16, [0u8; 4]); // 4 stray bytes after the AETH
        assert!(parse_udp_payload(&b, s, d, None).is_err());
        let p = sample(Opcode::RC_SEND_ONLY, 5, false);
        let mut b = emit_udp_payload(&p, k).unwrap();
        b.remove(14); // 7 bytes of payload+pad: not a multiple of 4
        assert!(parse_udp_payload(&b, s, d, None).is_err());
        b.remove(14); // 6 bytes, PadCnt 3: still not
        assert!(parse_udp_payload(&b, s, d, None).is_err());
        // Mixed families.
        let d6 = SocketAddr::new(gid_to_ip(&v6_gid(1)), ROCE_V2_PORT);
        assert!(parse_udp_payload(&good, s, d6, None).is_err());
    }

    #[test]
    fn dual_stack_socket_addresses_are_ipv4() {
        let k = Ipv4Ident::KERNEL_UNCONNECTED_UDP;
        let p = sample(Opcode::RC_SEND_LAST, 8, false);
        let b = emit_udp_payload(&p, k).unwrap();
        let mapped = |g: &Gid, port| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(g.0)), port);
        let r = parse_udp_payload(
            &b,
            mapped(&p.src_gid, p.src_port),
            mapped(&p.dst_gid, ROCE_V2_PORT),
            Some(k),
        )
        .unwrap();
        assert_eq!(r.packet, p);
        assert_eq!(r.icrc, IcrcStatus::Verified);
    }

    #[test]
    fn frames_that_are_not_roce() {
        let p = sample(Opcode::RC_ACK, 0, false);
        let params = FrameParams::new(Mac([2; 6]), Mac([4; 6]));
        let f = emit_frame(&p, &params).unwrap();
        let mut b = f.clone();
        b[12] = 0x08;
        b[13] = 0x06;
        assert!(matches!(parse_frame(&b), Err(WireError::NotRoce(_))));
        let mut pp = params;
        pp.dst_port = 4792;
        let b = emit_frame(&p, &pp).unwrap();
        assert!(matches!(parse_frame(&b), Err(WireError::NotRoce(_))));
        // Ethernet padding after the IP packet is fine.
        let mut b = f.clone();
        b.extend_from_slice(&[0; 6]);
        assert_eq!(parse_frame(&b).unwrap().packet, p);
        // A UDP length that disagrees with the IP length.
        let mut b = f.clone();
        b[14 + 20 + 5] -= 4;
        assert!(parse_frame(&b).is_err());
        // A damaged IP header checksum; a damaged payload byte.
        let mut b = f.clone();
        b[14 + 10] ^= 1;
        assert_eq!(parse_frame(&b), Err(WireError::BadIpChecksum));
        let mut b = f.clone();
        let n = b.len();
        b[n - 6] ^= 1;
        assert!(matches!(parse_frame(&b), Err(WireError::BadIcrc { .. })));
        // A NAK decodes to the device's syndrome.
        let mut p = sample(Opcode::RC_ACK, 0, true);
        p.ext.aeth = Some(Aeth {
            syndrome: Syndrome::Nak(NakCode::PsnSequenceError),
            msn: Msn(9),
        });
        let f = emit_frame(&p, &params).unwrap();
        assert_eq!(parse_frame(&f).unwrap().packet, p);
    }
}
