//! IPv6 fixed headers (RFC 8200). RoCEv2 puts UDP right after the fixed header; extension
//! headers are not decoded (a packet with one shows up as a non-UDP next header).

use super::{be, check_len, Result, WireError};
use std::net::Ipv6Addr;

const VER_TC_FLOW: usize = 0;
const PAYLOAD_LEN: usize = 4;
const NEXT_HEADER: usize = 6;
const HOP_LIMIT: usize = 7;
const SRC: usize = 8;
const DST: usize = 24;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// A zero-copy view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer that holds the fixed header and the payload length it announces (the
    /// buffer may be longer: Ethernet padding).
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet { buffer };
        check_len("IPv6 header", p.buffer.as_ref(), HEADER_LEN)?;
        check_len(
            "IPv6 packet",
            p.buffer.as_ref(),
            HEADER_LEN + usize::from(p.payload_len()),
        )?;
        Ok(p)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[VER_TC_FLOW] >> 4
    }
    pub fn traffic_class(&self) -> u8 {
        ((be::u16_at(self.buffer.as_ref(), VER_TC_FLOW) >> 4) & 0xff) as u8
    }
    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), VER_TC_FLOW) & 0x000f_ffff
    }
    pub fn payload_len(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), PAYLOAD_LEN)
    }
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[NEXT_HEADER]
    }
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[HOP_LIMIT]
    }
    pub fn src_addr(&self) -> Ipv6Addr {
        self.addr_at(SRC)
    }
    pub fn dst_addr(&self) -> Ipv6Addr {
        self.addr_at(DST)
    }
    /// The fixed header's bytes.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }
    /// The payload, up to the payload length (Ethernet padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }

    fn addr_at(&self, at: usize) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[at..at + 16]);
        Ipv6Addr::from(a)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes version 6, the traffic class and the low 20 bits of `flow_label`.
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let w = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        be::put_u32(self.buffer.as_mut(), VER_TC_FLOW, w);
    }
    pub fn set_payload_len(&mut self, v: u16) {
        be::put_u16(self.buffer.as_mut(), PAYLOAD_LEN, v);
    }
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[NEXT_HEADER] = v;
    }
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[HOP_LIMIT] = v;
    }
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[SRC..SRC + 16].copy_from_slice(&a.octets());
    }
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[DST..DST + 16].copy_from_slice(&a.octets());
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The fixed header's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src_addr: Ipv6Addr,
    pub dst_addr: Ipv6Addr,
    pub next_header: u8,
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        check_len("IPv6 header", p.buffer.as_ref(), HEADER_LEN)?;
        if p.version() != 6 {
            return Err(WireError::Unsupported {
                what: "IPv6 version",
                value: p.version().into(),
            });
        }
        let payload_len = usize::from(p.payload_len());
        check_len("IPv6 packet", p.buffer.as_ref(), HEADER_LEN + payload_len)?;
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len,
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header. Fails when the payload exceeds 65535 bytes (no jumbograms).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) -> Result<()> {
        let len = u16::try_from(self.payload_len)
            .map_err(|_| WireError::Unencodable("IPv6 payload length above 65535"))?;
        p.set_version_tc_flow(self.traffic_class, self.flow_label);
        p.set_payload_len(len);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        Ok(())
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> Result<[u8; HEADER_LEN]> {
        let mut h = [0u8; HEADER_LEN];
        self.emit(&mut Packet::new_unchecked(&mut h[..]))?;
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr() -> Repr {
        Repr {
            src_addr: "fd00:4d::3".parse().unwrap(),
            dst_addr: "fd00:4d::1".parse().unwrap(),
            next_header: 17,
            payload_len: 28,
            hop_limit: 64,
            traffic_class: 0xa5,
            flow_label: 0x1_2345,
        }
    }

    #[test]
    fn field_layout() {
        let h = repr().to_bytes().unwrap();
        // 6 | TC a5 | flow 12345 → 0x6a512345.
        assert_eq!(&h[..8], &[0x6a, 0x51, 0x23, 0x45, 0x00, 0x1c, 17, 64]);
        assert_eq!(&h[8..10], &[0xfd, 0x00]);
        assert_eq!(h[23], 3);
        assert_eq!(h[39], 1);
    }

    #[test]
    fn round_trips() {
        let r = repr();
        let mut buf = [0u8; HEADER_LEN + 28];
        r.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload().len(), 28);
        assert_eq!(Repr::parse(&p), Ok(r));
    }

    #[test]
    fn rejects_bad_input() {
        let mut buf = [0u8; HEADER_LEN + 28];
        repr()
            .emit(&mut Packet::new_unchecked(&mut buf[..]))
            .unwrap();
        assert!(Packet::new_checked(&buf[..39]).is_err());
        assert!(Packet::new_checked(&buf[..HEADER_LEN + 27]).is_err());
        buf[0] = 0x4a;
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(Repr::parse(&p).is_err());
        let mut r = repr();
        r.payload_len = 70000;
        assert!(r.to_bytes().is_err());
    }
}
