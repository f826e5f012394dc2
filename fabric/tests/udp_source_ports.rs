//! The UDP bridge sends each QP's packets from rxe's per-QP source port, with an ICRC over
//! exactly the header the kernel writes.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::Duration;
use vhca_device::packet::{Bth, ExtHeaders, Opcode, Payload};
use vhca_device::{Gid, Packet, Psn, Qpn};
use vhca_fabric::udp::UdpBridge;
use vhca_wire::roce::{self, Ipv4Ident};

#[test]
fn packets_leave_from_their_qps_source_port_with_a_valid_icrc() {
    let a = Ipv4Addr::new(127, 0, 0, 61);
    let b = Ipv4Addr::new(127, 0, 0, 62);
    let peer = UdpSocket::bind((b, 4791)).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut bridge = UdpBridge::bind(IpAddr::V4(a)).unwrap();
    let sport = vhca_device::qp::src_port(Qpn(0x11), Qpn(0x11), 0);
    assert_eq!(sport, 49441);
    let pkt = |psn, sport| Packet {
        src_gid: Gid::from_ipv4(a.octets()),
        dst_gid: Gid::from_ipv4(b.octets()),
        src_port: sport,
        bth: Bth::new(Opcode::RC_SEND_ONLY, Qpn(0x11), Psn(psn)),
        ext: ExtHeaders::default(),
        payload: Payload::Bytes(vec![7; 16]),
    };
    let mut pkts = vec![pkt(1, sport), pkt(2, 4791), pkt(3, sport)];
    bridge.send(&mut pkts).unwrap();
    let mut buf = [0u8; 2048];
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        // The ICRC was computed over the header the kernel wrote, with this source port.
        let p = roce::parse_udp_payload(
            &buf[..n],
            from,
            peer.local_addr().unwrap(),
            Some(Ipv4Ident::KERNEL_UNCONNECTED_UDP),
        )
        .unwrap();
        assert_eq!(p.icrc, roce::IcrcStatus::Verified);
        seen.push((p.packet.bth.psn.0, from.port()));
    }
    seen.sort();
    assert_eq!(seen, vec![(1, sport), (2, 4791), (3, sport)]);
}
