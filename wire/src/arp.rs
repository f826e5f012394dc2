//! ARP for IPv4 over Ethernet (RFC 826): requests, replies and gratuitous announcements.
//!
//! A TAP-attached vhca must answer ARP for its address: the guest's kernel resolves the peer's
//! MAC through its neighbour table when a QP moves to RTR (facts file B.3).

use super::{be, check_len, Result, WireError};
use std::net::Ipv4Addr;
use vhca_device::Mac;

const HTYPE: usize = 0;
const PTYPE: usize = 2;
const HLEN: usize = 4;
const PLEN: usize = 5;
const OPER: usize = 6;
const SHA: usize = 8;
const SPA: usize = 14;
const THA: usize = 18;
const TPA: usize = 24;
/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;

/// The ARP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(v: u16) -> Operation {
        match v {
            1 => Operation::Request,
            2 => Operation::Reply,
            v => Operation::Unknown(v),
        }
    }
}

impl From<Operation> for u16 {
    fn from(o: Operation) -> u16 {
        match o {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(v) => v,
        }
    }
}

/// A zero-copy view of an ARP packet (Ethernet hardware, IPv4 protocol addresses).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer that holds the 28 bytes of an Ethernet/IPv4 ARP packet. Other hardware or
    /// protocol types have other lengths; [`Repr::parse`] rejects them.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        check_len("ARP packet", buffer.as_ref(), PACKET_LEN)?;
        Ok(Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn hardware_type(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), HTYPE)
    }
    pub fn protocol_type(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), PTYPE)
    }
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[HLEN]
    }
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[PLEN]
    }
    pub fn operation(&self) -> Operation {
        be::u16_at(self.buffer.as_ref(), OPER).into()
    }
    pub fn source_hardware_addr(&self) -> Mac {
        Mac(self.mac_at(SHA))
    }
    pub fn source_protocol_addr(&self) -> Ipv4Addr {
        self.ip_at(SPA)
    }
    pub fn target_hardware_addr(&self) -> Mac {
        Mac(self.mac_at(THA))
    }
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        self.ip_at(TPA)
    }

    fn mac_at(&self, at: usize) -> [u8; 6] {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[at..at + 6]);
        a
    }
    fn ip_at(&self, at: usize) -> Ipv4Addr {
        Ipv4Addr::from(be::u32_at(self.buffer.as_ref(), at))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_hardware_type(&mut self, v: u16) {
        be::put_u16(self.buffer.as_mut(), HTYPE, v);
    }
    pub fn set_protocol_type(&mut self, v: u16) {
        be::put_u16(self.buffer.as_mut(), PTYPE, v);
    }
    pub fn set_hardware_len(&mut self, v: u8) {
        self.buffer.as_mut()[HLEN] = v;
    }
    pub fn set_protocol_len(&mut self, v: u8) {
        self.buffer.as_mut()[PLEN] = v;
    }
    pub fn set_operation(&mut self, o: Operation) {
        be::put_u16(self.buffer.as_mut(), OPER, o.into());
    }
    pub fn set_source_hardware_addr(&mut self, a: Mac) {
        self.buffer.as_mut()[SHA..SHA + 6].copy_from_slice(&a.0);
    }
    pub fn set_source_protocol_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[SPA..SPA + 4].copy_from_slice(&a.octets());
    }
    pub fn set_target_hardware_addr(&mut self, a: Mac) {
        self.buffer.as_mut()[THA..THA + 6].copy_from_slice(&a.0);
    }
    pub fn set_target_protocol_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[TPA..TPA + 4].copy_from_slice(&a.octets());
    }
}

/// An Ethernet/IPv4 ARP packet's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub operation: Operation,
    pub source_hardware_addr: Mac,
    pub source_protocol_addr: Ipv4Addr,
    pub target_hardware_addr: Mac,
    pub target_protocol_addr: Ipv4Addr,
}

