//! IPv4 headers (RFC 791), with the header checksum.
//!
//! RoCEv2 packets are never fragmented and rxe sends no options, so [`Repr`] handles exactly
//! the 20-byte header of an unfragmented datagram; the view still reads any header.

use super::{be, check_len, inet_checksum, Result, WireError};
use std::net::Ipv4Addr;

const VER_IHL: usize = 0;
const TOS: usize = 1;
const TOTAL_LEN: usize = 2;
const IDENT: usize = 4;
const FLAGS_FRAG: usize = 6;
const TTL: usize = 8;
const PROTOCOL: usize = 9;
const CHECKSUM: usize = 10;
const SRC: usize = 12;
const DST: usize = 16;
/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

/// IP protocol number of UDP.
pub const PROTOCOL_UDP: u8 = 17;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A zero-copy view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that the header, and the total length it announces, fit.
    /// The buffer may be longer than the total length (Ethernet pads short frames).
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet { buffer };
        let b = p.buffer.as_ref();
        check_len("IPv4 header", b, HEADER_LEN)?;
        let hl = p.header_len();
        if hl < HEADER_LEN {
            return Err(WireError::BadLength {
                what: "IPv4 header",
                detail: "IHL below 5",
            });
        }
        check_len("IPv4 header with options", b, hl)?;
        let total = usize::from(p.total_len());
        if total < hl {
            return Err(WireError::BadLength {
                what: "IPv4 header",
                detail: "total length shorter than the header",
            });
        }
        check_len("IPv4 packet", b, total)?;
        Ok(p)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[VER_IHL] >> 4
    }
    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[VER_IHL] & 0x0f) * 4
    }
    /// The whole TOS byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[TOS]
    }
    pub fn total_len(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), TOTAL_LEN)
    }
    pub fn ident(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), IDENT)
    }
    /// Flags and fragment offset as one 16-bit field.
    pub fn flags_frag(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), FLAGS_FRAG)
    }
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }
    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        self.flags_frag() & FRAG_OFFSET_MASK
    }
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[TTL]
    }
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[PROTOCOL]
    }
    pub fn checksum(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), CHECKSUM)
    }
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be::u32_at(self.buffer.as_ref(), SRC))
    }
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be::u32_at(self.buffer.as_ref(), DST))
    }
    /// True when the header (options included) sums to the right checksum.
    pub fn verify_checksum(&self) -> bool {
        let h = &self.buffer.as_ref()[..self.header_len()];
        inet_checksum::finish(inet_checksum::add(0, h)) == 0
    }
    /// The header bytes, options included.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }
    /// The bytes after the header up to the total length (Ethernet padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and a header length in bytes (a multiple of 4, 20..=60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }
    pub fn set_tos(&mut self, v: u8) {
        self.buffer.as_mut()[TOS] = v;
    }
    pub fn set_total_len(&mut self, v: u16) {
        be::put_u16(self.buffer.as_mut(), TOTAL_LEN, v);
    }
    pub fn set_ident(&mut self, v: u16) {
        be::put_u16(self.buffer.as_mut(), IDENT, v);
    }
    pub fn set_flags_frag(&mut self, v: u16) {
        be::put_u16(self.buffer.as_mut(), FLAGS_FRAG, v);
    }
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[TTL] = v;
    }
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[PROTOCOL] = v;
    }
    pub fn set_checksum(&mut self, v: u16) {
        be::put_u16(self.buffer.as_mut(), CHECKSUM, v);
    }
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[SRC..SRC + 4].copy_from_slice(&a.octets());
    }
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[DST..DST + 4].copy_from_slice(&a.octets());
    }
    /// Computes and stores the header checksum (over the header as it is now).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = inet_checksum::finish(inet_checksum::add(0, &self.buffer.as_ref()[..hl]));
        self.set_checksum(c);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

/// An unfragmented IPv4 header without options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: u8,
    /// Bytes after the header.
    pub payload_len: usize,
    pub ttl: u8,
    pub tos: u8,
    /// Identification. Inside the RoCEv2 ICRC, so it matters (see [`super::roce::Ipv4Ident`]).
    pub ident: u16,
    pub dont_frag: bool,
}

