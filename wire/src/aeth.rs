//! ACK extended transport header (IBTA 9.3.5): syndrome and MSN; 4 bytes. Carried by ACK,
//! ATOMIC ACK and RDMA READ RESPONSE FIRST/LAST/ONLY.
//!
//! Syndromes (top 3 bits): 000 ACK with a 5-bit credit count (rxe always sends 0x1F), 001 RNR
//! NAK with a timer code, 011 NAK (0x60 PSN sequence error, 0x61 invalid request, 0x62 remote
//! access error, 0x63 remote operational error). Every byte decodes (reserved ones are kept), so
//! parsing an AETH cannot fail on its contents.

use super::{be, check_len, Result};
use vhca_device::packet::{Aeth, Syndrome};
use vhca_device::Msn;

const SYNDROME: usize = 0;
const MSN: usize = 1;
/// Length of the AETH.
pub const HEADER_LEN: usize = 4;

/// A zero-copy view of an AETH.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        check_len("AETH", buffer.as_ref(), HEADER_LEN)?;
        Ok(Packet { buffer })
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// The raw syndrome byte.
    pub fn syndrome(&self) -> u8 {
        self.buffer.as_ref()[SYNDROME]
    }
    pub fn msn(&self) -> Msn {
        Msn(be::u24_at(self.buffer.as_ref(), MSN))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_syndrome(&mut self, v: u8) {
        self.buffer.as_mut()[SYNDROME] = v;
    }
    pub fn set_msn(&mut self, m: Msn) {
        be::put_u24(self.buffer.as_mut(), MSN, m.0);
    }
}

/// The AETH's values: the device's [`Aeth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr(pub Aeth);

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        check_len("AETH", p.buffer.as_ref(), HEADER_LEN)?;
        Ok(Repr(Aeth {
            syndrome: Syndrome::from_byte(p.syndrome()),
            msn: p.msn(),
        }))
    }
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_syndrome(self.0.syndrome.to_byte());
        p.set_msn(self.0.msn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhca_device::packet::NakCode;

    fn parse(b: &[u8]) -> Aeth {
        Repr::parse(&Packet::new_checked(b).unwrap()).unwrap().0
    }

    #[test]
    fn decodes_the_syndromes_rxe_sends() {
        let a = parse(&[0x1f, 0x00, 0x00, 0x03]);
        assert_eq!(a.syndrome, Syndrome::ACK_UNLIMITED);
        assert_eq!(a.msn, Msn(3));
        assert_eq!(
            parse(&[0x2c, 0, 0, 0]).syndrome,
            Syndrome::RnrNak { timer: 12 }
        );
        let naks = [
            (0x60, NakCode::PsnSequenceError),
            (0x61, NakCode::InvalidRequest),
            (0x62, NakCode::RemoteAccessError),
            (0x63, NakCode::RemoteOperationalError),
        ];
        for (b, c) in naks {
            assert_eq!(parse(&[b, 0xab, 0xcd, 0xef]).syndrome, Syndrome::Nak(c));
            assert_eq!(parse(&[b, 0xab, 0xcd, 0xef]).msn, Msn(0xabcdef));
        }
    }

    #[test]
    fn every_syndrome_byte_round_trips() {
        for s in 0..=255u8 {
            let bytes = [s, 0x12, 0x34, 0x56];
            let r = Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
            let mut out = [0u8; 4];
            r.emit(&mut Packet::new_unchecked(&mut out[..]));
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn short_is_an_error() {
        assert!(Packet::new_checked(&[0x1f, 0, 0][..]).is_err());
    }
}
