//! UDP headers (RFC 768) with the optional checksum.
//!
//! rxe sends RoCEv2 with a UDP checksum of 0 ("not computed") over IPv4 and IPv6 alike, and the
//! ICRC covers everything the checksum would; so emitting a checksum is a choice and a zero
//! checksum is accepted on parse.

use super::{be, check_len, inet_checksum, Result, WireError};
use std::net::IpAddr;

const SRC_PORT: usize = 0;
const DST_PORT: usize = 2;
const LENGTH: usize = 4;
const CHECKSUM: usize = 6;
/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// A zero-copy view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer holding the header and the length it announces (the buffer may be
    /// longer).
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet { buffer };
        check_len("UDP header", p.buffer.as_ref(), HEADER_LEN)?;
        let len = usize::from(p.len());
        if len < HEADER_LEN {
            return Err(WireError::BadLength {
                what: "UDP header",
                detail: "length field below 8",
            });
        }
        check_len("UDP datagram", p.buffer.as_ref(), len)?;
        Ok(p)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), DST_PORT)
    }
    /// Header plus payload length.
    pub fn len(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), LENGTH)
    }
    /// True for a length field of 0 (never valid; `new_checked` rejects it).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn checksum(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), CHECKSUM)
    }
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }
    /// The payload up to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
    /// Checks the checksum against the pseudo-header of `src`/`dst`. A zero checksum ("none")
    /// passes.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let dgram = &self.buffer.as_ref()[..usize::from(self.len())];
        inet_checksum::finish(pseudo_sum(src, dst, self.len()) + sum_halves(dgram)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, v: u16) {
        be::put_u16(self.buffer.as_mut(), SRC_PORT, v);
    }
    pub fn set_dst_port(&mut self, v: u16) {
        be::put_u16(self.buffer.as_mut(), DST_PORT, v);
    }
    pub fn set_len(&mut self, v: u16) {
        be::put_u16(self.buffer.as_mut(), LENGTH, v);
    }
    pub fn set_checksum(&mut self, v: u16) {
        be::put_u16(self.buffer.as_mut(), CHECKSUM, v);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }
    /// Computes the checksum over the header, the payload (which must be in place) and the
    /// pseudo-header of `src`/`dst`.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let len = self.len();
        let dgram = &self.buffer.as_ref()[..usize::from(len)];
        let c = inet_checksum::finish(pseudo_sum(src, dst, len) + sum_halves(dgram));
        // A computed 0 is sent as all ones: 0 on the wire means "no checksum".
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

