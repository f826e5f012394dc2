//! Ethernet II frames (no VLAN tag, no FCS: TAP devices and pcap carry neither).

use super::{be, check_len, Result};
use vhca_device::Mac;

/// The EtherTypes a RoCEv2 endpoint deals with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtherType {
    Ipv4,
    Arp,
    Ipv6,
    /// Anything else, kept so that a frame's type can always be reported.
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> EtherType {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x86dd => EtherType::Ipv6,
            v => EtherType::Unknown(v),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(t: EtherType) -> u16 {
        match t {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(v) => v,
        }
    }
}

/// The broadcast address (ARP requests go there).
pub const BROADCAST: Mac = Mac([0xff; 6]);

const DST: usize = 0;
const SRC: usize = 6;
const ETHERTYPE: usize = 12;
/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = 14;

/// A zero-copy view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking its length (for emitting into a sized buffer).
    pub fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer that must hold at least the 14-byte header.
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        check_len("Ethernet header", buffer.as_ref(), HEADER_LEN)?;
        Ok(Frame { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst_addr(&self) -> Mac {
        Mac(self.addr_at(DST))
    }

    pub fn src_addr(&self) -> Mac {
        Mac(self.addr_at(SRC))
    }

    pub fn ethertype(&self) -> EtherType {
        be::u16_at(self.buffer.as_ref(), ETHERTYPE).into()
    }

    /// Everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    fn addr_at(&self, at: usize) -> [u8; 6] {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[at..at + 6]);
        a
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst_addr(&mut self, a: Mac) {
        self.buffer.as_mut()[DST..DST + 6].copy_from_slice(&a.0);
    }

    pub fn set_src_addr(&mut self, a: Mac) {
        self.buffer.as_mut()[SRC..SRC + 6].copy_from_slice(&a.0);
    }

    pub fn set_ethertype(&mut self, t: EtherType) {
        be::put_u16(self.buffer.as_mut(), ETHERTYPE, t.into());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The header's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src_addr: Mac,
    pub dst_addr: Mac,
    pub ethertype: EtherType,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Repr> {
        check_len("Ethernet header", frame.buffer.as_ref(), HEADER_LEN)?;
        Ok(Repr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header; the payload is left alone.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WireError;

    const BYTES: [u8; 18] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // src
        0x08, 0x06, // ARP
        0xaa, 0xbb, 0xcc, 0xdd,
    ];

    #[test]
    fn parses_fields() {
        let f = Frame::new_checked(&BYTES[..]).unwrap();
        assert_eq!(f.dst_addr(), BROADCAST);
        assert_eq!(f.src_addr(), Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn round_trips() {
        let f = Frame::new_checked(&BYTES[..]).unwrap();
        let r = Repr::parse(&f).unwrap();
        let mut out = vec![0u8; r.buffer_len() + 4];
        let mut g = Frame::new_unchecked(&mut out[..]);
        r.emit(&mut g);
        g.payload_mut().copy_from_slice(&BYTES[14..]);
        assert_eq!(out, BYTES);
    }

    #[test]
    fn ethertypes_map_both_ways() {
        for v in [0x0800u16, 0x0806, 0x86dd, 0x8915, 0] {
            assert_eq!(u16::from(EtherType::from(v)), v);
        }
        assert_eq!(EtherType::from(0x86dd), EtherType::Ipv6);
    }

    #[test]
    fn short_buffer_is_an_error() {
        assert!(matches!(
            Frame::new_checked(&BYTES[..13]),
            Err(WireError::Truncated {
                need: 14,
                have: 13,
                ..
            })
        ));
    }
}