impl Repr {
    /// Parses an Ethernet/IPv4 ARP packet; other hardware/protocol types are `Unsupported`.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        check_len("ARP packet", p.buffer.as_ref(), PACKET_LEN)?;
        if p.hardware_type() != HTYPE_ETHERNET || p.hardware_len() != 6 {
            return Err(WireError::Unsupported {
                what: "ARP hardware type",
                value: p.hardware_type().into(),
            });
        }
        if p.protocol_type() != PTYPE_IPV4 || p.protocol_len() != 4 {
            return Err(WireError::Unsupported {
                what: "ARP protocol type",
                value: p.protocol_type().into(),
            });
        }
        Ok(Repr {
            operation: p.operation(),
            source_hardware_addr: p.source_hardware_addr(),
            source_protocol_addr: p.source_protocol_addr(),
            target_hardware_addr: p.target_hardware_addr(),
            target_protocol_addr: p.target_protocol_addr(),
        })
    }

    pub fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_hardware_type(HTYPE_ETHERNET);
        p.set_protocol_type(PTYPE_IPV4);
        p.set_hardware_len(6);
        p.set_protocol_len(4);
        p.set_operation(self.operation);
        p.set_source_hardware_addr(self.source_hardware_addr);
        p.set_source_protocol_addr(self.source_protocol_addr);
        p.set_target_hardware_addr(self.target_hardware_addr);
        p.set_target_protocol_addr(self.target_protocol_addr);
    }

    /// "Who has `target`? Tell `sender_ip`" (sent to the Ethernet broadcast address).
    pub fn request(sender_mac: Mac, sender_ip: Ipv4Addr, target: Ipv4Addr) -> Repr {
        Repr {
            operation: Operation::Request,
            source_hardware_addr: sender_mac,
            source_protocol_addr: sender_ip,
            // RFC 826 leaves it unspecified in a request; zero is what Linux sends.
            target_hardware_addr: Mac([0; 6]),
            target_protocol_addr: target,
        }
    }

    /// The reply `my_mac` gives to this request, or `None` when this is not a request for
    /// `my_ip` (or is a gratuitous announcement, which wants no answer).
    pub fn reply_to(&self, my_mac: Mac, my_ip: Ipv4Addr) -> Option<Repr> {
        if self.operation != Operation::Request
            || self.target_protocol_addr != my_ip
            || self.is_gratuitous()
        {
            return None;
        }
        Some(Repr {
            operation: Operation::Reply,
            source_hardware_addr: my_mac,
            source_protocol_addr: my_ip,
            target_hardware_addr: self.source_hardware_addr,
            target_protocol_addr: self.source_protocol_addr,
        })
    }

    /// A gratuitous ARP announcing `ip` at `mac` (RFC 5227 ARP announcement: a request whose
    /// sender and target IPs are both `ip`), so that neighbours update their caches.
    pub fn gratuitous(mac: Mac, ip: Ipv4Addr) -> Repr {
        Repr {
            operation: Operation::Request,
            source_hardware_addr: mac,
            source_protocol_addr: ip,
            target_hardware_addr: Mac([0; 6]),
            target_protocol_addr: ip,
        }
    }

    /// True for announcements: sender IP equals target IP (request or reply form).
    pub fn is_gratuitous(&self) -> bool {
        self.source_protocol_addr == self.target_protocol_addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: Mac = Mac([0x52, 0x54, 0x00, 0x00, 0x00, 0x03]);
    const MAC_B: Mac = Mac([0x02, 0x00, 0x0a, 0x4d, 0x00, 0x01]);
    const IP_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
    const IP_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    #[rustfmt::skip]
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
        0x52, 0x54, 0x00, 0x00, 0x00, 0x03, 10, 77, 0, 3,
        0, 0, 0, 0, 0, 0, 10, 77, 0, 1,
    ];

    #[test]
    fn parses_a_request() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!(r, Repr::request(MAC_A, IP_A, IP_B));
    }

    #[test]
    fn request_round_trips() {
        let r = Repr::request(MAC_A, IP_A, IP_B);
        let mut buf = [0u8; PACKET_LEN];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, REQUEST);
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(r));
    }

    #[test]
    fn reply_swaps_roles_and_round_trips() {
        let req = Repr::request(MAC_A, IP_A, IP_B);
        assert_eq!(req.reply_to(MAC_B, IP_A), None, "not for us");
        let rep = req.reply_to(MAC_B, IP_B).unwrap();
        assert_eq!(rep.operation, Operation::Reply);
        assert_eq!(rep.target_hardware_addr, MAC_A);
        assert_eq!(rep.target_protocol_addr, IP_A);
        assert_eq!(rep.source_protocol_addr, IP_B);
        let mut buf = [0u8; PACKET_LEN];
        rep.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[6..8], &[0, 2]);
        assert_eq!(
            Repr::parse(&Packet::new_checked(&buf[..]).unwrap()),
            Ok(rep)
        );
        assert_eq!(rep.reply_to(MAC_A, IP_A), None, "replies are not answered");
    }

    #[test]
    fn gratuitous_is_recognised_and_not_answered() {
        let g = Repr::gratuitous(MAC_B, IP_B);
        assert!(g.is_gratuitous());
        assert_eq!(g.reply_to(MAC_A, IP_B), None);
        let mut buf = [0u8; PACKET_LEN];
        g.emit(&mut Packet::new_checked(&mut buf[..]).unwrap());
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(g));
    }

    #[test]
    fn rejects_short_and_foreign() {
        assert!(Packet::new_checked(&REQUEST[..27]).is_err());
        let mut other = REQUEST;
        other[1] = 6; // IEEE 802 hardware type
        let p = Packet::new_checked(&other[..]).unwrap();
        assert!(matches!(
            Repr::parse(&p),
            Err(WireError::Unsupported { .. })
        ));
        assert_eq!(Operation::from(7), Operation::Unknown(7));
        assert_eq!(u16::from(Operation::Unknown(7)), 7);
    }
}