/// Sum of the datagram folded to 16 bits, so that adding it to a pseudo-header sum cannot
/// overflow.
fn sum_halves(data: &[u8]) -> u32 {
    let mut s = inet_checksum::add(0, data);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

/// The pseudo-header sum (RFC 768 for IPv4, RFC 8200 §8.1 for IPv6), folded to 16 bits.
fn pseudo_sum(src: IpAddr, dst: IpAddr, udp_len: u16) -> u32 {
    let mut s = 0u32;
    for a in [src, dst] {
        s = match a {
            IpAddr::V4(a) => inet_checksum::add(s, &a.octets()),
            IpAddr::V6(a) => inet_checksum::add(s, &a.octets()),
        };
    }
    s += 17 + u32::from(udp_len);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

/// A UDP header's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Bytes after the header.
    pub payload_len: usize,
}

impl Repr {
    /// Parses a checked view; with `verify` set, a non-zero checksum must match the
    /// pseudo-header of `src`/`dst`.
    pub fn parse<T: AsRef<[u8]>>(
        p: &Packet<T>,
        src: IpAddr,
        dst: IpAddr,
        verify: bool,
    ) -> Result<Repr> {
        check_len("UDP header", p.buffer.as_ref(), HEADER_LEN)?;
        let len = usize::from(p.len());
        if len < HEADER_LEN {
            return Err(WireError::BadLength {
                what: "UDP header",
                detail: "length field below 8",
            });
        }
        check_len("UDP datagram", p.buffer.as_ref(), len)?;
        if verify && !p.verify_checksum(src, dst) {
            return Err(WireError::BadUdpChecksum);
        }
        Ok(Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: len - HEADER_LEN,
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header with checksum 0. Fails when the datagram exceeds 65535 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) -> Result<()> {
        let len = u16::try_from(HEADER_LEN + self.payload_len)
            .map_err(|_| WireError::Unencodable("UDP length above 65535"))?;
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(len);
        p.set_checksum(0);
        Ok(())
    }

    /// The header as bytes, checksum 0.
    pub fn to_bytes(&self) -> Result<[u8; HEADER_LEN]> {
        let mut h = [0u8; HEADER_LEN];
        self.emit(&mut Packet::new_unchecked(&mut h[..]))?;
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 3));
    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1));

    #[test]
    fn round_trips_with_zero_checksum() {
        let r = Repr {
            src_port: 49441,
            dst_port: 4791,
            payload_len: 4,
        };
        let mut buf = [0u8; 12];
        r.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(&buf[..8], &[0xc1, 0x21, 0x12, 0xb7, 0x00, 0x0c, 0x00, 0x00]);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Repr::parse(&p, SRC, DST, true), Ok(r));
    }

    #[test]
    fn hand_computed_checksum() {
        // Pseudo-header 0a4d+0003+0a4d+0001+0011+000c, header c121+12b7+000c+0000,
        // payload dead+beef:
        // 0x0a4d+0x0003+0x0a4d+0x0001+0x0011+0x000c = 0x14bb
        // + 0xc121+0x12b7+0x000c = 0xe89f
        // + 0xdead+0xbeef = 0x2863b → fold: 0x863b + 0x2 = 0x863d → ~ 0x79c2.
        let r = Repr {
            src_port: 49441,
            dst_port: 4791,
            payload_len: 4,
        };
        let mut buf = vec![0u8; 12];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        r.emit(&mut p).unwrap();
        p.payload_mut().copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        p.fill_checksum(SRC, DST);
        assert_eq!(p.checksum(), 0x79c2);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum(SRC, DST));
        assert_eq!(Repr::parse(&p, SRC, DST, true), Ok(r));
        let mut bad = buf.clone();
        bad[9] ^= 1;
        let p = Packet::new_checked(&bad[..]).unwrap();
        assert_eq!(
            Repr::parse(&p, SRC, DST, true),
            Err(WireError::BadUdpChecksum)
        );
        assert!(Repr::parse(&p, SRC, DST, false).is_ok());
    }

    #[test]
    fn ipv6_checksum_verifies_after_fill() {
        let s = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x4d, 0, 0, 0, 0, 0, 3));
        let d = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x4d, 0, 0, 0, 0, 0, 1));
        let mut buf = [0u8; 8 + 33];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        Repr {
            src_port: 1,
            dst_port: 4791,
            payload_len: 33,
        }
        .emit(&mut p)
        .unwrap();
        for (i, b) in p.payload_mut().iter_mut().enumerate() {
            *b = i as u8 * 7;
        }
        p.fill_checksum(s, d);
        assert_ne!(p.checksum(), 0);
        assert!(p.verify_checksum(s, d));
        assert!(!p.verify_checksum(d, SRC));
    }

    #[test]
    fn rejects_bad_lengths() {
        let buf = [0xc1, 0x21, 0x12, 0xb7, 0x00, 0x07, 0, 0];
        assert!(matches!(
            Packet::new_checked(&buf[..]),
            Err(WireError::BadLength { .. })
        ));
        let buf = [0xc1, 0x21, 0x12, 0xb7, 0x00, 0x10, 0, 0, 1, 2];
        assert!(matches!(
            Packet::new_checked(&buf[..]),
            Err(WireError::Truncated { .. })
        ));
        assert!(Packet::new_checked(&buf[..7]).is_err());
        assert!(Repr {
            src_port: 0,
            dst_port: 0,
            payload_len: 65528
        }
        .to_bytes()
        .is_err());
    }
}