impl Repr {
    /// Parses a checked view. Rejects other versions, options, fragments and a wrong checksum.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        check_len("IPv4 header", p.buffer.as_ref(), HEADER_LEN)?;
        if p.version() != 4 {
            return Err(WireError::Unsupported {
                what: "IPv4 version",
                value: p.version().into(),
            });
        }
        if p.header_len() != HEADER_LEN {
            return Err(WireError::Unsupported {
                what: "IPv4 header length (options)",
                value: p.header_len() as u32,
            });
        }
        let total = usize::from(p.total_len());
        if total < HEADER_LEN {
            return Err(WireError::BadLength {
                what: "IPv4 header",
                detail: "total length shorter than the header",
            });
        }
        check_len("IPv4 packet", p.buffer.as_ref(), total)?;
        if p.more_frags() || p.frag_offset() != 0 {
            return Err(WireError::Unsupported {
                what: "IPv4 fragment",
                value: p.flags_frag().into(),
            });
        }
        if !p.verify_checksum() {
            return Err(WireError::BadIpChecksum);
        }
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: total - HEADER_LEN,
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
        })
    }

    /// Header length; the payload comes after it.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header and its checksum. Fails when the total length exceeds 65535.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) -> Result<()> {
        let total = u16::try_from(HEADER_LEN + self.payload_len)
            .map_err(|_| WireError::Unencodable("IPv4 total length above 65535"))?;
        p.set_version_and_header_len(HEADER_LEN);
        p.set_tos(self.tos);
        p.set_total_len(total);
        p.set_ident(self.ident);
        p.set_flags_frag(if self.dont_frag { FLAG_DF } else { 0 });
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        p.fill_checksum();
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

    // A RoCEv2 SEND_ONLY of 4 payload bytes from 10.77.0.3 to 10.77.0.1 as rxe would send it:
    // DF, TTL 64, ID 0x1234, UDP; total 48 = 20 IP + 8 UDP + 12 BTH + 4 payload + 4 ICRC.
    #[rustfmt::skip]
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x30,
        0x12, 0x34, 0x40, 0x00,
        0x40, 0x11, 0x00, 0x00, // checksum filled in the test
        10, 77, 0, 3,
        10, 77, 0, 1,
    ];

    fn header() -> [u8; 20] {
        // One's-complement sum of the words, checksum field 0:
        // 4500+0030+1234+4000+4011+0000+0a4d+0003+0a4d+0001 = 0xec13 (no carry) → ~ 0x13ec.
        let mut h = HEADER;
        h[10] = 0x13;
        h[11] = 0xec;
        h
    }

    #[test]
    fn hand_computed_checksum_verifies() {
        let h = header();
        let mut buf = h.to_vec();
        buf.resize(48, 0);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        let r = Repr::parse(&p).unwrap();
        assert_eq!(r.payload_len, 28);
        assert_eq!(r.ident, 0x1234);
        assert!(r.dont_frag);
        assert_eq!(r.ttl, 64);
        assert_eq!(r.protocol, PROTOCOL_UDP);
        assert_eq!(r.src_addr, Ipv4Addr::new(10, 77, 0, 3));
    }

    #[test]
    fn round_trips() {
        let r = Repr {
            src_addr: Ipv4Addr::new(10, 77, 0, 3),
            dst_addr: Ipv4Addr::new(10, 77, 0, 1),
            protocol: PROTOCOL_UDP,
            payload_len: 28,
            ttl: 64,
            tos: 0,
            ident: 0x1234,
            dont_frag: true,
        };
        assert_eq!(r.to_bytes().unwrap(), header());
        let mut buf = [0u8; 48];
        r.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(r));
    }

    #[test]
    fn rejects_bad_input() {
        let mut buf = header().to_vec();
        buf.resize(48, 0);
        // Total length beyond the buffer.
        assert!(matches!(
            Packet::new_checked(&buf[..47]),
            Err(WireError::Truncated { .. })
        ));
        // IHL 4.
        let mut b = buf.clone();
        b[0] = 0x44;
        assert!(Packet::new_checked(&b[..]).is_err());
        // IHL 15 with a short buffer: no panic, an error.
        b[0] = 0x4f;
        assert!(Packet::new_checked(&b[..40]).is_err());
        // Corrupted checksum.
        let mut b = buf.clone();
        b[8] = 0x3f;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p), Err(WireError::BadIpChecksum));
        // A fragment.
        let mut b = buf.clone();
        b[6] = 0x20;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert!(matches!(
            Repr::parse(&p),
            Err(WireError::Unsupported { .. })
        ));
        // Version 6.
        let mut b = buf.clone();
        b[0] = 0x65;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(Repr::parse(&p).is_err());
    }

    #[test]
    fn oversize_is_unencodable() {
        let r = Repr {
            src_addr: Ipv4Addr::LOCALHOST,
            dst_addr: Ipv4Addr::LOCALHOST,
            protocol: PROTOCOL_UDP,
            payload_len: 65516,
            ttl: 1,
            tos: 0,
            ident: 0,
            dont_frag: false,
        };
        assert!(r.to_bytes().is_err());
    }
}
